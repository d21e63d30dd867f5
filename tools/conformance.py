#!/usr/bin/python3
"""conformance.py - full-size backbones through featcache's engine against
PyTorch: `make conformance`.

Entries. The CNNs (torchvision 0.14) are exported once, at opset 13 with a
dynamic batch, under their own names (resnet50, ..., efficientnet_v2_s).
The transformers and ConvNeXt (convnext_tiny, vit_b_16, swin_t, and
tools/token_models.py's DINOv2-style dinov2_s14 and CLIP-style clip_b32) are
exported four ways, each a separate entry: NAME@14 and NAME@17 (opset 14
writes LayerNorm decomposed into ReduceMean/Sub/Pow/Sqrt/Div, opset 17 as
LayerNormalization), dynamic batch; NAME@14s and NAME@17s the same with
the batch fixed at 1 (the tool then runs them one image at a time).
--only takes entry names or a model name (all its entries). --quick runs
the CNNs, every transformer at @17 and vit_b_16@14 and clip_b32@14.

For every entry: export it (tools/export_models.py: seeded random weights,
randomised BatchNorm statistics, LayerNorm and LayerScale parameters, ViT's
zero head randomised), check it (onnx.checker; ONNX shape inference must
give the output and featcache's default layer the dimensions PyTorch's
model has), compute PyTorch's feature at the default embedding layer for a
seeded batch of 224 x 224 images, run tests/tool_embed_model on the batch
in f32 and in bf16 and compare. The default layer (export_models.
default_layer, featcache's rule) is the input of the model's final
classifier, a Gemm/MatMul with a constant weight producing the output:
torchvision's CNNs and ConvNeXt the pooled features before the last Linear,
vit_b_16 the CLS token after the final LayerNorm (input of heads.head, 768),
swin_t the pooled 768-d input of head, clip_b32 ln_post(x[:, 0]) (768, the
input of `@ proj`); dinov2_s14 has no classifier and is its own embedding
(the normed CLS token, 384). One line per entry:

    entry  dim  f32 max rel err  bf16 min cosine  seconds  PASS/FAIL

f32 passes at a max relative error (max |ours - torch| / max |torch| over
the batch) <= 1e-4 and a cosine >= 0.9999 for every embedding; bf16 at a
cosine >= 0.999 for every embedding (>= 0.99 for the attention models:
vit, swin, dinov2, clip), and is skipped (not failed) where the CPU has no
native bf16 (the tool then refuses with FC_ERR_UNSUPPORTED). Either fails
if oneDNN ran any primitive as `ref` (its reference C loops: the tool
lists the implementations with FC_PRIMS set). A failing tool is reported
by the first line of its stderr. Exits 1 if any fails.

Pooling references (for `--pool` and `--prefix-tokens` at a token cut):
next to dinov2_s14's exports, dinov2_s14.lastblock.cls.npy, .mean.npy and
.cls_mean.npy hold PyTorch's pooling of the last block's output (the token
tensor N x 261 x 384 before the final norm: CLS, 4 registers, 256 patches)
for the same batch: cls = x[:, 0]; mean = the mean of the patch tokens
x[:, 5:] (--prefix-tokens 5 excludes CLS and the registers); cls_mean =
concat(cls, mean), 768-d. dinov2_s14@OPSET[s].json names that tensor in each
export ("lastblock": the input of the final LayerNorm), and every
dinov2_s14 entry also runs `tool_embed_model --layer TENSOR --pool P
--prefix-tokens 5` for the three poolings in f32, held to the f32 bounds.
(The default embedding, dinov2_s14.feat.npy, is the final norm of cls, not
cls itself.)

Exports (~5 GB for all entries, 3.9 GB of them the 21 transformer and
ConvNeXt ones) and PyTorch's features are kept in --out and reused by later
runs (--fresh redoes them); delete the directory to reclaim the space.

usage: /usr/bin/python3 tools/conformance.py --tool build/tests/tool_embed_model
                   [--out build/conformance] [--only NAME...] [--quick] [--fresh]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnx
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402

CNNS = [
    "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg16_bn", "mobilenet_v2",
    "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b3", "efficientnet_v2_s",
    "regnet_y_400mf", "regnet_x_400mf", "densenet121", "squeezenet1_1", "mnasnet1_0",
]
# Exported at opsets 14 and 17, dynamic and static batch.
TOKENS = ["convnext_tiny", "vit_b_16", "swin_t", "dinov2_s14", "clip_b32"]
ATTENTION = ("vit_b_16", "swin_t", "dinov2_s14", "clip_b32")
QUICK_EXTRA = ["vit_b_16@14", "clip_b32@14"]
BATCH = 2
F32_TOL = 1e-4
F32_COS = 0.9999
BF16_COS = 0.999
BF16_COS_ATTENTION = 0.99
DINO_PREFIX = 5  # CLS + 4 registers


def entries(quick):
    """(entry, model, opset, dynamic) in run order."""
    out = [(n, n, 13, True) for n in CNNS]
    for n in TOKENS:
        for opset in (14, 17):
            for dyn in (True, False):
                e = "%s@%d%s" % (n, opset, "" if dyn else "s")
                if not quick or (opset == 17 and dyn) or e in QUICK_EXTRA:
                    out.append((e, n, opset, dyn))
    return out


def last_block(mp):
    """The tensor the final LayerNorm normalises: LayerNormalization's input
    (opset 17) or, decomposed, the input of the Sub feeding the last Pow."""
    producer = {o: n for n in mp.graph.node for o in n.output}
    for n in reversed(mp.graph.node):
        if n.op_type == "LayerNormalization":
            return n.input[0]
        if n.op_type == "Pow" and n.input[0] in producer and producer[n.input[0]].op_type == "Sub":
            return producer[n.input[0]].input[0]
    return None


class Model:
    """One model's PyTorch side, built only when something must be made."""

    def __init__(self, name, out, x, fresh):
        self.name, self.out, self.x, self.fresh = name, out, x, fresh
        self._model = None
        self.feat_path = os.path.join(out, name + ".feat.npy")

    def model(self):
        if self._model is None:
            self._model, self.family = export_models.full_model(self.name)
        return self._model

    def feature(self):
        if self.fresh or not os.path.exists(self.feat_path):
            feat = export_models.torch_feature(self.model(), self.family, self.x)
            save(self.feat_path, feat)
            if self.name == "dinov2_s14":
                import token_models
                for k, v in token_models.pooled_features(self.model(), self.x, DINO_PREFIX).items():
                    save(os.path.join(self.out, "dinov2_s14.lastblock.%s.npy" % k.replace("+", "_")), v)
            self.fresh = False
        return np.load(self.feat_path)

    def output_dim(self):
        with torch.no_grad():
            return int(self.model()(self.x[:1]).shape[1])


