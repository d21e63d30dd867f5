#!/bin/sh
# tests/cli/repair.sh - a damaged chunk in a store that extract built, and
# the way back: verify names it (and records it, so info shows it), train
# and embed fail pointing at `verify --repair`, the repair drops exactly the
# chunk and its index entries, the next extract re-extracts exactly those
# images, and the store then verifies clean and embeds bit-identically to an
# undamaged copy. Repair on a sound store writes nothing.
NAME=repair
. "$(dirname "$0")/lib.inc"

IMG=$FC_TOOLS/tool_mkimage
# A flattened token layer (197 x 32 = 6304-d) makes vectors large enough
# that extract's chunks of >= 64 KiB hold a few of them: 8 in f16.
MODEL=${FC_TOP:?}/tests/fixtures/models/vit_narrow.onnx
X="--model $MODEL --layer /encoder/layers/encoder_layer_1/Add_1 --pool flatten --batch 4 --quiet"
export OMP_NUM_THREADS=2

# 24 distinct images, 3 classes: three chunks of 8.
seed=1
for c in cat dog bird; do
	mkdir -p "ds/$c"
	for i in 1 2 3 4 5 6 7 8; do
		"$IMG" "ds/$c/$i.png" $((30 + 3 * i)) $((40 + i)) "$seed" || echo "# tool_mkimage failed"
		seed=$((seed + 1))
	done
done

run "$F" extract --store st --data ds $X
t "extract builds the store" 0 out '^images: 24 extracted, 0 deduplicated, 0 failed$'
cp -R st control
run "$F" verify --store st
t "the store verifies" 0 out ': ok$'
sum=$(cksum <st/data.mdb)
run "$F" verify --store st --repair
t "repair on a sound store finds nothing to drop" 0 out ': ok$' '!out' 'dropped' '!err' '.'
ok_if "repair on a sound store leaves data.mdb as it was" [ "$(cksum <st/data.mdb)" = "$sum" ]

run "$MK" --store st --corrupt-chunk 2
t "tool_mkstore damages chunk 2" 0 out '^corrupted feat\.[0-9a-f]{32}/chunk 2$'
chunk=$(sed -n 's/^corrupted //p' out)

run "$F" info --store st
t "before any verify, info cannot know (it does not decode)" 0 '!out' '^damage' '!err' '.'

run "$F" verify --store st
t "verify reports the damaged chunk" 1 err "^featcache: verify: $chunk: corrupt data; [0-9]+ index entries point at it$" \
	out '^checked [0-9]+ records: 1 problem$' err "run 'featcache verify --store st --repair'"
n=$(sed -n 's/.*corrupt data; \([0-9]*\) index entries point at it$/\1/p' err)
ok_if "the damaged chunk holds vectors ($n)" [ "${n:-0}" -gt 0 ]

run "$F" info --store st
t "info shows the damage verify recorded" 1 \
	out "^damage +1 problem \\(1 damaged chunk, $n vectors to re-extract\\), found by verify " \
	err "^featcache: store 'st' has damage that verify found: run 'featcache verify --store st --repair'$"
run "$F" info --store st --json
t "info --json shows the damage" 1 out '"damage": \{'
py "info --json: the damage record" out "
import json, sys
d = json.load(open(sys.argv[1]))['damage']
assert d['problems'] == 1 and d['chunks'] == 1 and d['vectors'] == $n, d
assert d['verified'] > 1600000000, d
"

run "$F" train --store st --out h.safetensors --epochs 1 --batch-size 6 --items-per-class 2 --output-dim 8 --quiet
t "train on the damaged chunk fails and points at the repair" 1 \
	err "$chunk: corrupt data; run 'featcache verify --store st --repair'$"
run "$F" embed --store st --out bad.npy --quiet
t "embed on the damaged chunk fails and points at the repair" 1 \
	err "^featcache: cannot .*store 'st': $chunk: corrupt data; run 'featcache verify --store st --repair'$"
run "$F" gc --store st
t "gc refuses the damaged chunk and points at the repair" 1 err "chunk 2.*--repair'$"
run "$F" extract --store st --data ds $X
t "extract alone re-extracts nothing: the index still claims the vectors" 0 \
	out '^images: 0 extracted, 0 deduplicated, 0 failed$'

cp -R st killed
run "$F" verify --store st --repair
t "repair drops the chunk and its index entries" 0 out "^dropped $chunk \\($n vectors\\)$" \
	out "^repaired: 1 chunk, $n vectors and 0 item records dropped$" \
	out "^run 'featcache extract --store st' again with the same data" \
	out '^checked [0-9]+ records: 1 problem$' err "^featcache: verify: $chunk: "
