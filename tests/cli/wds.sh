#!/bin/sh
# tests/cli/wds.sh - `featcache extract --data` over WebDataset tar shards:
# real tars written by tools/make_shards.py (pax, GNU, gzip) and by `tar`
# (GNU format; zstd when zstd is installed); a directory of shards, a brace
# pattern, @LIST and one .tar; features bit-identical to the same images as
# loose files; grouping (two images, no image, a bad .cls, a .json label
# field, no label); splits from the shard's path; incremental runs (an
# unchanged shard is not opened, a touched one is reread, an appended
# sample is all that is extracted, a deleted shard's items go); a truncated
# shard keeps the samples before the damage; --shard 0/2 and 1/2 take
# whole shards and cover every sample once.
NAME=wds
. "$(dirname "$0")/lib.inc"

IMG=$FC_TOOLS/tool_mkimage
MODEL=${FC_TOP:?}/tests/fixtures/models/resnet18_narrow.onnx
SHARDS="$PY $FC_TOP/tools/make_shards.py"
X="--model $MODEL --size 64 --batch 4 --quiet"

if [ -z "$PY" ]; then
	echo "ok - tar shards # SKIP no /usr/bin/python3 (tools/make_shards.py)"
	exit 0
fi

items_re() { echo "^items: $1 seen, $2 new, $3 changed, $4 removed$"; }
images_re() { echo "^images: $1 extracted, $2 deduplicated, $3 failed"; }
shards_re() { echo "^shards: $1 read, $2 unchanged$"; }
mk() { "$IMG" "$@" || echo "# tool_mkimage $* failed"; }

mkdir -p ds/cat ds/dog ds/bird
mk ds/cat/a.png 50 40 1
mk ds/cat/b.png 64 64 2 gray
mk ds/cat/c.png 33 77 3 rgba
mk ds/dog/d.jpg 120 80 4
mk ds/dog/e.jpg 80 120 5 gray
mk ds/dog/f.png 40 40 6 palette
mk ds/bird/g.png 70 30 7 gray16
mk ds/bird/h.jpg 1 1 8

# ---- the converter, and the same images loose and in shards ----
run $SHARDS ds sh --per-shard 3
t "make_shards: 8 samples in 3 shards" 0 out "^8 samples, 3 labels, 3 shards in sh$"
run "$F" extract --store loose.st --data ds $X
t "loose files extract" 0 out "$(items_re 8 8 0 0)"
run "$F" extract --store tar.st --data sh $X
t "a directory of shards: every sample extracted" 0 out "$(items_re 8 8 0 0)" out "$(images_re 8 0 0)" \
	out "$(shards_re 3 0)"
run "$F" embed --store loose.st --out loose.npy
run "$F" embed --store tar.st --out tar.npy
t "embed of the tar store" 0
ok_if "features from tar shards are bit-identical to the loose files'" cmp -s loose.npy tar.npy
ok_if "keys are <shard>/<sample key>" grep -qx "00001/dog_d" tar.npy.keys
run "$F" embed --store loose.st --model "$MODEL" --data sh --out viatar.npy
t "embed --data shards: every image's content is in the loose store's cache" 0 err "0 extracted, 8 from the cache"
ok_if "embed --data shards gives the same rows" cmp -s loose.npy viatar.npy
run "$F" info --store tar.st --json
py "labels from .cls: 3 labels, 8 items, no errors" out '
import json, sys
j = json.load(open(sys.argv[1]))
assert j["items"] == 8 and j["labels"] == 3 and j["errors"] == 0, j
assert j["data_root"].endswith("/sh"), j["data_root"]
'

# ---- incremental ----
run "$F" extract --store tar.st --data sh $X
t "rerun: no shard opened, nothing changes" 0 out "$(items_re 0 0 0 0)" out "$(shards_re 0 3)"
# Same size and mtime but other bytes: were it opened, it would fail.
cp -p sh/00001.tar keep.tar
head -c "$(wc -c <sh/00001.tar)" /dev/zero >junk.tar
cp junk.tar sh/00001.tar
touch -r keep.tar sh/00001.tar
run "$F" extract --store tar.st --data sh $X
t "a shard with unchanged size and mtime is not opened" 0 out "$(shards_re 0 3)" out "$(images_re 0 0 0)"
cp keep.tar sh/00001.tar
touch sh/00001.tar
run "$F" extract --store tar.st --data sh $X
t "a touched shard is reread, nothing extracted" 0 out "$(items_re 3 0 0 0)" out "$(images_re 0 0 0)" \
	out "$(shards_re 1 2)"
mkdir extra
mk extra/new_x.png 45 45 9
echo 2 >extra/new_x.cls
tar -rf sh/00002.tar -C extra new_x.png new_x.cls
run "$F" extract --store tar.st --data sh $X
t "a sample appended to a shard: only it is extracted" 0 out "$(items_re 3 1 0 0)" out "$(images_re 1 0 0)" \
	out "$(shards_re 1 2)"
