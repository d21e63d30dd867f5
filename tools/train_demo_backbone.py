#!/usr/bin/python3
"""train_demo_backbone.py - train the small CNN backbone that `make demo` extracts with.

A ResNet-style classifier (BasicBlocks, 128-d pooled feature) trained on
Fashion-MNIST classes 0-4 only, so that classes 5-9 are a domain the backbone
never saw - the situation featcache's projection heads are for. It reads the
PNG tree written by tools/fmnist_png (DATA/{train,test}/<class>/<n>.png) and
preprocesses exactly as `featcache extract --preprocess finetuner --size 32`
does (PIL bicubic resize to 32x32, ImageNet mean/std), then exports
models/fmnist_resnet.onnx (opset 13, input "input", output "logits",
dynamic batch) and checks the export against an independent numpy
interpreter of the ONNX graph.

It also prints the numbers models/README.md quotes: test accuracy on classes
0-4 and a cosine kNN precision@20 of the 128-d feature on the test split, for
the seen classes 0-4 and the unseen classes 5-9.

Needs Debian's python3-torch, python3-torchvision, python3-onnx, python3-pil
and numpy. Not run by the build or the tests; the ONNX file is committed.

usage: /usr/bin/python3 tools/train_demo_backbone.py --data DIR [--out FILE]
       [--epochs N] [--seed N] [--threads N]
"""
import argparse
import hashlib
import os
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from onnx import numpy_helper
from PIL import Image
from torchvision import transforms

CLASSES = ["t-shirt_top", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
SEEN = 5  # the backbone is trained on classes 0..SEEN-1
SIZE = 32
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
WIDTHS = (16, 32, 64, 128)
BLOCKS = (1, 1, 2, 1)


# ---------------------------------------------------------------- data

# featcache's `finetuner` preset at --size 32: straight resize, no crop.
TO_TENSOR = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def preprocess(path):
    img = Image.open(path).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)
    return TO_TENSOR(img)


def load_split(root, split, classes):
    """All images of `classes` in DATA/split, preprocessed once: (N,3,S,S), (N,)."""
    xs, ys = [], []
    for c in classes:
        d = os.path.join(root, split, CLASSES[c])
        names = sorted(os.listdir(d))
        if not names:
            sys.exit(f"train_demo_backbone: no images in '{d}'")
        xs.extend(preprocess(os.path.join(d, n)) for n in names)
        ys.extend([c] * len(names))
    return torch.stack(xs), torch.tensor(ys)


# ---------------------------------------------------------------- model

class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the (projected) input, then ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.down is None else self.down(x)))


