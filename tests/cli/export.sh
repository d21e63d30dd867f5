#!/bin/sh
# tests/cli/export.sh - `featcache export` end to end on real images:
#   - extract (f32 store) + train a tiny head + `embed --head` gives E1;
#   - the export made with --no-normalize, extracted again by featcache at
#     its "embedding" layer, gives E1's rows up to scale (featcache's engine
#     has no LpNormalization, so the normalised export is for ONNX Runtime);
#   - ONNX Runtime (npm onnxruntime-node, installed into the build directory
#     by bench/peer_ort_setup.sh) runs the export on featcache's own
#     preprocessing of the same images (tests/tool_preprocess), batches of 1
#     and 3: cosine >= 0.9999 per row against E1, and the unnormalised export
#     within 1e-4 of `embed --head --no-normalize`; also for a float16 model
#     (Cast around the backbone), a model of Shape/Reshape chains (dynamic
#     batch) and one pooled by ReduceMean;
#   - a token model, vit_narrow: the export at its default layer (the CLS
#     token after the final LayerNorm) and at the last block's tokens with
#     --pool cls+mean --prefix-tokens 1 (Slice, ReduceMean, Concat in the
#     export), each with a head trained on that layer's features, in ONNX
#     Runtime against `embed --head` (cosine >= 0.9999), the pooled export
#     also in featcache's engine; a head of the wrong dim, no --pool;
#   - the head's extractor gives the defaults: with no --layer, --pool or
#     --size the same file as with the options; a head trained at 32 x 32
#     exports at 32 x 32 (ONNX Runtime against `embed --head`); an explicit
#     --size or --pool, or another model file, wins with a warning;
#   - bad input: head dim mismatch, missing head, unknown layer, unwritable
#     --out: exit 1 with a clear message and no file left behind.
# Needs node and npm: without them the script fails, it does not skip.
NAME=export
. "$(dirname "$0")/lib.inc"

IMG=$FC_TOOLS/tool_mkimage
PRE=$FC_TOOLS/tool_preprocess
ORT=$FC_TOP/tests/ort_run.js
MODELS=$FC_TOP/tests/fixtures/models
MODEL=$MODELS/resnet18_narrow.onnx
X="--size 64 --store-dtype f32 --batch 4 --quiet"
T="--epochs 3 --batch-size 6 --items-per-class 2 --output-dim 8 --eval-split none --quiet"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	fail "node and npm are needed to check exports with ONNX Runtime (apt-get install nodejs npm)"
	exit 1
fi
NPM_DIR=${FC_NPM_DIR:-$(dirname "$FEATCACHE")/npm}
if sh "$FC_TOP/bench/peer_ort_setup.sh" "$NPM_DIR" >"$tmp/npm.log" 2>&1; then
	pass "onnxruntime-node is installed in $NPM_DIR"
else
	fail "cannot install onnxruntime-node into $NPM_DIR"
	sed 's/^/# /' "$tmp/npm.log"
	exit 1
fi
export NODE_PATH="$NPM_DIR/node_modules"

# cmp_npy WHAT A B MINCOS [MAXABS]: one TAP line from tests/ort_run.js cmp.
cmp_npy() {
	what=$1
	shift
	if out=$(node "$ORT" cmp "$@" 2>&1); then
		pass "$what ($out)"
	else
		fail "$what"
		echo "# $out"
	fi
}

# ort WHAT MODEL IN OUT BATCH: run the model in ONNX Runtime.
ort() {
	run node "$ORT" run "$2" "$3" "$4" "$5"
	t "$1" 0 out "^ort .*in batches of $5"
}

mk() { "$IMG" "$@" || echo "# tool_mkimage $* failed"; }
mkdir -p ds/cat ds/dog ds/bird
s=1
for c in cat dog bird; do
	for i in 1 2 3 4; do
		mk ds/$c/$i.png $((30 + 11 * i)) $((70 - 7 * i)) $s
		s=$((s + 1))
	done
done
mk ds/dog/5.jpg 90 60 40