tar -cf sh/00003.tar --format=gnu -C ds/cat a.png
run "$F" extract --store tar.st --data sh $X
t "a new shard (by tar, GNU headers; content seen before)" 0 out "$(items_re 1 1 0 0)" \
	out "$(images_re 0 1 0)" out "$(shards_re 1 3)"
rm sh/00003.tar
run "$F" extract --store tar.st --data sh $X
t "a deleted shard's items are removed" 0 out "$(items_re 0 0 0 1)" out "$(shards_re 0 3)"
run "$F" verify --store tar.st
t "the store verifies" 0

# ---- other ways to name shards ----
run "$F" extract --store brace.st --data 'sh/{00000..00002}.tar' $X
t "a brace pattern" 0 out "$(items_re 9 9 0 0)" out "$(shards_re 3 0)"
run "$F" embed --store brace.st --out brace.npy
run "$F" embed --store tar.st --out again.npy
ok_if "a pattern names shards as the directory does" cmp -s brace.npy.keys again.npy.keys
printf '# the shards\n00000.tar\n\n00002.tar\n' >sh/list.txt
run "$F" extract --store list.st --data @sh/list.txt $X
t "@LIST: shards relative to the list" 0 out "$(items_re 6 6 0 0)" out "$(shards_re 2 0)"
run "$F" extract --store one.st --data sh/00001.tar $X
t "one .tar" 0 out "$(items_re 3 3 0 0)"
run $SHARDS ds shgz --per-shard 5 --gzip
run "$F" extract --store gz.st --data shgz $X
t ".tar.gz shards" 0 out "$(items_re 8 8 0 0)" out "$(shards_re 2 0)"
run "$F" embed --store gz.st --out gz.npy
ok_if ".tar.gz features are the loose files'" cmp -s loose.npy gz.npy
if command -v zstd >/dev/null 2>&1; then
	mkdir shzst
	(cd ds/cat && tar -cf - a.png b.png) | zstd -q >shzst/cats.tar.zst
	run "$F" extract --store zst.st --data shzst $X
	t ".tar.zst shards" 0 out "$(items_re 2 2 0 0)" out "$(images_re 2 0 0)"
else
	echo "ok - .tar.zst shards # SKIP no zstd"
fi
run "$F" extract --store bad.st --data 'sh/{0..3.tar' $X
t "a bad pattern is refused" 1 err "cannot read dataset 'sh/\{0\.\.3\.tar': '\{' without a closing '\}'"
run "$F" extract --store bad.st --data @nolist.txt $X
t "a missing list is refused" 1 err "no shard list 'nolist.txt'"

# ---- grouping ----
mkdir g
cp ds/dog/d.jpg g/s1.jpg
cp ds/cat/a.png g/s1.png
echo 1 >g/s1.cls
echo 0 >g/s2.cls
cp ds/cat/b.png g/s3.png
echo abc >g/s3.cls
cp ds/cat/c.png g/s4.png
echo '{"name": "zebra", "label": 5}' >g/s4.json
cp ds/dog/f.png g/s5.png
tar -cf grp.tar --format=gnu -C g s1.jpg s1.png s1.cls s2.cls s3.png s3.cls s4.png s4.json s5.png
run "$F" extract --store grp.st --data grp.tar --label-field name $X
t "grouping: 5 samples, 2 failures" 0 out "$(items_re 5 5 0 0)" out "$(images_re 3 0 2)"
run "$F" info --store grp.st --json
py "grouping: labels '1' and 'zebra'; the failures name their samples" out '
import json, sys
j = json.load(open(sys.argv[1]))
assert j["items"] == 5 and j["items_failed"] == 2 and j["labels"] == 2, j
errs = {e["key"]: e["reason"] for e in j["error_records"]}
assert set(errs) == {"grp/s2", "grp/s3"}, errs
assert "no image" in errs["grp/s2"], errs
assert "label '"'"'s3.cls'"'"' is not an integer: '"'"'abc'"'"'" in errs["grp/s3"], errs
'
run "$F" embed --store grp.st --out grp.npy
run "$F" embed --store loose.st --out dogd.npy
"$PY" -c '
import sys
def rows(path):
    b = open(path, "rb").read()
    hl = int.from_bytes(b[8:10], "little")
    return b[10 + hl:]
g = rows("grp.npy"); l = rows("loose.npy")
keys = open("loose.npy.keys").read().split()
d = keys.index("dog/d.jpg")
# grp/s1 is the first row: its .jpg, not its .png
sys.exit(0 if g[:64 * 4] == l[d * 64 * 4:(d + 1) * 64 * 4] else 1)
' && pass "a sample with two images uses its .jpg" || fail "a sample with two images uses its .jpg"