def save(path, a):
    np.save(path + ".tmp.npy", a)
    os.replace(path + ".tmp.npy", path)


def prepare(entry, m, opset, dynamic, fresh):
    """out/ENTRY.onnx (exported and checked unless it exists with its
    ENTRY.json) and PyTorch's features."""
    onnx_path = os.path.join(m.out, entry + ".onnx")
    info_path = os.path.join(m.out, entry + ".json")
    t0 = time.time()
    ref = m.feature()
    t1 = time.time()
    if fresh or not (os.path.exists(onnx_path) and os.path.exists(info_path)):
        export_models.export_model(m.model(), onnx_path, opset, dynamic)
        t2 = time.time()
        node, tensor = export_models.check_export(onnx_path, ref.shape[1], m.output_dim())
        info = {"model": m.name, "opset": opset, "dynamic_batch": dynamic,
                "default_layer": {"node": node, "tensor": tensor, "dim": ref.shape[1]},
                "feature": os.path.basename(m.feat_path),
                "seconds": {"torch_feature": round(t1 - t0, 1), "export": round(t2 - t1, 1),
                            "check": round(time.time() - t2, 1)}}
        if m.name == "dinov2_s14":
            info["lastblock"] = last_block(onnx.load(onnx_path))
            info["lastblock_refs"] = {"cls": "dinov2_s14.lastblock.cls.npy",
                                      "mean": "dinov2_s14.lastblock.mean.npy",
                                      "cls+mean": "dinov2_s14.lastblock.cls_mean.npy",
                                      "prefix_tokens": DINO_PREFIX}
        with open(info_path + ".tmp", "w") as f:
            json.dump(info, f, indent=1)
        os.replace(info_path + ".tmp", info_path)
    return onnx_path, ref


def first_line(text):
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[0].strip() if lines else ""


def embed(tool, onnx_path, in_path, out_path, bf16, batch, extra=()):
    """Run the tool; (embeddings, the primitives oneDNN ran as ref), or
    (None, the reason)."""
    cmd = [tool, "--threads", "2"] + (["--bf16"] if bf16 else []) + (["--batch", str(batch)] if batch else [])
    r = subprocess.run(cmd + list(extra) + [onnx_path, in_path, out_path], capture_output=True, text=True,
                       env=dict(os.environ, FC_PRIMS="1"))
    if r.returncode != 0:
        return None, (first_line(r.stderr) or "exit %d" % r.returncode)
    # FC_PRIMS: after the summary line, one "  OP NAME: IMPL ..." per primitive.
    refs = [ln.strip() for ln in r.stdout.splitlines()[1:]
            if ": " in ln and ln.split(": ", 1)[1].startswith("ref")]
    return np.load(out_path), refs


def rel_err(a, ref):
    return float(np.abs(a - ref).max() / max(np.abs(ref).max(), 1e-30))


