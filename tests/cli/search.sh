#!/bin/sh
# tests/cli/search.sh - `featcache search` on a small real dataset (PNG and
# JPEG made by tests/tool_mkimage, a real ONNX model): an item's own key and
# its image file both come back first with similarity 1 and the same list;
# an unseen image is extracted once, cached, and answered from the cache
# after; the model defaults to the file the extractor records while its
# bytes are unchanged; with --head the neighbours and similarities match
# cosine top-k computed in Python over `featcache embed --head`; --json, -k
# beyond the index and --split; bad queries fail naming the query and
# leave the store's items alone; bad options are usage errors.
NAME=search
. "$(dirname "$0")/lib.inc"

IMG=$FC_TOOLS/tool_mkimage
export OMP_NUM_THREADS=2
# A copy the store records as its model, so the test can move and change it.
cp "${FC_TOP:?}/tests/fixtures/models/resnet18_narrow.onnx" model.onnx || exit 1
OTHER=$FC_TOP/tests/fixtures/models/mobilenet_v2_025.onnx

mk() { "$IMG" "$@" || echo "# tool_mkimage $* failed"; }

# 3 classes, 4 train + 2 val images each, PNG and JPEG of several sizes.
seed=1
for c in cat dog bird; do
	mkdir -p "ds/train/$c" "ds/val/$c"
	for n in 1 2 3 4; do
		mk "ds/train/$c/$n.png" $((30 + 7 * n)) $((60 - 5 * n)) $seed
		seed=$((seed + 1))
	done
	mk "ds/val/$c/1.jpg" 64 48 $seed
	mk "ds/val/$c/2.png" 45 45 $((seed + 1)) gray
	seed=$((seed + 2))
done
run "$F" extract --store st --data ds --model model.onnx --size 64 --batch 8 --quiet
t "extract a store of 18 images" 0 out "^images: 18 extracted"

# vectors: the store's vector count (featcache info --json) into $vectors.
vectors() {
	"$F" info --store st --json >info.json 2>/dev/null
	vectors=$(sed -n 's/^  "vectors": \([0-9]*\),$/\1/p' info.json)
	items=$(sed -n 's/^  "items": \([0-9]*\),$/\1/p' info.json)
}
# rows FILE: the neighbour rows of a table (rank, similarity, key, label, split).
rows() { grep -E '^ +[0-9]+ +[0-9]\.[0-9]{4} ' "$1"; }

# ---- an item's own key, and its image file ----
run "$F" search --store st --key train/cat/2.png -k 5
t "--key: the item comes back first with similarity 1.0000" 0 \
	out "^query 1: key 'train/cat/2.png' \(label cat, split train\)$" \
	out "^rank  similarity  key +label  split$" \
	out "^   1      1\.0000  train/cat/2\.png +cat +train$"
rows out >bykey.rows
ok_if "--key -k 5: five neighbours, ranks 1 to 5" [ "$(cut -c1-4 bykey.rows | tr -d ' \n')" = 12345 ]
ok_if "--key: similarities do not increase down the list" \
	awk '{ if (NR > 1 && $2 > prev) exit 1; prev = $2 }' bykey.rows
run "$F" search --store st --query ds/train/cat/2.png -k 5
t "--query with the item's image file: no extraction" 0 out "^query 1: image 'ds/train/cat/2\.png'$" \
	err "1 images: 0 extracted, 1 from the cache, 0 failed"
rows out >byimage.rows
ok_if "--query with the item's image file: the same neighbours, order and similarities" cmp -s bykey.rows byimage.rows

# ---- an unseen image: extracted once, then from the cache ----
mk new.png 52 39 901
vectors
v0=$vectors
i0=$items
run "$F" search --store st --query new.png -k 4
t "an unseen image is extracted (with the model the store records)" 0 \
	err "1 images: 1 extracted, 0 from the cache, 0 failed" out "^query 1: image 'new\.png'$"
cp out new1.out
vectors
ok_if "the store caches its vector ($v0 -> $vectors), its items stay ($items)" \
	[ "$vectors" -eq $((v0 + 1)) ] && [ "$items" -eq "$i0" ]
