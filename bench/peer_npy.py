#!/usr/bin/python3
"""bench/peer_npy.py - the numpy peer of bench/store.c.

  peer_npy.py FILE.npy [RUNS]   print the best wall time in seconds, over RUNS
                                runs (default 3), of loading FILE into an f32
                                matrix: np.load(FILE).astype(np.float32, copy=False)
  peer_npy.py --version         print the numpy version

copy=False keeps the f32 file from being copied a second time after it was
read (what a numpy user would write); an f16 file is converted either way.
Exits 3 with a one-line reason when numpy is missing, 2 on bad usage.
"""
import sys
import time

try:
    import numpy as np
except ImportError as e:
    print("numpy is not installed (%s)" % e)
    sys.exit(3)


def main(argv):
    if len(argv) == 2 and argv[1] == "--version":
        print("numpy %s, python %d.%d" % (np.__version__, sys.version_info[0], sys.version_info[1]))
        return 0
    if len(argv) not in (2, 3):
        print("usage: peer_npy.py FILE.npy [RUNS]")
        return 2
    path = argv[1]
    runs = int(argv[2]) if len(argv) == 3 else 3
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        m = np.load(path).astype(np.float32, copy=False)
        t = time.perf_counter() - t0
        if m.ndim != 2 or m.dtype != np.float32:
            print("unexpected array %s %s" % (m.shape, m.dtype))
            return 1
        del m
        best = min(best, t)
    print("%.6f" % best)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
