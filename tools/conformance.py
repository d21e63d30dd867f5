#!/usr/bin/python3
"""conformance.py - full-size torchvision backbones through featcache's engine
against PyTorch: `make conformance`.

For every model: export it (tools/export_models.py --full: seeded random
weights, randomised BatchNorm statistics, LayerNorm and LayerScale
parameters, opset 13, 17 for ConvNeXt) into --out, compute
PyTorch's feature at the default embedding layer (the input of the last
Linear, pooled when 4-D; SqueezeNet's classifier Conv) for a seeded batch
of 224 x 224 images, then run tests/tool_embed_model on the same batch in
f32 and in bf16 and compare. One line per model:

    name  dim  f32 max rel err  bf16 min cosine  PASS/FAIL

f32 passes at a max relative error (max |ours - torch| / max |torch| over
the batch) <= 1e-4; bf16 at a cosine >= 0.999 for every embedding, and is
skipped (not failed) where the CPU has no native bf16 (the tool then
refuses with FC_ERR_UNSUPPORTED). Exits 1 if any model fails.

Exports and PyTorch's features are kept in --out and reused by later runs
(--fresh redoes them); delete the directory to reclaim its ~1.2 GB.

usage: /usr/bin/python3 tools/conformance.py --tool build/tests/tool_embed_model
                                             [--out build/conformance] [--only NAME...]
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402

MODELS = [
    "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg16_bn", "mobilenet_v2",
    "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b3", "regnet_y_400mf",
    "regnet_x_400mf", "densenet121", "squeezenet1_1", "mnasnet1_0", "convnext_tiny",
]
# Opset of each export (13 unless listed): LayerNormalization is an op from
# opset 17; below it torch writes the decomposed form, not supported yet.
OPSET = {"convnext_tiny": 17}
BATCH = 2
F32_TOL = 1e-4
BF16_COS = 0.999


def prepare(name, out, x, fresh):
    """out/NAME.onnx and PyTorch's features out/NAME.feat.npy, made unless
    both exist already."""
    onnx_path = os.path.join(out, name + ".onnx")
    feat_path = os.path.join(out, name + ".feat.npy")
    if fresh or not (os.path.exists(onnx_path) and os.path.exists(feat_path)):
        _, model, family = export_models.export_full(name, out, OPSET.get(name, 13))
        feat = export_models.torch_feature(model, family, x)
        np.save(feat_path + ".tmp.npy", feat)
        os.replace(feat_path + ".tmp.npy", feat_path)
    return onnx_path, np.load(feat_path)


def embed(tool, onnx_path, in_path, out_path, bf16):
    """Run the tool; the embeddings, or None with the reason."""
    cmd = [tool, "--threads", "2"] + (["--bf16"] if bf16 else []) + [onnx_path, in_path, out_path]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return None, (r.stderr.strip() or "exit %d" % r.returncode)
    return np.load(out_path), r.stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tool", required=True)
    ap.add_argument("--out", default="build/conformance")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    x = torch.randn(BATCH, 3, 224, 224, generator=torch.Generator().manual_seed(224))
    in_path = os.path.join(args.out, "input_224.npy")
    np.save(in_path, x.numpy().reshape(BATCH, -1))
    t0 = time.time()
    failed = []
    print("%-20s %5s %16s %16s  %s" % ("model", "dim", "f32 max rel err", "bf16 min cosine", "result"))
    for name in MODELS:
        if args.only and name not in args.only:
            continue
        onnx_path, ref = prepare(name, args.out, x, args.fresh)
        out_path = os.path.join(args.out, name + ".out.npy")
        ok, notes = True, []
        f32, msg = embed(args.tool, onnx_path, in_path, out_path, False)
        if f32 is None or f32.shape != ref.shape:
            ok, err = False, float("nan")
            notes.append("f32: " + (msg if f32 is None else "shape %s, torch %s" % (f32.shape, ref.shape)))
        else:
            err = float(np.abs(f32 - ref).max() / max(np.abs(ref).max(), 1e-30))
            ok = err <= F32_TOL
        bf, msg = embed(args.tool, onnx_path, in_path, out_path, True)
        if bf is None and "native bf16" in msg:
            cos_s = "skip (no bf16)"
        elif bf is None or bf.shape != ref.shape:
            ok, cos_s = False, "error"
            notes.append("bf16: " + (msg if bf is None else "shape %s" % (bf.shape,)))
        else:
            cos = (bf * ref).sum(1) / np.maximum(np.linalg.norm(bf, axis=1) * np.linalg.norm(ref, axis=1), 1e-30)
            cos_s = "%.6f" % cos.min()
            ok = ok and bool(cos.min() >= BF16_COS)
        print("%-20s %5d %16.3g %16s  %s" % (name, ref.shape[1], err, cos_s, "PASS" if ok else "FAIL"))
        for n in notes:
            print("    " + n)
        sys.stdout.flush()
        if not ok:
            failed.append(name)
    print("conformance: %d models, %d failed%s, %.0f s" % (
        len(args.only or MODELS), len(failed), (": " + " ".join(failed)) if failed else "", time.time() - t0))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
