#!/bin/sh
# tests/cli/int8.sh - `featcache extract --precision int8` and `featcache
# layers --precision int8` on a fixture CNN (resnet18_narrow) and a small
# dataset made by tests/tool_mkimage: the per-op precision listing, int8
# next to f32 in one store (two extractors), the same run twice giving the
# same extractor id (nothing extracted the second time), the table in the
# descriptor, --calibration-data, the cosine of int8 to f32 features
# through `embed`, a partial last batch against whole ones, a transformer
# in int8 (layers; extract beside f32, cosine through `embed`), and the
# refusals (a CPU without VNNI as oneDNN's DNNL_MAX_CPU_ISA pretends, bad
# --calibrate values, calibration data without images, calibration options
# without int8).
NAME=int8
. "$(dirname "$0")/lib.inc"

IMG=$FC_TOOLS/tool_mkimage
FX=${FC_TOP:?}/tests/fixtures/models
MODEL=$FX/resnet18_narrow.onnx
X="--model $MODEL --size 64 --batch 4 --quiet"
mk() { "$IMG" "$@" || echo "# tool_mkimage $* failed"; }

# A CPU without VNNI or AMX cannot run int8: skip it all (the refusal is
# still checked through DNNL_MAX_CPU_ISA below only where int8 runs).
run "$F" layers --model "$MODEL" --precision int8
if grep -q "needs a cpu with vnni" err; then
	echo "ok - int8 # SKIP onednn reports no vnni or amx on this cpu"
	exit 0
fi

# ---- layers --precision ----
t "layers --precision int8 lists the engine's primitives" 0 \
	out '^engine \(int8\): [0-9]+ primitives$' \
	out '^  int8  /conv1/Conv Conv: [a-z_0-9]+:avx[a-z0-9_]*vnni' \
	out '^  int8  /layer1/layer1.0/conv1/Conv Quantize: ' \
	out '^  f32   /avgpool/GlobalAveragePool GlobalAveragePool: ' \
	out '^[0-9]+ f32, 0 bf16, [0-9]+ int8$' '!out' ': ref'
run "$F" layers --model "$MODEL" --precision f32 --json
py "layers --json carries the engine's primitives" out '
import json, sys
j = json.load(open(sys.argv[1]))
e = j["engine"]
assert e["precision"] == "f32" and len(e["primitives"]) > 10, e
assert all(p["precision"] == "f32" for p in e["primitives"]), e
'
run "$F" layers --model "$MODEL" --precision int4
t "layers refuses an unknown precision" 2 err "bad value 'int4' for --precision: f32, bf16 or int8"
run "$F" layers --model "$FX/vit_narrow.onnx" --precision int8
t "layers --precision int8 on a transformer: projections int8, attention f32" 0 \
	out '^  int8  /conv_proj/Conv Conv: [a-z_0-9]+:avx[a-z0-9_]*vnni' \
	out '^  int8  /encoder/layers/encoder_layer_0/mlp/mlp.0/MatMul MatMul: [a-z_0-9]+:avx[a-z0-9_]*vnni' \
	out '^  int8  /encoder/layers/encoder_layer_0/mlp/mlp.3/MatMul Quantize: ' \
	out '^  f32   /encoder/layers/encoder_layer_0/self_attention/Softmax Softmax: ' \
	out '^  f32   /encoder/layers/encoder_layer_0/self_attention/MatMul_1 MatMul: ' \
	out '^[0-9]+ f32, 0 bf16, 18 int8$' '!out' ': ref'
run env DNNL_MAX_CPU_ISA=AVX512_CORE "$F" layers --model "$MODEL" --precision int8
t "int8 refused on a cpu without vnni" 1 err "int8 needs a cpu with vnni or amx .*onednn reports avx512_core"

# ---- a dataset ----
mkdir -p ds/a ds/b cal/x empty/x
i=1
for c in a b; do
	for k in 1 2 3 4 5 6; do
		mk ds/$c/$k.png $((40 + 7 * k)) $((50 + 5 * i)) $i
		i=$((i + 1))
	done