class Backbone(nn.Module):
    def __init__(self, num_classes=SEEN):
        super().__init__()
        layers = [nn.Conv2d(3, WIDTHS[0], 3, 1, 1, bias=False), nn.BatchNorm2d(WIDTHS[0]), nn.ReLU()]
        cin = WIDTHS[0]
        for i, (w, n) in enumerate(zip(WIDTHS, BLOCKS)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


def count_macs(model, size):
    """Multiply-accumulates of one image, from hooks on Conv2d and Linear."""
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total[0] += m.in_features * m.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hs:
        h.remove()
    return total[0]


def shape_table(model, size):
    """(layer, output shape) rows for the README."""
    rows = []
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        for i, m in enumerate(model.features):
            x = m(x)
            rows.append((f"features.{i} {type(m).__name__}", tuple(x.shape)))
        rows.append(("fc Linear", tuple(model.fc(x).shape)))
    return rows


# ---------------------------------------------------------------- train / evaluate

def augment(x, gen):
    """Random horizontal flip and a shift of up to 2 pixels (edge-replicated)."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = F.pad(x, (2, 2, 2, 2), mode="replicate")
    dx, dy = torch.randint(0, 5, (2,), generator=gen).tolist()
    return pad[:, :, dy:dy + SIZE, dx:dx + SIZE]


def evaluate(model, x, batch=500):
    model.eval()
    feats, logits = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            f = model.features(x[i:i + batch])
            feats.append(f)
            logits.append(model.fc(f))
    return torch.cat(feats), torch.cat(logits)


def knn_precision(feat, labels, k=20):
    """Leave-one-out cosine kNN: mean fraction of each item's k nearest
    neighbours (itself excluded) that share its label, and top-1 accuracy."""
    f = F.normalize(feat.double(), dim=1)
    sim = f @ f.T
    sim.fill_diagonal_(-2.0)
    idx = sim.topk(k, dim=1).indices
    same = (labels[idx] == labels[:, None]).double()
    return same.mean().item(), same[:, 0].mean().item()


# ---------------------------------------------------------------- ONNX check

def onnx_reference(path, x):
    """Run the exported graph with a numpy interpreter of the ops this model
    exports to, independent of torch; returns every tensor by name."""
    m = onnx.load(path)
    env = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in m.graph.initializer}
    env[m.graph.input[0].name] = x.astype(np.float64)
    for nd in m.graph.node:
        a = {at.name: onnx.helper.get_attribute_value(at) for at in nd.attribute}
        i = [env[n] for n in nd.input if n]
        if nd.op_type == "Conv":
            w = i[1]
            assert a.get("group", 1) == 1 and all(d == 1 for d in a.get("dilations", [1, 1]))
            s = a.get("strides", [1, 1])
            p = a.get("pads", [0, 0, 0, 0])
            xp = np.pad(i[0], ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])))
            kh, kw = w.shape[2:]
            oh = (xp.shape[2] - kh) // s[0] + 1
            ow = (xp.shape[3] - kw) // s[1] + 1
            out = np.zeros((xp.shape[0], w.shape[0], oh, ow))
            for u in range(kh):
                for v in range(kw):
                    patch = xp[:, :, u:u + s[0] * oh:s[0], v:v + s[1] * ow:s[1]]
                    out += np.einsum("nchw,oc->nohw", patch, w[:, :, u, v])
            if len(i) > 2:
                out += i[2][None, :, None, None]
            r = out
        elif nd.op_type == "Relu":
            r = np.maximum(i[0], 0)
        elif nd.op_type == "Add":
            r = i[0] + i[1]
        elif nd.op_type == "GlobalAveragePool":
            r = i[0].mean(axis=(2, 3), keepdims=True)
        elif nd.op_type == "Flatten":
            ax = a.get("axis", 1)
            r = i[0].reshape(int(np.prod(i[0].shape[:ax])), -1)
        elif nd.op_type == "Gemm":
            A = i[0].T if a.get("transA", 0) else i[0]
            B = i[1].T if a.get("transB", 0) else i[1]
            r = a.get("alpha", 1.0) * A @ B + (a.get("beta", 1.0) * i[2] if len(i) > 2 else 0)
        else:
            raise SystemExit(f"train_demo_backbone: reference has no op {nd.op_type}")
        env[nd.output[0]] = r
    return m, env


def check_export(model, path, x):
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    ops = sorted({n.op_type for n in m.graph.node})
    gemm = [n for n in m.graph.node if n.op_type == "Gemm"][-1]
    m, env = onnx_reference(path, x.numpy())
    feat, logits = evaluate(model, x)
    d_logit = np.abs(env[m.graph.output[0].name] - logits.double().numpy()).max()
    d_feat = np.abs(env[gemm.input[0]] - feat.double().numpy()).max()
    print(f"onnx: checker ok; ops {', '.join(ops)}; {len(x)} images vs the numpy reference: "
          f"max |d logits| {d_logit:.2e}, max |d feature| {d_feat:.2e} (feature = '{gemm.input[0]}', "
          f"{env[gemm.input[0]].shape[1]}-d)")
    if not (d_logit < 1e-4 and d_feat < 1e-4):
        raise SystemExit("train_demo_backbone: the ONNX export does not match PyTorch")


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="the tree tools/fmnist_png wrote")
    ap.add_argument("--out", default="models/fmnist_resnet.onnx")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.use_deterministic_algorithms(True)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, onnx {onnx.__version__}, "
          f"seed {args.seed}, {args.threads} threads")

    t0 = time.time()
    xtr, ytr = load_split(args.data, "train", range(SEEN))
    xte, yte = load_split(args.data, "test", range(len(CLASSES)))
    print(f"data: {len(xtr)} train images (classes 0-{SEEN - 1}), {len(xte)} test images (all classes), "
          f"preprocessed in {time.time() - t0:.1f}s")

    model = Backbone()
    print(f"model: {sum(p.numel() for p in model.parameters())} parameters, "
          f"{count_macs(model, SIZE) / 1e6:.1f} M multiply-adds per {SIZE}x{SIZE} image")
    for name, shape in shape_table(model, SIZE):
        print(f"  {name:32s} {shape}")

    gen = torch.Generator().manual_seed(args.seed)
    steps = args.epochs * ((len(xtr) + args.batch - 1) // args.batch)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.2)
    t1 = time.time()
    for ep in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        tot, correct, n = 0.0, 0, 0
        for i in range(0, len(xtr), args.batch):
            b = perm[i:i + args.batch]
            x, y = augment(xtr[b], gen), ytr[b]
            out = model(x)
            loss = F.cross_entropy(out, y, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(b)
            correct += (out.argmax(1) == y).sum().item()
            n += len(b)
        print(f"epoch {ep + 1}/{args.epochs}: loss {tot / n:.4f}, train acc {correct / n:.4f}, "
              f"{time.time() - t1:.0f}s", flush=True)
    train_s = time.time() - t1

    feat, logits = evaluate(model, xte)
    seen = yte < SEEN
    acc = (logits[seen].argmax(1) == yte[seen]).double().mean().item()
    print(f"test accuracy, classes 0-{SEEN - 1}: {acc:.4f} ({int(seen.sum())} images); "
          f"training took {train_s:.0f}s")
    for c in range(SEEN):
        m = yte == c
        print(f"  {CLASSES[c]:12s} {(logits[m].argmax(1) == c).double().mean().item():.4f}")

    print("retrieval on the test split, cosine kNN leave-one-out: precision@20 / top-1")
    pix = xte.flatten(1)
    for name, m in (("classes 0-4 (seen)", seen), ("classes 5-9 (unseen)", ~seen),
                    ("all 10 classes", torch.ones_like(seen))):
        pb = knn_precision(feat[m], yte[m])
        pp = knn_precision(pix[m], yte[m])
        print(f"  {name:22s} backbone {pb[0]:.4f} / {pb[1]:.4f}   raw pixels {pp[0]:.4f} / {pp[1]:.4f}")

    model.eval()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    torch.onnx.export(model, torch.zeros(1, 3, SIZE, SIZE), args.out, opset_version=13,
                      do_constant_folding=True, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    check_export(model, args.out, xte[::250])
    with open(args.out, "rb") as f:
        blob = f.read()
    print(f"wrote {args.out}: {len(blob)} bytes, sha256 {hashlib.sha256(blob).hexdigest()}")


if __name__ == "__main__":
    main()
