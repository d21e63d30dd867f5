#!/bin/sh
# tests/cli/memory.sh - train, sweep and eval within a memory limit: a
# store forced to stream (a small --max-memory, a cache of two chunks)
# gives the head, the log's metrics and eval's metrics of the run that
# holds its features in RAM, bit for bit; a limit that even streaming
# cannot keep is a clear error naming the need and the limit; bad sizes
# are usage errors.
NAME=memory
. "$(dirname "$0")/lib.inc"

# 512-d f16: 1 KiB a row, so the features (7 MiB) decide between RAM and
# streaming at limits a little above what a run takes besides them.
run "$MK" --store s --dim 512 --items 8000 --classes 40 --noise 300 --mixed-splits --dtype f16
t "tool_mkstore makes an f16 store" 0
export OMP_NUM_THREADS=2
common="--store s --output-dim 16 --batch-size 64 --epochs 2 --seed 5"

run "$F" train $common --out a.safetensors
t "train holds the features in RAM by default" 0 !out '^features: streamed'
run "$F" train $common --out b.safetensors --max-memory 111M --cache 64k
t "train streams under a small --max-memory" 0 \
	out '^features: streamed from the store through a 64 KiB cache \(in memory they would need [0-9.]+ MiB, the limit is 111 MiB\)'
ok_if "the streamed head is bit-identical to the in-memory one" cmp -s a.safetensors b.safetensors
sed 's/"seconds":[^,]*,"samples_per_s":[^,]*,//' a.safetensors.jsonl >a.log
sed 's/"seconds":[^,]*,"samples_per_s":[^,]*,//' b.safetensors.jsonl >b.log
ok_if "the streamed run logs the same losses and metrics" cmp -s a.log b.log
ok_if "the log has its epochs" [ "$(grep -c '"epoch"' a.log)" -eq 2 ]

run "$F" train $common --out c.safetensors --max-memory 50M
t "a limit streaming cannot keep is a clear error" 1 \
	err "^featcache: train needs [0-9.]+ MiB of memory with its features streamed \(a 256 MiB cache, [0-9.]+ MiB for the item records and what train computes\), more than the limit of 50 MiB: raise --max-memory or lower --cache$"
ok_if "and writes no head" [ ! -e c.safetensors ]
run "$F" train $common --out c.safetensors --max-memory 12Q
t "a bad size is a usage error" 2 err "bad value '12Q' for --max-memory: expected a size"
run "$F" train $common --out c.safetensors --cache -1
t "a negative cache is a usage error" 2 err "bad value '-1' for --cache"

# eval: the train split searched among itself, raw and through the head.
run "$F" eval --store s --head a.safetensors --split train
t "eval in RAM" 0 out '^average_precision'
cp out e1
run "$F" eval --store s --head a.safetensors --split train --max-memory 135M --cache 64k
t "eval streamed" 0 out '^features: streamed'
grep -v '^features: streamed' out >e2
ok_if "streamed eval prints the same metrics" cmp -s e1 e2
run "$F" eval --store s --head a.safetensors --split train --max-memory 20M
t "eval refuses a limit it cannot keep" 1 err '^featcache: eval needs [0-9.]+ MiB of memory with its features streamed'

# sweep: heads stepped together on streamed batches.
run "$F" sweep --store s --out g1 --grid lr=1e-3,3e-3 --output-dim 16 --batch-size 64 --epochs 2 --seed 5
t "sweep in RAM" 0
run "$F" sweep --store s --out g2 --grid lr=1e-3,3e-3 --output-dim 16 --batch-size 64 --epochs 2 --seed 5 \
	--max-memory 111M --cache 64k
t "sweep streamed" 0 out '^features: streamed'
ok_if "streamed sweep heads are bit-identical" cmp -s g1/c0000.safetensors g2/c0000.safetensors &&
	cmp -s g1/c0001.safetensors g2/c0001.safetensors
ok_if "and the in-memory sweep's c0000 is train's head" cmp -s g1/c0000.safetensors a.safetensors

# embed: the .npy written a block at a time from RAM or from the stream.
run "$F" embed --store s --out m1.npy --head a.safetensors
t "embed holds the features in RAM by default" 0 !out '^features: streamed'
run "$F" embed --store s --out m2.npy --head a.safetensors --max-memory 108M --cache 64k
t "embed streams under a small --max-memory" 0 out '^features: streamed'
ok_if "the streamed embeddings and keys are the in-memory ones, bit for bit" \
	sh -c 'cmp -s m1.npy m2.npy && cmp -s m1.npy.keys m2.npy.keys'
run "$F" embed --store s --out m3.npy --max-memory 20M
t "embed refuses a limit it cannot keep" 1 \
	err '^featcache: embed needs [0-9.]+ MiB of memory with its features streamed \(a 256 MiB cache, [0-9.]+ MiB for the item records and what embed computes\)'
ok_if "... and writes no file" test ! -e m3.npy

[ "$failures" -eq 0 ]
