#!/usr/bin/python3
"""PyTorch baseline for bench/overhead_vs_pytorch.sh: a port of core/unet.{h,cpp} and
core/nn_blocks.{h,cpp} (the ADM/LDM denoiser) with identical parameter names and shapes, and the
same training step as bench/train_step.cpp written the way a PyTorch user would
(torch.optim.AdamW(foreach=True), clip_grad_norm_, a foreach EMA). --model=dit takes the DiT of
bench/torch_dit.py instead; --objective=flow trains flow matching (x_t = (1 - t) x0 + t eps,
target eps - x0, the network given 1000 t) instead of DDPM's eps.

  /usr/bin/python3 bench/torch_unet.py --threads=1 --steps=5 ...   one timed round, one JSON line
  /usr/bin/python3 bench/torch_unet.py --verify=DIR                 checks the port against
      bench_train_step --dump=DIR (same weights -> same output, gradients and one-step update)

Needs only torch 1.13+ and numpy (safetensors is parsed by hand: 8-byte little-endian header
length, JSON header, raw data; https://github.com/huggingface/safetensors "Format").
"""
import argparse
import ctypes
import json
import math
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

NORM_EPS = 1e-5  # core/unet.cpp kNormEps (PyTorch's GroupNorm default, as ADM's GroupNorm32)


# ---- the model (core/nn_blocks.cpp, core/unet.cpp) -------------------------------------------

def timestep_embedding(t, dim, max_period=10000.0):
    """core::timestep_embedding (guided-diffusion nn.timestep_embedding): [cos | sin]."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * (-math.log(max_period) / half))
    args = t.to(torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], 1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros(t.shape[0], 1)], 1)
    return emb


class Upsample2D(nn.Module):
    """core::Upsample2D: nearest x2, then a 3x3 conv."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class SpatialSelfAttention(nn.Module):
    """core::SpatialSelfAttention as it runs on LibTorch 1.x: to_q/to_k/to_v as one 1x1 conv on
    NCHW, ADM's QKVAttentionLegacy layout [N*heads, d, L] with two bmm, to_out.0 as a 1x1 conv."""

    def __init__(self, channels, heads, groups, eps, zero_init_out=False):
        super().__init__()
        self.heads = heads
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])
        if zero_init_out:
            zero_parameters(self.to_out)

    def forward(self, x):
        n, c, h, w = x.shape
        length, d = h * w, c // self.heads

        def as_conv(weight):
            return weight.view(weight.shape[0], weight.shape[1], 1, 1)

        qkv_w = torch.cat([as_conv(self.to_q.weight), as_conv(self.to_k.weight), as_conv(self.to_v.weight)])
        qkv_b = torch.cat([self.to_q.bias, self.to_k.bias, self.to_v.bias])
        qkv = (F.conv2d(self.group_norm(x), qkv_w, qkv_b)
               .view(n, 3, self.heads, d, length).permute(1, 0, 2, 3, 4).contiguous())
        q = qkv[0].view(n * self.heads, d, length) * (1.0 / math.sqrt(d))
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), qkv[1].view(n * self.heads, d, length)), -1)
        out = torch.bmm(qkv[2].view(n * self.heads, d, length), weights.transpose(1, 2)).view(n, c, h, w)
        proj = self.to_out[0]
        return x + F.conv2d(out, as_conv(proj.weight), proj.bias)


def zero_parameters(module):
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()


class UNetResBlock(nn.Module):
    """core::UNetResBlock: ADM ResBlock with use_scale_shift_norm (dropout 0)."""

    def __init__(self, cin, cout, emb_channels, groups):
        super().__init__()
        self.in_norm = nn.GroupNorm(groups, cin, eps=NORM_EPS)
        self.in_conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb_proj = nn.Linear(emb_channels, 2 * cout)
        self.out_norm = nn.GroupNorm(groups, cout, eps=NORM_EPS)
        self.out_conv = nn.Conv2d(cout, cout, 3, padding=1)
        zero_parameters(self.out_conv)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, emb_act):
        h = self.in_conv(F.silu(self.in_norm(x)))
        scale, shift = self.emb_proj(emb_act)[..., None, None].chunk(2, 1)
        h = F.silu(torch.addcmul(shift, self.out_norm(h), scale + 1.0))
        h = self.out_conv(h)
        return (self.skip(x) if self.skip is not None else x) + h


