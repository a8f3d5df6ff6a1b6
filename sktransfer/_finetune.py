"""The modules and data of training.

The body and the head become one module (:class:`TransferNet`); its
parameters are split into layer groups that all sit in the optimizer from
the first step. Freezing flips ``requires_grad`` (:func:`set_trainable`) and
never adds or removes a parameter group, so schedules and optimizer state
stay consistent.

Image stages read :class:`ImageDataset` through an :class:`ImageLoader`;
stages on cached features read a :class:`FeatureDataset` (the plain view) or
a :class:`CopiesDataset` (augmented copies) through a :class:`FeatureLoader`.

BatchNorm (and dropout) inside the body always run in inference mode, also
in unfrozen groups: the running statistics of the pretrained network are
kept and only the affine parameters and weights learn. Re-estimating them
from batches of a few dozen photos of one narrow domain moves the features
far from what the pretrained layers expect and costs accuracy.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ._decoding import load_pixels
from ._threads import DecodePlan, decoded_batches
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
    """Decoded, (optionally) augmented images as uint8 CHW tensors, with
    their targets and sample weights: items are ``(x, (target, weight))``.

    The augmentation of item ``i`` is drawn from a generator seeded by
    ``(seed, epoch, i)``: the same in every run, whatever thread decodes it
    and in whatever order, and new on every pass (:meth:`new_pass`).
    """

    def __init__(
        self,
        sources,
        targets,
        pre: Preprocessing,
        augment=None,
        max_zoom=1.1,
        seed=0,
        weights=None,
    ):
        self.sources = sources
        self.targets = targets
        self.weights = (
            torch.ones(len(sources), dtype=torch.float32)
            if weights is None
            else weights
        )
        self.pre = pre
        self.augment = augment
        self.max_zoom = max_zoom
        self.seed = int(seed)
        self.epoch = 0
        self._passes = 0

    def new_pass(self) -> None:
        """Draw new augmentations for the next pass over the data."""
        self.epoch = self._passes
        self._passes += 1

    def skip_passes(self, n: int) -> None:
        """Go on as if ``n`` passes had been made (a resumed stage)."""
        self._passes = int(n)

    def __len__(self):
        return len(self.sources)

    def __getitem__(self, i):
        img = load_pixels(self.sources[i], draft_size=self.pre.resize_size, index=i)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            arr = random_augment(img, self.pre, rng, self.augment, self.max_zoom)
        else:
            arr = render(img, self.pre, PLAIN)
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.uint8)).permute(2, 0, 1)
        return x, (self.targets[i], self.weights[i])


class ImageLoader(DataLoader):
    """The data loader of image stages: the images of each batch decoded by
    a pool of threads as :func:`._threads.decode_plan` says, each pass over
    an :class:`ImageDataset` with new augmentations."""

    def __init__(self, dataset, *, decode_plan=None, **kwargs):
        super().__init__(dataset, **kwargs)
        self.decode_plan = decode_plan or DecodePlan(1, False)

    def __iter__(self):
        dataset = self.dataset
        if isinstance(dataset, ImageDataset):
            dataset.new_pass()
        batches = decoded_batches(
            dataset.__getitem__, list(self.batch_sampler), self.decode_plan
        )
        return map(self._collate, batches)

    def _collate(self, items):
        x, rest = self.collate_fn(items)
        if self.pin_memory:  # for a GPU: faster copies of the pixels
            x = x.pin_memory()
        return x, rest


class FeatureDataset(Dataset):
    """Precomputed features with targets and sample weights."""

    def __init__(self, features, targets, weights):
        self.x = torch.as_tensor(np.ascontiguousarray(features))
        self.targets = targets
        self.weights = weights

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        # ``i`` may be a tensor of rows: a whole mini-batch at once
        return self.x[i], (self.targets[i], self.weights[i])


class FeatureLoader(DataLoader):
    """The data loader of stages on features: each mini-batch is gathered
    with one index operation instead of collating items one by one (a head
    step on features is a millisecond; per-item collation cost as much)."""

    def __iter__(self):
        for rows in self.batch_sampler:
            yield self.dataset[torch.as_tensor(rows)]


class CopiesDataset(FeatureDataset):
    """Features of ``k`` augmented copies of every sample, ``(k, n, f)``:
    epoch ``e`` serves copy ``e % k`` (:class:`_NextCopy` turns the page)."""

    def __init__(self, copies, targets, weights):
        super().__init__(copies, targets, weights)
        self.epoch = 0

    def __len__(self):
        return self.x.shape[1]

    def __getitem__(self, i):
        return self.x[self.epoch % len(self.x), i], (self.targets[i], self.weights[i])


def group_parameters(model: TransferNet, body_groups) -> list[list[nn.Parameter]]:
    """Parameters of each body layer group, then the head's as a last group.

    The head is a group of its own so that it can train while the whole
    body stays frozen. Body parameters outside every group (a ViT's position
    embedding, say) join the group of the parameters registered next to
    them: the first group if they come before any grouped parameter, else
    the previous one.
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


def block_parameters(model: TransferNet, body_groups) -> list[list[nn.Parameter]]:
    """The body's parameters block by block, first block to last: the
    finest split :func:`group_parameters` knows (each layer group is a run
    of whole blocks), for rates per block (``layer_decay``). Parameters
    outside every block join the block registered before them (the first
    block if none is)."""
    owner = {}
    blocks = []
    for modules in body_groups:
        for module in modules:
            for p in module.parameters():
                owner.setdefault(id(p), len(blocks))
            blocks.append([])
    blocks = blocks or [[]]
    current = 0
    for p in model.body.parameters():
        current = owner.get(id(p), current)
        blocks[current].append(p)
    return blocks


def adamw_options() -> dict:
    """``fused=True`` where torch has the fused AdamW kernel (about twice as
    fast per step on a CPU for a small head)."""
    if "fused" in inspect.signature(torch.optim.AdamW).parameters:
        return {"fused": True}
    return {}


def set_trainable(groups, first_trainable: int) -> None:
    """Freeze the groups before ``first_trainable``, unfreeze the rest
    (freezing flips ``requires_grad``; the optimizer's groups never change)."""
    for g, params in enumerate(groups):
        for p in params:
            p.requires_grad_(g >= first_trainable)
