#!/bin/sh
# tools/demo.sh BUILD_DIR - what `make demo` runs.
#
# Until `featcache extract` exists (issue 4), the demo cannot start from
# images: it builds a synthetic feature store instead (tests/tool_mkstore:
# 20,000 64-d vectors of 20 classes buried in noise three times their size,
# as a frozen backbone meeting a new domain might give), then runs the rest
# of the pipeline for real: info, verify, train a projection head, eval
# before/after, embed. The Fashion-MNIST demo replaces this when extract
# lands.
set -eu
build=${1:-build}
F=$build/featcache
demo=${DEMO_DIR:-$build/demo}
rm -rf "$demo"
mkdir -p "$demo"
echo "== making a synthetic feature store in $demo/store (20,000 items, 20 classes)"
"$build/tests/tool_mkstore" --store "$demo/store" --dim 64 --items 20000 --classes 20 --noise 300 \
	--mixed-splits --dtype f16 >/dev/null
echo "== featcache info"
"$F" info --store "$demo/store"
echo "== featcache verify"
"$F" verify --store "$demo/store"
echo "== featcache train (triplet loss, semihard miner, 3-layer head to 32-d)"
"$F" train --store "$demo/store" --out "$demo/head.safetensors" --output-dim 32 --miner semihard \
	--epochs 8 --eval-split val
echo "== featcache eval on the test split (searching the train split)"
"$F" eval --store "$demo/store" --head "$demo/head.safetensors" --split test --index-split train
echo "== featcache embed (test split through the head)"
"$F" embed --store "$demo/store" --head "$demo/head.safetensors" --split test --out "$demo/test.npy"
