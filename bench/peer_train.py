#!/usr/bin/python3
"""PyTorch peer of bench/train: the same projection head, triplet loss with
the semihard miner (tools/loss_ref.py's PML transcription), P x K sampler
and Adam, over the same features in RAM. Prints one line:
    seconds <s> batches <n> samples <rows> threads <t> blas <info>

usage: peer_train.py FEATURES.npy LABELS.npy EPOCH_BATCHES THREADS
"""
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import loss_ref  # noqa: E402


def main():
    feats, labels, max_batches, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    X = torch.from_numpy(np.load(feats))
    y = np.load(labels).reshape(-1).astype(np.int64)
    D, out, B, K = X.shape[1], 256, 128, 4
    layers = []
    for i in range(3):
        last = i == 2
        o = out if last else D
        layers += [torch.nn.Linear(D, o, bias=False), torch.nn.BatchNorm1d(o)]
        if not last:
            layers.append(torch.nn.ReLU())
    head = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    cfg = dict(kind="triplet", miner="semihard", distance="euclidean", margin=0.2)
    rng = np.random.default_rng(0)
    # P x K batches: shuffled groups of K items of one class, P = B / K distinct classes.
    groups = []
    for c in np.unique(y):
        idx = rng.permutation(np.where(y == c)[0])
        groups += [(c, idx[i:i + K]) for i in range(0, len(idx) - K + 1, K)]
    order = rng.permutation(len(groups))
    batches, cur, seen = [], [], set()
    for g in order:
        c, idx = groups[g]
        if c in seen:
            continue
        cur.append(idx)
        seen.add(c)
        if len(cur) == B // K:
            batches.append(np.concatenate(cur))
            cur, seen = [], set()
    batches = batches[:max_batches]
    head.train()
    t0 = time.perf_counter()
    rows = 0
    for idx in batches:
        xb, lb = X[idx], torch.from_numpy(y[idx])
        loss = loss_ref.triplet(head(xb), lb, cfg)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        rows += len(idx)
    dt = time.perf_counter() - t0
    # Debian's torch calls the system BLAS (BLAS_INFO=generic): name the library behind libblas.so.3.
    real = os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")
    blas = "openblas" if "openblas" in real else ("reference-blas" if "/blas/" in real else os.path.basename(real))
    print("seconds %.4f batches %d samples %d threads %d blas %s coretype %s" % (
        dt, len(batches), rows, torch.get_num_threads(), blas, os.environ.get("OPENBLAS_CORETYPE", "default")))


if __name__ == "__main__":
    main()