run "$F" verify --store st
t "the repaired store verifies clean" 0 out ': ok$' '!err' '.'
run "$F" info --store st --json
t "info after repair: no damage" 0 out '"damage": null' '!err' '.'
py "info after repair: the dropped vectors are gone" out "
import json, sys
d = json.load(open(sys.argv[1]))
[e] = d['extractors']
assert d['items'] == 24, d['items']
assert e['vectors'] == 24 - $n and e['chunks'] == 2 and e['slots'] == 24 - $n, e
"
sum=$(cksum <st/data.mdb)
run "$F" verify --store st --repair
t "a second repair has nothing to do" 0 out ': ok$' '!out' 'dropped'
ok_if "a second repair leaves data.mdb as it was" [ "$(cksum <st/data.mdb)" = "$sum" ]

run "$F" extract --store st --data ds $X
t "extract re-extracts exactly the $n dropped images" 0 out "^images: $n extracted, 0 deduplicated, 0 failed$" \
	out '^items: 24 seen, 0 new, 0 changed, 0 removed$'
run "$F" verify --store st
t "the store verifies clean after the re-extract" 0 out ': ok$'
run "$F" embed --store st --out st.npy --keys st.keys --quiet
t "embed works again" 0
run "$F" embed --store control --out control.npy --keys control.keys --quiet
t "embed the undamaged copy" 0
ok_if "the re-extracted vectors are bit-identical to the undamaged copy's" cmp -s st.npy control.npy
ok_if "in the same key order" cmp -s st.keys control.keys
run "$F" train --store st --out h.safetensors --epochs 1 --batch-size 6 --items-per-class 2 --output-dim 8 --quiet
t "train works again" 0
ok_if "train wrote a head" [ -s h.safetensors ]

# A repair killed at some point: the store is as before or as after, never
# between, and a repair run again finishes the job.
for delay in 0 0.01 0.02 0.03 0.05 0.1; do
	rm -rf k
	cp -R killed k
	"$F" verify --store k --repair >/dev/null 2>&1 &
	pid=$!
	sleep "$delay"
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	run "$F" verify --store k
	if [ "$rc" -eq 0 ]; then
		t "killed repair (after ${delay}s): repaired" 0 out ': ok$'
	else
		t "killed repair (after ${delay}s): untouched" 1 err "^featcache: verify: $chunk: corrupt data; $n index"
	fi
	run "$F" verify --store k --repair
	t "killed repair (after ${delay}s): a second repair" 0
	run "$F" verify --store k
	t "killed repair (after ${delay}s): then clean" 0 out ': ok$'
done

# A broken index entry and a truncated item record are repaired too; the
# next extract adds the item again and redoes the vector.
cp -R control di
run "$MK" --store di --corrupt-index
t "tool_mkstore breaks an index entry" 0 out '^corrupted index\.'
entry=$(sed -n 's/^corrupted //p' out)
run "$MK" --store di --corrupt-item cat/3.png
t "tool_mkstore truncates an item record" 0
run "$F" verify --store di --repair
t "repair drops the broken entry and the broken item" 0 out "^dropped $entry \\(1 vector\\)$" \
	out '^dropped items/cat/3\.png$' out '^repaired: 0 chunks, 1 vector and 1 item record dropped$'
run "$F" verify --store di
t "then the store verifies clean" 0 out ': ok$'
run "$F" extract --store di --data ds $X
# (the item's own vector is still there, unless the broken entry was its)
t "extract adds the item and redoes the vector" 0 out '^items: 24 seen, 1 new, 0 changed, 0 removed$' \
	out '^images: 1 extracted, [01] deduplicated, 0 failed$'
run "$F" embed --store di --out di.npy --keys di.keys --quiet
ok_if "and embeds as the undamaged copy" cmp -s di.npy control.npy

# What repair cannot fix stays reported, and the exit status says so.
cp -R control dd
run "$MK" --store dd --corrupt-descriptor
run "$F" verify --store dd --repair
t "repair leaves a broken descriptor alone and fails" 1 out '^1 problem left that repair cannot fix$' \
	err "^featcache: verify: extractors/"
run "$F" info --store dd
t "info shows what is left" 1 out '^damage +1 problem \(0 damaged chunks, 0 vectors'

[ "$failures" -eq 0 ]