done
mk cal/x/1.jpg 80 60 101
mk cal/x/2.png 64 64 102
echo "notes" >empty/x/readme.txt

run "$F" extract --store st --data ds $X
t "f32 extract" 0
run "$F" extract --store st --data ds $X --precision int8 --calibrate 8
t "int8 extract on a store with the f32 extractor" 0 \
	out '^images: 12 extracted, 0 deduplicated, 0 failed' out '^extractor [0-9a-f]{12}: 64-d'
id1=$(sed -n 's/^extractor \([0-9a-f]*\):.*/\1/p' out)
run "$F" extract --store st --data ds $X --precision int8 --calibrate 8
t "the same int8 run again: same extractor, nothing extracted" 0 \
	out '^images: 0 extracted' out "^extractor $id1: "
run "$F" extract --store st --data ds --model "$MODEL" --size 64 --batch 4 --precision int8 --calibrate 8
t "calibration is announced" 0 out "^calibrating int8 \(percentile:99.99\) on 8 images of 'ds'$"
run "$F" extract --store st --data ds $X --precision int8 --calibrate 8 --calibration-method max
t "another calibration method: another extractor" 0 out '^images: 12 extracted' '!out' "^extractor $id1: "
run "$F" extract --store st --data ds $X --precision int8 --calibration-data cal
t "--calibration-data: another extractor" 0 out '^images: 12 extracted' '!out' "^extractor $id1: "
run "$F" info --store st --json
py "the store keeps f32 and three int8 extractors; the table is in the descriptor" out '
import json, sys
j = json.load(open(sys.argv[1]))
ex = j["extractors"]
prec = sorted(e["descriptor"]["precision"] for e in ex)
assert prec == ["f32", "int8", "int8", "int8"], prec
for e in ex:
    d = e["descriptor"]
    if d["precision"] != "int8":
        assert "calibration" not in d, d
        continue
    c = d["calibration"]
    assert c["method"] in ("max", "percentile:99.99"), c
    assert c["images"] in (2, 8), c
    names = [r[0] for r in c["ranges"]]
    assert names[0] == "input" and "/layer1/layer1.0/relu/Relu_output_0" in names, names
    assert all(r[1] <= r[2] for r in c["ranges"]), c
'
run "$F" info --store st
t "info sums the table up" 0 out '^  calibration  percentile:99.99 on 8 images, [0-9]+ tensor ranges$' \
	out '^  calibration  max on 8 images, ' out '^  calibration  percentile:99.99 on 2 images, '
run "$F" verify --store st
t "the store verifies" 0

