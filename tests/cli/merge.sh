#!/bin/sh
# tests/cli/merge.sh - `featcache merge`: a dataset extracted in three parts
# (CSVs of the same directory, so the keys are the full dataset's) into
# three shard stores and merged equals one extract of the whole (info's
# figures, embed's .npy and keys byte for byte); merging again changes
# nothing; a merge killed with SIGKILL and run again ends like one that was
# not; shards that disagree (another --store-dtype, another label for a
# key) or are damaged are refused, named, and nothing of them is written.
NAME=merge
. "$(dirname "$0")/lib.inc"

IMG=$FC_TOOLS/tool_mkimage
MODEL=${FC_TOP:?}/tests/fixtures/models/resnet18_narrow.onnx
X="--model $MODEL --size 64 --batch 4 --quiet"

mk() { "$IMG" "$@" || echo "# tool_mkimage $* failed"; }

# info_same A.json B.json: what must match between a merged store and one
# extract of the same data. Chunk counts and bytes may differ (each worker
# ends with a partial batch; content two shards share is copied twice and
# the second copy is a dead slot until gc), and so may the file's size.
info_same='
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1].split(","))
for k in ("items", "items_failed", "labels", "splits", "errors", "error_records", "vectors", "damaged_records",
          "data_root"):
    assert a[k] == b[k], (k, a[k], b[k])
assert len(a["extractors"]) == len(b["extractors"]) == 1
for k in ("id", "dim", "dtype", "codec", "level", "vectors", "descriptor"):
    assert a["extractors"][0][k] == b["extractors"][0][k], (k, a["extractors"][0][k], b["extractors"][0][k])
'

# ---- a dataset in three parts ----
mkdir -p ds/img
i=0
for l in cat dog bird; do
	n=0
	while [ $n -lt 9 ]; do
		mk ds/img/$l-$n.png $((30 + (i * 7) % 40)) $((28 + (i * 5) % 37)) $((300 + i))
		n=$((n + 1))
		i=$((i + 1))
	done