class UNetStage(nn.Module):
    """core::UNetStage: res, attn, down, up; each optional, applied in that order."""

    def __init__(self, res=None, attn=None, down=None, up=None):
        super().__init__()
        for name, m in (("res", res), ("attn", attn), ("down", down), ("up", up)):
            if m is not None:
                self.add_module(name, m)
        self.has = (res is not None, attn is not None, down is not None, up is not None)

    def forward(self, x, emb_act):
        h = self.res(x, emb_act) if self.has[0] else x
        if self.has[1]:
            h = self.attn(h)
        if self.has[2]:
            h = self.down(h)
        if self.has[3]:
            h = self.up(h)
        return h


class UNet(nn.Module):
    """core::UNet (guided-diffusion UNetModel as LDM uses it)."""

    def __init__(self, in_channels=4, out_channels=4, model_channels=64, channel_mult=(1, 2, 2),
                 num_res_blocks=2, attention_ds=(2, 4), head_channels=32, num_classes=0, norm_groups=32):
        super().__init__()
        mc, emb, g = model_channels, 4 * model_channels, norm_groups
        self.num_classes = num_classes
        self.model_channels = model_channels
        self.time_embed_1 = nn.Linear(mc, emb)
        self.time_embed_2 = nn.Linear(emb, emb)
        self.label_emb = nn.Embedding(num_classes + 1, emb) if num_classes > 0 else None

        def res(cin, cout):
            return UNetResBlock(cin, cout, emb, g)

        def attention(c):
            return SpatialSelfAttention(c, c // head_channels, g, NORM_EPS, zero_init_out=True)

        levels = len(channel_mult)
        ch = channel_mult[0] * mc
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.input_blocks = nn.ModuleList()
        skips = [ch]
        for level in range(levels):
            out = channel_mult[level] * mc
            for _ in range(num_res_blocks):
                r = res(ch, out)
                ch = out
                self.input_blocks.append(UNetStage(res=r, attn=attention(ch) if (1 << level) in attention_ds else None))
                skips.append(ch)
            if level + 1 < levels:
                self.input_blocks.append(UNetStage(down=nn.Conv2d(ch, ch, 3, stride=2, padding=1)))
                skips.append(ch)
        self.middle_block = nn.ModuleList([UNetStage(res=res(ch, ch), attn=attention(ch)), UNetStage(res=res(ch, ch))])
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(levels)):
            out = channel_mult[level] * mc
            for i in range(num_res_blocks + 1):
                r = res(ch + skips.pop(), out)
                ch = out
                self.output_blocks.append(UNetStage(
                    res=r, attn=attention(ch) if (1 << level) in attention_ds else None,
                    up=Upsample2D(ch, ch) if level > 0 and i == num_res_blocks else None))
        self.norm_out = nn.GroupNorm(g, ch, eps=NORM_EPS)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)
        zero_parameters(self.conv_out)

    def forward(self, x, t, y=None):
        n = x.shape[0]
        emb = self.time_embed_2(F.silu(self.time_embed_1(timestep_embedding(t, self.model_channels).to(x.dtype))))
        if self.label_emb is not None:
            labels = y if y is not None else torch.full((n,), self.num_classes, dtype=torch.long)
            emb = emb + self.label_emb(labels)
        emb_act = F.silu(emb)
        h = self.conv_in(x)
        skips = [h]
        for b in self.input_blocks:
            h = b(h, emb_act)
            skips.append(h)
        for b in self.middle_block:
            h = b(h, emb_act)
        for b in self.output_blocks:
            h = b(torch.cat([h, skips.pop()], 1), emb_act)
        return self.conv_out(F.silu(self.norm_out(h)))