# ---- resnet18: featcache's embeddings (E1) ----
run "$F" extract --store st --data ds --model "$MODEL" $X
t "extract the dataset" 0
run "$F" train --store st --out h.safetensors $T
t "train a tiny head" 0
run "$F" embed --store st --head h.safetensors --out e1.npy --keys e1.keys
t "embed --head (E1)" 0 out "wrote 13 x 8 float32"
run "$F" embed --store st --head h.safetensors --no-normalize --out e1raw.npy --keys e1raw.keys
t "embed --head --no-normalize" 0

run "$F" export --model "$MODEL" --size 64 --head h.safetensors --out tuned.onnx
t "export" 0 out "^wrote 'tuned.onnx': input 3 x 64 x 64, 8-d embedding \(L2-normalised\)$"
run "$F" export --model "$MODEL" --size 64 --head h.safetensors --out raw.onnx --no-normalize
t "export --no-normalize" 0 out "8-d embedding$"
ok_if "the export leaves no temporary file" [ "$(ls -A | grep -c tmp)" -eq 0 ]
ok_if "the old classifier's weights are gone" sh -c '! grep -q "fc\.weight" tuned.onnx && grep -q "fc\.weight" "$1"' sh "$MODEL"
run "$F" layers --model raw.onnx --size 64 --layer embedding
t "featcache reads the export and can cut at 'embedding'" 0 out "^cut +'featcache/head.2/Gemm': 8-d embedding"

# ---- featcache's engine on the export (E2) ----
run "$F" extract --store st2 --data ds --model raw.onnx --layer embedding $X
t "extract with the export at its 'embedding'" 0 out "8-d, stored as f32"
run "$F" embed --store st2 --out e2.npy --keys e2.keys
t "embed the export's raw output (E2)" 0
ok_if "E1 and E2 have the same keys" cmp -s e1.keys e2.keys
cmp_npy "engine: cosine(E1, E2) >= 0.9999 per row" e1.npy e2.npy 0.9999
cmp_npy "engine: E2 within 1e-4 of embed --head --no-normalize" e1raw.npy e2.npy 0.9999 1e-4

# ---- featcache's engine on the L2-normalised export, at its default layer (E3) ----
run "$F" layers --model tuned.onnx --size 64
t "the normalised export's default layer is its output" 0 out "LpNormalization" out "8-d embedding"
run "$F" extract --store st3 --data ds --model tuned.onnx $X
t "extract with the normalised export, no --layer" 0 out "8-d, stored as f32"
run "$F" embed --store st3 --out e3.npy --keys e3.keys
t "embed the normalised export's output (E3)" 0
ok_if "E1 and E3 have the same keys" cmp -s e1.keys e3.keys
cmp_npy "engine: the normalised export within 1e-4 of embed --head" e1.npy e3.npy 0.9999 1e-4

# ---- ONNX Runtime on the export ----
# shellcheck disable=SC2046
run "$PRE" --size 64 in.npy $(sed 's|^|ds/|' e1.keys)
t "preprocess the images as extract does" 0
ort "onnx runtime: batches of 1" tuned.onnx in.npy o1.npy 1
ort "onnx runtime: batches of 3 (dynamic batch)" tuned.onnx in.npy o3.npy 3
cmp_npy "onnx runtime, batch 1: cosine >= 0.9999 per row vs embed --head" e1.npy o1.npy 0.9999 1e-5
cmp_npy "onnx runtime, batch 3: cosine >= 0.9999 per row vs embed --head" e1.npy o3.npy 0.9999 1e-5
ort "onnx runtime: the unnormalised export" raw.onnx in.npy r3.npy 3
cmp_npy "onnx runtime --no-normalize: within 1e-4 of embed --head --no-normalize" e1raw.npy r3.npy 0.9999 1e-4

# ---- other backbones: float16, Shape chains, ReduceMean pooling ----
for m in squeezenet1_1_f16 shapechain_dynbatch mnasnet_025; do
	run "$F" extract --store "st-$m" --data ds --model "$MODELS/$m.onnx" $X
	t "$m: extract" 0
	run "$F" train --store "st-$m" --out "h-$m.safetensors" $T
	t "$m: train" 0
	run "$F" embed --store "st-$m" --head "h-$m.safetensors" --out "e-$m.npy"
	t "$m: embed --head" 0
	run "$F" export --model "$MODELS/$m.onnx" --size 64 --head "h-$m.safetensors" --out "$m.onnx"
	t "$m: export" 0
	ort "$m: onnx runtime, batches of 3" "$m.onnx" in.npy "o-$m.npy" 3
	# float16 activations in ONNX Runtime against featcache's f32 ones
	min=0.9999
	[ "$m" = squeezenet1_1_f16 ] && min=0.999
	cmp_npy "$m: onnx runtime vs embed --head, cosine >= $min" "e-$m.npy" "o-$m.npy" $min