run "$F" search --store st --query new.png -k 4 --quiet
t "searching it again extracts nothing" 0 err "1 images: 0 extracted, 1 from the cache, 0 failed"
vectors
ok_if "the second search adds no vector" [ "$vectors" -eq $((v0 + 1)) ]
ok_if "the second search gives the same answer" cmp -s new1.out out

# ---- which model: --model, or the one the extractor records ----
mk new2.png 40 50 902
run "$F" search --store st --query new2.png --model "$OTHER"
t "another --model is refused" 1 err "^featcache: model '.*mobilenet_v2_025\.onnx' does not reproduce extractor" \
	!out .
mv model.onnx moved.onnx
run "$F" search --store st --query new2.png
t "the recorded model gone: give --model" 1 \
	err "^featcache: model 'model\.onnx', which extractor [0-9a-f]{12} was made with, is gone: give --model$" !out .
run "$F" search --store st --key train/dog/1.png
t "a --key needs no model" 0 out "^   1      1\.0000  train/dog/1\.png"
run "$F" search --store st --query new2.png --model moved.onnx -k 2
t "--model names the moved file" 0 err "1 images: 1 extracted"
cp moved.onnx model.onnx
printf 'x' >>model.onnx
mk new3.png 40 50 903
run "$F" search --store st --query new3.png
t "the recorded model changed: give --model" 1 err "^featcache: model 'model\.onnx' has changed since" !out .
mv moved.onnx model.onnx

# ---- --head: the neighbours of the head's embeddings, checked in Python ----
run "$F" train --store st --out h.safetensors --epochs 2 --batch-size 6 --items-per-class 2 --output-dim 8 \
	--eval-split none --quiet
t "a tiny head trains on the store" 0
run "$F" embed --store st --head h.safetensors --out ix.npy --keys ix.keys
t "embed --head writes the index embeddings" 0 out "wrote 18 x 8 float32"
mkdir q
cp new.png q/new.png
run "$F" embed --store st --head h.safetensors --model model.onnx --data q --out q.npy --keys q.keys
t "embed --head --data writes the query's embedding" 0 out "wrote 1 x 8 float32"
run "$F" search --store st --head h.safetensors --query new.png --key val/dog/2.png -k 7 --json
t "search --head --json" 0
cp out head.json
py "--head: keys and similarities are cosine top-k over embed --head (1e-5)" head.json '
import ast, json, math, struct, sys
def npy(path):
    b = open(path, "rb").read()
    assert b[:6] == b"\x93NUMPY", path
    n = struct.unpack("<H", b[8:10])[0]
    h = ast.literal_eval(b[10:10 + n].decode())
    assert h["descr"] == "<f4" and not h["fortran_order"], h
    rows, dim = h["shape"]
    v = struct.unpack("<%df" % (rows * dim), b[10 + n:])
    return [list(v[r * dim:(r + 1) * dim]) for r in range(rows)]
def unit(x):
    n = math.sqrt(sum(a * a for a in x))
    return [a / n for a in x]
ix = [unit(r) for r in npy("ix.npy")]
keys = open("ix.keys").read().split("\n")[:-1]
queries = [unit(npy("q.npy")[0]), ix[keys.index("val/dog/2.png")]]
j = json.load(open(sys.argv[1]))
assert j["head"] == "h.safetensors" and j["k"] == 7 and j["index_items"] == 18, j
assert [q["query"] for q in j["queries"]] == ["new.png", "val/dog/2.png"], j["queries"]
for q, got in zip(queries, j["queries"]):
    sims = [sum(a * b for a, b in zip(q, r)) for r in ix]
    order = sorted(range(len(ix)), key=lambda i: (-sims[i], i))[:7]
    nb = got["neighbours"]
    assert [n["rank"] for n in nb] == list(range(1, 8)), nb
    assert len({n["key"] for n in nb}) == 7, nb
    for n, want in zip(nb, order):
        i = keys.index(n["key"])
        # its own similarity, and the one its rank earns
        assert abs(n["similarity"] - sims[i]) < 1e-5, (n, sims[i])
        assert abs(n["similarity"] - sims[want]) < 1e-5, (n, keys[want], sims[want])
        # the key Python ranks there, unless the two tie to float32 rounding
        assert i == want or abs(sims[i] - sims[want]) < 1e-6, (n, keys[want], sims[want])
