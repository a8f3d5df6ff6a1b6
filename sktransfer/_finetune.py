"""Training on images: augmented head training and unfrozen fine-tuning.

The body and the head become one module (:class:`TransferNet`); its
parameters are split into layer groups that all sit in the optimizer from
the first step. Freezing flips ``requires_grad`` and never adds or removes
a parameter group, so schedules and optimizer state stay consistent from
stage to stage.

BatchNorm (and dropout) inside the body always run in inference mode, also
in unfrozen groups: the running statistics of the pretrained network are
kept and only the affine parameters and weights learn. Re-estimating them
from batches of 32 photos of one narrow domain moves the features far from
what the pretrained layers expect and costs accuracy.
"""

from __future__ import annotations

import numpy as np
import torch
from skorch import NeuralNetClassifier
from torch import nn
from torch.utils.data import Dataset

from ._images import load_image
from ._transforms import PLAIN, Preprocessing, random_augment, render


class TransferNet(nn.Module):
    """Normalisation -> pretrained body -> head, on uint8 NCHW batches."""

    def __init__(self, body: nn.Module, head: nn.Module, mean, std):
        super().__init__()
        self.body = body
        self.head = head
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

    def forward(self, x):
        if x.dtype == torch.uint8:
            x = (x.float() - self.mean) / self.std
        x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.body(x))

    def train(self, mode: bool = True):
        super().train(mode)
        self.body.eval()  # see the module docstring
        return self


class ImageDataset(Dataset):
    """Decoded, (optionally) augmented images as uint8 CHW tensors.

    Augmentations draw from one generator seeded at construction; with a
    single-process loader and a seeded shuffle, every run sees the same
    sequence of augmented images.
    """

    def __init__(
        self, sources, y, pre: Preprocessing, augment=None, max_zoom=1.1, seed=0
    ):
        self.sources = sources
        self.y = None if y is None else np.asarray(y, dtype=np.int64)
        self.pre = pre
        self.augment = augment
        self.max_zoom = max_zoom
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.sources)

    def __getitem__(self, i):
        img = load_image(self.sources[i], draft_size=self.pre.resize_size, index=i)
        if self.augment:
            arr = random_augment(img, self.pre, self.rng, self.augment, self.max_zoom)
        else:
            arr = render(img, self.pre, PLAIN)
        x = torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(2, 0, 1)
        return x, (self.y[i] if self.y is not None else 0)


def group_parameters(model: TransferNet, body_groups) -> list[list[nn.Parameter]]:
    """Parameters of each body layer group, then the head's as a last group.

    The head gets the rate of the late group; it is a group of its own so
    that the head can train while the whole body stays frozen.

    Body parameters outside every group (a ViT's position embedding, say)
    join the group of the parameters registered next to them: the first
    group if they come before any grouped parameter, else the previous one.
    """
    owner = {}
    for g, modules in enumerate(body_groups):
        for module in modules:
            for p in module.parameters():
                owner.setdefault(id(p), g)
    groups: list[list[nn.Parameter]] = [[] for _ in body_groups]
    current = 0
    for p in model.body.parameters():
        current = owner.get(id(p), current)
        groups[current].append(p)
    groups.append(list(model.head.parameters()))
    return groups


def set_trainable(groups, first_trainable: int) -> None:
    """Freeze groups before ``first_trainable``, unfreeze the rest."""
    for g, params in enumerate(groups):
        for p in params:
            p.requires_grad_(g >= first_trainable)


def adamw_options() -> dict:
    """``fused=True`` where torch has the fused AdamW kernel (about twice as
    fast per step on a CPU for a small head)."""
    import inspect

    if "fused" in inspect.signature(torch.optim.AdamW).parameters:
        return {"fused": True}
    return {}


class GroupedNet(NeuralNetClassifier):
    """A skorch classifier whose optimizer has one parameter group per layer
    group, with the rates given in ``group_lrs``."""

    def __init__(self, *args, layer_groups=None, group_lrs=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_groups = layer_groups
        self.group_lrs = group_lrs

    def initialize_optimizer(self, *args, **kwargs):
        _, kwargs_opt = self.get_params_for_optimizer("optimizer", [])
        kwargs_opt.pop("lr", None)
        groups = self.layer_groups
        if groups is None:
            groups = [list(self.module_.parameters())]
        param_groups = [
            {"params": params, "lr": lr} for params, lr in zip(groups, self.group_lrs)
        ]
        self.optimizer_ = self.optimizer(param_groups, **kwargs_opt)
        return self

    def set_group_lrs(self, lrs) -> None:
        self.group_lrs = list(lrs)
        for group, lr in zip(self.optimizer_.param_groups, lrs):
            group["lr"] = lr
