#!/usr/bin/python3
"""tools/make_tensorio_fixtures.py - fixtures for tests/test_tensorio.c, and
the interoperability check of what featcache's writers produce.

  make_tensorio_fixtures.py [OUTDIR]   write the fixtures (default
                                       tests/fixtures/tensorio):
      ref.safetensors   a head-shaped safetensors file built here with struct
                        and json only, following the format description
                        (github.com/huggingface/safetensors#format); the C
                        writer must reproduce it byte for byte
      np_*.npy          small matrices written by numpy itself (f4, f2,
                        Fortran order, big-endian, format 2.0)
  make_tensorio_fixtures.py --check DIR
                        read DIR/c_ref.safetensors and DIR/c_*.npy, written
                        by test_tensorio when FC_TENSORIO_EXPORT=DIR: parse
                        the safetensors by hand, build every tensor with
                        torch.frombuffer, load the head tensors into a torch
                        module with load_state_dict(strict=True), and read
                        the .npy files with np.load; print OK per check.

The values are closed formulas that test_tensorio.c computes too.
Needs numpy (fixtures) and torch (--check); the test suite needs neither.
"""
import json
import os
import struct
import sys

import numpy as np

IN_DIM, OUT_DIM = 4, 3

# The metadata exercises the header's string escaping: quotes, a backslash,
# newline and tab, a control character and UTF-8.
META = [
    ("format", "pt"),
    ("featcache", '{"in_dim":4,"note":"caf\u00e9 \\ \x01\tx"}\n'),
]
ODD_NAME = 'odd "name"\\\u00e9'


def tensors():
    """(name, dtype, shape, bytes) in file order; see head_tensors() in test_tensorio.c."""
    n_w = OUT_DIM * IN_DIM
    out = [
        ("head_layers.0.weight", "F32", [OUT_DIM, IN_DIM],
         struct.pack("<%df" % n_w, *[i * 0.25 - 1.5 for i in range(n_w)])),
        ("head_layers.1.weight", "F32", [OUT_DIM],
         struct.pack("<3f", *[1.0 + 0.5 * i for i in range(OUT_DIM)])),
        ("head_layers.1.bias", "F32", [OUT_DIM],
         struct.pack("<3f", *[-0.125 * i for i in range(OUT_DIM)])),
        ("head_layers.1.running_mean", "F32", [OUT_DIM],
         struct.pack("<3f", *[0.75 * i for i in range(OUT_DIM)])),
        ("head_layers.1.running_var", "F32", [OUT_DIM],
         struct.pack("<3f", *[2.0 + i for i in range(OUT_DIM)])),
        ("head_layers.1.num_batches_tracked", "I64", [], struct.pack("<q", 7)),
        ("extra.half", "F16", [2, 2], struct.pack("<4e", 1.0, -2.0, 0.5, 65504.0)),
        ("extra.empty", "F32", [0, 5], b""),
        (ODD_NAME, "F32", [1], struct.pack("<f", 3.0)),
    ]
    return out


def safetensors_bytes(items, meta):
    header = {}
    if meta:
        header["__metadata__"] = dict(meta)
    pos = 0
    for name, dtype, shape, data in items:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + len(data)]}
        pos += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(d for _, _, _, d in items)


def npy_matrix(rows, cols):
    """value (r, c) = (r * cols + c) * 0.5 - 3, as in npy_value() in test_tensorio.c"""
    return (np.arange(rows * cols, dtype=np.float64).reshape(rows, cols) * 0.5 - 3).astype(np.float32)


def make(outdir):
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "ref.safetensors"), "wb") as f:
        f.write(safetensors_bytes(tensors(), META))
    m = npy_matrix(3, 5)
    np.save(os.path.join(outdir, "np_f4.npy"), m)
    np.save(os.path.join(outdir, "np_f2.npy"), m.astype(np.float16))
    np.save(os.path.join(outdir, "np_f4_fortran.npy"), np.asfortranarray(m))
    np.save(os.path.join(outdir, "np_f4_be.npy"), m.astype(">f4"))
    with open(os.path.join(outdir, "np_f4_v2.npy"), "wb") as f:
        np.lib.format.write_array(f, m, version=(2, 0))
    print("wrote fixtures to %s (numpy %s)" % (outdir, np.__version__))


