#!/usr/bin/python3
"""export_onnx.py - export a PyTorch image backbone to ONNX for featcache and
print the `featcache extract` flags that preprocess images the way the
model was trained to see them.

usage: /usr/bin/python3 tools/export_onnx.py OUT.onnx SOURCE [--random-weights] [--seed N]
                   [--opset 17|14] [--size N] [--static-batch]

SOURCE, one of:
  --torchvision NAME [--weights W]  torchvision.models.NAME with the weights W
                                    (DEFAULT, or a member of NAME's weights enum
                                    such as IMAGENET1K_V1)
  --timm NAME                       timm.create_model(NAME, pretrained=True)
  --open-clip ARCH --pretrained TAG open_clip.create_model_and_transforms(ARCH,
                                    pretrained=TAG): its visual tower, model.visual
  --dinov2 NAME                     torch.hub.load('facebookresearch/dinov2', NAME),
                                    e.g. dinov2_vits14_reg (ViT-S/14, 4 registers)
  --module FILE.py:FUNC             your own factory: FUNC() returns a torch.nn.Module,
                                    or (module, transform) with the torchvision
                                    transform it expects; --family imagenet|clip|dinov2
                                    names the recipe when FUNC gives no transform,
                                    and the family (DINOv2: the position embedding
                                    baked; the hints on other cuts)

The export: model.eval(), then torch.onnx.export at --opset (17, which writes
LayerNorm as LayerNormalization; 14 writes it out as ReduceMean/Sub/Pow/
Sqrt/Div), one input "input" of N x 3 x S x S with N dynamic (--static-batch
fixes it at 1), one output "output", constant folding on, every weight in
the one file (checked by onnx.checker when python3-onnx is installed).
featcache reads single-file models; protobuf caps a file at 2 GB, above
which torch writes the weights as external data, so a model whose weights
exceed 2 GB (a ViT-g, say) is refused here instead.

The flags come from the model's own evaluation transform - torchvision's
weights.transforms(), timm's resolve_data_config + create_transform,
open_clip's preprocess, DINOv2's evaluation transform (Resize(S * 256 / 224,
bicubic), CenterCrop(S), ImageNet mean/std), or your factory's - translated
step by step: Resize(n) -> --resize n, Resize((S, S)) -> --preprocess
finetuner, its interpolation -> --interpolation, CenterCrop(S) -> --size S,
Normalize -> --mean/--std. A step featcache cannot reproduce (another
interpolation, a non-square crop, a Resize with max_size, ...) is an error
rather than an approximation. The size S is the transform's crop; --size
sets it for the recipes that scale (CLIP, DINOv2) and must otherwise agree.

--random-weights downloads nothing: the architecture's own initialisation
after torch.manual_seed(--seed), the same export and flags as with the
pretrained weights (tests/cli/backbones.sh runs it). For --dinov2 the hub's
code itself is still fetched from GitHub by torch.hub. --module factories
run after the same torch.manual_seed.

DINOv2's hub model interpolates its 37 x 37 position embedding to the input
size on every forward (a bicubic Resize, which featcache's engine does not
run); the export first replaces it with the embedding for S x S (S a
multiple of 14), computed by the model's own interpolate_pos_encoding, so
the graph holds the numbers PyTorch computes at that size.
"""
import argparse
import importlib.util
import os
import sys
import warnings

import torch
import torch.nn as nn

ONNX_LIMIT = 2 * 1024 ** 3  # protobuf's hard limit on one serialised message
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ExportError(Exception):
    pass


def export(model, path, size=224, opset=17, dynamic=True):
    """torch.onnx.export of `model` (put in eval mode) for size x size
    images into path, written under a temporary name first: input "input",
    output "output", the batch dynamic or fixed at 1, constant folding, one
    file. Refuses weights over protobuf's 2 GB. Checked by onnx.checker when
    the onnx package is there. Returns path."""
    nbytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    if nbytes >= ONNX_LIMIT:
        raise ExportError("the weights take %.2f GB: above protobuf's 2 GB limit torch writes them as "
                          "external data, which featcache does not read (one file only)" % (nbytes / 1e9))
    model.eval()
    tmp = path + ".tmp"
    x = torch.randn(1, 3, size, size)
    kw = {"dynamic_axes": {"input": {0: "batch"}, "output": {0: "batch"}}} if dynamic else {}
    with warnings.catch_warnings():  # the tracer's notes on size asserts and shape arithmetic
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, tmp, opset_version=opset, input_names=["input"],
                          output_names=["output"], do_constant_folding=True, **kw)
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        onnx.checker.check_model(tmp)
    os.replace(tmp, path)
    return path