done

# ---- a token model: vit_narrow at its default layer and pooled at a token layer ----
VIT=$MODELS/vit_narrow.onnx
LAST=/encoder/layers/encoder_layer_1/Add_1
V="--size 224 --store-dtype f32 --batch 4 --quiet"
run "$F" extract --store st-vit --data ds --model "$VIT" $V
t "vit_narrow: extract at the default layer (the CLS token after the final LayerNorm)" 0 out "32-d, stored as f32"
run "$F" train --store st-vit --out h-vit.safetensors $T
t "vit_narrow: train" 0
run "$F" embed --store st-vit --head h-vit.safetensors --out e-vit.npy --keys e-vit.keys
t "vit_narrow: embed --head" 0 out "wrote 13 x 8 float32"
run "$F" export --model "$VIT" --size 224 --head h-vit.safetensors --out vit.onnx
t "vit_narrow: export at the default layer, no --pool" 0 \
	out "^wrote 'vit.onnx': input 3 x 224 x 224, 8-d embedding \(L2-normalised\)$"
# shellcheck disable=SC2046
run "$PRE" --size 224 in224.npy $(sed 's|^|ds/|' e-vit.keys)
t "preprocess the images at 224" 0
ort "vit_narrow: onnx runtime, batches of 3" vit.onnx in224.npy o-vit.npy 3
cmp_npy "vit_narrow: onnx runtime vs embed --head, cosine >= 0.9999" e-vit.npy o-vit.npy 0.9999 1e-5

run "$F" extract --store st-tok --data ds --model "$VIT" --layer "$LAST" --pool cls+mean --prefix-tokens 1 $V
t "vit_narrow: extract the last block's tokens with --pool cls+mean" 0 out "64-d, stored as f32"
run "$F" train --store st-tok --out h-tok.safetensors $T
t "vit_narrow tokens: train a head on the 64-d pooled features" 0
run "$F" embed --store st-tok --head h-tok.safetensors --out e-tok.npy --keys e-tok.keys
t "vit_narrow tokens: embed --head" 0 out "wrote 13 x 8 float32"
ok_if "vit_narrow tokens: the same keys as at the default layer" cmp -s e-vit.keys e-tok.keys
run "$F" export --model "$VIT" --size 224 --layer "$LAST" --pool cls+mean --prefix-tokens 1 \
	--head h-tok.safetensors --out tok.onnx
t "vit_narrow tokens: export --pool cls+mean --prefix-tokens 1" 0 \
	out "^wrote 'tok.onnx': input 3 x 224 x 224, 8-d embedding \(L2-normalised\)$"
run "$F" layers --model tok.onnx --size 224
t "vit_narrow tokens: the export pools with Slice, ReduceMean and Concat" 0 \
	out "featcache/pool/.* +Slice " out "featcache/pool/.* +ReduceMean " out "featcache/pool/.* +Concat +1x1x64 "
ort "vit_narrow tokens: onnx runtime, batches of 1" tok.onnx in224.npy o-tok1.npy 1
ort "vit_narrow tokens: onnx runtime, batches of 3" tok.onnx in224.npy o-tok3.npy 3
cmp_npy "vit_narrow tokens, batch 1: onnx runtime vs embed --head, cosine >= 0.9999" e-tok.npy o-tok1.npy 0.9999 1e-5
cmp_npy "vit_narrow tokens, batch 3: onnx runtime vs embed --head, cosine >= 0.9999" e-tok.npy o-tok3.npy 0.9999 1e-5
run "$F" extract --store st-tok2 --data ds --model tok.onnx $V
t "vit_narrow tokens: featcache extracts with the export, no --layer" 0 out "8-d, stored as f32"
run "$F" embed --store st-tok2 --out e-tok2.npy --keys e-tok2.keys
t "vit_narrow tokens: embed the export's output" 0
cmp_npy "vit_narrow tokens: featcache's engine on the export within 1e-4 of embed --head" e-tok.npy e-tok2.npy 0.9999 1e-4
run "$F" export --model "$VIT" --size 224 --layer "$LAST" --pool cls --head h-tok.safetensors --out bad.onnx
t "vit_narrow tokens: a 64-d head on --pool cls (32-d) is refused" 1 \
	err "^featcache: head 'h-tok.safetensors' takes 64-d input, the model's layer '$LAST' gives 32-d$"
