"""What is learned: targets in, loss, outputs out.

A task turns the user's ``y`` into the tensor the network is trained on,
gives the loss (per sample, so that sample weights apply), and turns the
network's raw outputs back into what ``predict_proba`` / ``predict`` return.
The recipe engine knows nothing else about the problem, so single-label and
multi-label classification and regression share every stage of training.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Task:
    """Base class: ``n_outputs`` raw outputs per image."""

    kind = "task"
    #: stratify the validation split on the encoded targets
    stratify = False

    def __init__(self, n_outputs: int, label_smoothing: float = 0.0):
        self.n_outputs = int(n_outputs)
        #: used by the classification tasks' ``train_loss``
        self.label_smoothing = float(label_smoothing)

    def loss(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss, shape ``(n,)``: what validation, the probe and
        the guard measure."""
        raise NotImplementedError

    def train_loss(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss the gradient stages and sweeps minimise: the
        loss itself, unless a classifier smooths its labels."""
        return self.loss(raw, target)

    #: the estimator returns ``(n,)`` rather than ``(n, 1)`` (1-d ``y``)
    squeeze = False

    def output_module(self) -> nn.Module:
        """Raw outputs -> what the estimator returns (a torch module: the
        output step of the fitted model, and of exported graphs)."""
        raise NotImplementedError

    def validation_score(self, raw: np.ndarray, target: np.ndarray) -> float:
        raise NotImplementedError

    score_name = "valid_score"


class SingleLabel(Task):
    """Softmax over classes; targets are class indices."""

    kind = "single_label"
    stratify = True
    score_name = "valid_acc"

    def loss(self, raw, target):
        return nn.functional.cross_entropy(raw, target, reduction="none")

    def train_loss(self, raw, target):
        # the target spreads label_smoothing evenly over all classes (its
        # own included), as torch's and Szegedy et al.'s label smoothing do
        return nn.functional.cross_entropy(
            raw, target, reduction="none", label_smoothing=self.label_smoothing
        )

    def target_tensor(self, y):
        return torch.as_tensor(np.asarray(y), dtype=torch.int64)

    def soft_target(self, target):
        """Class indices -> one-hot float rows (for mixup and CutMix)."""
        return nn.functional.one_hot(target, self.n_outputs).float()

    def output_module(self):
        return nn.Softmax(dim=1)

    def validation_score(self, raw, target):
        return float(np.mean(np.argmax(raw, axis=1) == np.asarray(target)))


class MultiLabel(Task):
    """Independent sigmoids; targets are 0/1 indicator rows."""

    kind = "multi_label"
    score_name = "valid_f1"

    def loss(self, raw, target):
        return nn.functional.binary_cross_entropy_with_logits(
            raw, target, reduction="none"
        ).mean(dim=1)

    def train_loss(self, raw, target):
        # each label's 0/1 moves label_smoothing / 2 towards 1/2
        eps = self.label_smoothing
        return self.loss(raw, target * (1.0 - eps) + 0.5 * eps)

    def target_tensor(self, y):
        return torch.as_tensor(np.asarray(y), dtype=torch.float32)

    def soft_target(self, target):
        return target.float()

    def output_module(self):
        return nn.Sigmoid()

    def validation_score(self, raw, target):
        """Samples-averaged F1 at a threshold of 0.5."""
        pred = np.asarray(raw) > 0.0
        true = np.asarray(target) > 0.5
        tp = (pred & true).sum(axis=1)
        denom = pred.sum(axis=1) + true.sum(axis=1)
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)
        return float(f1.mean())


class Regression(Task):
    """Standardised targets and squared error; outputs in original units."""

    kind = "regression"
    score_name = "valid_r2"

    def __init__(self, n_outputs, mean, scale, squeeze=False):
        super().__init__(n_outputs)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.squeeze = bool(squeeze)

    def loss(self, raw, target):
        return nn.functional.mse_loss(raw, target, reduction="none").mean(dim=1)

    def target_tensor(self, y):
        z = (np.asarray(y, dtype=np.float64) - self.mean) / self.scale
        return torch.as_tensor(z, dtype=torch.float32)

    def output_module(self):
        # float32 cannot hold large targets to the unit (1e9 + 1 is 1e9 in
        # float32): the step computes in float64 (an exported graph then
        # casts its result to float32)
        return Affine(self.mean, self.scale)

    def validation_score(self, raw, target):
        """R² of the standardised targets, averaged over outputs."""
        raw = np.asarray(raw, dtype=np.float64)
        target = np.asarray(target, dtype=np.float64)
        ss_res = ((target - raw) ** 2).sum(axis=0)
        ss_tot = ((target - target.mean(axis=0)) ** 2).sum(axis=0)
        return float(np.mean(1 - ss_res / np.maximum(ss_tot, 1e-12)))


class Affine(nn.Module):
    """``raw * scale + mean`` in float64: standardised outputs back to target
    units, exact for targets far from 0 (``1e12 + k``)."""

    def __init__(self, mean, scale):
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(np.asarray(mean), dtype=torch.float64)
        )
        self.register_buffer(
            "scale", torch.tensor(np.asarray(scale), dtype=torch.float64)
        )

    def forward(self, raw):
        scale = self.scale.to(raw.device)
        mean = self.mean.to(raw.device)
        return raw.to(torch.float64) * scale + mean