def check_pooling(args, entry, onnx_path, in_path, batch):
    """dinov2_s14: the last block's tokens pooled by the engine (--layer,
    --pool, --prefix-tokens) against PyTorch's pooling; (ok, notes)."""
    with open(os.path.join(args.out, entry + ".json")) as f:
        info = json.load(f)
    refs = info["lastblock_refs"]
    ok, errs, notes = True, [], []
    for pool in ("cls", "mean", "cls+mean"):
        ref = np.load(os.path.join(args.out, refs[pool]))
        out_path = os.path.join(args.out, entry + ".pool.npy")
        got, msg = embed(args.tool, onnx_path, in_path, out_path, False, batch,
                         ["--layer", info["lastblock"], "--pool", pool,
                          "--prefix-tokens", str(refs["prefix_tokens"])])
        if got is None or got.shape != ref.shape:
            ok = False
            notes.append("pool %s: %s" % (pool, msg if got is None else "shape %s, torch %s" % (got.shape, ref.shape)))
            continue
        err = rel_err(got, ref)
        errs.append("%s %.2g" % (pool, err))
        if err > F32_TOL or cosines(got, ref).min() < F32_COS:
            ok = False
    notes.append("pooled last block (f32 max rel err): " + ", ".join(errs))
    return ok, notes


def cosines(a, b):
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def check(args, entry, m, opset, dynamic, in_path):
    """Run one entry; (ok, line, notes)."""
    t0 = time.time()
    try:
        onnx_path, ref = prepare(entry, m, opset, dynamic, args.fresh)
    except Exception as e:  # an export or a check failed: one line, not a traceback
        msg = "%s: %s" % (type(e).__name__, first_line(str(e)))
        return False, "%-20s %5s %16s %16s %7.0f  FAIL" % (entry, "-", "-", "-", time.time() - t0), ["export: " + msg]
    out_path = os.path.join(args.out, entry + ".out.npy")
    batch = 0 if dynamic else 1
    ok, notes = True, []
    f32, msg = embed(args.tool, onnx_path, in_path, out_path, False, batch)
    if f32 is None or f32.shape != ref.shape:
        ok, err = False, float("nan")
        notes.append("f32: " + (msg if f32 is None else "shape %s, torch %s" % (f32.shape, ref.shape)))
    else:
        err = rel_err(f32, ref)
        c32 = float(cosines(f32, ref).min())
        ok = err <= F32_TOL and c32 >= F32_COS
        if c32 < F32_COS:
            notes.append("f32: min cosine %.6f < %g" % (c32, F32_COS))
        if msg:
            ok = False
            notes += ["f32: ref primitive: " + r for r in msg]
    if m.name == "dinov2_s14":
        pok, pnotes = check_pooling(args, entry, onnx_path, in_path, batch)
        ok, notes = ok and pok, notes + pnotes
    bf, msg = embed(args.tool, onnx_path, in_path, out_path, True, batch)
    floor = BF16_COS_ATTENTION if m.name in ATTENTION else BF16_COS
    if bf is None and "native bf16" in msg:
        cos_s = "skip (no bf16)"
    elif bf is None or bf.shape != ref.shape:
        ok, cos_s = False, "error"
        notes.append("bf16: " + (msg if bf is None else "shape %s" % (bf.shape,)))
    else:
        cos = float(cosines(bf, ref).min())
        cos_s = "%.6f" % cos
        ok = ok and cos >= floor and not msg
        notes += ["bf16: ref primitive: " + r for r in msg]
    line = "%-20s %5d %16.3g %16s %7.0f  %s" % (entry, ref.shape[1], err, cos_s, time.time() - t0,
                                                 "PASS" if ok else "FAIL")
    return ok, line, notes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tool", required=True)
    ap.add_argument("--out", default="build/conformance")
    ap.add_argument("--only", nargs="*", help="entries (vit_b_16@17s) or models (vit_b_16: all its entries)")
    ap.add_argument("--quick", action="store_true", help="one variant per model, plus vit_b_16@14 and clip_b32@14")
    ap.add_argument("--fresh", action="store_true", help="export and compute PyTorch's features again")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    x = torch.randn(BATCH, 3, 224, 224, generator=torch.Generator().manual_seed(224))
    in_path = os.path.join(args.out, "input_224.npy")
    np.save(in_path, x.numpy().reshape(BATCH, -1))
    todo = [e for e in entries(args.quick and not args.only)
            if not args.only or e[0] in args.only or e[1] in args.only]
    if args.only and not todo:
        sys.exit("conformance: no entry named %s" % " ".join(args.only))
    t0 = time.time()
    failed, models = [], {}
    print("%-20s %5s %16s %16s %7s  %s" % ("model", "dim", "f32 max rel err", "bf16 min cosine", "seconds", "result"))
    for entry, name, opset, dynamic in todo:
        if name not in models:
            models.clear()  # one PyTorch model in memory at a time
            models[name] = Model(name, args.out, x, args.fresh)
        ok, line, notes = check(args, entry, models[name], opset, dynamic, in_path)
        print(line)
        for n in notes:
            print("    " + n)
        sys.stdout.flush()
        if not ok:
            failed.append(entry)
    print("conformance: %d models, %d failed%s, %.0f s" % (
        len(todo), len(failed), (": " + " ".join(failed)) if failed else "", time.time() - t0))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