# ---- preprocessing: a torchvision transform as featcache extract flags ----

def _interp_name(mode):
    """torchvision's InterpolationMode (or PIL's filter number) as the value
    of --interpolation; None for one featcache does not implement."""
    name = getattr(mode, "value", mode)
    if isinstance(name, int):  # PIL.Image.BILINEAR == 2, BICUBIC == 3
        name = {2: "bilinear", 3: "bicubic"}.get(name)
    return name if name in ("bilinear", "bicubic") else None


def _size_list(size):
    return [int(size)] if isinstance(size, int) else [int(v) for v in size]


def _floats(v):
    return [float(x) for x in (v.tolist() if hasattr(v, "tolist") else v)]


def transform_flags(transform):
    """`featcache extract` flags reproducing a torchvision evaluation
    transform on PIL images: a list of strings, and the crop size. Raises
    ExportError naming the step featcache cannot reproduce."""
    name = type(transform).__name__
    if name == "ImageClassification":  # torchvision weights' transforms()
        steps = [("resize", _size_list(transform.resize_size), transform.interpolation, None),
                 ("crop", _size_list(transform.crop_size)), ("to_tensor",),
                 ("normalize", transform.mean, transform.std)]
    else:
        steps = []
        for t in getattr(transform, "transforms", [transform]):
            tn = type(t).__name__
            fn = getattr(t, "__name__", "")
            if tn == "Resize":
                steps.append(("resize", _size_list(t.size), t.interpolation, t.max_size))
            elif tn == "CenterCrop":
                steps.append(("crop", _size_list(t.size)))
            elif tn in ("ToTensor", "MaybeToTensor"):
                steps.append(("to_tensor",))
            elif tn == "PILToTensor":
                steps.append(("to_uint8",))
            elif tn == "ConvertImageDtype" and t.dtype.is_floating_point:
                steps.append(("to_tensor",))
            elif tn == "Normalize":
                steps.append(("normalize", t.mean, t.std))
            elif fn in ("_convert_to_rgb", "_convert_image_to_rgb"):  # open_clip's, OpenAI CLIP's
                continue  # featcache decodes to RGB as PIL's convert("RGB") does
            else:
                raise ExportError("the transform step %r has no featcache extract flag" % (t,))
    resize = crop = interp = None
    mean, std, scaled = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False
    for s in steps:
        if s[0] == "resize":
            if resize is not None or crop is not None or scaled:
                raise ExportError("a Resize after another Resize, a crop or ToTensor has no featcache flag")
            if s[3] is not None:
                raise ExportError("Resize(max_size=%s) has no featcache flag" % s[3])
            interp = _interp_name(s[2])
            if interp is None:
                raise ExportError("Resize's interpolation %s: featcache has bilinear and bicubic" % (s[2],))
            resize = s[1]
        elif s[0] == "crop":
            if crop is not None or scaled:
                raise ExportError("a crop after another crop or after ToTensor has no featcache flag")
            crop = s[1] * 2 if len(s[1]) == 1 else s[1]
            if crop[0] != crop[1]:
                raise ExportError("CenterCrop(%s): featcache's input is square" % (s[1],))
        elif s[0] in ("to_tensor", "to_uint8"):
            scaled = s[0] == "to_tensor"
        elif s[0] == "normalize":
            if not scaled:
                raise ExportError("Normalize of an image not scaled to [0, 1] has no featcache flag")
            mean, std = _floats(s[1]), _floats(s[2])
    if not scaled:
        raise ExportError("the transform does not make a float tensor in [0, 1] (ToTensor)")
    if resize is None:
        raise ExportError("the transform has no Resize: featcache always resizes")
    if len(resize) == 1:  # the shorter side
        if crop is None:
            raise ExportError("Resize(%d) without a CenterCrop gives images of any shape; featcache's input "
                              "is square" % resize[0])
        size = crop[0]
        flags = ["--size", str(size), "--resize", str(resize[0])]
    else:  # Resize((h, w))
        if resize[0] != resize[1] or (crop is not None and crop[0] != resize[0]):
            raise ExportError("Resize(%s) then CenterCrop(%s) has no featcache flag" % (resize, crop))
        size = resize[0]
        flags = ["--preprocess", "finetuner", "--size", str(size)]
    flags += ["--interpolation", interp, "--mean", ",".join("%.8g" % v for v in mean),
              "--std", ",".join("%.8g" % v for v in std)]
    return flags, size


