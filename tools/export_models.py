#!/usr/bin/python3
"""export_models.py - make the ONNX model fixtures of tests/fixtures/models/.

Narrow variants of the torchvision CNN families featcache supports, and of
the transformers (ViT, Swin, ConvNeXt, tools/token_models.py's DINOv2-style
and CLIP-style models: width 16-32, two blocks per stage), exported by
torch.onnx (as a user would) with seeded random weights, non-trivial
BatchNorm statistics and LayerNorm/LayerScale parameters, ViT's zero-
initialised head randomised, small enough to commit (each file <= 2 MB). For every
model it also writes MODEL.json: the ops the export contains, the parameter
count, the default embedding layer (default_layer: featcache's rule), and
the shape of every tensor at two input sizes, from onnx.shape_inference (cross-checked against PyTorch at the output and at the
feature layer). Where a size cannot work (a layer fixed at export time, like
VGG's adaptive pooling), the JSON says so and featcache must refuse it.

It also writes input_224.npy (a seeded 2x3x224x224 batch) and, per model,
MODEL.feat.npy: PyTorch's feature at the default layer for that batch,
global-average-pooled when it is 4-D - what the engine must reproduce.

With --full NAME... it instead exports full-size torchvision models
(resnet50, efficientnet_b0, vit_b_16, ...: any torchvision.models
constructor, or dinov2_s14 / clip_b32 of tools/token_models.py) into --out,
never into the repository: seeded random weights (torchvision's own
initialisation), randomised BatchNorm statistics and LayerNorm/LayerScale
parameters, ViT's zero-initialised head randomised, opset 13 (--opset), a
dynamic batch dimension. They are hundreds of MB; `make bench` and `make
conformance` make them under build/.

Needs Debian's python3-torch, python3-torchvision, python3-onnx and numpy.
The tests only read the files this writes; nothing here runs at test time.

usage: /usr/bin/python3 tools/export_models.py [--out DIR] [--only NAME...]
       /usr/bin/python3 tools/export_models.py --full NAME... --out DIR [--opset N]
       /usr/bin/python3 tools/export_models.py --corpus tests/corpus/fuzz_model
"""
import argparse
import collections
import io
import json
import os
import sys
import warnings

import numpy as np
import onnx
import onnx.shape_inference
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from onnx import numpy_helper
from torchvision.models import efficientnet, mobilenetv3, regnet, resnet

SIZES = [(1, 224, 224), (2, 160, 192)]
MAX_BYTES = 2 * 1024 * 1024


