#!/usr/bin/python3
"""Reference values for featcache's losses (train/loss.c) from PyTorch.

pytorch-metric-learning (PML) is not installed here, so each PML 1.x loss,
miner, distance and reducer the losses use is written out below in plain
torch, step by step as PML computes it (see the comment at the top of
train/loss.c for the PML files), and autograd gives the gradients.

Writes tests/fixtures/loss/<case>.txt, one per case, and index.txt listing
them. Inputs are float32 (printed with 9 significant digits, so they read
back exactly); the expected loss and gradients are computed in float64 from
those same values, printed with 17 digits. The float32 run of the same code
is checked against the float64 one (same mined counts, loss and gradients
within 1e-4 relative) so the fixtures also stand for what PML gives in
float32. Run with Debian's python3-torch:
    /usr/bin/python3 tools/loss_ref.py
"""
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "loss")


def f32(v):
    """A config value as featcache holds it (a C float)."""
    return float(np.float32(v))


# ------------------------------------------------------------ distances

def normalize(x):
    return F.normalize(x, p=2, dim=1)  # eps 1e-12, as BaseDistance.normalize


class LpDistance:
    inverted = False

    def __call__(self, q, r=None):
        qn = normalize(q)
        rn = qn if r is None else normalize(r)
        return torch.cdist(qn, rn, p=2)

    @staticmethod
    def margin(x, y):
        return x - y


class CosineSimilarity:
    inverted = True

    def __call__(self, q, r=None):
        qn = normalize(q)
        rn = qn if r is None else normalize(r)
        return qn @ rn.t()

    @staticmethod
    def margin(x, y):
        return y - x


DISTANCES = {"euclidean": LpDistance(), "cosine": CosineSimilarity()}

# -------------------------------------------------------- index helpers


def matches_and_diffs(labels):
    # lmu.get_matches_and_diffs with ref_labels the same tensor
    matches = (labels.unsqueeze(1) == labels.unsqueeze(0)).byte()
    diffs = matches ^ 1
    matches.fill_diagonal_(0)
    return matches, diffs


def all_pairs(labels):
    matches, diffs = matches_and_diffs(labels)
    a1, p = torch.where(matches)
    a2, n = torch.where(diffs)
    return a1, p, a2, n


def all_triplets(labels):
    matches, diffs = matches_and_diffs(labels)
    triplets = matches.unsqueeze(2) * diffs.unsqueeze(1)
    return torch.where(triplets)


def zero_loss(emb):
    return torch.sum(emb * 0)


def avg_non_zero(losses, emb):
    """ThresholdReducer(low=0): mean of the losses > 0, or zero."""
    keep = losses > 0
    count = int(torch.sum(keep))
    if count >= 1:
        return torch.mean(losses[keep]), count
    return zero_loss(emb), 0


# ---------------------------------------------------------------- losses


def triplet(emb, labels, cfg):
    dist, margin = DISTANCES[cfg["distance"]], cfg["margin"]
    a, p, n = all_triplets(labels)
    # TripletMarginMiner.mine
    with torch.no_grad():
        mat = dist(emb)
        ap, an = mat[a, p], mat[a, n]
        t = ap - an if dist.inverted else an - ap
        kind = cfg["miner"]
        if kind == "easy":
            keep = t > margin
        else:
            keep = t <= margin
            if kind == "hard":
                keep &= t <= 0
            elif kind == "semihard":
                keep &= t > 0
    a, p, n = a[keep], p[keep], n[keep]
    # TripletMarginLoss.compute_loss
    if len(a) == 0:
        return zero_loss(emb), 0, 0
    mat = dist(emb)
    violation = dist.margin(mat[a, p], mat[a, n]) + margin
    losses = F.relu(violation)
    loss, nz = avg_non_zero(losses, emb)
    return loss, len(a), nz


def siamese(emb, labels, cfg):
    dist = DISTANCES[cfg["distance"]]
    a1, p, a2, n = all_pairs(labels)
    if all(len(x) <= 1 for x in (a1, p, a2, n)):
        return zero_loss(emb), 0, 0
    mat = dist(emb)
    total, nz = zero_loss(emb), 0
    if len(a1) > 0:
        pos = F.relu(dist.margin(mat[a1, p], cfg["pos_margin"]))
        part, k = avg_non_zero(pos, emb)
        total, nz = total + part, nz + k
    if len(a2) > 0:
        neg = F.relu(dist.margin(cfg["neg_margin"], mat[a2, n]))
        part, k = avg_non_zero(neg, emb)
        total, nz = total + part, nz + k
    return total, len(a1) + len(a2), nz


