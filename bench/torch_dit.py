#!/usr/bin/python3
"""PyTorch baseline of the DiT for bench/overhead_vs_pytorch.sh: the Diffusion Transformer as
facebookresearch/DiT models.py writes it (timm's PatchEmbed, Attention and Mlp inlined), with
the parameter names of core/dit.{h,cpp} and learn_sigma off. The training step, options,
verification and timing are bench/torch_unet.py's (this file is its --model=dit).

  /usr/bin/python3 bench/torch_dit.py --threads=1 --steps=5 --depth=6 --width=256 ...   one round
  /usr/bin/python3 bench/torch_dit.py --verify=DIR ...   checks the port against
      bench_train_step --model=dit --dump=DIR (same weights -> same output, gradients, update)

Needs only torch 1.13+ and numpy.
"""
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_unet

FREQUENCY_DIM = 256  # TimestepEmbedder.frequency_embedding_size


def get_2d_sincos_pos_embed(dim, rows, cols):
    """MAE/DiT get_2d_sincos_pos_embed for a rows x cols grid (the reference's square grid when
    rows == cols): [rows*cols, dim], first half the column coordinate, second the row."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.meshgrid(np.arange(cols, dtype=np.float32), np.arange(rows, dtype=np.float32))  # w first
    grid = np.stack(grid, axis=0).reshape([2, 1, rows, cols])
    return np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQUENCY_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t):
        return self.mlp(torch_unet.timestep_embedding(t, FREQUENCY_DIM))


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes, hidden):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden)  # + the null class

    def forward(self, labels):
        return self.embedding_table(labels)


class PatchEmbed(nn.Module):
    """timm PatchEmbed (flatten, no norm): a stride-p conv, then [N, L, D]."""

    def __init__(self, p, cin, hidden):
        super().__init__()
        self.proj = nn.Conv2d(cin, hidden, kernel_size=p, stride=p)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """timm Attention (qkv_bias=True): the fused kernel where torch has it, else its explicit path."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if hasattr(F, "scaled_dot_product_attention"):
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    def __init__(self, hidden, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    def __init__(self, hidden, p, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, p * p * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    def __init__(self, input_size=8, patch_size=2, in_channels=4, hidden=256, depth=6, heads=4, mlp_ratio=4.0,
                 num_classes=10):
        super().__init__()
        self.in_channels = self.out_channels = in_channels
        self.p, self.num_classes = patch_size, num_classes
        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden)
        self.t_embedder = TimestepEmbedder(hidden)
        self.y_embedder = LabelEmbedder(num_classes, hidden) if num_classes > 0 else None
        grid = input_size // patch_size
        # Fixed, so a non-persistent buffer (the reference's frozen nn.Parameter, kept out of the
        # state dict as core/dit.cpp computes it).
        pos = torch.from_numpy(get_2d_sincos_pos_embed(hidden, grid, grid)).float().unsqueeze(0)
        self.register_buffer("pos_embed", pos, persistent=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden, heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self):
        def basic_init(m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.constant_(m.bias, 0)
        self.apply(basic_init)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.constant_(self.x_embedder.proj.bias, 0)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
            nn.init.constant_(block.adaLN_modulation[-1].bias, 0)
        for m in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.constant_(m.weight, 0)
            nn.init.constant_(m.bias, 0)

    def unpatchify(self, x):
        c, p = self.out_channels, self.p
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x, t, y=None):
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t)
        if self.y_embedder is not None:
            labels = y if y is not None else torch.full((x.shape[0],), self.num_classes, dtype=torch.long)
            c = c + self.y_embedder(labels)
        for block in self.blocks:
            x = block(x, c)
        return self.unpatchify(self.final_layer(x, c))


def make_model(a):
    return DiT(input_size=a.size, patch_size=a.patch_size, hidden=a.width, depth=a.depth, heads=a.heads,
               mlp_ratio=a.mlp_ratio, num_classes=a.num_classes)


if __name__ == "__main__":
    sys.exit(torch_unet.main(["--model=dit"] + sys.argv[1:]))