def randomize_bn(model, gen):
    """Give every BatchNorm statistics and affine parameters away from the
    defaults, so that folding them is visible in the numbers."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=gen) * 0.1)


def randomize_norms(model, gen):
    """Give every LayerNorm (torchvision's LayerNorm2d too) affine parameters
    away from 1 and 0, and every LayerScale (ConvNeXt's layer_scale) values
    away from its 1e-6 initialisation, so that they show in the numbers."""
    for m in model.modules():
        with torch.no_grad():
            if isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            scale = getattr(m, "layer_scale", None)
            if isinstance(scale, nn.Parameter):
                scale.copy_(torch.rand(scale.shape, generator=gen) * 0.8 + 0.2)


def narrow_resnet(block, layers, widths, groups=1, width_per_group=64):
    """torchvision's ResNet with narrower stages, rebuilt with its own
    _make_layer so the block structure is exactly torchvision's."""
    m = resnet.ResNet(block, layers, num_classes=10, groups=groups,
                      width_per_group=width_per_group)
    m.inplanes = widths[0]
    m.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
    m.bn1 = nn.BatchNorm2d(widths[0])
    m.layer1 = m._make_layer(block, widths[0], layers[0])
    m.layer2 = m._make_layer(block, widths[1], layers[1], stride=2)
    m.layer3 = m._make_layer(block, widths[2], layers[2], stride=2)
    m.layer4 = m._make_layer(block, widths[3], layers[3], stride=2)
    m.fc = nn.Linear(widths[3] * block.expansion, 10)
    return m


def narrow_vgg11_bn():
    cfg = [8, "M", 16, "M", 32, 32, "M", 64, 64, "M", 64, 64, "M"]
    m = torchvision.models.VGG(torchvision.models.vgg.make_layers(cfg, batch_norm=True),
                               num_classes=10)
    m.classifier = nn.Sequential(
        nn.Linear(64 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(),
        nn.Linear(64, 48), nn.ReLU(True), nn.Dropout(),
        nn.Linear(48, 10))
    return m


def narrow_mobilenet_v3_small():
    setting, last = mobilenetv3._mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.5)
    return mobilenetv3.MobileNetV3(setting, last // 4, num_classes=10)


def narrow_efficientnet():
    setting, last = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25,
                                                    depth_mult=0.5)
    return efficientnet.EfficientNet(setting, 0.2, num_classes=10, last_channel=128)


def narrow_regnet_x():
    params = regnet.BlockParams.from_init_params(depth=8, w_0=8, w_a=8.0, w_m=2.0,
                                                 group_width=8)
    return regnet.RegNet(params, num_classes=10, stem_width=8)


class ShapeChain(nn.Module):
    """A small CNN written the way hand-made models often are: x.view(N, -1)
    (torch emits Shape/Gather/Unsqueeze/Concat/Reshape around it when the
    batch is dynamic), explicit F.pad, LeakyReLU, Hardswish, normalisation
    by Sub/Div, a spatial mean with keepdim, squeeze/unsqueeze and a MatMul
    head instead of Linear."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.c1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, dilation=2, padding=2, groups=2)
        self.bn = nn.BatchNorm2d(16)
        self.c3 = nn.Conv2d(16, 16, 1)
        self.w = nn.Parameter(torch.randn(16, 12) * 0.2)

    def forward(self, x):
        x = (x - self.mean) / self.std
        x = F.leaky_relu(self.c1(x), 0.1)
        x = F.pad(x, (1, 1, 0, 1))
        x = F.max_pool2d(x, 3, stride=2, ceil_mode=True)
        x = F.hardswish(self.bn(self.c2(x)))
        x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
        s = x.mean(dim=(2, 3), keepdim=True)
        x = self.c3(x * torch.sigmoid(s))
        x = torch.clamp(x, min=0.0, max=6.0)
        x = x.mean(dim=3, keepdim=True).mean(dim=2, keepdim=True)
        x = x.squeeze(3).squeeze(2).unsqueeze(1)
        x = x.view(x.size(0), -1)
        return torch.matmul(x, self.w)


def randomize_head(model, gen):
    """Give ViT's classifier (heads.head, which torchvision zero-initialises)
    random weights, so that the default layer is the input of a real Gemm
    and the output is not constant."""
    head = getattr(getattr(model, "heads", None), "head", None)
    if isinstance(head, nn.Linear):
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * head.in_features ** -0.5)
            head.bias.copy_(torch.randn(head.bias.shape, generator=gen) * 0.1)


def narrow_vit():
    return torchvision.models.VisionTransformer(image_size=224, patch_size=16, num_layers=2, num_heads=2,
                                                hidden_dim=32, mlp_dim=64, num_classes=10)


def narrow_swin():
    """Swin-T's layout (4 x 4 patches, 7 x 7 windows, 56 x 56 tokens in the
    first stage) at width 16 and two stages: the shifted windows' attention
    masks, folded at load time, are as large as full-size Swin-T's while
    the weights are few, so the folding budget must not lean on them."""
    return torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2],
                                              num_heads=[2, 2], window_size=[7, 7], num_classes=10)


def narrow_convnext():
    from torchvision.models.convnext import CNBlockConfig
    return torchvision.models.ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)],
                                       num_classes=10)


def narrow_token(name):
    """tools/token_models.py's DINOv2-style (registers, LayerScale,
    headless) or CLIP-style (QuickGELU, nn.MultiheadAttention, x @ proj)
    model at width 32, 2 blocks of 2 heads, with its own non-trivial
    LayerNorm and LayerScale parameters."""
    import token_models
    if name == "dinov2":
        m = token_models.DinoV2S14(dim=32, depth=2, heads=2)
    else:
        m = token_models.ClipB32(width=32, depth=2, heads=2, out=16)
    token_models._randomize(m, torch.initial_seed() + 1)
    return m


# Families whose export fixes the input size: VGG's adaptive pooling and
# Swin's window padding and shift masks (PyTorch adapts, ONNX's shape
# inference fails), the position embeddings of ViT and the token models
# (PyTorch refuses; ONNX's inference, strict or not, does not check the
# numel of the Reshapes the export fixed). The JSON records the error and
# featcache must refuse that size.
FIXED_SIZE = ("vgg", "swin", "vit", "token")

DYNAMIC_BATCH = {"dynamic_axes": {"input": {0: "batch"}, "output": {0: "batch"}}}

# name, family, builder, opset, extra export kwargs, f16 initializers
MODELS = [
    ("resnet18_narrow", "resnet", lambda: narrow_resnet(resnet.BasicBlock, [2, 2, 2, 2], [8, 16, 32, 64]), 13, {}, False),
    ("resnext_narrow", "resnext", lambda: narrow_resnet(resnet.Bottleneck, [2, 2, 2, 1], [8, 16, 32, 64], groups=4, width_per_group=8), 13, {}, False),
    ("mobilenet_v2_025", "mobilenet_v2", lambda: torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=10), 11, {}, False),
    ("mobilenet_v3_small_narrow", "mobilenet_v3", narrow_mobilenet_v3_small, 17, {}, False),
    ("efficientnet_narrow", "efficientnet", narrow_efficientnet, 13, {}, False),
    ("squeezenet1_1_f16", "squeezenet", lambda: torchvision.models.squeezenet1_1(num_classes=10), 13, {}, True),
    ("densenet_narrow", "densenet", lambda: torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, num_classes=10), 13, {}, False),
    ("regnet_x_narrow", "regnet", narrow_regnet_x, 13, {}, False),
    ("mnasnet_025", "mnasnet", lambda: torchvision.models.MNASNet(0.25, num_classes=10), 13, {}, False),
    ("vgg11_bn_narrow", "vgg", narrow_vgg11_bn, 13, {}, False),
    ("shapechain_dynbatch", "custom", ShapeChain, 13,
     {"dynamic_axes": {"input": {0: "batch"}, "output": {0: "batch"}}}, False),
    # Transformers and ConvNeXt: LayerNormalization at opset 17, decomposed
    # (ReduceMean/Sub/Pow/Sqrt/Div) at opset 14. The transformers have a
    # dynamic batch: exported at a fixed batch of 1, their token Reshapes,
    # class-token Expands and Swin's window Reshapes keep that 1, so the
    # file itself (ONNX Runtime too) runs one image at a time only, and the
    # tests run batch 2.
    ("vit_narrow", "vit", narrow_vit, 17, DYNAMIC_BATCH, False),
    ("vit_narrow_14", "vit", narrow_vit, 14, DYNAMIC_BATCH, False),
    ("swin_narrow", "swin", narrow_swin, 17, DYNAMIC_BATCH, False),
    ("convnext_narrow", "convnext", narrow_convnext, 14, {}, False),
    ("dinov2_narrow", "token", lambda: narrow_token("dinov2"), 17, DYNAMIC_BATCH, False),
    ("clip_narrow", "token", lambda: narrow_token("clip"), 14, DYNAMIC_BATCH, False),
]


def to_f16(model):
    """Make every float tensor float16: initializers, Constant values, and
    the declared types of the inputs, outputs and value_info, like an
    fp16-converted model."""
    for t in model.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for n in model.graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == onnx.TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16)))
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16


def attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def fold_one(node, vals, shapes):
    """numpy value of a node whose inputs are constant (Shape: whose input
    shape is known), or None. Only what torch emits around shapes and pads."""
    op = node.op_type
    ins = [vals.get(i) if i else None for i in node.input]
    if op == "Shape":  # of a tensor folded earlier too (no longer in ONNX's shapes)
        if ins[0] is not None:
            return np.array(ins[0].shape, dtype=np.int64)
        return np.array(shapes[node.input[0]], dtype=np.int64) if node.input[0] in shapes else None
    if any(v is None for i, v in zip(node.input, ins) if i):
        return None
    if op == "Constant":
        return numpy_helper.to_array(node.attribute[0].t)
    if op in ("Identity", "Dropout"):
        return ins[0]
    if op == "ConstantOfShape":
        t = attr(node, "value")
        v = numpy_helper.to_array(t) if t is not None else np.zeros(1, np.float32)
        return np.full(tuple(ins[0]), v.reshape(-1)[0], dtype=v.dtype)
    if op == "Gather":
        return np.take(ins[0], ins[1], axis=attr(node, "axis", 0))
    if op == "Unsqueeze":
        out = ins[0]
        axes = ins[1] if len(ins) > 1 else attr(node, "axes")
        r = out.ndim + len(axes)
        for a in sorted(int(a) % r for a in axes):
            out = np.expand_dims(out, a)
        return out
    if op == "Squeeze":
        axes = ins[1] if len(ins) > 1 else attr(node, "axes")
        return np.squeeze(ins[0], tuple(int(a) % ins[0].ndim for a in axes))
    if op == "Concat":
        return np.concatenate(ins, axis=attr(node, "axis"))
    if op == "Reshape":
        shape = [d if d != 0 else ins[0].shape[i] for i, d in enumerate(ins[1])]
        return ins[0].reshape(shape)
    if op == "Transpose":
        return np.transpose(ins[0], attr(node, "perm"))
    if op == "Cast":
        return ins[0].astype(onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[attr(node, "to")])
    if op == "Slice":
        data, starts, ends = ins[:3]
        axes = ins[3] if len(ins) > 3 and ins[3] is not None else range(len(starts))
        steps = ins[4] if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
        idx = [slice(None)] * data.ndim
        for a, s, e, st in zip(axes, starts, ends, steps):
            idx[int(a)] = slice(int(s), int(max(min(e, 2**62), -2**62)), int(st))
        return data[tuple(idx)]
    if op in ("Add", "Sub", "Mul", "Div") and all(v.dtype.kind == "i" for v in ins):
        f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.floor_divide}
        return f[op](ins[0], ins[1])
    # Swin's window shifts and ViT's class-token expansion, in integers.
    if op == "Mod" and all(v.dtype.kind == "i" for v in ins):
        return np.fmod(ins[0], ins[1]) if attr(node, "fmod", 0) else np.mod(ins[0], ins[1])
    if op == "Range":
        return np.arange(ins[0], ins[1], ins[2]).astype(ins[0].dtype)
    if op in ("Equal", "Less", "Greater"):
        return {"Equal": np.equal, "Less": np.less, "Greater": np.greater}[op](ins[0], ins[1])
    if op == "Not":
        return np.logical_not(ins[0])
    if op == "Neg":
        return -ins[0]
    if op == "Where":
        return np.where(ins[0], ins[1], ins[2])
    if op == "Expand":
        return ins[0] * np.ones(tuple(ins[1]), dtype=ins[0].dtype)
    return None


def onnx_shapes(model, n, h, w):
    """Every tensor's shape at input n x C x h x w by ONNX's own shape
    inference, or the error text if the model cannot take that size.
    Constant chains (torch computes F.pad's pads at run time when the batch
    is dynamic) are folded with numpy first, so inference sees through them."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name for t in m.graph.initializer}
    inp = [i for i in m.graph.input if i.name not in inits][0]
    dims = inp.type.tensor_type.shape.dim
    for d, v in zip(dims, (n, None, h, w)):
        if v is not None:
            d.Clear()
            d.dim_value = v
    for o in m.graph.output:
        o.type.tensor_type.ClearField("shape")
    del m.graph.value_info[:]
    folded = {}
    while True:
        try:
            inf = onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
        except Exception as e:  # the model cannot take this size
            return None, str(e).splitlines()[0]
        shapes = {}
        for vi in list(inf.graph.input) + list(inf.graph.value_info) + list(inf.graph.output):
            tt = vi.type.tensor_type
            if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
                shapes[vi.name] = [d.dim_value for d in tt.shape.dim]
        vals = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        new = {}
        for node in m.graph.node:
            v = fold_one(node, {**vals, **new}, shapes)
            if v is not None and node.op_type not in ("Identity",):
                new[node.output[0]] = np.asarray(v)
        if not new:
            break
        keep = [nd for nd in m.graph.node if nd.output[0] not in new]
        del m.graph.node[:]
        m.graph.node.extend(keep)
        for name, v in new.items():
            m.graph.initializer.append(numpy_helper.from_array(v, name))
            folded[name] = list(v.shape)
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    for node in m.graph.node:
        if node.op_type == "Constant":
            shapes[node.output[0]] = list(node.attribute[0].t.dims)
    shapes.update(folded)
    # ONNX's inference does not check a Gemm's inner dimension (ONNX Runtime
    # fails at run time instead): a size where it breaks is one to refuse.
    for node in m.graph.node:
        if node.op_type in ("Gemm", "MatMul"):
            a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
            if a is None or b is None:  # not inferred: nothing to check here
                continue
            ka = a[0] if attr(node, "transA", 0) else a[-1]
            kb = (b[1] if attr(node, "transB", 0) else b[0]) if node.op_type == "Gemm" else b[-2]
            if ka != kb:
                return None, "%s: inner dims %s x %s do not match" % (node.name, a, b)
    return shapes, None


