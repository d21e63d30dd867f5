#!/usr/bin/python3
"""PyTorch references for a whole training step of featcache's head.

For each loss: Finetuner's projection head (torch.nn modules with the
state-dict names featcache writes), one batch through it in training mode,
the loss (the PML transcriptions in tools/loss_ref.py), backward, and then
one step of each optimizer from the same start. Writes one text fixture per
case into tests/fixtures/train/: the config, the input batch, labels, every
parameter and buffer before, the loss, every gradient, the running
statistics after the forward, and the parameters after one step of sgd,
adam and adamw. tests/test_train_ref.c replays them.

Run with Debian's python3-torch:  /usr/bin/python3 tools/train_ref.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import loss_ref  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "train")
IN_DIM, OUT_DIM, LAYERS, B = 12, 6, 3, 16
OPTIMS = [
    ("sgd", dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    ("adam", dict(lr=1e-2)),
    ("adamw", dict(lr=1e-2, weight_decay=0.01)),
]


class Head(torch.nn.Module):
    def __init__(self, d_in, d_out, layers):
        super().__init__()
        self.head_layers = torch.nn.ModuleList()
        for i in range(layers):
            last = i == layers - 1
            o = d_out if last else d_in
            self.head_layers.append(torch.nn.Linear(d_in, o, bias=False))
            self.head_layers.append(torch.nn.BatchNorm1d(o, eps=1e-5))
            if not last:
                self.head_layers.append(torch.nn.ReLU())

    def forward(self, x):
        for layer in self.head_layers:
            x = layer(x)
        return x


def fmt(t):
    return " ".join("%.9g" % v for v in t.detach().double().flatten().tolist())


def cfg_for(kind, **over):
    cfg = dict(kind=kind, miner="all", distance="euclidean", margin=0.2, pos_margin=0.0, neg_margin=1.0,
               temperature=0.1, scale=64.0, n_classes=0)
    if kind == "ntxent":
        cfg["temperature"] = 0.07
    if kind in ("ntxent", "supcon", "arcface", "cosface"):
        cfg["distance"] = "cosine"  # PML's default for these (ArcFace/CosFace require it)
    if kind == "arcface":
        cfg["margin"] = 28.6
    if kind == "cosface":
        cfg["margin"] = 0.35
    cfg.update(over)
    return cfg


CASES = [
    ("triplet_semihard", cfg_for("triplet", miner="semihard")),
    ("triplet_all_cosine", cfg_for("triplet", distance="cosine")),
    ("siamese", cfg_for("siamese")),
    ("ntxent", cfg_for("ntxent", distance="cosine")),
    ("supcon", cfg_for("supcon", distance="cosine")),
    ("arcface", cfg_for("arcface", n_classes=4, scale=8.0)),
    ("cosface", cfg_for("cosface", n_classes=4, scale=8.0)),
]


def loss_of(cfg, emb, labels, W):
    kind = cfg["kind"]
    if kind in ("arcface", "cosface"):
        return loss_ref.margin_softmax(emb, labels, W, cfg)[0]
    return {"triplet": loss_ref.triplet, "siamese": loss_ref.siamese, "ntxent": loss_ref.ntxent,
            "supcon": loss_ref.supcon}[kind](emb, labels, cfg)[0]


def case(name, cfg, seed):
    torch.manual_seed(seed)
    head = Head(IN_DIM, OUT_DIM, LAYERS)
    with torch.no_grad():  # BatchNorm weights away from 1 and 0
        for m in head.head_layers:
            if isinstance(m, torch.nn.BatchNorm1d):
                m.weight.add_(0.2 * torch.randn_like(m.weight))
                m.bias.add_(0.2 * torch.randn_like(m.bias))
    labels = torch.arange(4).repeat_interleave(4)
    x = torch.randn(B, IN_DIM) + 1.5 * torch.randn(4, IN_DIM)[labels]
    W = None
    if cfg["n_classes"]:
        W = torch.nn.Parameter(torch.randn(OUT_DIM, cfg["n_classes"]))
    start = {k: v.clone() for k, v in head.state_dict().items()}
    W0 = W.detach().clone() if W is not None else None

    head.train()
    loss = loss_of(cfg, head(x), labels, W)
    loss.backward()
    lines = ["# made by tools/loss_ref.py + tools/train_ref.py with torch %s, seed %d" % (torch.__version__, seed)]
    for k in ("kind", "miner", "distance", "margin", "pos_margin", "neg_margin", "temperature", "scale",
              "n_classes"):
        lines.append("%s %s" % (k, cfg[k]))
    lines.append("head %d %d %d" % (IN_DIM, OUT_DIM, LAYERS))
    lines.append("labels " + " ".join(str(int(v)) for v in labels))
    lines.append("input %d %s" % (x.numel(), fmt(x)))
    for k, v in start.items():
        if v.dtype == torch.int64:
            continue
        lines.append("param %s %d %s" % (k, v.numel(), fmt(v)))
    if W0 is not None:
        lines.append("param loss.W %d %s" % (W0.numel(), fmt(W0)))
    lines.append("loss %.9g" % float(loss))
    for k, p in head.named_parameters():
        lines.append("grad %s %d %s" % (k, p.numel(), fmt(p.grad)))
    if W is not None:
        lines.append("grad loss.W %d %s" % (W.numel(), fmt(W.grad)))
    for k, v in head.state_dict().items():
        if "running" in k:
            lines.append("buffer %s %d %s" % (k, v.numel(), fmt(v)))
    grads = [p.grad.clone() for p in head.parameters()]
    gW = W.grad.clone() if W is not None else None
    for oname, kw in OPTIMS:
        h2 = Head(IN_DIM, OUT_DIM, LAYERS)
        h2.load_state_dict(start)
        params = list(h2.parameters())
        for p, g in zip(params, grads):
            p.grad = g.clone()
        if W is not None:
            W2 = torch.nn.Parameter(W0.clone())
            W2.grad = gW.clone()
            params.append(W2)
        opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[oname](
            params, foreach=False, **kw)
        opt.step()
        lines.append("optim %s lr %.9g wd %.9g momentum %.9g" % (oname, kw["lr"], kw.get("weight_decay", 0.0),
                                                              kw.get("momentum", 0.0)))
        for k, p in h2.named_parameters():
            lines.append("after %s %d %s" % (k, p.numel(), fmt(p)))
        if W is not None:
            lines.append("after loss.W %d %s" % (W2.numel(), fmt(W2)))
    with open(os.path.join(OUT, name + ".txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    for i, (name, cfg) in enumerate(CASES):
        case(name, cfg, 100 + i)
    with open(os.path.join(OUT, "index.txt"), "w") as f:
        f.write("# fixtures made by tools/train_ref.py, one case per line\n")
        f.write("\n".join(n for n, _ in CASES) + "\n")
    print("wrote %d cases to %s" % (len(CASES), OUT))


if __name__ == "__main__":
    main()
