#!/usr/bin/python3
"""PyTorch eager peer of bench/extract_engine: torchvision's MODEL (resnet50
unless named; vit_b_16, convnext_tiny, ...: random weights, eval mode,
torch.inference_mode, default NCHW layout, f32) on random BATCH x 3 x 224 x
224 batches with THREADS threads; warms up, then times runs for at least
SECONDS in windows of at least SECONDS/5, like bench/extract_engine.
Start-up is the time from building the model to the end of its first
batch (building includes torchvision's random initialisation, which costs
about what loading the weights would). Prints one line:
    images/s <best window> mean <all windows> runs <n> seconds <s> startup <s> torch <version>

usage: peer_torch.py BATCH THREADS SECONDS [MODEL]
"""
import sys
import time

import torch
import torchvision


def main():
    batch, threads, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    name = sys.argv[4] if len(sys.argv) > 4 else "resnet50"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        t0 = time.perf_counter()
        model = getattr(torchvision.models, name)().eval()
        model(x)
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = 1
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
    print("images/s %.3f mean %.3f runs %d seconds %.2f startup %.3f torch %s"
          % (best, runs * batch / total, runs, total, startup, torch.__version__))


if __name__ == "__main__":
    main()
