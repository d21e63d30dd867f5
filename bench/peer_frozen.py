#!/usr/bin/python3
"""bench/peer_frozen.py - the PyTorch way of frozen-backbone training, timed.

The way Finetuner (and most PyTorch code) trains a projection head on a
frozen CNN: every step loads the batch's images from disk, decodes and
preprocesses them (PIL + torchvision transforms, a DataLoader with workers),
runs the backbone in eval mode under no_grad, and trains the head (Finetuner's
projection head, triplet loss with semihard mining over the batch, Adam).
The backbone runs on every batch of every epoch.

Prints one line: "per_image_s S images N" - the wall time per image of such
training, measured over N images after a warm-up batch. bench/frozen_vs_cache
multiplies it out to whole epochs (and says so).

usage: peer_frozen.py --data DIR [--images N] [--batch B] [--threads T] [--workers W]
"""
import argparse
import os
import sys
import time
import zlib

import torch
import torchvision
from PIL import Image
from torchvision import transforms


class Folder(torch.utils.data.Dataset):
    """DIR/<label>/<image>, as featcache reads it."""

    def __init__(self, root, limit):
        self.items = []
        labels = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        for li, lab in enumerate(labels):
            for f in sorted(os.listdir(os.path.join(root, lab))):
                self.items.append((os.path.join(root, lab, f), li))
        self.items.sort(key=lambda t: (zlib.crc32(t[0].encode()), t[0]))  # labels mixed, deterministic
        self.items = self.items[:limit]
        self.tf = transforms.Compose([
            transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        return self.tf(Image.open(path).convert("RGB")), label


def head(in_dim=2048, hidden=2048, out_dim=256, layers=3):
    mods, d = [], in_dim
    for i in range(layers - 1):
        mods += [torch.nn.Linear(d, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.ReLU()]
        d = hidden
    mods.append(torch.nn.Linear(d, out_dim))
    return torch.nn.Sequential(*mods)


def triplet_semihard(emb, labels, margin=0.2):
    d = torch.cdist(emb, emb)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    pos = same & ~eye
    a, p = pos.nonzero(as_tuple=True)
    if len(a) == 0:
        return emb.sum() * 0
    dap = d[a, p]
    dan = d[a]
    neg_ok = ~same[a] & (dan > dap[:, None]) & (dan < dap[:, None] + margin)
    if not neg_ok.any():
        return emb.sum() * 0
    r, n = neg_ok.nonzero(as_tuple=True)
    return torch.relu(dap[r] - d[a[r], n] + margin).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    backbone = torchvision.models.resnet50()
    backbone.fc = torch.nn.Identity()
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    h = head()
    opt = torch.optim.Adam(h.parameters(), lr=1e-3)
    ds = Folder(a.data, a.images + a.batch)
    dl = torch.utils.data.DataLoader(ds, batch_size=a.batch, num_workers=a.workers, drop_last=True)
    seen, t0 = 0, None
    for step, (x, y) in enumerate(dl):
        with torch.no_grad():
            f = backbone(x)
        h.train()
        loss = triplet_semihard(h(f), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 0:
            t0 = time.perf_counter()  # the first batch is warm-up
        else:
            seen += len(y)
    dt = time.perf_counter() - t0
    if seen == 0:
        sys.exit("peer_frozen: not enough images in %s" % a.data)
    print("per_image_s %.6f images %d" % (dt / seen, seen))


if __name__ == "__main__":
    main()