def recipe(family, size):
    """The evaluation transform of a family, as its authors' code builds it:
    imagenet - torchvision's classic Resize(S * 256 / 224, bilinear),
    CenterCrop(S); clip - Resize(S, bicubic), CenterCrop(S), CLIP's
    mean/std; dinov2 - Resize(S * 256 / 224, bicubic), CenterCrop(S),
    ImageNet's mean/std."""
    from torchvision import transforms as T
    from torchvision.transforms import InterpolationMode as IM
    if family == "clip":
        steps = [T.Resize(size, interpolation=IM.BICUBIC), T.CenterCrop(size)]
        mean, std = CLIP_MEAN, CLIP_STD
    elif family in ("imagenet", "dinov2"):
        steps = [T.Resize(size * 256 // 224, interpolation=IM.BICUBIC if family == "dinov2" else IM.BILINEAR),
                 T.CenterCrop(size)]
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        raise ExportError("unknown family '%s': imagenet, clip or dinov2" % family)
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])


# ---- sources ----

def from_torchvision(name, weights, random):
    """(model, transform, what) for torchvision.models.NAME; the transform is
    that of `weights` (DEFAULT when none) even with random weights."""
    import torchvision
    from torchvision.models import get_model_weights
    try:
        enum = get_model_weights(name)
    except (ValueError, KeyError):
        raise ExportError("torchvision has no model '%s'" % name)
    key = (weights or "DEFAULT").rpartition(".")[2]  # IMAGENET1K_V1 or ResNet50_Weights.IMAGENET1K_V1
    try:
        w = enum.DEFAULT if key == "DEFAULT" else enum[key]
    except KeyError:
        raise ExportError("%s has no weights '%s': %s" % (enum.__name__, weights, ", ".join(enum.__members__)))
    model = getattr(torchvision.models, name)(weights=None if random else w)
    return model, w.transforms(), "torchvision %s, %s%s" % (name, w, " (random weights)" if random else "")


def from_timm(name, random):
    import timm
    model = timm.create_model(name, pretrained=not random)
    cfg = timm.data.resolve_data_config({}, model=model)
    return model, timm.data.create_transform(**cfg), "timm %s%s" % (name, " (random weights)" if random else "")


def from_open_clip(arch, tag, random):
    import open_clip
    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None if random else tag)
    return model.visual, preprocess, "open_clip %s/%s visual%s" % (arch, tag, " (random weights)" if random else "")