# ---- --check ----

def read_safetensors(path):
    """A hand parser: header length, JSON header, tensors via torch.frombuffer."""
    import torch
    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "F64": torch.float64, "I64": torch.int64, "I32": torch.int32,
              "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    buf = bytearray(raw[8 + n:])
    meta = header.pop("__metadata__", {})
    out = {}
    covered = 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        b, e = info["data_offsets"]
        assert b == covered, "hole or overlap before %r" % name
        covered = e
        dt = dtypes[info["dtype"]]
        shape = info["shape"]
        if e == b:
            t = torch.empty(shape, dtype=dt)
        else:
            t = torch.frombuffer(buf, dtype=dt, count=(e - b) // t_size(dt), offset=b).reshape(shape)
        out[name] = t.clone()
    assert covered == len(buf), "trailing bytes"
    return meta, out


def t_size(dt):
    import torch
    return torch.tensor([], dtype=dt).element_size()


def check(d):
    import torch
    path = os.path.join(d, "c_ref.safetensors")
    meta, got = read_safetensors(path)
    ok = meta == dict(META)
    if not ok:
        print("FAIL metadata %r" % meta)
    for name, dtype, shape, data in tensors():
        t = got[name]
        ref = torch.frombuffer(bytearray(data), dtype=t.dtype).reshape(shape) if data else torch.empty(shape, dtype=t.dtype)
        if list(t.shape) != shape or not torch.equal(t, ref):
            print("FAIL tensor %r: %r" % (name, t))
            ok = False
    print("%s torch %s: %d tensors of %s read with torch.frombuffer, values as expected"
          % ("OK" if ok else "FAIL", torch.__version__, len(got), path))

    head = torch.nn.Module()
    head.head_layers = torch.nn.Sequential(torch.nn.Linear(IN_DIM, OUT_DIM, bias=False),
                                           torch.nn.BatchNorm1d(OUT_DIM))
    sd = {k: v for k, v in got.items() if k.startswith("head_layers.")}
    head.load_state_dict(sd, strict=True)
    head.eval()
    x = torch.ones(2, IN_DIM)
    y = head.head_layers(x)
    w = sd["head_layers.0.weight"]
    z = x @ w.T
    bn = sd["head_layers.1.weight"] * (z - sd["head_layers.1.running_mean"]) / torch.sqrt(
        sd["head_layers.1.running_var"] + 1e-5) + sd["head_layers.1.bias"]
    good = torch.allclose(y, bn) and int(head.head_layers[1].num_batches_tracked) == 7
    print("%s load_state_dict(strict=True) into Linear(%d,%d,bias=False) + BatchNorm1d(%d); eval forward matches"
          % ("OK" if good else "FAIL", IN_DIM, OUT_DIM, OUT_DIM))
    ok &= good

    ref_bytes = safetensors_bytes(tensors(), META)
    with open(path, "rb") as f:
        same = f.read() == ref_bytes
    print(("OK" if same else "FAIL") + " c_ref.safetensors is byte-identical to the struct+json reference")
    ok &= same

    for name, (rows, cols) in (("c_matrix.npy", (4, 3)), ("c_stream.npy", (7, 5)), ("c_empty.npy", (0, 6))):
        p = os.path.join(d, name)
        a = np.load(p, allow_pickle=False)
        with open(p, "rb") as f:
            f.read(8)
            (hl,) = struct.unpack("<H", f.read(2))
        good = (a.dtype == np.dtype("<f4") and a.shape == (rows, cols) and a.flags.c_contiguous
                and np.array_equal(a, npy_matrix(rows, cols)) and (10 + hl) % 64 == 0)
        print("%s np.load(%s): %s %s, data at byte %d" % ("OK" if good else "FAIL", name, a.dtype.str, a.shape, 10 + hl))
        ok &= good
    return 0 if ok else 1


def main(argv):
    if len(argv) == 3 and argv[1] == "--check":
        return check(argv[2])
    if len(argv) > 2 or (len(argv) == 2 and argv[1].startswith("-")):
        print(__doc__)
        return 2
    make(argv[1] if len(argv) == 2 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tensorio"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
