#!/usr/bin/python3
"""token_models.py - two small-but-real transformer backbones for the
conformance tests, written from the papers' descriptions (random, seeded
weights: the point is the graph and the numbers, not the accuracy).

- DinoV2S14: a DINOv2-style ViT-S/14 (Oquab et al. 2023): 14 x 14 patches,
  width 384, 12 pre-norm blocks of 6-head attention and a 4x GELU (erf) MLP,
  each branch scaled by LayerScale (a per-channel gamma); a CLS token and 4
  register tokens ("Vision Transformers Need Registers", Darcet et al.
  2023): the learned position embedding covers CLS and the patches only,
  the registers are inserted after it, between CLS and the patches. Final
  LayerNorm; headless: forward returns the normed CLS token, [N, 384], so
  the exported model is its own embedding. The input size is fixed at
  224 x 224 (16 x 16 patches): no position interpolation gets exported.
  Attention is written out (one Linear for q, k, v; softmax(q k^T * scale) v)
  so the export has MatMul and Softmax, like DINOv2's own code.
- ClipB32: a CLIP-style ViT-B/32 visual tower (Radford et al. 2021): conv1
  (32 x 32, stride 32, no bias), class_embedding, positional_embedding,
  ln_pre, 12 residual blocks of nn.MultiheadAttention in CLIP's
  sequence-first layout and a 4x QuickGELU (x * sigmoid(1.702 x)) MLP,
  ln_post on the CLS token, then `x @ proj` ([768, 512], a MatMul with a
  constant weight rather than a Linear). Output [N, 512].

Every LayerNorm gets weights and biases away from 1 and 0, LayerScale
gammas away from their tiny init, and the embeddings random values, so a
wrong op shows in the numbers.

torch_feature(model, x) is PyTorch's feature at featcache's default
embedding layer (the input of the final classifier MatMul/Gemm that
produces the output; a model without one is its own embedding): DINOv2-style
-> its output; CLIP-style -> ln_post(x[:, 0]), the 768-d pre-projection CLS
token. pooled_features(model, x) gives the DINOv2-style model's last-block
token tensor pooled the three ways `--pool cls|mean|cls+mean` will.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGE = 224


def _randomize(model, seed):
    """Non-trivial LayerNorm affine parameters and LayerScale gammas."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            if isinstance(m, LayerScale):
                m.gamma.copy_(torch.rand(m.gamma.shape, generator=gen) * 0.8 + 0.2)


class LayerScale(nn.Module):
    """CaiT's per-channel residual scaling (DINOv2 inits it at 1e-5)."""

    def __init__(self, dim, init=1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x):
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention on N x T x D written out, so the export is
    Reshape/Transpose/MatMul/Softmax rather than a fused op."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        y = torch.matmul(a, v).transpose(1, 2).reshape(n, t, d)
        return self.proj(y)


class DinoBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.fc2(F.gelu(self.fc1(self.norm2(x)))))


