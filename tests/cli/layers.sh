#!/bin/sh
# tests/cli/layers.sh - `featcache layers` on the fixture models of
# tests/fixtures/models/ (narrow torchvision exports): the table, the
# default-layer marker, --json, --size/--batch, --layer, and the failures
# (damaged or missing model, a size the model cannot take, usage errors).
#
# Prints TAP lines ("ok - what" / "not ok - what") and exits non-zero if any
# check failed. The binary comes from $FEATCACHE (tests/run.sh sets it);
# everything happens in a fresh temporary directory.
NAME=layers
top=${FC_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
FX=$top/tests/fixtures/models
. "$(dirname "$0")/lib.inc"

R18=$FX/resnet18_narrow.onnx
SQZ=$FX/squeezenet1_1_f16.onnx

# ---- the table ----

run "$F" layers --model "$R18"
t "layers lists a model" 0 out "^model +$R18 \(opset 13\)$" out '^input +input 1x3x224x224$' \
	out '^ +# +layer +op +output +params$' '!err' '.'
t "layers shows name, op, shape and params" 0 \
	out '^ +0 +/conv1/Conv +Conv +1x8x112x112 +1184$' \
	out '^ +48 +/fc/Gemm +Gemm +1x10 +650$'
t "layers marks the default embedding layer" 0 \
	out '^ +47 +/Flatten +Flatten +1x64 +0  <- default \(64-d\)$'
ok_if "exactly one layer is marked" [ "$(grep -c '<- ' out)" -eq 1 ]
t "layers shows the totals" 0 out '^49 layers, 176762 params$' \
	out "^default +'/Flatten': 64-d embedding, 176112 params up to it$"
cp out r18.txt

run "$F" layers --model "$SQZ"
t "a model without Gemm: the last Conv's input, pooled" 0 \
	out '/features/features.12/Concat +Concat +1x512x13x13 +0  <- default \(512-d, pooled\)$' \
	out '^65 layers \(18 constant nodes folded\), 727626 params$' \
	out "^default +'/features/features.12/Concat': 512-d embedding \(average-pooled from 1x512x13x13\)"

# ---- --json ----

run "$F" layers --model "$R18" --json
t "layers --json" 0 out '^\{$' '!err' '.'
cp out r18.json
py "--json is one object with the same figures as the table" r18.json "
import json, re, sys
d = json.load(open(sys.argv[1]))
assert d['model'].endswith('resnet18_narrow.onnx') and d['opset'] == 13, d['model']
assert d['input'] == {'name': 'input', 'shape': [1, 3, 224, 224]}, d['input']
assert d['nodes'] == 49 and d['layers_listed'] == 49 and d['folded'] == 0
assert d['params'] == 176762
L = d['layers']
assert len(L) == 49 and [l['index'] for l in L] == list(range(49))
assert [l['name'] for l in L if l['default']] == ['/Flatten']
assert L[0] == {'index': 0, 'name': '/conv1/Conv', 'op': 'Conv', 'output': L[0]['output'],
                'shape': [1, 8, 112, 112], 'params': 1184, 'default': False}, L[0]
assert sum(l['params'] for l in L) == d['params']
df = d['default']
assert (df['layer'], df['index'], df['dim'], df['pooled'], df['params']) == ('/Flatten', 47, 64, False, 176112), df
assert 'cut' not in d
text = open('r18.txt').read().splitlines()
rows = [l for l in text if re.match(r'^ +[0-9]+  ', l)]
assert len(rows) == 49
for row, l in zip(rows, L):
    f = row.split()
    assert f[1] == l['name'] and f[2] == l['op'] and int(f[4]) == l['params'], (row, l)
    assert f[3] == 'x'.join(map(str, l['shape'])), (row, l)
"

# ---- --size, --batch, --layer ----

run "$F" layers --model "$R18" --size 160
t "--size changes the shapes" 0 out '^input +input 1x3x160x160$' \
	out '/conv1/Conv +Conv +1x8x80x80 ' out '/layer4/layer4.1/relu_1/Relu +Relu +1x64x5x5 ' \
	out '/Flatten +Flatten +1x64 +0  <- default \(64-d\)$'
run "$F" layers --model "$R18" --size 160x192 --batch 3
t "--size HxW and --batch" 0 out '^input +input 3x3x160x192$' out '/conv1/Conv +Conv +3x8x80x96 ' \
	out '/fc/Gemm +Gemm +3x10 '
run "$F" layers --model "$R18" --size 200x100 --json
py "--json follows --size" out "
import json, sys
d = json.load(open(sys.argv[1]))
assert d['input']['shape'] == [1, 3, 200, 100]
assert d['layers'][0]['shape'] == [1, 8, 100, 50], d['layers'][0]
"

run "$F" layers --model "$R18" --layer /layer3/layer3.1/relu_1/Relu
t "--layer marks the cut and shows its embedding" 0 \
	out '/layer3/layer3.1/relu_1/Relu +Relu +1x32x14x14 +0  \[block\]  <- cut \(32-d, pooled\)$' \
	out '<- default \(64-d\)$' \
	out "^cut +'/layer3/layer3.1/relu_1/Relu': 32-d embedding \(average-pooled from 1x32x14x14\), [0-9]+ params up to it$"
ok_if "block outputs are marked: 8 of them" [ "$(grep -c '\[block\]$' r18.txt)" -eq 8 ]
ok_if "a ResNet block's output is the Relu after its residual Add" \
	grep -q '/layer1/layer1.0/relu_1/Relu .*\[block\]$' r18.txt
run "$F" layers --model "$R18" --layer /layer3/layer3.1/relu_1/Relu,/layer4/layer4.1/relu_1/Relu
t "--layer A,B concatenates cuts" 0 out '/layer3/layer3.1/relu_1/Relu .* <- cut 1 of 2$' \
	out '/layer4/layer4.1/relu_1/Relu .* <- cut 2 of 2$' \
	out "^cut +'/layer3/layer3.1/relu_1/Relu' \+ '/layer4/layer4.1/relu_1/Relu': 96-d embedding"
run "$F" layers --model "$R18" --pool cls
t "--pool on a model without tokens" 1 err "pooling 'cls' is for token tensors \(N x T x D\), but layer '/Flatten' outputs 1x64"
run "$F" layers --model "$R18" --pool max
t "--pool with a bad value" 2 err "bad value 'max' for --pool"
run "$F" layers --model "$R18" --layer /fc/Gemm --json
py "--layer in --json" out "
import json, sys
d = json.load(open(sys.argv[1]))
c = d['cut']
assert (c['layer'], c['index'], c['dim'], c['pooled'], c['params']) == ('/fc/Gemm', 48, 10, False, 176762), c
assert [l['name'] for l in d['layers'] if l['cut']] == ['/fc/Gemm']
assert d['default']['layer'] == '/Flatten'
"
out_name=$(sed -n 's/.*"output": "\(.*Flatten[^"]*\)".*/\1/p' r18.json | head -1)
run "$F" layers --model "$R18" --layer "$out_name"
t "--layer takes an output tensor's name too" 0 out '<- cut \(64-d\)$'

run "$F" layers --model "$FX/shapechain_dynbatch.onnx" --batch 4
t "a dynamic batch: torch's view() chain is folded for --batch" 0 \
	out '^input +input 4x3x224x224$' out '/Reshape_2 +Reshape +4x16 +0  <- default \(16-d\)$' \
	out '^22 layers \(27 constant nodes folded\)'

# ---- failures ----

run "$F" layers --model "$R18" --layer nosuch
t "an unknown --layer fails" 1 err "^featcache: cannot cut model '.*resnet18_narrow.onnx' at 'nosuch': no layer named 'nosuch'$" '!out' '.'
run "$F" layers --model "$FX/vgg11_bn_narrow.onnx" --size 160x192
t "a size the model cannot take fails, naming the node" 1 \
	err "^featcache: model '.*vgg11_bn_narrow.onnx' does not take this input size: node '/classifier/classifier.0/Gemm' \(Gemm\): input 1x1920 does not fit weight 64x3136"
run "$F" layers --model "$SQZ" --size 8
t "an input too small for the model fails" 1 \
	err "does not take this input size: node '/features/features.5/MaxPool' \(MaxPool\): kernel 3x3"

head -c 100000 "$R18" >trunc.onnx
run "$F" layers --model trunc.onnx
t "a truncated model fails in the house format" 1 \
	err "^featcache: cannot open model 'trunc.onnx': truncated protobuf at byte [0-9]+$" '!out' '.'
head -c 3000 /dev/urandom >garbage.onnx
run "$F" layers --model garbage.onnx
t "random bytes fail" 1 err "^featcache: cannot open model 'garbage.onnx': " '!out' '.'
: >empty.onnx
run "$F" layers --model empty.onnx
t "an empty file fails" 1 err "^featcache: cannot open model 'empty.onnx': model imports no ai.onnx opset$"
run "$F" layers --model nope.onnx
t "a missing model fails" 1 err "^featcache: cannot open model 'nope.onnx': no such file or directory$"
run "$F" layers --model .
t "a directory fails" 1 err "^featcache: cannot open model '.': is a directory$"
if [ -w /dev/full ]; then
	"$F" layers --model "$R18" >/dev/full 2>err
	rc=$?
	t "a failed write to stdout fails" 1 err "cannot write standard output"
fi

# ---- usage ----

run "$F" layers
t "no --model is a usage error" 2 err "^featcache: no model given: use --model FILE$" \
	err "^see 'featcache help layers'$" '!out' '.'
run "$F" layers --model ''
t "an empty --model is a usage error" 2 err "bad value '' for --model"
for v in abc 0 224x 224x0 x224 65537 224x224x3 -5; do
	run "$F" layers --model "$R18" --size "$v"
	t "--size $v is a usage error" 2 err "bad value '$v' for --size"
done
run "$F" layers --model "$R18" --batch 0
t "--batch 0 is a usage error" 2 err "bad value '0' for --batch"
run "$F" layers --model "$R18" extra
t "a stray argument is a usage error" 2 err "unexpected argument 'extra'"
run "$F" layers --model "$R18" --bogus
t "an unknown option is a usage error" 2 err "unknown option '--bogus'"
run "$F" help layers
t "help layers" 0 out '^usage: featcache layers --model FILE' out '--size N\|HxW' out '--json'
cp out help.txt
run "$F" layers --help
ok_if "layers --help is help layers" cmp -s out help.txt
run "$F" help
t "help lists layers" 0 out '^  layers +list '

[ "$failures" -eq 0 ]
