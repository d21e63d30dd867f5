#!/usr/bin/python3
"""Reference values for featcache's optimizers and schedules from torch.optim.

Writes tests/fixtures/optim/optim.txt: for each optimizer configuration,
the initial parameters, the gradients of three steps, the learning rate of
each step and the parameters after each step, all as float32 printed with
9 significant digits. Run with Debian's python3-torch:
    /usr/bin/python3 tools/optim_ref.py
"""
import math
import os

import torch

torch.manual_seed(1234)
N = 9
CONFIGS = [
    ("sgd", dict(lr=0.1, momentum=0.0, weight_decay=0.0)),
    ("sgd", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("sgd", dict(lr=0.05, momentum=0.9, weight_decay=0.0, nesterov=True)),
    ("adam", dict(lr=1e-3)),
    ("adam", dict(lr=3e-3, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6)),
    ("adamw", dict(lr=1e-3, weight_decay=0.01)),
    ("adamw", dict(lr=1e-2, weight_decay=0.3, betas=(0.9, 0.95))),
]
LRS = [1.0, 0.5, 0.25]  # factors applied to lr per step (a schedule)


def fmt(t):
    return " ".join("%.9g" % v for v in t.tolist())


def main():
    out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "optim", "optim.txt")
    lines = ["# made by tools/optim_ref.py with torch %s" % torch.__version__]
    for kind, kw in CONFIGS:
        p = torch.nn.Parameter(torch.randn(N))
        cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
        opt = cls([p], foreach=False, **kw)
        base = kw["lr"]
        betas = kw.get("betas", (0.9, 0.999))
        lines.append("config %s lr %.9g wd %.9g momentum %.9g nesterov %d beta1 %.9g beta2 %.9g eps %.9g"
                     % (kind, base, kw.get("weight_decay", 0.0), kw.get("momentum", 0.0),
                        int(kw.get("nesterov", False)), betas[0], betas[1], kw.get("eps", 1e-8)))
        lines.append("init " + fmt(p.detach()))
        for f in LRS:
            for g in opt.param_groups:
                g["lr"] = base * f
            grad = torch.randn(N)
            p.grad = grad.clone()
            opt.step()
            lines.append("grad " + fmt(grad))
            lines.append("lr %.9g" % (base * f))
            lines.append("after " + fmt(p.detach()))
    with open(out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