run "$F" export --model "$VIT" --size 224 --layer "$LAST" --head h-vit.safetensors --out bad.onnx
t "vit_narrow tokens: a token layer without --pool is refused (a head of another layer: no pooling to take)" 1 \
	err "^featcache: warning: cutting at '$LAST', but head 'h-vit.safetensors' was trained on layer '[^']+'" \
	err "^featcache: cannot export model '[^']+': layer '$LAST' outputs tokens \(1x197x32\): choose a pooling"
ok_if "vit_narrow tokens: the refusals wrote no file" [ ! -e bad.onnx ]

# ---- the head's extractor gives the defaults: layer, pooling, size ----
run "$F" export --model "$VIT" --head h-tok.safetensors --out tokdef.onnx
t "vit_narrow tokens: export with no --layer, --pool, --prefix-tokens or --size" 0 \
	out "^wrote 'tokdef.onnx': input 3 x 224 x 224, 8-d embedding \(L2-normalised\)$" !err .
ok_if "vit_narrow tokens: the head's cut and pooling by default, the same file as with the options" \
	cmp -s tok.onnx tokdef.onnx
run "$F" export --model "$VIT" --layer "$LAST" --head h-tok.safetensors --out toklayer.onnx
t "vit_narrow tokens: --layer naming the head's layer takes its pooling" 0 !err .
ok_if "vit_narrow tokens: --layer alone, the same file" cmp -s tok.onnx toklayer.onnx
run "$F" export --model "$VIT" --pool cls --head h-tok.safetensors --out bad.onnx
t "vit_narrow tokens: another --pool wins, with a warning" 1 \
	err "^featcache: warning: pooling 'cls', but head 'h-tok.safetensors' was trained on pooling 'cls\+mean' \(extractor [0-9a-f]{12}\)$" \
	err "takes 64-d input, the model's layer '$LAST' gives 32-d$"
run "$F" export --model "$MODEL" --head h.safetensors --out def.onnx
t "resnet18: export without --size takes the head's 64 x 64" 0 \
	out "^wrote 'def.onnx': input 3 x 64 x 64, 8-d embedding \(L2-normalised\)$" !err .
ok_if "resnet18: the same file as with --size 64" cmp -s tuned.onnx def.onnx

run "$F" extract --store st32 --data ds --model "$MODEL" --size 32 --store-dtype f32 --batch 4 --quiet
t "resnet18 at 32 x 32: extract" 0
run "$F" train --store st32 --out h32.safetensors $T
t "resnet18 at 32 x 32: train" 0
run "$F" embed --store st32 --head h32.safetensors --out e32.npy --keys e32.keys
t "resnet18 at 32 x 32: embed --head" 0 out "wrote 13 x 8 float32"
run "$F" export --model "$MODEL" --head h32.safetensors --out t32.onnx
t "resnet18 at 32 x 32: export without --size exports at 32 x 32" 0 \
	out "^wrote 't32.onnx': input 3 x 32 x 32, 8-d embedding \(L2-normalised\)$" !err .
# shellcheck disable=SC2046
run "$PRE" --size 32 in32.npy $(sed 's|^|ds/|' e32.keys)
t "preprocess the images at 32" 0
ort "resnet18 at 32 x 32: onnx runtime, batches of 3" t32.onnx in32.npy o32.npy 3
cmp_npy "resnet18 at 32 x 32: onnx runtime vs embed --head, cosine >= 0.9999" e32.npy o32.npy 0.9999 1e-5
run "$F" export --model "$MODEL" --size 64 --head h32.safetensors --out t64.onnx
t "an explicit --size wins, with a warning naming both sizes" 0 out "input 3 x 64 x 64" \
	err "^featcache: warning: exporting at 64 x 64, but head 'h32.safetensors' was trained on 32 x 32 inputs \(extractor [0-9a-f]{12}\)$"