def default_layer(model):
    """featcache's default embedding layer: the input of the model's final
    classifier - a Gemm, or a MatMul with a constant weight, that produces
    the graph output directly or through Flatten/Reshape/Identity - seen
    through Identity/Dropout. A model with no Gemm/MatMul at all (SqueezeNet's
    classifier is a Conv) keeps the CNN rule: the last Conv's input, pooled.
    Any other model (a headless DINOv2, an L2-normalised embedding) is its
    own embedding: its output. Returns the producing node's name and the
    tensor."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consts = {t.name for t in model.graph.initializer}
    consts |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    for n in model.graph.node:  # torch shares weights through Identity
        if n.op_type == "Identity" and n.input[0] in consts:
            consts.add(n.output[0])

    def through(t, ops):
        while t in producer and producer[t].op_type in ops:
            t = producer[t].input[0]
        return t

    out = model.graph.output[0].name
    t = through(out, ("Flatten", "Reshape", "Identity"))
    last = producer.get(t)
    if last is not None and ((last.op_type == "Gemm" and last.input[1] in consts) or
                             (last.op_type == "MatMul" and last.input[1] in consts and
                              last.input[0] not in consts)):
        t = through(last.input[0], ("Identity", "Dropout"))
    elif not any(n.op_type in ("Gemm", "MatMul") for n in model.graph.node) and \
            any(n.op_type == "Conv" for n in model.graph.node):
        t = through([n for n in model.graph.node if n.op_type == "Conv"][-1].input[0], ("Identity", "Dropout"))
    else:
        t = out
    return producer[t].name, t


def param_count(model):
    """Parameters as featcache counts them: weights and biases of Conv,
    Gemm, MatMul, BatchNormalization (scale and bias; the running
    statistics are buffers) and LayerNormalization (scale and bias; a
    LayerNorm decomposed at opset < 17 counts none)."""
    consts = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = n.attribute[0].t
    alias = {}
    for n in model.graph.node:
        if n.op_type == "Identity" and n.input[0] in consts:
            consts[n.output[0]] = consts[n.input[0]]

    def numel(name):
        if name not in consts:
            return 0
        return int(np.prod(consts[name].dims)) if consts[name].dims else 1

    total = 0
    for n in model.graph.node:
        if n.op_type == "Conv" or n.op_type == "Gemm":
            total += sum(numel(i) for i in n.input[1:3])
        elif n.op_type == "MatMul":
            total += sum(numel(i) for i in n.input[:2])
        elif n.op_type in ("BatchNormalization", "LayerNormalization"):
            total += sum(numel(i) for i in n.input[1:3])
    del alias
    return total


def torch_feature(model, family, x):
    """PyTorch's own feature at the default layer: the input of the last
    Linear (or the classifier Conv of SqueezeNet), 4-D ones pooled."""
    if family == "token":
        import token_models
        return token_models.torch_feature(model, x)
    got = {}
    if family == "squeezenet":
        target = model.classifier[1]
    elif family == "custom":
        target = None
    else:
        target = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    if target is None:  # ShapeChain: the input of the matmul is x.view(N, -1)
        feats = []
        orig = torch.matmul

        def spy(a, b):
            feats.append(a)
            return orig(a, b)
        torch.matmul = spy
        try:
            with torch.no_grad():
                model(x)
        finally:
            torch.matmul = orig
        f = feats[-1]
    else:
        h = target.register_forward_hook(lambda m, i, o: got.setdefault("f", i[0]))
        with torch.no_grad():
            model(x)
        h.remove()
        f = got["f"]
    if f.dim() == 4:
        f = f.mean(dim=(2, 3))
    return f.reshape(f.shape[0], -1).numpy().astype(np.float32)


def export_one(name, family, build, opset, kwargs, f16, out, x224):
    seed = sum(map(ord, name))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build()
    randomize_bn(model, gen)
    if family != "token":  # token_models randomises its own
        randomize_norms(model, gen)
        randomize_head(model, gen)
    model.eval()
    if f16:
        # Round the weights to float16 in PyTorch first, so the f16 file is
        # exact and PyTorch's reference output is the model's own output.
        # (SqueezeNet has no BatchNorm to fold, so export keeps them exact.)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the tracer's notes on ViT's size assert
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x224[:1], buf, opset_version=opset, input_names=["input"],
                          output_names=["output"], do_constant_folding=True, **kwargs)
    mp = onnx.load_from_string(buf.getvalue())
    if f16:
        to_f16(mp)
    onnx.checker.check_model(mp)
    data = mp.SerializeToString()
    if len(data) > MAX_BYTES:
        sys.exit("%s: %d bytes, over the %d limit" % (name, len(data), MAX_BYTES))
    with open(os.path.join(out, name + ".onnx"), "wb") as f:
        f.write(data)

    node_name, tensor = default_layer(mp)
    sizes = []
    for n, h, w in SIZES:
        shapes, err = onnx_shapes(mp, n, h, w)
        entry = {"input": [n, 3, h, w]}
        xt = torch.randn(n, 3, h, w)
        try:
            with torch.no_grad():
                ty = model(xt)
            tfeat = torch_feature(model, family, xt)
        except (RuntimeError, AssertionError) as e:  # ViT asserts its image size
            ty = None
            if err is None and family not in FIXED_SIZE:
                sys.exit("%s: onnx accepts %dx%d, torch refuses: %s" % (name, h, w, e))
            if err is None:  # ONNX's inference misses what the export fixed
                err = "torch refuses %dx%d: %s" % (h, w, str(e).splitlines()[0])
        if err is not None:
            if ty is not None and family not in FIXED_SIZE:
                sys.exit("%s: torch runs %dx%d, onnx shape inference fails: %s" % (name, h, w, err))
            entry["error"] = err
        else:
            outname = mp.graph.output[0].name
            # The export fixed the shapes it saw; torch itself adapts (VGG's
            # adaptive pooling), so only compare where both run.
            if list(ty.shape) != shapes[outname]:
                sys.exit("%s: output %s, onnx says %s" % (name, list(ty.shape), shapes[outname]))
            fs = shapes[tensor]
            dim = fs[1] if len(fs) == 4 else int(np.prod(fs[1:]))
            if tfeat.shape != (n, dim):
                sys.exit("%s: torch feature %s, onnx %s" % (name, tfeat.shape, fs))
            # Dropout's mask (torch exports Swin's attention dropout with
            # one) is never read, and featcache does not infer it.
            for nd in mp.graph.node:
                if nd.op_type == "Dropout":
                    for o in nd.output[1:]:
                        shapes.pop(o, None)
            entry["shapes"] = shapes
        sizes.append(entry)

    feat = torch_feature(model, family, x224)
    np.save(os.path.join(out, name + ".feat.npy"), feat)
    fs = sizes[0]["shapes"][tensor]
    info = {
        "model": name + ".onnx",
        "family": family,
        "opset": opset,
        "f16": f16,
        "bytes": len(data),
        "ops": dict(sorted(collections.Counter(n.op_type for n in mp.graph.node).items())),
        "nodes": len(mp.graph.node),
        "params": param_count(mp),
        "default_layer": {"node": node_name, "tensor": tensor,
                          "dim": fs[1] if len(fs) == 4 else int(np.prod(fs[1:])),
                          "pooled": len(fs) == 4},
        "sizes": sizes,
        "feature": {"input": "input_224.npy", "output": name + ".feat.npy",
                    "shape": list(feat.shape)},
    }
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(info, f, indent=1, sort_keys=False)
        f.write("\n")
    print("%-28s opset %2d %8d bytes  %3d nodes  %8d params  default %s (%d-d%s)"
          % (name, opset, len(data), len(mp.graph.node), info["params"], node_name,
             info["default_layer"]["dim"], ", pooled" if info["default_layer"]["pooled"] else ""))
    return len(data)


# The token models of tools/token_models.py, by the names conformance uses.
TOKEN_MODELS = {"dinov2_s14": "dinov2_s14", "clip_b32": "clip_b32"}


def full_model(name):
    """torchvision's model `name` (or a tools/token_models.py model) with
    seeded random weights, randomised BatchNorm statistics, LayerNorm and
    LayerScale parameters, and ViT's zero-initialised head randomised, in
    eval mode; and the family torch_feature needs."""
    if name in TOKEN_MODELS:
        import token_models
        return getattr(token_models, TOKEN_MODELS[name])(), "token"
    seed = sum(map(ord, name))
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)()
    randomize_bn(model, torch.Generator().manual_seed(seed))
    randomize_norms(model, torch.Generator().manual_seed(seed + 1))
    randomize_head(model, torch.Generator().manual_seed(seed + 2))
    model.eval()
    family = "squeezenet" if name.startswith("squeezenet") else "full"
    return model, family


def export_model(model, path, opset=13, dynamic=True):
    """torch.onnx.export of `model` at 224 x 224 into path, batch dynamic or
    fixed at 1: tools/export_onnx.py's export (the one users run), here at
    opset 13 unless told."""
    import export_onnx
    return export_onnx.export(model, path, 224, opset, dynamic)


def export_full(name, out, opset=13, dynamic=True, path=None):
    """Export full-size model `name` to path (default out/NAME.onnx);
    returns the path, the model and its family."""
    model, family = full_model(name)
    path = path or os.path.join(out, name + ".onnx")
    export_model(model, path, opset, dynamic)
    return path, model, family


def graph_flops(mp):
    """FLOPs of one image through an ONNX model at 224 x 224: 2 x the
    multiply-adds of every Conv (output elements x input channels per
    group x kernel area), MatMul and Gemm (output elements x the inner
    dimension), shapes from onnx_shapes at batch 1. Norms, softmax and
    element-wise ops are left out (well under 1 % for these models).
    Returns (flops, {op: flops})."""
    shapes, err = onnx_shapes(mp, 1, 224, 224)
    if err is not None:
        raise ValueError(err)
    per = collections.Counter()
    for n in mp.graph.node:
        if n.op_type not in ("Conv", "MatMul", "Gemm") or n.output[0] not in shapes:
            continue
        out = int(np.prod(shapes[n.output[0]]))
        if n.op_type == "Conv":
            k = int(np.prod(shapes[n.input[1]][1:]))
        elif n.op_type == "Gemm":
            a = shapes[n.input[0]]
            k = a[0] if attr(n, "transA", 0) else a[-1]
        else:
            k = shapes[n.input[0]][-1]
        per[n.op_type] += 2 * out * k
    return sum(per.values()), dict(per)


def check_export(path, feat_dim, out_dim):
    """Shape consistency of an export without running it: ONNX's shape
    inference must give the output [batch, out_dim] and featcache's default
    layer [batch, feat_dim] (the dimension of PyTorch's feature; a 4-D
    layer, which featcache average-pools, [batch, feat_dim, H, W]). Returns
    the default layer's (node, tensor); raises ValueError on a mismatch."""
    mp = onnx.load(path)
    # onnx_shapes folds the shape chains of a dynamic batch first (ONNX's
    # data propagation stops at their Div) and ignores the declared output
    # shape, so the dimensions are the graph's own.
    dims, err = onnx_shapes(mp, 1, 224, 224)
    if err is not None:
        raise ValueError("%s: ONNX shape inference fails: %s" % (os.path.basename(path), err))
    node, tensor = default_layer(mp)
    want = {mp.graph.output[0].name: out_dim, tensor: feat_dim}
    for t, d in want.items():
        got = dims.get(t)
        if got is None or len(got) not in ((2, 4) if t == tensor else (2,)) or got[1] != d:
            raise ValueError("%s: %s has shape %s, PyTorch's is [N, %d]" % (os.path.basename(path), t, got, d))
    return node, tensor