# ---- splits from the shard's path ----
mkdir -p sp/train sp/val
cp sh/00000.tar sh/00001.tar sp/train/
cp sh/00002.tar sp/val/
run "$F" extract --store sp.st --data sp $X
t "split folders in the shards' paths" 0 out "$(items_re 9 9 0 0)"
run "$F" info --store sp.st --json
py "splits: 6 train, 3 val" out '
import json, sys
s = json.load(open(sys.argv[1]))["splits"]
assert s["train"] == 6 and s["val"] == 3 and s["test"] == 0, s
'

# ---- a truncated shard ----
mkdir trunc
off=$("$PY" -c '
import tarfile
with tarfile.open("sh/00001.tar") as t:
    print([m for m in t.getmembers() if m.name == "dog_d.jpg"][0].offset_data + 100)
')
head -c "$off" sh/00001.tar >trunc/00001.tar
run "$F" extract --store trunc.st --data trunc $X
t "truncated: the samples before the damage are extracted" 0 out "$(items_re 3 3 0 0)" out "$(images_re 2 0 1)"
run "$F" info --store trunc.st --json
py "truncated: the error names the shard and the member" out '
import json, sys
j = json.load(open(sys.argv[1]))
errs = {e["key"]: e["reason"] for e in j["error_records"]}
assert list(errs) == ["00001/dog_d"], errs
w = errs["00001/dog_d"]
assert "trunc/00001.tar" in w and "dog_d.jpg" in w and "damaged" in w, w
'
run "$F" extract --store trunc.st --data trunc $X
t "truncated: unchanged, not opened again" 0 out "$(shards_re 0 1)" out "$(images_re 0 0 0)"

# ---- shards as work units ----
run $SHARDS ds sh1 --per-shard 2
for w in 0 1; do
	run "$F" extract --store "w$w.st" --data sh1 --shard $w/2 $X
	t "worker $w of 2" 0
	grep '^shards:' out | sed "s/^/w$w /" >>shards.txt
	run "$F" embed --store "w$w.st" --out "w$w.npy"
done
ok_if "the workers read 4 shards between them" \
	test "$(awk '{ n += $3 } END { print n }' shards.txt)" = 4
sed 's|^[0-9]*/||' loose.npy.keys | tr / _ | sed 's/\.[a-z]*$//' | sort >want.keys
cat w0.npy.keys w1.npy.keys | sed 's|^[0-9]*/||' | sort >got.keys
ok_if "every sample once over the two workers" cmp -s want.keys got.keys
sed 's|/.*||' w0.npy.keys | sort -u >w0.shards
sed 's|/.*||' w1.npy.keys | sort -u >w1.shards
ok_if "a shard's samples all go to one worker" test -s w0.shards -a -s w1.shards -a -z "$(comm -12 w0.shards w1.shards)"

# ---- the same however many threads read the shards ----
run "$F" extract --store t1.st --data sh1 --decode-threads 1 $X
run "$F" extract --store t3.st --data sh1 --decode-threads 3 $X
t "three decode threads over four shards" 0 out "$(shards_re 4 0)"
run "$F" embed --store t1.st --out t1.npy
run "$F" embed --store t3.st --out t3.npy
ok_if "features and keys do not depend on the number of threads" cmp -s t1.npy t3.npy
ok_if "... nor the keys" cmp -s t1.npy.keys t3.npy.keys
"$F" info --store t1.st --json | grep -v '"store"' >t1.info
"$F" info --store t3.st --json | grep -v '"store"' >t3.info
ok_if "... nor what info says (items, labels, splits, vectors)" cmp -s t1.info t3.info

# ---- int8: calibrated on samples read from their shards ----
run "$F" extract --store i8.st --data sh --model "$MODEL" --size 64 --batch 4 --precision int8 --calibrate 8
if grep -q "needs a cpu with vnni" "$tmp/err"; then
	echo "ok - int8 from tar shards # SKIP no vnni or amx on this cpu"
else
	t "int8 from tar shards: calibrated on 8 samples, every image extracted" 0 \
		out "^calibrating int8 \(.*\) on 8 images of 'sh'$" out "$(images_re 9 0 0)" !out "could not be read"
fi

# ---- pictures of tar samples in the report ----
run "$F" train --store tar.st --epochs 1 --out h.safetensors -q
t "a head trained on the tar store" 0
run "$F" report --store tar.st --head h.safetensors --split train --out pics.html -q
t "report --store --head on the tar store" 0
ok_if "every thumbnail is read from its shard (none missing)" \
	sh -c '[ "$(grep -c "src=\"data:image/jpeg" pics.html)" -gt 0 ] && ! grep -q "image missing" pics.html'
mv sh/00001.tar gone.tar
run "$F" report --store tar.st --head h.safetensors --split train --out gone.html -q
t "a shard gone: the report is still written" 0
ok_if "... its samples are placeholders" grep -q "image missing" gone.html
mv gone.tar sh/00001.tar

exit $((failures > 0))
