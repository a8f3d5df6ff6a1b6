"""Mixup and CutMix of training batches (``mixup``, ``cutmix``).

Each training batch is mixed with a shuffled copy of itself at a ratio
``lam`` drawn from ``Beta(alpha, alpha)``: mixup blends the inputs,
``lam * x + (1 - lam) * x[perm]`` (images, or cached features, where it
costs next to nothing); CutMix pastes a box covering ``1 - lam`` of each
image from its partner (images only), and ``lam`` becomes the share of the
image really kept. With both, each batch is one or the other, at even odds,
as timm's ``Mixup`` does.

The targets mix at the same ratio. Both tasks' losses (cross-entropy and
binary cross-entropy) are linear in the target, so the loss of a mixed
target equals the mix of the two losses; folding the sample weights into
that target keeps it exact with weights:

    lam * w_i * L(p, t_i) + (1 - lam) * w_j * L(p, t_j) = W * L(p, t)

with ``W = lam * w_i + (1 - lam) * w_j`` the mixed sample's weight and
``t = (lam * w_i * t_i + (1 - lam) * w_j * t_j) / W`` its target.

The draws come from torch's generator, which the fit seeds, so a fit stays
a function of ``random_state``. Validation, the probe, the guard and the
learning-rate sweeps see the batches as they are.
"""

from __future__ import annotations

import math

import torch


class BatchMixer:
    """Mixes ``(x, (target, weight))`` training batches.

    ``soft_target`` turns a batch's targets into float rows of per-class
    probabilities (a one-hot row for single-label targets, the 0/1 row for
    multi-label ones).
    """

    def __init__(self, mixup: float, cutmix: float, soft_target):
        self.mixup = float(mixup)
        self.cutmix = float(cutmix)
        self.soft_target = soft_target

    def __call__(self, batch):
        x, (target, weight) = batch
        kinds = [k for k, a in (("mixup", self.mixup), ("cutmix", self.cutmix)) if a]
        if x.dim() != 4:  # cached features: mixup only
            kinds = [k for k in kinds if k == "mixup"]
        if not kinds or len(x) < 2:
            return batch
        pick = int(torch.randint(len(kinds), ())) if len(kinds) > 1 else 0
        kind = kinds[pick]
        alpha = self.mixup if kind == "mixup" else self.cutmix
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(len(x)).to(x.device)
        if kind == "mixup":
            x = _blend(x, perm, lam)
        else:
            x, lam = _cut_and_paste(x, perm, lam)
        soft = self.soft_target(target)
        weight = weight.float()
        a, b = lam * weight, (1.0 - lam) * weight[perm]
        mixed_weight = a + b
        share = (a / mixed_weight.clamp_min(1e-12)).unsqueeze(1)
        mixed = share * soft + (1.0 - share) * soft[perm]
        return x, (mixed, mixed_weight)


def _blend(x: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    """Mixup of the inputs. uint8 images stay uint8 pixels (rounded): the
    network normalises uint8 input itself, and a GPU gets a quarter of the
    bytes of floats."""
    mixed = lam * x.float() + (1.0 - lam) * x[perm].float()
    if x.dtype == torch.uint8:
        return mixed.round_().clamp_(0, 255).to(torch.uint8)
    return mixed.to(x.dtype)


def _cut_and_paste(x: torch.Tensor, perm: torch.Tensor, lam: float):
    """CutMix: a box of about ``1 - lam`` of the area, at a random centre
    (cut at the borders), taken from each image's partner. Returns the
    images and the share of each image kept."""
    height, width = x.shape[-2:]
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    x = x.clone()
    x[..., top:bottom, left:right] = x[perm, ..., top:bottom, left:right]
    kept = 1.0 - (bottom - top) * (right - left) / (height * width)
    return x, kept