def make_corpus(out):
    """Small models (a few KB each) for the libFuzzer target's seeds: every
    op featcache reads, both opset styles of Clip/Pad/Squeeze/Unsqueeze,
    float16 and bfloat16 initializers, torch's shape chains."""
    from onnx import helper as H, TensorProto as TP
    rng = np.random.default_rng(7)

    def f32(name, *dims):
        return numpy_helper.from_array((rng.standard_normal(dims) * 0.1).astype(np.float32), name)

    def i64(name, vals):
        return numpy_helper.from_array(np.array(vals, dtype=np.int64), name)

    def model(name, opset, nodes, inits, in_dims=(1, 3, 16, 16), out="y"):
        g = H.make_graph(nodes, name, [H.make_tensor_value_info("x", TP.FLOAT, list(in_dims))],
                         [H.make_tensor_value_info(out, TP.FLOAT, None)], inits)
        m = H.make_model(g, opset_imports=[H.make_opsetid("", opset)], producer_name="featcache")
        m.ir_version = 7
        data = m.SerializeToString()
        with open(os.path.join(out_dir, name + ".onnx"), "wb") as f:
            f.write(data)
        return len(data)

    out_dir = out
    os.makedirs(out_dir, exist_ok=True)
    total = 0
    N = H.make_node
    # 1. a residual CNN: Conv+BN-folded, Clip from Constants, MaxPool ceil, Add, GAP, Gemm
    total += model("resnetish_13", 13, [
        N("Conv", ["x", "w1", "b1"], ["c1"], "conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        N("Constant", [], ["lo"], "lo", value=numpy_helper.from_array(np.array(0, np.float32))),
        N("Constant", [], ["hi"], "hi", value=numpy_helper.from_array(np.array(6, np.float32))),
        N("Clip", ["c1", "lo", "hi"], ["r1"], "relu6"),
        N("MaxPool", ["r1"], ["p1"], "pool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        N("Conv", ["p1", "w2"], ["c2"], "conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=2),
        N("BatchNormalization", ["c2", "g", "be", "mu", "var"], ["n2"], "bn", epsilon=1e-5),
        N("Add", ["n2", "p1"], ["a"], "add"),
        N("Relu", ["a"], ["r2"], "relu"),
        N("GlobalAveragePool", ["r2"], ["gp"], "gap"),
        N("Flatten", ["gp"], ["f"], "flatten", axis=1),
        N("Gemm", ["f", "fw", "fb"], ["y"], "fc", transB=1),
    ], [f32("w1", 4, 3, 3, 3), f32("b1", 4), f32("w2", 4, 2, 3, 3), f32("g", 4), f32("be", 4),
        f32("mu", 4), numpy_helper.from_array(np.ones(4, np.float32), "var"), f32("fw", 5, 4),
        f32("fb", 5)])
    # 2. opset 11: Squeeze/Unsqueeze with attributes, Pad from a Constant, ReduceMean
    total += model("squeeze_pad_11", 11, [
        N("Conv", ["x", "w1"], ["c1"], "conv", kernel_shape=[1, 1]),
        N("Constant", [], ["pads"], "pads", value=numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))),
        N("Pad", ["c1", "pads"], ["pd"], "pad", mode="constant"),
        N("AveragePool", ["pd"], ["ap"], "avg", kernel_shape=[2, 2], strides=[2, 2], count_include_pad=1),
        N("ReduceMean", ["ap"], ["m"], "mean", axes=[2, 3], keepdims=1),
        N("Squeeze", ["m"], ["s"], "squeeze", axes=[2, 3]),
        N("Unsqueeze", ["s"], ["u"], "unsqueeze", axes=[1]),
        N("Flatten", ["u"], ["y"], "flatten"),
    ], [f32("w1", 6, 3, 1, 1)])
    # 3. opset 13: torch's view(x.size(0), -1) chain with a dynamic batch, F.pad's pads
    total += model("shapechain_13", 13, [
        N("Conv", ["x", "w1"], ["c1"], "conv", kernel_shape=[3, 3]),
        N("ConstantOfShape", ["two"], ["z"], "zeros", value=numpy_helper.from_array(np.array([0], np.int64))),
        N("Concat", ["tail", "z"], ["pc"], "padcat", axis=0),  # torch: (W_l, W_r, H_t, H_b) + zeros
        N("Reshape", ["pc", "m12"], ["pr"], "padrs"),
        N("Slice", ["pr", "st", "en", "ax0", "stp"], ["ps"], "padslice"),
        N("Transpose", ["ps"], ["pt"], "padT", perm=[1, 0]),
        N("Reshape", ["pt", "m1"], ["pf"], "padflat"),
        N("Cast", ["pf"], ["pads"], "cast", to=TP.INT64),
        N("Pad", ["c1", "pads"], ["pd"], "pad"),
        N("Shape", ["pd"], ["sh"], "shape"),
        N("Gather", ["sh", "zero"], ["n"], "gather", axis=0),
        N("Unsqueeze", ["n", "ax0"], ["n1"], "unsq"),
        N("Concat", ["n1", "m1"], ["tgt"], "cat", axis=0),
        N("Reshape", ["pd", "tgt"], ["v"], "view"),
        N("MatMul", ["v", "mw"], ["y"], "head"),
    ], [f32("w1", 2, 3, 3, 3), i64("two", [4]), i64("tail", [0, 1, 1, 0]), i64("m12", [-1, 2]),
        i64("st", [-1]), i64("en", [-(2 ** 62)]), i64("ax0", [0]), i64("stp", [-1]), i64("m1", [-1]),
        numpy_helper.from_array(np.array(0, np.int64), "zero"), f32("mw", 2 * 15 * 15, 3)],
        in_dims=("N", 3, 16, 16))
    # 4. float16 and bfloat16 weights
    w16 = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.1).astype(np.float16), "w16")
    bbf = H.make_tensor("bbf", TP.BFLOAT16, [4], [0x3f80, 0xbf80, 0x4000, 0x0000])
    total += model("half_13", 13, [
        N("Conv", ["x", "w16", "bbf"], ["c"], "conv", kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2]),
        N("Sigmoid", ["c"], ["s"], "sigmoid"),
        N("Mul", ["c", "s"], ["y"], "silu"),
    ], [w16, bbf])
    # 5. opset 10: Clip and Pad with attributes, Dropout, Identity
    total += model("attrs_10", 10, [
        N("Conv", ["x", "w1"], ["c"], "conv", kernel_shape=[3, 3], dilations=[2, 2]),
        N("Clip", ["c"], ["cl"], "clip", min=0.0, max=6.0),
        N("Pad", ["cl"], ["pd"], "pad", pads=[0, 0, 1, 0, 0, 0, 0, 1], value=0.0),
        N("Dropout", ["pd"], ["d"], "drop", ratio=0.5),
        N("Identity", ["d"], ["y"], "id"),
    ], [f32("w1", 4, 3, 3, 3)])
    # 6. opset 17: the activations of MobileNetV3/EfficientNet, SE blocks, Concat, Sub/Div
    total += model("activations_17", 17, [
        N("Sub", ["x", "mean"], ["xs"], "sub"),
        N("Div", ["xs", "std"], ["xn"], "div"),
        N("Conv", ["xn", "w1"], ["c"], "conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        N("HardSwish", ["c"], ["hs"], "hswish"),
        N("GlobalAveragePool", ["hs"], ["sq"], "se_pool"),
        N("HardSigmoid", ["sq"], ["gate"], "se_gate", alpha=0.1666667, beta=0.5),
        N("Mul", ["hs", "gate"], ["se"], "se_mul"),
        N("LeakyRelu", ["c"], ["lr"], "leaky", alpha=0.1),
        N("Concat", ["se", "lr"], ["cat"], "concat", axis=1),
        N("ReduceMean", ["cat"], ["rm"], "mean", axes=[2, 3], keepdims=0),
        N("MatMul", ["rm", "mw"], ["y"], "head"),
    ], [numpy_helper.from_array(np.array([0.5, 0.4, 0.3], np.float32).reshape(1, 3, 1, 1), "mean"),
        numpy_helper.from_array(np.array([0.2, 0.2, 0.2], np.float32).reshape(1, 3, 1, 1), "std"),
        f32("w1", 4, 3, 3, 3), f32("mw", 8, 3)])
    # 7. opset 17: what Swin's shifted-window mask and ViT's expand(-1) fold
    # through: Shape -> Mod, Range, Equal/Less/Greater, Not, Cast to BOOL,
    # Where, Expand, ScatterND, Neg, Pow, Sqrt, a BOOL initializer, Gather
    # of a table by an index tensor; the mask is added to the activations.
    def sc(name, v, dt=np.int64):
        return numpy_helper.from_array(np.array(v, dt), name)
    total += model("foldmask_17", 17, [
        N("Conv", ["x", "w1"], ["c"], "conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        N("Shape", ["c"], ["sh"], "shape"),
        N("Gather", ["sh", "two"], ["h"], "height", axis=0),
        N("Mod", ["h", "seven"], ["hm"], "mod", fmod=0),
        N("Sub", ["seven", "hm"], ["hs"], "sub"),
        N("Mod", ["hs", "seven"], ["pad"], "pad_mod"),
        N("Range", ["zero", "h", "one"], ["r"], "range"),
        N("Mod", ["r", "four"], ["rm"], "phase"),
        N("Equal", ["rm", "zero"], ["eq"], "equal"),
        N("Not", ["eq"], ["ne"], "not"),
        N("Less", ["r", "pad"], ["lt"], "less"),
        N("Greater", ["r", "twelve"], ["gt"], "greater"),
        N("Cast", ["ne"], ["nb"], "to_bool", to=TP.BOOL),
        N("Where", ["nb", "m100", "zf"], ["wsel"], "where"),
        N("Where", ["lt", "wsel", "zf"], ["wlt"], "where_lt"),
        N("Where", ["gt", "m100", "wlt"], ["wgt"], "where_gt"),
        N("Unsqueeze", ["wgt", "ax1"], ["wcol"], "col"),
        N("Expand", ["wcol", "s16x16"], ["mask"], "expand"),
        N("ConstantOfShape", ["s16x16"], ["zeros"], "zeros",
          value=numpy_helper.from_array(np.array([0], np.float32))),
        N("Range", ["zero", "pad", "one"], ["rows"], "rows"),
        N("Unsqueeze", ["rows", "ax1"], ["rix"], "rows_ix"),
        N("Unsqueeze", ["pad", "ax0"], ["pad1"], "pad1"),
        N("Concat", ["pad1", "s16"], ["ushape"], "ushape", axis=0),
        N("Expand", ["ones16", "ushape"], ["upd"], "updates"),
        N("ScatterND", ["zeros", "rix", "upd"], ["band"], "scatter"),
        N("Gather", ["table", "rm"], ["tab"], "table_rows", axis=0),
        N("Cast", ["pad", ], ["padf"], "padf", to=TP.FLOAT),
        N("Neg", ["padf"], ["npad"], "neg"),
        N("Pow", ["npad", "twof"], ["pp"], "pow"),
        N("Sqrt", ["pp"], ["scale"], "sqrt"),
        N("Div", ["band", "scale"], ["bands"], "div"),
        N("Where", ["keep", "mask", "zf"], ["kept"], "keep"),
        N("Add", ["kept", "bands"], ["m1"], "add_band"),
        N("Add", ["m1", "tab"], ["m2"], "add_table"),
        N("Add", ["c", "m2"], ["a"], "add_mask"),
        N("GlobalAveragePool", ["a"], ["gp"], "gap"),
        N("Flatten", ["gp"], ["y"], "flatten"),
    ], [f32("w1", 4, 3, 3, 3), sc("two", 2), sc("seven", 7), sc("zero", 0), sc("one", 1),
        sc("four", 4), sc("twelve", 12), sc("m100", -100.0, np.float32), sc("zf", 0.0, np.float32),
        sc("twof", 2.0, np.float32), i64("ax0", [0]), i64("ax1", [1]), i64("s16x16", [16, 16]),
        i64("s16", [16]), numpy_helper.from_array(np.ones(16, np.float32), "ones16"),
        f32("table", 4, 16), numpy_helper.from_array(np.arange(16) % 3 != 0, "keep")])
    # 8. opset 17: a ViT block as torch writes it, at toy size: patch Conv,
    # tokens by Reshape/Transpose, a class token by Concat, position Add,
    # LayerNormalization, qkv MatMul + bias, heads by Reshape/Transpose and
    # Gather, q kT / sqrt(d) (a Div), Softmax, A v, the projection, the
    # residual Adds, an Erf-GELU MLP; then the CLS token (Gather) and the
    # mean of the patch tokens (Slice, ReduceMean) concatenated.
    total += model("attention_17", 17, [
        N("Conv", ["x", "pw"], ["pe"], "patch", kernel_shape=[4, 4], strides=[4, 4]),
        N("Reshape", ["pe", "s_tok"], ["pt"], "flat"),
        N("Transpose", ["pt"], ["tok"], "tokens", perm=[0, 2, 1]),
        N("Concat", ["cls", "tok"], ["t0"], "with_cls", axis=1),
        N("Add", ["t0", "pos"], ["t1"], "pos"),
        N("LayerNormalization", ["t1", "g1", "b1"], ["n1"], "ln1", axis=-1, epsilon=1e-6),
        N("MatMul", ["n1", "wqkv"], ["qkv0"], "qkv"),
        N("Add", ["bqkv", "qkv0"], ["qkv1"], "qkv_bias"),
        N("Reshape", ["qkv1", "s_heads"], ["qkv2"], "heads"),
        N("Transpose", ["qkv2"], ["qkv3"], "heads_t", perm=[2, 0, 3, 1, 4]),
        N("Gather", ["qkv3", "i0"], ["q"], "q", axis=0),
        N("Gather", ["qkv3", "i1"], ["k"], "k", axis=0),
        N("Gather", ["qkv3", "i2"], ["v"], "v", axis=0),
        N("Transpose", ["k"], ["kt"], "k_t", perm=[0, 1, 3, 2]),
        N("MatMul", ["q", "kt"], ["s0"], "scores"),
        N("Div", ["s0", "sqrt_d"], ["s1"], "scale"),
        N("Softmax", ["s1"], ["p"], "softmax", axis=-1),
        N("MatMul", ["p", "v"], ["o0"], "attend"),
        N("Transpose", ["o0"], ["o1"], "merge_t", perm=[0, 2, 1, 3]),
        N("Reshape", ["o1", "s_merge"], ["o2"], "merge"),
        N("MatMul", ["o2", "wo"], ["o3"], "proj"),
        N("Add", ["o3", "bo"], ["o4"], "proj_bias"),
        N("Add", ["t1", "o4"], ["r1"], "residual1"),
        N("LayerNormalization", ["r1", "g2", "b2"], ["n2"], "ln2", axis=-1, epsilon=1e-6),
        N("MatMul", ["n2", "w1m"], ["h0"], "fc1"),
        N("Add", ["h0", "b1m"], ["h1"], "fc1_bias"),
        N("Div", ["h1", "sqrt2"], ["e0"], "gelu_div"),
        N("Erf", ["e0"], ["e1"], "gelu_erf"),
        N("Add", ["e1", "onef"], ["e2"], "gelu_add"),
        N("Mul", ["h1", "e2"], ["e3"], "gelu_mul"),
        N("Mul", ["e3", "half"], ["h2"], "gelu_half"),
        N("MatMul", ["h2", "w2m"], ["h3"], "fc2"),
        N("Add", ["h3", "b2m"], ["h4"], "fc2_bias"),
        N("Add", ["r1", "h4"], ["r2"], "residual2"),
        N("Gather", ["r2", "i0"], ["clsout"], "cls_token", axis=1),
        N("Slice", ["r2", "st1", "en_big", "ax1"], ["patches"], "patch_tokens"),
        N("ReduceMean", ["patches"], ["pm"], "patch_mean", axes=[1], keepdims=0),
        N("Concat", ["clsout", "pm"], ["y"], "cls_mean", axis=1),
    ], [f32("pw", 8, 3, 4, 4), i64("s_tok", [1, 8, 16]), f32("cls", 1, 1, 8), f32("pos", 1, 17, 8),
        numpy_helper.from_array((1 + rng.standard_normal(8) * 0.1).astype(np.float32), "g1"), f32("b1", 8),
        f32("wqkv", 8, 24), f32("bqkv", 24), i64("s_heads", [1, 17, 3, 2, 4]),
        numpy_helper.from_array(np.array(0, np.int64), "i0"), numpy_helper.from_array(np.array(1, np.int64), "i1"),
        numpy_helper.from_array(np.array(2, np.int64), "i2"),
        numpy_helper.from_array(np.array(2.0, np.float32), "sqrt_d"), i64("s_merge", [1, 17, 8]),
        f32("wo", 8, 8), f32("bo", 8),
        numpy_helper.from_array((1 + rng.standard_normal(8) * 0.1).astype(np.float32), "g2"), f32("b2", 8),
        f32("w1m", 8, 16), f32("b1m", 16), numpy_helper.from_array(np.array(np.sqrt(2), np.float32), "sqrt2"),
        numpy_helper.from_array(np.array(1.0, np.float32), "onef"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"), f32("w2m", 16, 8), f32("b2m", 8),
        i64("st1", [1]), i64("en_big", [2**62]), i64("ax1", [1])])
    for name in ("shapechain_dynbatch",):
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                           "models", name + ".onnx")
        if os.path.exists(src):
            with open(src, "rb") as f:
                data = f.read()
            with open(os.path.join(out_dir, name + ".onnx"), "wb") as f:
                f.write(data)
            total += len(data)
    print("corpus: %d bytes in %s" % (total, out_dir))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "fixtures", "models"))
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--corpus", metavar="DIR",
                    help="write the fuzzer's seed models to DIR instead")
    ap.add_argument("--full", nargs="+", metavar="NAME",
                    help="export full-size torchvision models NAME... into --out instead")
    ap.add_argument("--opset", type=int, default=13, help="opset of the --full exports")
    ap.add_argument("--flops", nargs="+", metavar="MODEL.onnx",
                    help="print the FLOPs of one 224 x 224 image through each model instead")
    args = ap.parse_args()
    if args.corpus:
        make_corpus(args.corpus)
        return
    if args.flops:
        for path in args.flops:
            total, per = graph_flops(onnx.load(path))
            print("%s: %.3f GFLOP/image (%s)" % (path, total / 1e9, ", ".join(
                "%s %.3f" % (k, v / 1e9) for k, v in sorted(per.items()))))
        return
    if args.full:
        os.makedirs(args.out, exist_ok=True)
        for name in args.full:
            path = export_full(name, args.out, args.opset)[0]
            print("%s: %d bytes" % (path, os.path.getsize(path)))
        return
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(224)
    x224 = torch.randn(2, 3, 224, 224, generator=gen)
    np.save(os.path.join(args.out, "input_224.npy"), x224.numpy())
    total = 0
    for name, family, build, opset, kwargs, f16 in MODELS:
        if args.only and name not in args.only:
            continue
        total += export_one(name, family, build, opset, kwargs, f16, args.out, x224)
    print("total %d bytes of models" % total)


if __name__ == "__main__":
    main()
