#!/usr/bin/python3
"""Golden values for tests/core/adamw_test.cpp: torch.optim.AdamW (PyTorch's own) on a
small float64 parameter with fixed gradients for three steps. Run: /usr/bin/python3 tools/golden_adamw.py"""
import torch

torch.set_printoptions(precision=17)
p = torch.tensor([0.5, -1.25, 2.0, 0.0], dtype=torch.float64, requires_grad=True)
opt = torch.optim.AdamW([p], lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
grads = [[0.1, -0.2, 0.3, 0.0], [-0.4, 0.5, 0.25, 1e-3], [0.05, 0.05, -0.6, 2.0]]
for g in grads:
    p.grad = torch.tensor(g, dtype=torch.float64)
    opt.step()
st = opt.state[p]
for name, t in (("param", p.detach()), ("exp_avg", st["exp_avg"]), ("exp_avg_sq", st["exp_avg_sq"])):
    print(name, ", ".join(repr(float(x)) for x in t))
