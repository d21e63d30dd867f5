#!/bin/sh
# tools/demo.sh BUILD_DIR - what `make demo` runs: Fashion-MNIST through the
# demo backbone into a store, then a projection head trained and evaluated
# over the cached features.
#
#   1. tools/fmnist_png turns Debian's Fashion-MNIST (dataset-fashion-mnist)
#      into 70,000 PNG files, DEMO/fmnist/{train,val,test}/<class>/<n>.png
#      (once; the last 5,000 training images are the val split).
#   2. featcache extract runs models/fmnist_resnet.onnx (a small ResNet that
#      was trained on classes 0-4 only: models/README.md) over every image.
#   3. featcache extract again: nothing is new, nothing is extracted.
#   4. featcache train: the default head (3 layers, 256-d), triplet loss with
#      the semihard miner, best epoch picked on val.
#   5. featcache eval on the test split: raw backbone features vs the head.
#   6. featcache report: the run's charts and, on the test split, what the
#      head learned: neighbour galleries with thumbnails, the per-class
#      table, the embedding map; DEMO/report.html, one offline file.
set -eu
build=${1:-build}
F=$build/featcache
demo=${DEMO_DIR:-$build/demo}
mkdir -p "$demo"
echo "== Fashion-MNIST as PNG files in $demo/fmnist"
"$build/tools/fmnist_png" --val 5000 "$demo/fmnist"
rm -rf "$demo/store"
echo "== featcache extract: 70,000 images through models/fmnist_resnet.onnx"
"$F" extract --store "$demo/store" --model models/fmnist_resnet.onnx --data "$demo/fmnist" \
	--preprocess finetuner --size 32 --batch 256
echo "== featcache extract again: only what is new (nothing)"
"$F" extract --store "$demo/store" --model models/fmnist_resnet.onnx --data "$demo/fmnist" \
	--preprocess finetuner --size 32 --batch 256 --quiet
echo "== featcache info"
"$F" info --store "$demo/store" --errors 0
echo "== featcache train: default head, triplet + semihard, 10 epochs, best epoch on val"
"$F" train --store "$demo/store" --out "$demo/head.safetensors" --miner semihard --epochs 10 \
	--eval-split val
echo "== featcache eval on the test split: raw backbone features vs the head"
"$F" eval --store "$demo/store" --head "$demo/head.safetensors" --split test
echo "== featcache embed: the test split through the head, for a search index"
"$F" embed --store "$demo/store" --head "$demo/head.safetensors" --split test --out "$demo/test.npy"
echo "== featcache report: the run, neighbour galleries, per-class table and map of the test split"
"$F" report "$demo/head.safetensors.jsonl" --store "$demo/store" --split test --out "$demo/report.html"
echo "demo report: $demo/report.html"