def ntxent(emb, labels, cfg):
    dist, tau = DISTANCES[cfg["distance"]], cfg["temperature"]
    a1, p, a2, n = all_pairs(labels)
    if all(len(x) <= 1 for x in (a1, p, a2, n)):
        return zero_loss(emb), 0, 0
    mat = dist(emb)
    pos_pairs, neg_pairs = mat[a1, p], mat[a2, n]
    if len(a1) > 0 and len(a2) > 0:
        dtype = neg_pairs.dtype
        if not dist.inverted:
            pos_pairs, neg_pairs = -pos_pairs, -neg_pairs
        pos_pairs = pos_pairs.unsqueeze(1) / tau
        neg_pairs = neg_pairs / tau
        n_per_p = (a2.unsqueeze(0) == a1.unsqueeze(1)).to(dtype)
        neg_pairs = neg_pairs * n_per_p
        neg_pairs[n_per_p == 0] = torch.finfo(dtype).min
        max_val = torch.max(pos_pairs, torch.max(neg_pairs, dim=1, keepdim=True)[0]).detach()
        numerator = torch.exp(pos_pairs - max_val).squeeze(1)
        denominator = torch.sum(torch.exp(neg_pairs - max_val), dim=1) + numerator
        losses = -torch.log(numerator / denominator + torch.finfo(dtype).tiny)
        return torch.mean(losses), len(a1), int(torch.sum(losses > 0))
    return zero_loss(emb), 0, 0


def masked_logsumexp(x, keep_mask, dim=1):
    # lmu.logsumexp(add_one=False)
    x = x.masked_fill(~keep_mask, torch.finfo(x.dtype).min)
    out = torch.logsumexp(x, dim=dim, keepdim=True)
    return out.masked_fill(~torch.any(keep_mask, dim=dim, keepdim=True), 0)


def supcon(emb, labels, cfg):
    dist, tau = DISTANCES[cfg["distance"]], cfg["temperature"]
    a1, p, a2, n = all_pairs(labels)
    if all(len(x) <= 1 for x in (a1, p, a2, n)):
        return zero_loss(emb), 0, 0
    mat = dist(emb)
    pos_mask, neg_mask = torch.zeros_like(mat), torch.zeros_like(mat)
    pos_mask[a1, p] = 1
    neg_mask[a2, n] = 1
    if pos_mask.bool().any() and neg_mask.bool().any():
        if not dist.inverted:
            mat = -mat
        mat = mat / tau
        mat_max, _ = mat.max(dim=1, keepdim=True)
        mat = mat - mat_max.detach()
        denominator = masked_logsumexp(mat, (pos_mask + neg_mask).bool())
        log_prob = mat - denominator
        mean_log_prob_pos = (pos_mask * log_prob).sum(dim=1) / (pos_mask.sum(dim=1) + torch.finfo(mat.dtype).tiny)
        loss, nz = avg_non_zero(-mean_log_prob_pos, emb)
        return loss, int(torch.sum(pos_mask.sum(dim=1) > 0)), nz
    return zero_loss(emb), 0, 0


def margin_softmax(emb, labels, W, cfg):
    B, C = emb.shape[0], W.shape[1]
    mask = torch.zeros(B, C, dtype=emb.dtype)
    mask[torch.arange(B), labels] = 1
    cosine = CosineSimilarity()(emb, W.t())
    target = cosine[mask == 1]
    if cfg["kind"] == "arcface":
        angles = torch.acos(torch.clamp(target, -1, 1))
        modified = torch.cos(angles + np.radians(cfg["margin"]))
    else:
        modified = target - cfg["margin"]
    diff = (modified - target).unsqueeze(1)
    logits = (cosine + mask * diff) * cfg["scale"]
    losses = F.cross_entropy(logits, labels, reduction="none")
    return torch.mean(losses), B, int(torch.sum(losses > 0))


