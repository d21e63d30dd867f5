#!/bin/sh
# tests/cli/format1.sh - a store in format 1, made by the featcache before
# format 2 (tests/fixtures/store_v1, its README says how), used by this
# build: info, verify, embed (the same vectors, bit for bit, as a format-2
# store extracted now from the same images), train, extract into it (it
# stays format 1), merge both ways with a format-2 store, gc and repair.
NAME=format1
. "$(dirname "$0")/lib.inc"

FX=${FC_TOP:?}/tests/fixtures/store_v1
MODEL=$FC_TOP/tests/fixtures/models/resnet18_narrow.onnx
X="--model $MODEL --size 64 --batch 4 --quiet"
T="--epochs 2 --batch-size 4 --items-per-class 2 --output-dim 8 --eval-split none --quiet"

mkdir v1.st
cp "$FX/data.mdb" v1.st/
chmod u+w v1.st/data.mdb
cp -r "$FX/images" images

run "$F" info --store v1.st
t "info: a format-1 store" 0 out '^format +1$' out '^items +9 \(1 failed\)$' out '^vectors +7,'
run "$F" verify --store v1.st
t "verify: the format-1 store is sound" 0

# The same images extracted now, into a new store: format 2, same vectors.
run "$F" extract --store v2.st --data images $X
t "extract into a new store" 0 out '^images: 7 extracted, 1 deduplicated, 1 failed'
run "$F" info --store v2.st
t "info: a new store is format 2" 0 out '^format +2$'
run "$F" embed --store v1.st --split all --out v1.npy --keys v1.keys
t "embed the format-1 store" 0
run "$F" embed --store v2.st --split all --out v2.npy --keys v2.keys
ok_if "embed: the same keys from both formats" cmp -s v1.keys v2.keys
ok_if "embed: the same vectors from both formats, bit for bit" cmp -s v1.npy v2.npy
ok_if "embed: 8 rows (the failed item has none)" [ "$(wc -l <v1.keys)" -eq 8 ]

run "$F" train --store v1.st --out h1.safetensors $T
t "train on the format-1 store" 0
ok_if "train wrote a head" [ -s h1.safetensors ]

# Extracting into it: nothing to do, then one new image, in format 1.
run "$F" extract --store v1.st --data images $X
t "extract over the same images: nothing new" 0 out '^images: 0 extracted'
"$FC_TOOLS/tool_mkimage" images/train/dog/new.png 52 44 99 || echo "# tool_mkimage failed"
run "$F" extract --store v1.st --data images $X
t "extract a new image into the format-1 store" 0 out '^images: 1 extracted, 0 deduplicated, 0 failed'
run "$F" info --store v1.st
t "info: still format 1, with the new item" 0 out '^format +1$' out '^items +10 \(1 failed\)$' out '^vectors +8,'
run "$F" verify --store v1.st
t "verify: sound after writing format-1 records" 0
run "$F" embed --store v1.st --split all --out v1b.npy --keys v1b.keys
t "embed after the new extract" 0
ok_if "embed: the new item is there" grep -q '^train/dog/new.png$' v1b.keys

# Merging: format 1 into a new (format 2) store, and format 2 into format 1.
run "$F" merge --store m2.st v1.st
t "merge the format-1 store into a new one" 0 out '^items +10 copied, 0 already there$'
run "$F" info --store m2.st
t "info: the merged store is format 2" 0 out '^format +2$' out '^items +10 \(1 failed\)$'
run "$F" verify --store m2.st
t "verify: the merged store" 0
run "$F" embed --store m2.st --split all --out m2.npy --keys m2.keys
ok_if "embed: the merged store has the same vectors" cmp -s m2.npy v1b.npy
cp -r v2.st v2b.st
run "$F" extract --store v2b.st --data images $X
t "extract the new image into a format-2 store" 0 out '^images: 1 extracted'
run "$F" merge --store v1.st v2b.st
t "merge a format-2 store into the format-1 store: everything already there" 0 \
	out '^items +0 copied, 10 already there$'
mkdir other && "$FC_TOOLS/tool_mkimage" other/z.png 30 30 123 || echo "# tool_mkimage failed"
mkdir -p other2/cat && mv other/z.png other2/cat/
run "$F" extract --store o.st --data other2 $X
t "extract another dataset" 0
run "$F" merge --store v1.st o.st
t "merge its store into the format-1 store" 0 out '^items +1 copied, 0 already there$'
run "$F" info --store v1.st
t "info: format 1, 11 items" 0 out '^format +1$' out '^items +11 \(1 failed\)$'

# gc and repair keep it format 1 and sound.
rm images/train/cat/b.jpg
run "$F" extract --store v1.st --data images $X
t "extract after a deletion" 0 out '^items: [0-9]+ seen, 0 new, 0 changed, 2 removed$'
run "$F" gc --store v1.st
t "gc the format-1 store" 0
run "$F" verify --store v1.st
t "verify after gc" 0
run "$F" verify --repair --store v1.st
t "verify --repair: nothing to fix" 0
run "$F" info --store v1.st
t "info: format 1, 9 items after gc" 0 out '^format +1$' out '^items +9 \(1 failed\)$'
run "$F" embed --store v1.st --split all --out v1c.npy --keys v1c.keys
ok_if "embed after gc: the rest of the vectors" [ "$(wc -l <v1c.keys)" -eq 8 ]

exit $((failures > 0))