done
echo "not an image" >ds/img/broken.png
# Content in two parts: cat-0's and bird-0's copies land in the third part,
# each in a chunk with new content there.
cp ds/img/cat-0.png ds/img/zz-copy.png
cp ds/img/bird-0.png ds/img/dog-4b.png
{
	echo "path,label"
	for f in $(cd ds && ls img/*.png); do
		case $f in
		img/cat-* | img/zz-*) echo "$f,cat" ;;
		img/dog-*) echo "$f,dog" ;;
		*) echo "$f,bird" ;;
		esac
	done
} >ds/full.csv
# birds and broken.png; cats and dog-0; the other dogs and the copies
{ head -1 ds/full.csv; sed -n '2,11p' ds/full.csv; } >ds/a.csv
{ head -1 ds/full.csv; sed -n '12,21p' ds/full.csv; } >ds/b.csv
{ head -1 ds/full.csv; sed -n '22,$p' ds/full.csv; } >ds/c.csv
ok_if "the three parts cover the dataset" [ "$(cat ds/a.csv ds/b.csv ds/c.csv | grep -vc '^path,')" -eq 30 ]
ok_if "the copies are in another part than their originals" \
	sh -c 'grep -q cat-0.png ds/b.csv && grep -q bird-0 ds/a.csv && grep -q zz-copy ds/c.csv && grep -q dog-4b ds/c.csv'

run "$F" extract --store whole.st --data ds/full.csv $X
t "one extract of the whole dataset" 0 out '^images: 27 extracted, 2 deduplicated, 1 failed'
for p in a b c; do
	run "$F" extract --store $p.st --data ds/$p.csv $X
	t "extract part $p into its own store" 0 out '^images: [0-9]+ extracted'
done

run "$F" merge --store merged.st a.st b.st c.st
t "merge three shards into a new store" 0 out '^shards +3 merged, 0 refused$' \
	out '^items +30 copied, 0 already there$' out '^errors +1 copied' out '^labels +3 new$' \
	out '^extractors +1 new$' out '^vectors +27 copied, 2 already there$' \
	out '^time +[0-9.]+ s, [0-9]+ chunks/s, [0-9.]+ MB/s$' err "^featcache: merged 'a\.st': 10 items"
run "$F" verify --store merged.st
t "the merged store verifies" 0
"$F" info --store whole.st --json >whole.json
"$F" info --store merged.st --json >merged.json
py "info: the merged store holds what one extract holds" "whole.json,merged.json" "$info_same"
py "info: two dead slots, the copies' (their chunks held new content too)" merged.json '
import json, sys
e = json.load(open(sys.argv[1]))["extractors"][0]
assert e["slots"] == e["vectors"] + 2, e
'
for s in train val all; do
	run "$F" embed --store whole.st --split $s --out whole-$s.npy
	t "embed --split $s of the whole" 0
	run "$F" embed --store merged.st --split $s --out merged-$s.npy
	t "embed --split $s of the merged store" 0
	ok_if "embed --split $s: the same vectors, bit for bit" cmp -s whole-$s.npy merged-$s.npy
	ok_if "embed --split $s: the same keys" cmp -s whole-$s.npy.keys merged-$s.npy.keys
done

# ---- the dataset directory ----
# A shard extracted from another copy of the data (another mount, say):
# merged, and named, while the store keeps the first shard's directory.
cp -r ds ds-elsewhere
run "$F" extract --store elsewhere.st --data ds-elsewhere/a.csv $X
t "extract a part from another copy of the dataset" 0
cp -r merged.st merged-copy.st
run "$F" merge --store merged-copy.st elsewhere.st
t "merging a shard of another directory warns and names both" 0 \
	err "^featcache: warning: shard 'elsewhere.st' was extracted from '.*/ds-elsewhere'; 'merged-copy.st' keeps '.*/ds' as its dataset$"
run "$F" info --store merged-copy.st
t "... the store keeps the first shard's directory" 0 out "^dataset +/.*/ds$"

# ---- merging again ----
run "$F" merge --store merged.st c.st a.st b.st
t "merging the same shards again copies nothing" 0 out '^items +0 copied, 30 already there$' \
	out '^vectors +0 copied, 29 already there$' out '^chunks +0 copied \(0 B\), [0-9]+ left out'
"$F" info --store merged.st --json >again.json
ok_if "info is byte for byte what it was" cmp -s merged.json again.json
run "$F" merge --store merged.st a.st --json
py "merge --json: the figures" out '
import json, sys
j = json.load(open(sys.argv[1]))
assert j["items"] == 0 and j["items_present"] == 10 and j["chunks"] == 0, j
assert j["shards"][0]["store"] == "a.st" and j["shards"][0]["error"] is None, j
'

# ---- refusals: nothing of a refused shard is written ----
run "$F" extract --store f32.st --data ds/a.csv $X --store-dtype f32
t "part a again, stored as f32" 0
run "$F" merge --store merged.st f32.st
t "a shard with another --store-dtype is refused" 1 \
	err "^featcache: refused shard 'f32\.st' \(nothing of it was written\): extractor [0-9a-f]{32} stores 64-d f32 \(shuffle-zstd, level 3\) in 'f32\.st' but 64-d f16 \(shuffle-zstd, level 3\) in 'merged\.st'$" \
	out '^shards +0 merged, 1 refused$'
"$F" info --store merged.st --json >after.json
ok_if "the refused shard left the store as it was" cmp -s merged.json after.json

{ echo "path,label"; echo "img/dog-3.png,cat"; echo "img/extra.png,cat"; } >ds/relabel.csv
cp ds/img/bird-1.png ds/img/extra.png
run "$F" extract --store relabel.st --data ds/relabel.csv $X
t "a part that calls a dog a cat" 0
run "$F" merge --store merged.st relabel.st
t "a shard that disagrees about an item is refused, naming the key and both labels" 1 \
	err "^featcache: refused shard 'relabel\.st' \(nothing of it was written\): item 'img/dog-3\.png' has label 'cat' in 'relabel\.st' but 'dog' in 'merged\.st'$"
"$F" info --store merged.st --json >after.json
ok_if "not even its new item was written" cmp -s merged.json after.json

cp -R a.st damaged.st
# (part a's 9 vectors make one chunk: extract writes chunks of >= 64 KiB)
run "$MK" --store damaged.st --corrupt-chunk last
t "tool_mkstore flips a bit in the last chunk of a copy of part a" 0 out 'chunk [0-9]+$'
run "$F" merge --store fresh.st damaged.st b.st
t "a damaged shard is refused, the others merged" 1 \
	err "^featcache: refused shard 'damaged\.st' \(nothing of it was written\): store 'damaged\.st': feat\.[0-9a-f]{32}/chunk [0-9]+: corrupt data \(run 'featcache verify --store damaged\.st'\)$" \
	err "^featcache: merged 'b\.st': 10 items" out '^shards +1 merged, 1 refused$'

run "$F" merge --store merged.st merged.st
t "a store is not merged into itself" 1 err "refused shard 'merged\.st': cannot merge store 'merged\.st' into itself"
run "$F" merge --store merged.st nowhere.st a.st
t "a shard that is not a store is named, the others merged" 1 err "cannot open store 'nowhere\.st'" \
	out '^shards +1 merged, 1 refused$'
run "$F" merge --store merged.st
t "merge without a shard is a usage error" 2 err "no shard given" err "see 'featcache help merge'"
run "$F" merge a.st
t "merge without a store is a usage error" 2 err "no store given"
run "$F" help merge
t "help merge" 0 out '^usage: featcache merge '

# ---- SIGKILL mid-merge, then the same command again ----
# Big enough shards that a merge takes a good part of a second: the halves
# of one synthetic store (tool_mkstore --first numbers the second half on).
run "$MK" --store half1.st --items 20000 --dim 256 --batch 16
t "tool_mkstore: the first half" 0
run "$MK" --store half2.st --first 20000 --items 20000 --dim 256 --batch 16
t "tool_mkstore: the second half" 0
run "$MK" --store both.st --items 40000 --dim 256 --batch 32
t "tool_mkstore: both halves in one store" 0
run "$F" merge --store clean.st half1.st half2.st --quiet
t "an uninterrupted merge of the halves" 0 out '^vectors +40000 copied'
echo "# $(grep '^time' out)"
"$F" info --store clean.st --json >clean.json
"$F" info --store both.st --json >both.json
py "the halves merged hold what the whole holds" "both.json,clean.json" "$info_same"
"$F" embed --store both.st --out both.npy --quiet
"$F" embed --store clean.st --out clean.npy --quiet
ok_if "the halves merged embed as the whole, bit for bit" cmp -s both.npy clean.npy
ok_if "... with the same keys" cmp -s both.npy.keys clean.npy.keys
for delay in 0.05 0.2 0.4 0.7; do
	rm -rf killed.st
	"$F" merge --store killed.st half1.st half2.st --quiet >/dev/null 2>&1 &
	pid=$!
	sleep $delay
	kill -9 $pid 2>/dev/null
	wait $pid 2>/dev/null
	have=$("$F" info --store killed.st --json 2>/dev/null | grep -o '"chunks": [0-9]*' | head -1)
	echo "# killed after ${delay}s: ${have:-no chunks yet}"
	run "$F" merge --store killed.st half1.st half2.st --quiet
	t "killed after ${delay}s: the same merge again completes" 0 out '^shards +2 merged, 0 refused$'
	"$F" info --store killed.st --json >killed.json
	py "killed after ${delay}s: the same items, vectors, chunks and chunk bytes" "clean.json,killed.json" '
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1].split(","))
for k in ("items", "items_failed", "labels", "splits", "errors", "error_records", "vectors"):
    assert a[k] == b[k], (k, a[k], b[k])
for k in ("id", "vectors", "slots", "chunks", "chunk_bytes", "descriptor"):
    assert a["extractors"][0][k] == b["extractors"][0][k], k
'
	"$F" embed --store killed.st --out killed.npy --quiet
	ok_if "killed after ${delay}s: embed gives the same vectors and keys" \
		sh -c 'cmp -s killed.npy clean.npy && cmp -s killed.npy.keys clean.npy.keys'
done

exit $((failures > 0))