def bake_pos_embed(model, size):
    """DINOv2: replace the position embedding by its interpolation for size
    x size, computed by the model itself, so the export has no Resize."""
    p = int(model.patch_size)
    if size % p:
        raise ExportError("--size %d is not a multiple of the patch size %d" % (size, p))
    n = (size // p) ** 2
    if model.pos_embed.shape[1] == 1 + n:
        return
    with torch.no_grad():
        pe = model.interpolate_pos_encoding(torch.zeros(1, 1 + n, model.pos_embed.shape[2]), size, size)
    model.pos_embed = nn.Parameter(pe.detach().clone())


def from_dinov2(name, random, size):
    model = torch.hub.load("facebookresearch/dinov2", name, pretrained=not random)
    return model, recipe("dinov2", size), "DINOv2 %s%s" % (name, " (random weights)" if random else "")


def from_module(spec, family, size):
    path, sep, func = spec.rpartition(":")
    if not sep or not path or not func:
        raise ExportError("--module wants FILE.py:FUNCTION, not '%s'" % spec)
    mspec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    if mspec is None or not os.path.isfile(path):
        raise ExportError("cannot read '%s'" % path)
    mod = importlib.util.module_from_spec(mspec)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    mspec.loader.exec_module(mod)
    if not hasattr(mod, func):
        raise ExportError("'%s' has no function '%s'" % (path, func))
    got = getattr(mod, func)()
    model, transform = got if isinstance(got, tuple) else (got, None)
    if not isinstance(model, nn.Module):
        raise ExportError("%s() returned %s, not a torch.nn.Module" % (func, type(model).__name__))
    if transform is None:
        transform = recipe(family or "imagenet", size)
    return model, transform, "%s()" % spec


# ---- token models: the other cuts worth knowing ----

def token_hints(path, family, model):
    """Lines of extra flags for transformer families: DINOv2's linear-probe
    features (the final norm's tokens, cls+mean, registers left out of the
    mean) and CLIP's projected embedding. Needs the onnx package."""
    try:
        import onnx
    except ImportError:
        return []
    g = onnx.load(path).graph
    producer = {o: n for n in g.node for o in n.output}
    if family == "clip":
        return ["# CLIP's projected (image-text) embedding instead: --layer %s" % g.output[0].name]
    if family != "dinov2":
        return []
    t = g.output[0].name
    while t in producer and producer[t].op_type in ("Identity", "Flatten"):
        t = producer[t].input[0]
    node = producer.get(t)
    if node is None or node.op_type != "Gather":
        return []
    regs = int(getattr(model, "num_register_tokens", 0))
    return ["# DINOv2's linear evaluation (normed CLS and mean patch token): --layer %s --pool cls+mean "
            "--prefix-tokens %d" % (node.input[0], 1 + regs)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("out", metavar="OUT.onnx")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--torchvision", metavar="NAME")
    src.add_argument("--timm", metavar="NAME")
    src.add_argument("--open-clip", metavar="ARCH")
    src.add_argument("--dinov2", metavar="NAME")
    src.add_argument("--module", metavar="FILE.py:FUNC")
    ap.add_argument("--weights", help="torchvision weights (default DEFAULT)")
    ap.add_argument("--pretrained", metavar="TAG", help="open_clip pretrained tag")
    ap.add_argument("--family", choices=("imagenet", "clip", "dinov2"),
                    help="--module: the family (its recipe when FUNC returns no transform)")
    ap.add_argument("--random-weights", action="store_true", help="no download: the architecture's own init")
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed before building (default 0)")
    ap.add_argument("--opset", type=int, default=17, choices=(14, 17))
    ap.add_argument("--size", type=int, help="input size (default: the transform's crop; 224 for CLIP, DINOv2)")
    ap.add_argument("--static-batch", action="store_true", help="fix the batch at 1")
    a = ap.parse_args()
    if a.open_clip and not a.pretrained and not a.random_weights:
        ap.error("--open-clip needs --pretrained TAG (or --random-weights)")
    torch.manual_seed(a.seed)
    size = a.size or 224
    family = "clip" if a.open_clip else "dinov2" if a.dinov2 else a.family
    try:
        if a.torchvision:
            model, transform, what = from_torchvision(a.torchvision, a.weights, a.random_weights)
        elif a.timm:
            model, transform, what = from_timm(a.timm, a.random_weights)
        elif a.open_clip:
            model, transform, what = from_open_clip(a.open_clip, a.pretrained, a.random_weights)
        elif a.dinov2:
            model, transform, what = from_dinov2(a.dinov2, a.random_weights, size)
        else:
            model, transform, what = from_module(a.module, a.family, size)
        flags, crop = transform_flags(transform)
        if a.size and a.size != crop:
            raise ExportError("--size %d, but the model's transform crops %d x %d" % (a.size, crop, crop))
        if family == "dinov2" and hasattr(model, "interpolate_pos_encoding"):
            bake_pos_embed(model, crop)
        export(model, a.out, crop, a.opset, not a.static_batch)
    except ExportError as e:
        sys.exit("export_onnx: %s" % e)
    print("wrote '%s': %s, %.1f MB, opset %d, %s batch, %d x %d input" % (
        a.out, what, os.path.getsize(a.out) / 1e6, a.opset, "fixed" if a.static_batch else "dynamic", crop, crop))
    print("featcache layers --model %s" % a.out)
    print("featcache extract --model %s %s" % (a.out, " ".join(flags)))
    for line in token_hints(a.out, family, model):
        print(line)


if __name__ == "__main__":
    main()
