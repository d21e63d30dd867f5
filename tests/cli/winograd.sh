#!/bin/sh
# tests/cli/winograd.sh - which convolutions `featcache extract` runs in f32
# on a model with wide 3x3 stride-1 convs (the squeezenet1_1 fixture: its
# last expand convs are 64 -> 256): a run of at least 64 images takes the
# Winograd engine (oneDNN's verbose lines name jit_wino), a shorter one and
# bf16 compute directly (its weight transform would cost more than it
# saves), and the vectors of the images both runs share (stored as f32)
# agree to 1e-5 of the largest value. Skips where oneDNN has no Winograd
# (no AVX-512).
NAME=winograd
. "$(dirname "$0")/lib.inc"

IMG=$FC_TOOLS/tool_mkimage
MODEL=${FC_TOP:?}/tests/fixtures/models/squeezenet1_1_f16.onnx
X="--model $MODEL --size 64 --batch 16 --quiet --store-dtype f32"
mk() { "$IMG" "$@" || echo "# tool_mkimage $* failed"; }

run "$F" layers --model "$MODEL" --size 64 --batch 16 --precision f32
if ! grep -q 'wino' out; then
	echo "ok - winograd # SKIP onednn has no winograd convolution on this cpu"
	exit 0
fi
t "layers shows the Winograd convs of a full engine" 0 out 'Conv: jit_wino_4x3:avx512_core'

mkdir -p long/a short/a
i=1
while [ $i -le 70 ]; do
	mk long/a/p$i.png 48 40 $((300 + i))
	[ $i -le 20 ] && cp long/a/p$i.png short/a/
	i=$((i + 1))
done

run env ONEDNN_VERBOSE=1 "$F" extract --store long.st --data long $X
t "70 images: the run computes with Winograd" 0 out '^images: 70 extracted' \
	out '^onednn_verbose,exec,cpu,convolution,jit_wino'
run env ONEDNN_VERBOSE=1 "$F" extract --store short.st --data short $X
t "20 images: direct convolutions only" 0 out '^images: 20 extracted' \
	out '^onednn_verbose,exec,cpu,convolution,' '!out' 'wino'
run env ONEDNN_VERBOSE=1 "$F" extract --store bf.st --data long $X --precision bf16
if grep -q 'needs a cpu with native bf16' err; then
	echo "ok - bf16: direct convolutions # SKIP no native bf16"
else
	t "bf16: direct convolutions, whatever the run's length" 0 out '^images: 70 extracted' '!out' 'wino'
fi

run "$F" embed --store long.st --out long.npy --keys long.keys
run "$F" embed --store short.st --out short.npy --keys short.keys
pynp "the 20 shared images: the same vectors to 1e-5 of the largest" long.npy '
import sys
import numpy as np
a = np.load("long.npy"); b = np.load("short.npy")
ka = open("long.keys").read().split("\n")[:-1]; kb = open("short.keys").read().split("\n")[:-1]
assert a.shape[0] == 70 and b.shape[0] == 20, (a.shape, b.shape)
row = {k: i for i, k in enumerate(ka)}
d = max(float(np.abs(a[row[k]] - b[i]).max()) for i, k in enumerate(kb))
big = float(np.abs(a).max())
print("# largest difference %.3g of the largest value %.3g" % (d / big, big), file=sys.stderr)
assert 0 < big and d <= 1e-5 * big, (d, big)
'

exit $((failures > 0))