assert j["queries"][1]["neighbours"][0]["key"] == "val/dog/2.png"
'

# ---- --json, -k and --split ----
run "$F" search --store st --key train/bird/3.png --query new.png -k 3 --json
t "--json" 0
py "--json parses: 2 queries, 3 neighbours each, labels and splits" out '
import json, sys
j = json.load(open(sys.argv[1]))
assert j["k"] == 3 and j["split"] == "all" and j["head"] is None, j
q = j["queries"]
assert [x["type"] for x in q] == ["key", "image"], q
assert q[0]["label"] == "bird" and q[0]["split"] == "train", q[0]
assert all(len(x["neighbours"]) == 3 for x in q), q
n = q[0]["neighbours"][0]
assert n == {"rank": 1, "key": "train/bird/3.png", "label": "bird", "split": "train",
             "similarity": n["similarity"]} and abs(n["similarity"] - 1) < 1e-6, n
assert all(x["label"] in ("cat", "dog", "bird") and x["split"] in ("train", "val") for y in q for x in y["neighbours"])
'
run "$F" search --store st --key train/bird/3.png -k 1000 --json
py "-k beyond the index gives all 18 items, each once" out '
import json, sys
nb = json.load(open(sys.argv[1]))["queries"][0]["neighbours"]
assert len(nb) == 18 and len({n["key"] for n in nb}) == 18, nb
s = [n["similarity"] for n in nb]
assert s == sorted(s, reverse=True), s
'
run "$F" search --store st --query new.png --split val -k 10 --json
py "--split val: only the 6 val items" out '
import json, sys
nb = json.load(open(sys.argv[1]))["queries"][0]["neighbours"]
assert len(nb) == 6 and all(n["split"] == "val" for n in nb), nb
'
run "$F" search --store st --key train/bird/3.png --split val -k 3
t "a --key outside --split is still a query, its item not a neighbour" 0 !out "  train/bird/3\.png  "

# ---- bad queries: exit 1 naming the query; the store's items untouched ----
fingerprint_items() { "$F" info --store st --json | grep -E '^  "(items|items_failed|errors|labels)"'; }
fingerprint_items >before.items
run "$F" search --store st --query missing.png
t "a missing query file" 1 err "^featcache: cannot extract image 'missing\.png': no such file$" !out .
head -c 120 new.png >trunc.png
run "$F" search --store st --query trunc.png --key train/cat/1.png
t "a truncated PNG" 1 err "^featcache: cannot extract image 'trunc\.png': " !out .
mk whole.jpg 64 48 77
head -c 500 whole.jpg >trunc.jpg
run "$F" search --store st --query trunc.jpg
t "a truncated JPEG" 1 err "^featcache: cannot extract image 'trunc\.jpg': " !out .
run "$F" search --store st --key train/cat/nope.png --query new.png
t "an unknown key" 1 err "^featcache: cannot search for key 'train/cat/nope\.png': no such item in store 'st'$" \
	!out . !err "images:"
fingerprint_items >after.items
ok_if "failed searches leave items, labels and errors as they were" cmp -s before.items after.items
run "$F" verify --store st
t "the store verifies after all of it" 0

# ---- usage errors ----
run "$F" search --store st --key train/cat/1.png -k 0
t "-k 0 is a usage error" 2 err "^featcache: bad value '0' for -k: must be from 1 to 100000$"
run "$F" search --store st --key train/cat/1.png -k ten
t "-k ten is a usage error" 2 err "bad value 'ten' for -k"
run "$F" search --store st
t "no query is a usage error" 2 err "nothing to search for: give --query IMAGE or --key KEY"
run "$F" search --store st --key train/cat/1.png --model model.onnx
t "--model without --query is a usage error" 2 err "--model is for --query images"
run "$F" search --store st --key train/cat/1.png --split nope
t "a bad --split is a usage error" 2 err "bad value 'nope' for --split"
run "$F" search --store st --key train/cat/1.png extra.png
t "an operand is a usage error" 2 err "unexpected argument 'extra\.png'"
run "$F" search --key train/cat/1.png
t "no store is a usage error" 2
run "$F" help search
t "help search" 0 out "^usage: featcache search "

exit $((failures > 0))
