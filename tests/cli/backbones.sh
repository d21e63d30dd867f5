#!/bin/sh
# tests/cli/backbones.sh - the README's "Bring your own backbone" recipes,
# run as a user runs them, with random weights (no downloads):
#   tools/export_onnx.py exports the model and prints the `featcache
#   extract` flags; `featcache layers` reads the export; `featcache extract`
#   with exactly those flags stores the features of a few images of several
#   sizes and kinds (tests/tool_mkimage); they must match the PyTorch
#   model's own features for the same files read by PIL and preprocessed by
#   the family's torchvision transform, written here as the family's
#   authors write it, within the conformance run's f32 bounds (max relative
#   error <= 1e-4, cosine >= 0.9999 per image).
# Recipes run: torchvision resnet18 (bilinear, Resize 256) and efficientnet_b0
# (its weights ask for bicubic); a DINOv2-style
# ViT-S/14 with 4 registers and a 37 x 37 position embedding (narrow, from
# tools/token_models.py, standing in for the hub model through --module;
# the export bakes the embedding for 224) at its default layer and at the
# final norm pooled cls+mean; a CLIP-style ViT-B/32 visual tower (narrow)
# whose factory returns an open_clip-style preprocess, at its default layer
# and at the projected output. Not run here: --timm, --open-clip, --dinov2
# (their packages or hub code are not on the machine).
# Also: `extract --interpolation`, and what export_onnx.py refuses.
# Skips (one # SKIP line) only without python3's torch, torchvision, PIL
# and numpy (Debian: python3-torch python3-torchvision python3-pil).
NAME=backbones
. "$(dirname "$0")/lib.inc"

IMG=$FC_TOOLS/tool_mkimage
EXP=$FC_TOP/tools/export_onnx.py
SMALL=$FC_TOP/tests/fixtures/models/resnet18_narrow.onnx

mk() { "$IMG" "$@" || echo "# tool_mkimage $* failed"; }
mkdir -p ds/a ds/b ds/c
mk ds/a/wide.png 300 200 1
mk ds/a/tall.jpg 180 260 2
mk ds/b/square.png 224 224 3
mk ds/b/small.jpg 97 131 4
mk ds/c/big.png 640 480 5
mk ds/c/gray.png 150 170 6 gray
mk ds/c/alpha.png 260 240 7 rgba

# ---- --interpolation (no PyTorch needed) ----
run "$F" extract --store s0 --data ds --model "$SMALL" --size 64 --interpolation lanczos --quiet
t "extract --interpolation lanczos is refused" 2 err "bad value 'lanczos' for --interpolation: bilinear or bicubic"
run "$F" extract --store s0 --data ds --model "$SMALL" --size 64 --quiet
t "extract, the torchvision preset" 0
id_default=$(sed -n 's/^extractor \([0-9a-f]*\):.*/\1/p' out)
run "$F" extract --store s0 --data ds --model "$SMALL" --size 64 --interpolation bilinear --quiet
t "--interpolation bilinear is the preset's own: the same extractor, nothing new" 0 \
	out "^extractor $id_default:" out "^images: 0 extracted"
run "$F" extract --store s0 --data ds --model "$SMALL" --size 64 --interpolation bicubic --quiet
t "--interpolation bicubic is another extractor" 0 !out "^extractor $id_default:" out "^images: 7 extracted"

if [ -z "$PY" ] || ! "$PY" -c 'import torch, torchvision, PIL, numpy' 2>/dev/null; then
	echo "ok - backbone recipes # SKIP no python3 torch, torchvision, PIL and numpy"
	exit $((failures > 0))
fi

# The user's factories (--module FILE.py:FUNC), as a user writes them.
cat >factories.py <<EOF
import sys
sys.path.insert(0, "$FC_TOP/tools")
import torch
import token_models
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode


