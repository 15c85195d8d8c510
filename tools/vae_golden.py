#!/usr/bin/python3
"""Golden values for tests/core/vae_test.cpp (VAEGolden.*): diffusers' AutoencoderKL forward,
transcribed in plain PyTorch from diffusers (models/autoencoders/vae.py Encoder/Decoder,
autoencoder_kl.py, unets/unet_2d_blocks.py DownEncoderBlock2D/UpDecoderBlock2D/UNetMidBlock2D,
resnet.py ResnetBlock2D/Downsample2D/Upsample2D, attention_processor.py Attention +
AttnProcessor) with the same module names, so its state_dict keys are diffusers' keys.

Weights and input are deterministic closed forms (see fill()) that the C++ test recomputes, so no
file is shared. Run: /usr/bin/python3 tools/vae_golden.py  and paste the output into the test.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-6


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=EPS)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.conv_shortcut(x) if self.conv_shortcut is not None else x) + h


class Downsample2D(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample2D(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Attention(nn.Module):  # heads = 1, dim_head = channels (the VAE's mid-block attention)
    def __init__(self, c, groups):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, c, eps=EPS, affine=True)
        self.to_q = nn.Linear(c, c)
        self.to_k = nn.Linear(c, c)
        self.to_v = nn.Linear(c, c)
        self.to_out = nn.ModuleList([nn.Linear(c, c), nn.Dropout(0.0)])

    def forward(self, x):
        b, c, h, w = x.shape
        s = x.view(b, c, h * w).transpose(1, 2)
        s = self.group_norm(s.transpose(1, 2)).transpose(1, 2)
        q, k, v = self.to_q(s), self.to_k(s), self.to_v(s)
        attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), dim=-1)
        o = self.to_out[0](attn @ v)
        return o.transpose(-1, -2).reshape(b, c, h, w) + x


class MidBlock(nn.Module):
    def __init__(self, c, groups, add_attention=True):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(c, c, groups), ResnetBlock2D(c, c, groups)])
        self.attentions = nn.ModuleList([Attention(c, groups)] if add_attention else [])

    def forward(self, x):
        x = self.resnets[0](x)
        for a in self.attentions:
            x = a(x)
        return self.resnets[1](x)


class Block(nn.Module):  # DownEncoderBlock2D / UpDecoderBlock2D
    def __init__(self, cin, cout, layers, groups, down=False, up=False):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(cin if j == 0 else cout, cout, groups) for j in range(layers)])
        if down:
            self.downsamplers = nn.ModuleList([Downsample2D(cout)])
        if up:
            self.upsamplers = nn.ModuleList([Upsample2D(cout)])

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        for s in getattr(self, "downsamplers", []):
            x = s(x)
        for s in getattr(self, "upsamplers", []):
            x = s(x)
        return x


class Encoder(nn.Module):
    def __init__(self, cin, latent, ch, layers, groups):
        super().__init__()
        self.conv_in = nn.Conv2d(cin, ch[0], 3, padding=1)
        prev, blocks = ch[0], []
        for i, c in enumerate(ch):
            blocks.append(Block(prev, c, layers, groups, down=i != len(ch) - 1))
            prev = c
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(ch[-1], groups)
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], eps=EPS)
        self.conv_out = nn.Conv2d(ch[-1], 2 * latent, 3, padding=1)

    def forward(self, x):
        x = self.conv_in(x)
        for b in self.down_blocks:
            x = b(x)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nn.Module):
    def __init__(self, latent, cout, ch, layers, groups):
        super().__init__()
        self.conv_in = nn.Conv2d(latent, ch[-1], 3, padding=1)
        self.mid_block = MidBlock(ch[-1], groups)
        rev, prev, blocks = list(reversed(ch)), ch[-1], []
        for i, c in enumerate(rev):
            blocks.append(Block(prev, c, layers + 1, groups, up=i != len(ch) - 1))
            prev = c
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = nn.GroupNorm(groups, ch[0], eps=EPS)
        self.conv_out = nn.Conv2d(ch[0], cout, 3, padding=1)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))
        for b in self.up_blocks:
            x = b(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    def __init__(self, cin, cout, latent, ch, layers, groups):
        super().__init__()
        self.encoder = Encoder(cin, latent, ch, layers, groups)
        self.decoder = Decoder(latent, cout, ch, layers, groups)
        self.quant_conv = nn.Conv2d(2 * latent, 2 * latent, 1)
        self.post_quant_conv = nn.Conv2d(latent, latent, 1)


def fill(model):
    """Parameter k (in sorted-name order), element j: norm weights 1 + 0.1 sin(0.7 j + 1.3 k),
    other matrices sin(...) / sqrt(fan_in), vectors 0.1 sin(...); computed in float64."""
    sd = model.state_dict()
    with torch.no_grad():
        for k, name in enumerate(sorted(sd)):
            t = sd[name]
            j = torch.arange(t.numel(), dtype=torch.float64)
            s = torch.sin(0.7 * j + 1.3 * k)
            if "norm" in name and name.endswith(".weight"):
                v = 1 + 0.1 * s
            elif t.dim() >= 2:
                v = s / math.sqrt(t.numel() / t.shape[0])
            else:
                v = 0.1 * s
            t.copy_(v.view(t.shape).to(t.dtype))


def main():
    torch.set_grad_enabled(False)
    # in 3, out 3, latent 4, block_out_channels [16, 32], layers_per_block 1, 8 groups.
    m = AutoencoderKL(3, 3, 4, [16, 32], 1, 8).double()
    fill(m)
    n = 2 * 3 * 8 * 8
    x = torch.sin(0.31 * torch.arange(n, dtype=torch.float64)).view(2, 3, 8, 8)
    moments = m.quant_conv(m.encoder(x))
    mean, logvar = moments.chunk(2, dim=1)
    logvar = logvar.clamp(-30, 20)
    rec = m.decoder(m.post_quant_conv(mean))
    print("// keys:", len(m.state_dict()), " params:", sum(p.numel() for p in m.parameters()))
    for name, t in [("mean", mean), ("logvar", logvar), ("rec", rec)]:
        f = t.flatten()
        idx = [0, 1, f.numel() // 3, f.numel() // 2, f.numel() - 1]
        print(f"// {name} shape {list(t.shape)}")
        print(f"const double k{name.capitalize()}Sum = {f.sum().item():.12g}, "
              f"k{name.capitalize()}AbsSum = {f.abs().sum().item():.12g};")
        print(f"const std::vector<std::pair<int64_t, double>> k{name.capitalize()}At = {{"
              + ", ".join(f"{{{i}, {f[i].item():.12g}}}" for i in idx) + "};")


if __name__ == "__main__":
    main()