# ---- the objective (core/noise_schedule.cpp, core/diffusion.cpp) ------------------------------

def scaled_linear_tables(timesteps=1000):
    """LDM's schedule: betas = linspace(sqrt(0.00085), sqrt(0.012), T)^2 in float64."""
    betas = torch.linspace(math.sqrt(0.00085), math.sqrt(0.012), timesteps, dtype=torch.float64) ** 2
    ac = torch.cumprod(1.0 - betas, 0)
    return ac.sqrt(), (1.0 - ac).sqrt()


# ---- safetensors by hand ---------------------------------------------------------------------

_DTYPES = {"F64": np.float64, "F32": np.float32, "I64": np.int64, "I32": np.int32, "U8": np.uint8, "BOOL": np.bool_}


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        arr = np.frombuffer(data[b:end], dtype=_DTYPES[e["dtype"]]).reshape(e["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


# ---- options, the step, the round --------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda s: tuple(int(x) for x in s.split(",") if x.strip())  # noqa: E731
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--channel_mult", "--channel-mult", type=ints, default=(1, 2, 2))
    p.add_argument("--num_res_blocks", "--num-res-blocks", type=int, default=1)
    p.add_argument("--attention_ds", "--attention-ds", type=ints, default=(2, 4))
    p.add_argument("--head_channels", "--head-channels", type=int, default=32)
    p.add_argument("--num_classes", "--num-classes", type=int, default=10)
    p.add_argument("--norm_groups", "--norm-groups", type=int, default=32)
    p.add_argument("--size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight_decay", "--weight-decay", type=float, default=0.0)
    p.add_argument("--grad_clip", "--grad-clip", type=float, default=1.0)
    p.add_argument("--ema_decay", "--ema-decay", type=float, default=0.999)
    p.add_argument("--label_dropout", "--label-dropout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zero_grad", "--zero-grad", choices=("zero", "none"), default="zero",
                   help="zero: zero_grad(set_to_none=False), torch 1.13's default and what our trainer does")
    p.add_argument("--init", default="", help="initial weights (safetensors), e.g. from bench_train_step --dump")
    p.add_argument("--verify", default="", help="directory written by bench_train_step --dump")
    p.add_argument("--profile", action="store_true", help="print torch.autograd.profiler's table of one step")
    p.add_argument("--model", choices=("unet", "dit"), default="unet")
    p.add_argument("--patch_size", "--patch-size", type=int, default=2)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--mlp_ratio", "--mlp-ratio", type=float, default=4.0)
    p.add_argument("--objective", choices=("ddpm", "flow"), default="ddpm")
    p.add_argument("--t_sampling", "--t-sampling", choices=("uniform", "logit_normal"), default="uniform")
    return p.parse_args(argv)


def make_model(a):
    if a.model == "dit":
        import torch_dit  # noqa: E402 (bench/torch_dit.py, next to this file)
        return torch_dit.make_model(a)
    return UNet(model_channels=a.channels, channel_mult=a.channel_mult, num_res_blocks=a.num_res_blocks,
                attention_ds=a.attention_ds, head_channels=a.head_channels, num_classes=a.num_classes,
                norm_groups=a.norm_groups)


class Trainer:
    """The step of bench/train_step.cpp, the PyTorch way."""

    def __init__(self, a, model):
        self.a = a
        self.model = model.train()
        self.params = list(model.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8,
                                     weight_decay=a.weight_decay, foreach=True)
        self.shadow = [p.detach().clone() for p in self.params]
        self.updates = 0
        self.sqrt_ac, self.sqrt_1mac = scaled_linear_tables()

    def batch(self):
        a = self.a
        x0 = torch.randn(a.batch, 4, a.size, a.size)
        labels = torch.randint(0, a.num_classes, (a.batch,)) if a.num_classes > 0 else None
        if a.objective == "flow":
            t = torch.sigmoid(torch.randn(a.batch)) if a.t_sampling == "logit_normal" else torch.rand(a.batch)
        else:
            t = torch.randint(0, 1000, (a.batch,))
        noise = torch.randn_like(x0)
        if labels is not None and a.label_dropout > 0:
            labels = torch.where(torch.rand(a.batch) < a.label_dropout, torch.full_like(labels, a.num_classes), labels)
        return x0, t, noise, labels

    def q_sample(self, x0, t, noise):
        """Ho et al. 2020 eq. 4 with coefficients gathered in float64, cast to x0's dtype; for
        flow the linear interpolant (core::FlowMatching::x_t)."""
        if self.a.objective == "flow":
            tt = t.to(x0.dtype).view(-1, 1, 1, 1)
            return (1.0 - tt) * x0 + tt * noise
        c1 = self.sqrt_ac[t].to(x0.dtype).view(-1, 1, 1, 1)
        c2 = self.sqrt_1mac[t].to(x0.dtype).view(-1, 1, 1, 1)
        return c1 * x0 + c2 * noise

    def model_time(self, t):
        return t * 1000.0 if self.a.objective == "flow" else t

    def forward_loss(self, x0, t, noise, labels):
        out = self.model(self.q_sample(x0, t, noise), self.model_time(t), labels)
        return out, F.mse_loss(out, noise - x0 if self.a.objective == "flow" else noise)

    def update(self, ms=None):
        """Clip, AdamW, EMA (LitEma warm-up decay), zero the gradients; returns the norm."""
        ms = {} if ms is None else ms
        t0 = time.perf_counter()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.a.grad_clip)
        t1 = time.perf_counter()
        self.opt.step()
        t2 = time.perf_counter()
        self.updates += 1
        d = min(self.a.ema_decay, (1.0 + self.updates) / (10.0 + self.updates))
        with torch.no_grad():
            torch._foreach_mul_(self.shadow, d)
            torch._foreach_add_(self.shadow, self.params, alpha=1.0 - d)
        t3 = time.perf_counter()
        self.opt.zero_grad(set_to_none=self.a.zero_grad == "none")
        t4 = time.perf_counter()
        ms.update(clip=1e3 * (t1 - t0), adamw=1e3 * (t2 - t1), ema=1e3 * (t3 - t2), zero=1e3 * (t4 - t3))
        return norm

    def step(self, x0, t, noise, labels):
        t0 = time.perf_counter()
        _, loss = self.forward_loss(x0, t, noise, labels)
        t1 = time.perf_counter()
        loss.backward()
        loss.item()
        t2 = time.perf_counter()
        ms = {"forward": 1e3 * (t1 - t0), "backward": 1e3 * (t2 - t1)}
        self.update(ms)
        ms["optimizer"] = 1e3 * (time.perf_counter() - t2)
        return ms


def report(name, got, want, tol, rel=False):
    err = (got.double() - want.double()).abs().max().item()
    ref = want.double().abs().max().item()
    ok = err <= tol * (max(ref, 1e-30) if rel else 1.0)
    print(f"  {'ok ' if ok else 'BAD'} {name}: max abs err {err:.3g} (max |ref| {ref:.3g}), "
          f"tolerance {tol:g}{' relative' if rel else ''}")
    return ok


def verify(a):
    """Same weights and batch as bench_train_step --dump: output, loss, gradients, update, EMA."""
    weights = load_safetensors(f"{a.verify}/weights.safetensors")
    io = load_safetensors(f"{a.verify}/io.safetensors")
    model = make_model(a)
    ours = dict(model.state_dict())
    names_ok = sorted(ours) == sorted(weights) and all(ours[k].shape == weights[k].shape for k in ours)
    print(f"  {'ok ' if names_ok else 'BAD'} parameter names and shapes: {len(ours)} tensors, "
          f"{sum(v.numel() for v in ours.values())} scalars")
    if not names_ok:
        print("    only in the port:", sorted(set(ours) - set(weights))[:10])
        print("    only in the C++ file:", sorted(set(weights) - set(ours))[:10])
        return False
    model.load_state_dict(weights)
    tr = Trainer(a, model)
    labels = io.get("labels")
    ok = names_ok
    with torch.no_grad():
        model.eval()
        ok &= report("forward output (eval, on x0)", model(io["x0"], io.get("t_model", io["t"]), labels),
                     io["out_eval"], 1e-5)
        model.train()
    ok &= report("q_sample", tr.q_sample(io["x0"], io["t"], io["noise"]), io["x_t"], 1e-6)
    out, loss = tr.forward_loss(io["x0"], io["t"], io["noise"], labels)
    ok &= report("forward output (train step)", out.detach(), io["out_train"], 1e-5)
    ok &= report("loss", loss.detach().reshape(1), io["loss"], 1e-6)
    loss.backward()
    worst = max(((p.grad.double() - io["grad." + n].double()).abs().max().item()
                 / max(io["grad." + n].double().abs().max().item(), 1e-12), n) for n, p in model.named_parameters())
    print(f"  {'ok ' if worst[0] <= 1e-3 else 'BAD'} gradients: worst relative max error {worst[0]:.3g} ({worst[1]}), "
          "tolerance 1e-3 of each tensor's max")
    ok &= worst[0] <= 1e-3
    # The update from OUR gradients: AdamW's first step moves a weight by about lr g / (|g| + eps),
    # which for entries with |g| near eps (1e-8) turns float32 summation-order noise in g into
    # differences of order lr; the gradients were compared above.
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.grad.copy_(io["grad." + n])
    norm = tr.update()
    ok &= report("grad norm", norm.double().reshape(1), io["grad_norm"], 1e-4, rel=True)
    after = torch.stack([(p.detach() - io["after." + n]).abs().max() for n, p in model.named_parameters()]).max()
    ema = torch.stack([(s - io["ema." + n]).abs().max() for (n, _), s in zip(model.named_parameters(), tr.shadow)]).max()
    # AdamW's first step moves each weight by about lr * sign(g): allow 1% of lr.
    print(f"  {'ok ' if after <= 1e-2 * a.lr else 'BAD'} parameters after one AdamW step: max abs err {after:.3g}, "
          f"tolerance {1e-2 * a.lr:g}")
    print(f"  {'ok ' if ema <= 1e-2 * a.lr else 'BAD'} EMA after one update: max abs err {ema:.3g}")
    ok &= bool(after <= 1e-2 * a.lr) and bool(ema <= 1e-2 * a.lr)
    print("verify:", "PASSED" if ok else "FAILED")
    return ok


def set_threads(n):
    """torch's intra-op threads and OpenBLAS's (which torch.set_num_threads leaves alone), as
    lf::launch::set_threads does on our side."""
    torch.set_num_threads(n)
    try:
        ctypes.CDLL("libopenblas.so.0").openblas_set_num_threads(n)
    except (OSError, AttributeError):
        pass


def main(argv):
    a = parse_args(argv)
    set_threads(a.threads)
    torch.manual_seed(a.seed)
    if a.verify:
        return 0 if verify(a) else 1
    model = make_model(a)
    if a.init:
        model.load_state_dict(load_safetensors(a.init))
    tr = Trainer(a, model)
    if a.profile:
        for _ in range(max(1, a.warmup)):
            tr.step(*tr.batch())
        with torch.autograd.profiler.profile() as prof:
            tr.step(*tr.batch())
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        return 0
    phases = {}
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        b = tr.batch()
        data_ms = 1e3 * (time.perf_counter() - t0)
        ms = tr.step(*b)
        total = 1e3 * (time.perf_counter() - t0)
        if s < a.warmup:
            continue
        ms.update(data=data_ms, step=total)
        for k, v in ms.items():
            phases.setdefault(k, []).append(v)
    rec = {"side": "torch", "threads": a.threads, "batch": a.batch,
           "params": sum(p.numel() for p in model.parameters()), "step_ms": phases["step"]}
    for k in ("data", "forward", "backward", "clip", "adamw", "ema", "zero", "optimizer", "step"):
        rec[f"{k}_median_ms"] = statistics.median(phases[k])
    print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