# int8 features are close to the f32 ones: embed both extractors' raw features
fid=$("$F" info --store st --json | "${PY:-false}" -c '
import json, sys
print([e["id"] for e in json.load(sys.stdin)["extractors"] if e["descriptor"]["precision"] == "f32"][0])' 2>/dev/null)
run "$F" embed --store st --extractor "$fid" --split train --out f32.npy
run "$F" embed --store st --extractor "$id1" --split train --out int8.npy
t "embed the int8 features" 0
pynp "int8 vs f32 raw features: cosine >= 0.99 for every item" f32.npy '
import sys
import numpy as np
a = np.load("f32.npy"); b = np.load("int8.npy")
assert a.shape == b.shape and a.shape[0] > 0, (a.shape, b.shape)
cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
print("# min cosine %.5f" % cos.min(), file=sys.stderr)
assert cos.min() >= 0.99, cos.min()
'

# A partial last batch runs at its own size in int8 too (fc_engine_add_batch
# builds it from the kept calibration ranges): 12 images in batches of 5
# (5 + 5 + 2) give the embeddings of batches of 4 (the same table, from
# --calibration-data, so both runs quantise alike)
run "$F" extract --store tb5 --data ds --model "$MODEL" --size 64 --batch 5 --quiet --precision int8 \
	--calibration-data cal --store-dtype f32
t "int8 extract with a partial last batch" 0 out '^images: 12 extracted'
run "$F" extract --store tb4 --data ds --model "$MODEL" --size 64 --batch 4 --quiet --precision int8 \
	--calibration-data cal --store-dtype f32
t "int8 extract in whole batches" 0 out '^images: 12 extracted'
run "$F" embed --store tb5 --split all --no-normalize --out tb5.npy --keys tb5.keys
run "$F" embed --store tb4 --split all --no-normalize --out tb4.npy --keys tb4.keys
t "embed both" 0
ok_if "the same items in the same order" cmp -s tb5.keys tb4.keys
pynp "a partial int8 batch gives the whole batches' embeddings" tb5.npy '
import sys
import numpy as np
a = np.load("tb5.npy"); b = np.load("tb4.npy")
assert a.shape == b.shape == (12, 64) and a.dtype == np.float32, (a.shape, b.shape)
big = float(np.abs(b).max())
d = float(np.abs(a - b).max()) / big
print("# partial vs whole int8 batches: %d values differ, by up to %.3g of the largest"
      % (int((a != b).sum()), d), file=sys.stderr)
assert big > 0 and d <= 1e-6, d
'

# a transformer in int8 beside f32: close to the f32 features
run "$F" extract --store vt --data ds --model "$FX/vit_narrow.onnx" --batch 5 --quiet --store-dtype f32
t "f32 extract of a transformer" 0 out '^images: 12 extracted'
run "$F" extract --store vt --data ds --model "$FX/vit_narrow.onnx" --batch 5 --quiet --store-dtype f32 \
	--precision int8 --calibrate 8
t "int8 extract of a transformer" 0 out '^images: 12 extracted'
vid=$(sed -n 's/^extractor \([0-9a-f]*\):.*/\1/p' out)
run "$F" info --store vt --json
fvid=$("${PY:-false}" -c '
import json, sys
print([e["id"] for e in json.load(open(sys.argv[1]))["extractors"] if e["descriptor"]["precision"] == "f32"][0])' out 2>/dev/null)
run "$F" embed --store vt --extractor "$fvid" --split all --out vf.npy
run "$F" embed --store vt --extractor "$vid" --split all --out v8.npy
t "embed the transformer's int8 features" 0
pynp "transformer int8 vs f32: cosine >= 0.99 for every item" vf.npy '
import sys
import numpy as np
a = np.load("vf.npy"); b = np.load("v8.npy")
assert a.shape == b.shape and a.shape[0] == 12, (a.shape, b.shape)
cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
print("# min cosine %.5f" % cos.min(), file=sys.stderr)
assert cos.min() >= 0.99 and (a != b).any(), cos.min()
'

# ---- refusals ----
run "$F" extract --store st2 --data ds $X --precision int8 --calibrate 0
t "--calibrate 0 is refused" 2 err "--calibrate"
run "$F" extract --store st2 --data ds $X --precision int8 --calibrate lots
t "--calibrate lots is refused" 2 err "--calibrate"
run "$F" extract --store st2 --data ds $X --calibrate 8
t "--calibrate without int8 is refused" 2 err "are for --precision int8"
run "$F" extract --store st2 --data ds $X --precision int8 --calibration-method median
t "an unknown calibration method is refused" 2 err "bad value 'median' for --calibration-method: percentile or max"
run "$F" extract --store st2 --data ds $X --precision int8 --calibration-data empty
t "calibration data without images is refused" 1 err "calibration data 'empty' has no images"
run "$F" extract --store st2 --data ds $X --precision int8 --calibration-data nowhere
t "missing calibration data is refused" 1 err "cannot read calibration data 'nowhere'"
ok_if "a refused int8 run creates no store" [ ! -e st2 ]

exit $((failures > 0))