run "$F" export --model "$MODELS/mnasnet_025.onnx" --size 32 --head h32.safetensors --out bad.onnx
t "another model file: a warning naming the head's" 1 \
	err "^featcache: warning: model '[^']*mnasnet_025.onnx' is not the file head 'h32.safetensors' was trained on \(extractor [0-9a-f]{12} was made with '[^']*resnet18_narrow.onnx'\)$"
ok_if "no file from a refused export" [ ! -e bad.onnx ]
if [ -n "$PY" ]; then
	# The same head without its metadata, as PyTorch would save it.
	"$PY" -c '
import json, struct, sys
b = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); h.pop("__metadata__")
t = json.dumps(h).encode(); t += b" " * (-len(t) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(t)) + t + b[8 + n:])' h32.safetensors bare.safetensors
	run "$F" export --model "$MODEL" --head bare.safetensors --out bare.onnx
	t "a head that records no extractor: 224 x 224, with a warning" 0 out "input 3 x 224 x 224" \
		err "^featcache: warning: head 'bare.safetensors' does not record its extractor's settings: input 224 x 224 \(give --size and --layer as given to extract\)$"
	run "$F" export --model "$MODEL" --size 32 --head bare.safetensors --out bare.onnx
	t "a head that records no extractor, with --size: no warning" 0 out "input 3 x 32 x 32" !err .
	ok_if "a head that records no extractor, with --size: the same file" cmp -s t32.onnx bare.onnx
else
	echo "ok - a head that records no extractor # SKIP no /usr/bin/python3"
fi

# ---- bad input: exit 1, a clear message, nothing written ----
run "$F" export --model "$MODELS/squeezenet1_1_f16.onnx" --size 64 --head h.safetensors --out bad.onnx
t "head dim mismatch" 1 err "^featcache: head 'h.safetensors' takes 64-d input, the model's layer '[^']+' gives 512-d$"
ok_if "head dim mismatch: no file" [ ! -e bad.onnx ]
run "$F" export --model "$MODEL" --size 64 --head nohead.safetensors --out bad.onnx
t "missing head" 1 err "^featcache: cannot load head 'nohead.safetensors': "
run "$F" export --model "$MODEL" --size 64 --head h.safetensors --out bad.onnx --layer /nope
t "unknown layer" 1 err "^featcache: cannot cut model '[^']+' at '/nope': no layer named '/nope'$"
run "$F" export --model nomodel.onnx --size 64 --head h.safetensors --out bad.onnx
t "missing model" 1 err "^featcache: cannot read model 'nomodel.onnx': no such file or directory$"
ok_if "failed exports leave no file" [ ! -e bad.onnx ]
run "$F" export --model "$MODEL" --size 64 --head h.safetensors --out nodir/x.onnx
t "--out in a missing directory" 1 err "^featcache: cannot write 'nodir/x.onnx': "
mkdir ro
chmod 555 ro
if [ "$(id -u)" -ne 0 ]; then
	run "$F" export --model "$MODEL" --size 64 --head h.safetensors --out ro/x.onnx
	t "--out in a read-only directory" 1 err "^featcache: cannot write 'ro/x.onnx': "
	ok_if "read-only directory: nothing in it" [ -z "$(ls -A ro)" ]
else
	echo "ok - --out in a read-only directory # SKIP running as root"
fi
echo keep >kept.onnx
run "$F" export --model "$MODEL" --size 64 --head h.safetensors --out kept.onnx --layer /nope
t "a failed export over an existing file" 1
ok_if "the existing file is unchanged" [ "$(cat kept.onnx)" = keep ]
ok_if "no temporary file is left" [ "$(ls -A | grep -c tmp)" -eq 0 ]
run "$F" export --model "$MODEL" --head h.safetensors
t "--out is required" 2 err "--out is required"
run "$F" export --model "$MODEL" --head h.safetensors --out x.onnx --opset 6
t "--opset below 7" 2 err "--opset"

[ "$failures" -eq 0 ]