def dinov2():
    """DINOv2-style ViT-S/14 with 4 registers and LayerScale, narrow, its
    position embedding made for 518 x 518 (37 x 37) as the released ones."""
    m = token_models.DinoV2S14(dim=48, depth=2, heads=2, native=518)
    token_models._randomize(m, 1)
    return m


def _convert_to_rgb(image):
    return image.convert("RGB")


def clip():
    """CLIP-style ViT-B/32 visual tower, narrow, with the preprocess
    open_clip.create_model_and_transforms gives."""
    m = token_models.ClipB32(width=48, depth=2, heads=2, out=32)
    token_models._randomize(m, 2)
    pre = T.Compose([T.Resize(224, interpolation=InterpolationMode.BICUBIC), T.CenterCrop(224),
                     _convert_to_rgb, T.ToTensor(),
                     T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
    return m, pre


def nearest():
    return torch.nn.Conv2d(3, 4, 3), T.Compose([T.Resize(224, interpolation=InterpolationMode.NEAREST),
                                               T.CenterCrop(224), T.ToTensor()])


class Huge(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.zeros(1).expand(600000000))  # 2.4 GB that take no memory

    def forward(self, x):
        return x


def huge():
    return Huge()
EOF

# PyTorch's side: the model built as the export built it (torch.manual_seed
# of --seed, 0, then the constructor or factory), each file read by PIL and
# put through the family's transform, the feature at featcache's default
# layer (or the cut named), compared with featcache's.
cat >ref.py <<EOF
import importlib.util, sys
import numpy as np, torch, torchvision
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode as IM
sys.path.insert(0, "$FC_TOP/tools")
import export_models, token_models

IMAGENET = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# DINOv2's evaluation transform (make_classification_eval_transform).
DINOV2 = T.Compose([T.Resize(256, interpolation=IM.BICUBIC), T.CenterCrop(224), T.ToTensor(), IMAGENET])

kind, name, keys, got = sys.argv[1:5]
torch.set_num_threads(2)
torch.manual_seed(0)
if kind == "tv":
    model = getattr(torchvision.models, name)(weights=None).eval()
    transform = torchvision.models.get_model_weights(name).DEFAULT.transforms()
else:
    spec = importlib.util.spec_from_file_location("factories", "factories.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    made = getattr(mod, name)()
    model, transform = made if isinstance(made, tuple) else (made, DINOV2)
    model.eval()
keys = [k for k in open(keys).read().split("\n") if k]
x = torch.stack([transform(Image.open("ds/" + k).convert("RGB")) for k in keys])
with torch.no_grad():
    if kind == "tv":
        ref = export_models.torch_feature(model, "full", x)
    elif kind == "default":
        ref = token_models.torch_feature(model, x)
    elif kind == "output":
        ref = model(x).numpy()
    elif kind == "cls+mean":  # the final norm's tokens: CLS, mean of the patches
        t = model.norm(model.tokens(x))
        ref = torch.cat([t[:, 0], t[:, 1 + model.num_register_tokens:].mean(1)], 1).numpy()
ours = np.load(got)
assert ours.shape == ref.shape, "featcache %s, torch %s" % (ours.shape, ref.shape)
err = float(np.abs(ours - ref).max() / np.abs(ref).max())
cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
print("%d images, %d-d: max rel err %.2g, min cosine %.7f" % (ref.shape[0], ref.shape[1], err, cos.min()))
sys.exit(0 if err <= 1e-4 and cos.min() >= 0.9999 else 1)
EOF

# recipe NAME REF_KIND REF_NAME FLAGS_REGEX "EXTRA_EXTRACT_FLAGS" EXPORT_ARGS...:
# export NAME.onnx (once), check the printed flags, layers, extract with the
# flags plus the extras, embed, compare with PyTorch.
recipe() {
	name=$1 kind=$2 ref=$3 pat=$4 extra=${5:+ $5}
	shift 5
	if [ ! -f "$name.onnx" ]; then
		run "$PY" "$EXP" "$name.onnx" "$@"
		t "$name: export_onnx.py $*" 0 out "^featcache extract --model $name.onnx "
		cp out "$name.export"
	fi
	flags=$(sed -n "s/^featcache extract --model $name.onnx //p" "$name.export")
	ok_if "$name: the flags match /$pat/" sh -c 'printf "%s\n" "$1" | grep -Eq -- "$2"' sh "$flags" "$pat"
	run "$F" layers --model "$name.onnx"
	t "$name: featcache layers reads the export" 0 out "^default "
	# shellcheck disable=SC2086
	run "$F" extract --store "$name$kind.st" --data ds --model "$name.onnx" $flags $extra --store-dtype f32 \
		--batch 3 --quiet
	t "$name: extract $flags$extra" 0 out "^images: 7 extracted, 0 deduplicated, 0 failed"
	run "$F" embed --store "$name$kind.st" --out "$name$kind.npy" --keys "$name$kind.keys" --quiet
	t "$name: embed the features" 0
	if "$PY" ref.py "$kind" "$ref" "$name$kind.keys" "$name$kind.npy" >"$tmp/out" 2>"$tmp/err"; then
		pass "$name ($kind): featcache = PyTorch on PIL + the family's transform ($(cat "$tmp/out"))"
	else
		fail "$name ($kind): featcache = PyTorch on PIL + the family's transform"
		show
	fi
}

IMAGENET="--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225$"
recipe resnet18 tv resnet18 "^--size 224 --resize 256 --interpolation bilinear $IMAGENET" "" \
	--torchvision resnet18 --random-weights
recipe efficientnet_b0 tv efficientnet_b0 "^--size 224 --resize 256 --interpolation bicubic $IMAGENET" "" \
	--torchvision efficientnet_b0 --random-weights
recipe dinov2 default dinov2 "^--size 224 --resize 256 --interpolation bicubic $IMAGENET" "" \
	--module factories.py:dinov2 --family dinov2 --random-weights
ok_if "dinov2: the baked position embedding leaves no Resize in the export" sh -c '! grep -q Resize "$1"' sh dinov2.onnx
hint=$(sed -n 's/^# DINOv2.s linear evaluation.*: //p' dinov2.export)
ok_if "dinov2: the linear-evaluation hint names the final norm, 5 prefix tokens" sh -c \
	'printf "%s\n" "$1" | grep -Eq -- "^--layer [^ ]*norm[^ ]* --pool cls\+mean --prefix-tokens 5$"' sh "$hint"
recipe dinov2 cls+mean dinov2 "bicubic" "$hint" --module factories.py:dinov2 --family dinov2

CLIP="--mean 0.48145466,0.4578275,0.40821073 --std 0.26862954,0.26130258,0.27577711$"
recipe clip default clip "^--size 224 --resize 224 --interpolation bicubic $CLIP" "" \
	--module factories.py:clip --family clip --opset 14
hint=$(sed -n "s/^# CLIP's projected.*: //p" clip.export)
ok_if "clip: the projected-embedding hint is --layer output" [ "$hint" = "--layer output" ]
recipe clip output clip "bicubic" "$hint" --module factories.py:clip --family clip

# ---- what export_onnx.py refuses ----
run "$PY" "$EXP" x.onnx --torchvision resnet18 --random-weights --size 256
t "export_onnx: a --size the weights' transform does not crop is refused" 1 \
	err "--size 256, but the model's transform crops 224 x 224" !out .
run "$PY" "$EXP" x.onnx --module factories.py:nearest
t "export_onnx: a nearest-neighbour Resize is refused" 1 err "featcache has bilinear and bicubic"
run "$PY" "$EXP" x.onnx --module factories.py:huge
t "export_onnx: weights over 2 GB are refused (external data)" 1 err "2.40 GB: above protobuf's 2 GB limit"
ok_if "export_onnx: nothing written by the refusals" [ ! -e x.onnx ] && [ ! -e x.onnx.tmp ]

exit $((failures > 0))
