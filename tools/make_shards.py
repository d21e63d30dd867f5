#!/usr/bin/env python3
"""tools/make_shards.py - turn a class-folder tree (or a path,label CSV) into
WebDataset tar shards that `featcache extract --data` reads.

    python3 tools/make_shards.py SRC OUT [--per-shard N] [--prefix P] [--gzip] [--format F]

SRC is a directory DIR/<label>/<image> (optionally DIR/{train,val,test}/<label>/
<image>: each split gets its own OUT/<split>/ shards) or a CSV of path,label
rows (paths relative to the CSV; a header row path,label is skipped). Each
image becomes one sample: <key>.png or <key>.jpg (the file's bytes, unchanged),
<key>.cls (the label's index among the sorted label names) and <key>.json
({"label": name}). Keys are the image's path with '/' turned into '_' and its
extension dropped, so each sample's members sit together. Shards are
OUT/[<split>/]<prefix>NNNNN.tar with N samples each (default 1000), members in
sorted key order, mtimes 0 and owners root, so the same tree gives the same
bytes. Standard library only.
"""
import argparse
import csv
import io
import json
import os
import sys
import tarfile

IMAGE_EXT = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png"}
SPLITS = ("train", "val", "test")
FORMATS = {"pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT, "ustar": tarfile.USTAR_FORMAT}


def folder_items(root):
    """(split or None, relative path, label) for every image of a class-folder tree."""
    tops = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    split_level = bool(tops) and all(d in SPLITS for d in tops)
    groups = [(d, os.path.join(root, d)) for d in tops] if split_level else [(None, root)]
    items = []
    for split, base in groups:
        for label in sorted(os.listdir(base)):
            ldir = os.path.join(base, label)
            if not os.path.isdir(ldir):
                continue
            for dirpath, _, files in os.walk(ldir):
                for f in sorted(files):
                    if os.path.splitext(f)[1].lower() in IMAGE_EXT:
                        full = os.path.join(dirpath, f)
                        items.append((split, os.path.relpath(full, root), label, full))
    return items


def csv_items(path):
    base = os.path.dirname(os.path.abspath(path))
    items = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row or (i == 0 and row[:2] == ["path", "label"]):
                continue
            if len(row) < 2:
                sys.exit(f"make_shards: {path}: line {i + 1}: expected path,label")
            split = row[2] if len(row) > 2 and row[2] else None
            items.append((split, row[0], row[1], os.path.join(base, row[0])))
    return items


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--per-shard", type=int, default=1000, help="samples per shard (default 1000)")
    ap.add_argument("--prefix", default="", help="shard file name prefix")
    ap.add_argument("--gzip", action="store_true", help="write .tar.gz shards")
    ap.add_argument("--format", choices=("pax", "gnu", "ustar"), default="pax", help="tar header format")
    a = ap.parse_args()
    if a.per_shard < 1:
        sys.exit("make_shards: --per-shard must be at least 1")
    items = csv_items(a.src) if os.path.isfile(a.src) else folder_items(a.src)
    if not items:
        sys.exit(f"make_shards: no images (.jpg, .jpeg, .png) in '{a.src}'")
    labels = sorted({label for _, _, label, _ in items})
    index = {name: i for i, name in enumerate(labels)}
    by_split = {}
    for split, rel, label, full in items:
        by_split.setdefault(split, []).append((rel, label, full))
    total = 0
    for split, rows in sorted(by_split.items(), key=lambda kv: kv[0] or ""):
        rows.sort()
        outdir = os.path.join(a.out, split) if split else a.out
        os.makedirs(outdir, exist_ok=True)
        for s in range(0, len(rows), a.per_shard):
            name = os.path.join(outdir, f"{a.prefix}{s // a.per_shard:05d}.tar" + (".gz" if a.gzip else ""))
            with tarfile.open(name, "w:gz" if a.gzip else "w", format=FORMATS[a.format]) as tar:
                for rel, label, full in rows[s : s + a.per_shard]:
                    stem, ext = os.path.splitext(rel)
                    key = stem.replace(os.sep, "_").replace(".", "_")
                    with open(full, "rb") as f:
                        add(tar, f"{key}.{IMAGE_EXT[ext.lower()]}", f.read())
                    add(tar, f"{key}.cls", str(index[label]).encode())
                    add(tar, f"{key}.json", json.dumps({"label": label}).encode())
            total += 1
    print(f"{len(items)} samples, {len(labels)} labels, {total} shards in {a.out}")


if __name__ == "__main__":
    main()