def evaluate(cfg, emb32, labels, W32, dtype):
    emb = emb32.to(dtype).clone().requires_grad_()
    W = W32.to(dtype).clone().requires_grad_() if W32 is not None else None
    kind = cfg["kind"]
    if kind in ("arcface", "cosface"):
        loss, used, nz = margin_softmax(emb, labels, W, cfg)
    else:
        loss, used, nz = {"triplet": triplet, "siamese": siamese, "ntxent": ntxent, "supcon": supcon}[kind](
            emb, labels, cfg)
    loss.backward()
    dW = W.grad if W is not None else None
    demb = emb.grad if emb.grad is not None else torch.zeros_like(emb)
    return float(loss), used, nz, demb.double(), (dW.double() if dW is not None else None)


# ----------------------------------------------------------------- data


def make_batch(gen, B, D, labels, spread):
    """Class centres plus noise, rows rescaled to norms in [0.3, 3] so the
    normalisation matters; float32."""
    ncls = int(labels.max()) + 1
    centres = torch.randn(ncls, D, generator=gen, dtype=torch.float64)
    x = centres[labels] + spread * torch.randn(B, D, generator=gen, dtype=torch.float64)
    norms = 0.3 + 2.7 * torch.rand(B, 1, generator=gen, dtype=torch.float64)
    x = normalize(x) * norms
    return x.float()


def balanced(nclasses, k):
    return torch.arange(nclasses).repeat_interleave(k)


def rel(a, b):
    return float((a - b).abs().max() / max(float(b.abs().max()), 1e-12))


def fmt32(t):
    return " ".join("%.9g" % v for v in t.reshape(-1).tolist())


def fmt64(t):
    return " ".join("%.17g" % v for v in t.reshape(-1).tolist())


DEFAULTS = {
    "triplet": dict(distance="euclidean", margin=0.2),
    "siamese": dict(distance="euclidean", pos_margin=0.0, neg_margin=1.0),
    "ntxent": dict(distance="cosine", temperature=0.07),
    "supcon": dict(distance="cosine", temperature=0.1),
    "arcface": dict(distance="cosine", margin=28.6, scale=64.0),
    "cosface": dict(distance="cosine", margin=0.35, scale=64.0),
}