class DinoV2S14(nn.Module):
    PATCH, DIM, DEPTH, HEADS, REGISTERS = 14, 384, 12, 6, 4

    def __init__(self, dim=DIM, depth=DEPTH, heads=HEADS, native=IMAGE):
        """dim, depth and heads default to ViT-S/14's; the narrow fixture
        of tools/export_models.py (dinov2_narrow) passes smaller ones.
        native is the image size the position embedding is made for (the
        released DINOv2 models: 518, a 37 x 37 grid); another input size
        interpolates it (interpolate_pos_encoding)."""
        super().__init__()
        self.DIM, self.DEPTH, self.HEADS = dim, depth, heads
        self.patch_size, self.num_register_tokens = self.PATCH, self.REGISTERS  # DINOv2's attribute names
        d, g = self.DIM, native // self.PATCH
        self.patch_embed = nn.Conv2d(3, d, self.PATCH, stride=self.PATCH)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.register_tokens = nn.Parameter(torch.randn(1, self.REGISTERS, d) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + g * g, d) * 0.02)
        self.blocks = nn.ModuleList(DinoBlock(d, self.HEADS) for _ in range(self.DEPTH))
        self.norm = nn.LayerNorm(d, eps=1e-6)

    def tokens(self, x):
        """The token tensor after the last block, before the final norm:
        [N, 1 + 4 + 256, 384] (CLS, registers, patches)."""
        n, _, w, h = x.shape
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1)
        x = x + self.interpolate_pos_encoding(x, w, h)
        x = torch.cat([x[:, :1], self.register_tokens.expand(n, -1, -1), x[:, 1:]], dim=1)
        for b in self.blocks:
            x = b(x)
        return x

    def forward(self, x):
        return self.norm(self.tokens(x))[:, 0]

    def interpolate_pos_encoding(self, x, w, h):
        """DINOv2's: the position embedding for x (CLS and patch tokens) of
        a w x h image: as it is when the grids match, else its patch part
        resized bicubic (no antialiasing) to the image's grid."""
        n = self.pos_embed.shape[1] - 1
        if x.shape[1] - 1 == n and w == h:
            return self.pos_embed
        m, d = int(math.sqrt(n)), self.pos_embed.shape[2]
        grid = self.pos_embed[:, 1:].reshape(1, m, m, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(w // self.PATCH, h // self.PATCH), mode="bicubic", align_corners=False)
        return torch.cat([self.pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, d)], dim=1)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ClipBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), QuickGELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):  # x: T x N x D (sequence first)
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class ClipB32(nn.Module):
    PATCH, WIDTH, DEPTH, HEADS, OUT = 32, 768, 12, 12, 512

    def __init__(self, width=WIDTH, depth=DEPTH, heads=HEADS, out=OUT):
        """width, depth, heads and the output dim default to ViT-B/32's;
        the narrow fixture of tools/export_models.py (clip_narrow) passes
        smaller ones."""
        super().__init__()
        self.WIDTH, self.DEPTH, self.HEADS, self.OUT = width, depth, heads, out
        w, g = self.WIDTH, IMAGE // self.PATCH
        s = w ** -0.5
        self.conv1 = nn.Conv2d(3, w, self.PATCH, stride=self.PATCH, bias=False)
        self.class_embedding = nn.Parameter(s * torch.randn(w))
        self.positional_embedding = nn.Parameter(s * torch.randn(g * g + 1, w))
        self.ln_pre = nn.LayerNorm(w)
        self.blocks = nn.ModuleList(ClipBlock(w, self.HEADS) for _ in range(self.DEPTH))
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(s * torch.randn(w, self.OUT))

    def pre_proj(self, x):
        """ln_post of the CLS token: the input of `@ proj`, [N, 768]."""
        x = self.conv1(x).flatten(2).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.ln_pre(x).permute(1, 0, 2)
        for b in self.blocks:
            x = b(x)
        return self.ln_post(x.permute(1, 0, 2)[:, 0, :])

    def forward(self, x):
        return self.pre_proj(x) @ self.proj


def _build(cls, seed, **kw):
    torch.manual_seed(seed)
    m = cls(**kw)
    _randomize(m, seed + 1)
    return m.eval()


def dinov2_s14():
    """The DINOv2-style ViT-S/14 with registers, seeded, eval mode."""
    return _build(DinoV2S14, 214)


def clip_b32():
    """The CLIP-style ViT-B/32 visual tower, seeded, eval mode."""
    return _build(ClipB32, 3204)


def torch_feature(model, x):
    """PyTorch's feature at featcache's default layer, float32 numpy."""
    with torch.no_grad():
        f = model.pre_proj(x) if isinstance(model, ClipB32) else model(x)
    return f.numpy().astype(np.float32)


def pooled_features(model, x, prefix=1 + DinoV2S14.REGISTERS):
    """The DINOv2-style model's last-block token tensor (before the final
    norm) pooled as `--pool` will: {"cls": x[:, 0], "mean": the mean of the
    patch tokens x[:, prefix:] (CLS and registers excluded), "cls+mean":
    their concatenation}, float32 numpy."""
    with torch.no_grad():
        t = model.tokens(x)
    cls, mean = t[:, 0], t[:, prefix:].mean(dim=1)
    out = {"cls": cls, "mean": mean, "cls+mean": torch.cat([cls, mean], dim=1)}
    return {k: v.numpy().astype(np.float32) for k, v in out.items()}


def flops(model):
    """Multiply-adds x 2 of one 224 x 224 image (matmuls and convs only:
    norms, softmax and activations are a fraction of a percent)."""
    if isinstance(model, DinoV2S14):
        p, d, depth, t = model.PATCH, model.DIM, model.DEPTH, 1 + model.REGISTERS + (IMAGE // model.PATCH) ** 2
        embed = (IMAGE // p) ** 2 * 3 * p * p * d
        head = 0
    else:
        p, d, depth, t = model.PATCH, model.WIDTH, model.DEPTH, 1 + (IMAGE // model.PATCH) ** 2
        embed = (IMAGE // p) ** 2 * 3 * p * p * d
        head = d * model.OUT
    block = t * d * 3 * d + 2 * t * t * d + t * d * d + 2 * t * d * 4 * d
    return 2 * (embed + depth * block + head)


if __name__ == "__main__":
    x = torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(0))
    for build in (dinov2_s14, clip_b32):
        m = build()
        y = m(x)
        print("%s: output %s, feature %s, %.2f GFLOP/image, %.1f M params" % (
            type(m).__name__, tuple(y.shape), torch_feature(m, x).shape, flops(m) / 1e9,
            sum(p.numel() for p in m.parameters()) / 1e6))
        assert math.isfinite(float(y.abs().max()))
