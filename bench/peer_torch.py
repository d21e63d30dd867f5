#!/usr/bin/python3
"""PyTorch eager peer of bench/extract_engine: torchvision's resnet50
(random weights, eval mode, torch.inference_mode, default NCHW layout, f32)
on random BATCH x 3 x 224 x 224 batches with THREADS threads; warms up,
then times runs for at least SECONDS in windows of at least SECONDS/5, like
bench/extract_engine. Prints one line:
    images/s <best window> mean <all windows> runs <n> seconds <s> torch <version>

usage: peer_torch.py BATCH THREADS SECONDS
"""
import sys
import time

import torch
import torchvision


def main():
    batch, threads, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        t0 = time.perf_counter()
        warm = 0
        while warm < 2 or time.perf_counter() - t0 < 1.0:
            model(x)
            warm += 1
        runs, total, best = 0, 0.0, 0.0
        while total < secs:
            w0, n, el = time.perf_counter(), 0, 0.0
            while n < 1 or el < secs / 5:
                model(x)
                n += 1
                el = time.perf_counter() - w0
            best = max(best, n * batch / el)
            total += el
            runs += n
    print("images/s %.3f mean %.3f runs %d seconds %.2f torch %s"
          % (best, runs * batch / total, runs, total, torch.__version__))

if __name__ == "__main__":
    main()