def case(name, kind, B=16, D=8, labels=None, classes=4, spread=0.8, need_nonzero=True, **over):
    cfg = dict(kind=kind, miner="all", margin=0.0, pos_margin=0.0, neg_margin=0.0, temperature=0.0, scale=0.0,
               n_classes=0)
    cfg.update(DEFAULTS[kind])
    cfg.update(over)
    for k in ("margin", "pos_margin", "neg_margin", "temperature", "scale"):
        cfg[k] = f32(cfg[k])
    if labels is None:
        labels = balanced(classes, B // classes)
    labels = torch.as_tensor(labels, dtype=torch.long)
    assert len(labels) == B
    if kind in ("arcface", "cosface"):
        cfg["n_classes"] = over.get("n_classes", int(labels.max()) + 1)
    return name, cfg, labels, B, D, spread, need_nonzero


CASES = [
    case("triplet_euclidean_all", "triplet"),
    case("triplet_euclidean_hard", "triplet", miner="hard"),
    case("triplet_euclidean_semihard", "triplet", miner="semihard", spread=0.5),
    case("triplet_euclidean_easy", "triplet", miner="easy", need_nonzero=False),
    case("triplet_cosine_all", "triplet", distance="cosine"),
    case("triplet_cosine_hard", "triplet", distance="cosine", miner="hard"),
    case("triplet_cosine_semihard", "triplet", distance="cosine", miner="semihard", spread=0.5),
    case("triplet_cosine_easy", "triplet", distance="cosine", miner="easy", need_nonzero=False),
    # uneven classes, sparse label values, a wider margin
    case("triplet_cosine_hard_uneven", "triplet", B=12, D=6, distance="cosine", miner="hard", margin=0.5,
         labels=[7, 7, 7, 7, 7, 3, 3, 100, 100, 100, 9, 9]),
    # B > 25: torch.cdist takes its matrix-product path
    case("triplet_euclidean_semihard_b48", "triplet", B=48, D=24, classes=12, miner="semihard", spread=0.6),
    case("triplet_cosine_all_b40", "triplet", B=40, D=16, classes=10, distance="cosine", margin=0.3),
    case("siamese_euclidean", "siamese"),
    case("siamese_cosine", "siamese", distance="cosine", spread=1.5),
    case("siamese_cosine_margins", "siamese", distance="cosine", pos_margin=0.8, neg_margin=0.2),
    case("siamese_euclidean_margins", "siamese", pos_margin=0.3, neg_margin=1.2),
    case("siamese_euclidean_b40", "siamese", B=40, D=16, classes=10),
    case("ntxent_cosine", "ntxent"),
    case("ntxent_cosine_t05", "ntxent", temperature=0.5, B=12, D=5, labels=[0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 4]),
    case("ntxent_euclidean", "ntxent", distance="euclidean", temperature=0.1),
    case("ntxent_cosine_b40", "ntxent", B=40, D=16, classes=20),
    case("supcon_cosine", "supcon"),
    case("supcon_cosine_t05_single", "supcon", temperature=0.5, B=12, D=5,
         labels=[0, 0, 1, 1, 1, 2, 3, 3, 3, 3, 4, 5]),
    case("supcon_euclidean", "supcon", distance="euclidean", temperature=0.2),
    case("supcon_cosine_b40", "supcon", B=40, D=16, classes=10),
    case("arcface_default", "arcface", classes=6, B=18, spread=1.0),
    case("arcface_small_scale", "arcface", margin=10.0, scale=8.0, B=12, D=6,
         labels=[0, 4, 1, 1, 2, 0, 3, 4, 4, 2, 0, 1], n_classes=6),
    case("arcface_b40", "arcface", B=40, D=24, classes=10),
    case("cosface_default", "cosface", classes=6, B=18, spread=1.0),
    case("cosface_small_scale", "cosface", margin=0.2, scale=16.0, B=12, D=6,
         labels=[0, 4, 1, 1, 2, 0, 3, 4, 4, 2, 0, 1], n_classes=7),
    case("cosface_b40", "cosface", B=40, D=24, classes=10),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    names = []
    for idx, (name, cfg, labels, B, D, spread, need_nonzero) in enumerate(CASES):
        for attempt in range(100):
            gen = torch.Generator().manual_seed(1000 * idx + attempt)
            emb = make_batch(gen, B, D, labels, spread)
            W = None
            if cfg["n_classes"]:
                W = torch.randn(D, cfg["n_classes"], generator=gen, dtype=torch.float64).float()
            ref = evaluate(cfg, emb, labels, W, torch.float64)
            low = evaluate(cfg, emb, labels, W, torch.float32)
            if need_nonzero and ref[2] == 0:
                continue
            if ref[1:3] != low[1:3]:
                continue  # a triplet or pair on a float32/float64 boundary
            if abs(low[0] - ref[0]) > 1e-4 * max(abs(ref[0]), 1e-12) or rel(low[3], ref[3]) > 1e-4:
                continue
            if W is not None and rel(low[4], ref[4]) > 1e-4:
                continue
            break
        else:
            raise SystemExit("no usable batch for " + name)
        loss, used, nz, demb, dW = ref
        lines = [
            "# made by tools/loss_ref.py with torch %s (PML 1.x transcribed), seed %d" % (
                torch.__version__, 1000 * idx + attempt),
            "kind %s" % cfg["kind"],
            "miner %s" % cfg["miner"],
            "distance %s" % cfg["distance"],
            "margin %.9g" % cfg["margin"],
            "pos_margin %.9g" % cfg["pos_margin"],
            "neg_margin %.9g" % cfg["neg_margin"],
            "temperature %.9g" % cfg["temperature"],
            "scale %.9g" % cfg["scale"],
            "n_classes %d" % cfg["n_classes"],
            "batch %d" % B,
            "dim %d" % D,
            "labels " + " ".join(str(int(v)) for v in labels.tolist()),
            "emb " + fmt32(emb),
        ]
        if W is not None:
            lines.append("W " + fmt32(W))
        lines += ["loss %.17g" % loss, "used %d" % used, "nonzero %d" % nz, "demb " + fmt64(demb)]
        if W is not None:
            lines.append("dW " + fmt64(dW))
        lines.append("end")
        with open(os.path.join(OUT, name + ".txt"), "w") as fh:
            fh.write("\n".join(lines) + "\n")
        names.append(name)
        print("%-34s loss %-12.6g used %-5d nonzero %-5d float32 vs float64: loss %.1e grad %.1e" % (
            name, loss, used, nz, abs(low[0] - loss) / max(abs(loss), 1e-12), rel(low[3], demb)))
    with open(os.path.join(OUT, "index.txt"), "w") as fh:
        fh.write("# fixtures made by tools/loss_ref.py, one case per line\n")
        fh.write("\n".join(names) + "\n")


if __name__ == "__main__":
    main()
