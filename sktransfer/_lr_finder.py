"""The learning-rate finder: sweep the rate up exponentially, watch the loss.

A short training run starts from a tiny rate and multiplies it after every
mini-batch until the loss explodes; the curve of (smoothed) loss against
rate shows where training is fast and still stable. Several rules read a
suggestion off the curve; the default, ``"valley"``, takes the longest
stretch over which the smoothed loss keeps falling and picks a rate two
thirds of the way down it, which early spikes and late noise do not fool.
"""

from __future__ import annotations

import copy
import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import clone
from sklearn.utils.validation import check_random_state
from torch import nn

__all__ = ["LRFinder", "lr_sweep", "suggest_lrs"]

RULES = ("valley", "minimum", "steepest")


def lr_sweep(
    model,
    param_groups,
    batches,
    *,
    start_lr=1e-7,
    end_lr=10.0,
    num_it=100,
    smooth=0.98,
    diverge=4.0,
    weight_decay=0.0,
    device="cpu",
):
    """Train ``model`` on ``batches`` while the base rate sweeps up.

    Parameters
    ----------
    model : nn.Module
        Trained in place (pass a copy).
    param_groups : list of (params, ratio)
        Each group follows the sweep scaled by its ratio (the top group
        has ratio 1), so differential rates keep their proportions.
    batches : callable
        ``batches(i)`` returns the ``(x, y)`` mini-batch of iteration ``i``;
        it cycles through the data, so small data sets give enough steps.

    Returns
    -------
    lrs, losses, smoothed : ndarrays of equal length
        The base rate, raw loss and bias-corrected exponentially smoothed
        loss of every iteration run. The sweep stops early when the loss
        is NaN/inf or the smoothed loss exceeds ``diverge`` times its best.
    """
    groups = [
        {"params": list(params), "lr": start_lr * ratio}
        for params, ratio in param_groups
    ]
    ratios = [ratio for _, ratio in param_groups]
    from ._finetune import adamw_options

    optimizer = torch.optim.AdamW(
        groups, lr=start_lr, weight_decay=weight_decay, **adamw_options()
    )
    criterion = nn.CrossEntropyLoss()
    model.train()
    mult = (end_lr / start_lr) ** (1.0 / max(1, num_it - 1))
    lrs, losses, smoothed = [], [], []
    avg, best = 0.0, math.inf
    for i in range(num_it):
        lr = start_lr * mult**i
        for group, ratio in zip(optimizer.param_groups, ratios):
            group["lr"] = lr * ratio
        x, y = batches(i)
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        value = float(loss.detach())
        if not math.isfinite(value):
            break
        loss.backward()
        optimizer.step()
        avg = smooth * avg + (1 - smooth) * value
        s = avg / (1 - smooth ** (i + 1))
        lrs.append(lr)
        losses.append(value)
        smoothed.append(s)
        best = min(best, s)
        if i > 5 and s > diverge * best:
            break
    model.eval()
    return np.asarray(lrs), np.asarray(losses), np.asarray(smoothed)


def suggest_lrs(lrs, smoothed) -> dict:
    """Suggested rates from a sweep, one per rule.

    ``"minimum"``: a tenth of the rate at the lowest smoothed loss (the
    lesson's reading of the plot). ``"steepest"``: the rate where the
    smoothed loss falls fastest per log-rate step, between the first tenth
    of the sweep (where the smoothing is still warming up) and the minimum.
    ``"valley"``: two thirds of the way down the longest stretch over which
    the smoothed loss only falls (small bumps below 1% of the loss range
    allowed).
    """
    lrs = np.asarray(lrs, dtype=float)
    loss = np.asarray(smoothed, dtype=float)
    if len(lrs) < 3:
        raise ValueError(
            f"the sweep ran only {len(lrs)} iterations before the loss diverged; "
            "lower start_lr."
        )
    i_min = int(np.argmin(loss))
    out = {"minimum": float(lrs[i_min] / 10)}
    # The first tenth of the sweep is skipped: there the smoothed loss is
    # still warming up and its noise, not the rate, sets the slope.
    skip = min(len(loss) // 10, max(i_min - 2, 0))
    upto = max(i_min, skip + 2)
    slope = np.gradient(loss[skip : upto + 1], np.log(lrs[skip : upto + 1]))
    out["steepest"] = float(lrs[skip + int(np.argmin(slope))])
    # Longest run where the loss keeps falling (allowing tiny bumps).
    tol = 0.01 * (np.nanmax(loss) - np.nanmin(loss) + 1e-12)
    best_start, best_len, start = 0, 1, 0
    running_min = loss[0]
    for i in range(1, len(loss)):
        if loss[i] <= running_min + tol:
            running_min = min(running_min, loss[i])
        else:
            start, running_min = i, loss[i]
        if i - start + 1 > best_len:
            best_start, best_len = start, i - start + 1
    end = best_start + best_len - 1
    out["valley"] = float(lrs[best_start + int(round((end - best_start) * 2 / 3))])
    return out


class LRFinder:
    """Learning-rate finder for :class:`PretrainedImageClassifier`.

    Runs a short exponential sweep on a copy of the estimator's trainable
    part and suggests rates; the estimator passed in is never changed.

    Parameters
    ----------
    estimator : PretrainedImageClassifier
        Its parameters (backbone, head shape, ``lr_mult``...) are used.
    start_lr, end_lr : float, default=1e-7, 10
        Range of the sweep.
    num_it : int, default=100
        Mini-batches in the sweep (the data is cycled when smaller).
    stage : {"precomputed", "unfrozen"}, default="precomputed"
        ``"precomputed"`` sweeps the head on cached features (seconds);
        ``"unfrozen"`` first fits the estimator's head as configured, then
        sweeps the unfrozen network with the estimator's differential
        rate ratios.
    smooth : float, default=0.98
        Exponential smoothing of the loss.
    diverge : float, default=4
        Stop when the smoothed loss exceeds this multiple of its best.
    random_state : int or None, default=None
        Seeds the head initialisation and batch order.

    Attributes
    ----------
    lrs_, losses_, smoothed_losses_ : ndarray
        The sweep.
    suggestions_ : dict
        Rate per rule (``"valley"``, ``"minimum"``, ``"steepest"``).
    suggestion_ : float
        The ``"valley"`` suggestion.

    Examples
    --------
    >>> finder = LRFinder(PretrainedImageClassifier(...)).fit(X, y)  # doctest: +SKIP
    >>> finder.suggestion_, finder.plot()  # doctest: +SKIP
    """

    def __init__(
        self,
        estimator,
        *,
        start_lr=1e-7,
        end_lr=10.0,
        num_it=100,
        stage="precomputed",
        smooth=0.98,
        diverge=4.0,
        random_state=None,
    ):
        self.estimator = estimator
        self.start_lr = start_lr
        self.end_lr = end_lr
        self.num_it = num_it
        self.stage = stage
        self.smooth = smooth
        self.diverge = diverge
        self.random_state = random_state

    def _check(self):
        if not (
            isinstance(self.start_lr, Real)
            and isinstance(self.end_lr, Real)
            and 0 < self.start_lr < self.end_lr
        ):
            raise ValueError(
                "LRFinder needs 0 < start_lr < end_lr; "
                f"got start_lr={self.start_lr!r}, "
                f"end_lr={self.end_lr!r}."
            )
        if not isinstance(self.num_it, Integral) or self.num_it < 5:
            raise ValueError(
                f"LRFinder's num_it must be an int >= 5; got {self.num_it!r}."
            )
        if self.stage not in ("precomputed", "unfrozen"):
            raise ValueError(
                "LRFinder's stage must be 'precomputed' or 'unfrozen'; "
                f"got {self.stage!r}."
            )
        if not 0 <= self.smooth < 1:
            raise ValueError(
                f"LRFinder's smooth must be in [0, 1); got {self.smooth!r}."
            )

    def fit(self, X, y):
        """Run the sweep on ``(X, y)`` and compute the suggestions."""
        from ._classifier import _seeded

        self._check()
        est = clone(self.estimator)
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        if self.stage == "precomputed":
            est.set_params(
                epochs=0,
                n_cycles=0,
                unfrozen_cycles=0,
                lr=1e-3,
                finetune_lr=1e-4,
                random_state=seed,
            )
            est.fit(X, y)  # loads the body, caches features, builds the head
            X, y = _without_skipped(X, y, est.skipped_)
            features = est.extractor_.transform(
                X, batch_size=est.feature_batch_size, verbose=est.verbose
            )[0]
            y_enc = np.searchsorted(est.classes_, np.asarray(y))
            model = copy.deepcopy(est.net_.module_)
            groups = [(model.parameters(), 1.0)]
            batches = feature_batches(features, y_enc, est.batch_size, seed)
            device = est.extractor_.device
        else:
            est.set_params(
                n_cycles=0,
                unfrozen_cycles=0,
                lr=est.lr if est.lr != "auto" else 1e-3,
                random_state=seed,
            )
            est.fit(X, y)
            X, y = _without_skipped(X, y, est.skipped_)
            model, groups, batches, device = est._unfrozen_sweep_setup(X, y, seed)
        with _seeded(seed):
            lrs, losses, smoothed = lr_sweep(
                model,
                groups,
                batches,
                start_lr=self.start_lr,
                end_lr=self.end_lr,
                num_it=self.num_it,
                smooth=self.smooth,
                diverge=self.diverge,
                weight_decay=est.weight_decay,
                device=device,
            )
        self.lrs_, self.losses_, self.smoothed_losses_ = lrs, losses, smoothed
        self.suggestions_ = suggest_lrs(lrs, smoothed)
        self.suggestion_ = self.suggestions_["valley"]
        return self

    def plot(self, ax=None, skip_start=5, skip_end=3):
        """Loss against learning rate (log axis), suggestions marked."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        end = (
            len(self.lrs_) - skip_end
            if len(self.lrs_) > skip_start + skip_end + 2
            else None
        )
        lrs, loss = self.lrs_[skip_start:end], self.smoothed_losses_[skip_start:end]
        ax.plot(lrs, loss, label="smoothed loss")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        for (name, lr), marker in zip(self.suggestions_.items(), "ovs"):
            y_at = np.interp(np.log(lr), np.log(self.lrs_), self.smoothed_losses_)
            ax.plot(
                [lr], [y_at], marker=marker, linestyle="none", label=f"{name}: {lr:.2g}"
            )
        ax.legend()
        return ax

    def plot_lr(self, ax=None):
        """The learning rate of every iteration of the sweep."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3))
        ax.plot(np.arange(len(self.lrs_)), self.lrs_)
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("learning rate")
        return ax


def _without_skipped(X, y, skipped):
    """``X`` and ``y`` without the images ``fit`` skipped (on_error="skip")."""
    if not skipped:
        return X, y
    from ._images import as_image_list

    sources = as_image_list(X)
    paths = {s for s in skipped if isinstance(s, str)}
    keep = [
        i
        for i, s in enumerate(sources)
        if i not in skipped and not (isinstance(s, str) and s in paths)
    ]
    return [sources[i] for i in keep], np.asarray(y)[keep]


def cycling_batches(n, batch_size, seed, take):
    """``batches(i)``: the i-th mini-batch of a sweep over ``n`` samples.

    The data is cycled with a fresh seeded shuffle on every pass, so small
    data sets still give as many iterations as the sweep needs; ``take``
    turns an index array into an ``(x, y)`` pair.
    """
    batch_size = min(batch_size, n)
    per_pass = max(1, n // batch_size)
    rng = np.random.default_rng(seed)
    orders = {}

    def batches(i):
        p, b = divmod(i, per_pass)
        if p not in orders:
            orders.clear()
            orders[p] = rng.permutation(n)
        return take(orders[p][b * batch_size : (b + 1) * batch_size])

    return batches


def feature_batches(features, y, batch_size, seed):
    X_t = torch.as_tensor(features)
    y_t = torch.as_tensor(y, dtype=torch.int64)
    return cycling_batches(
        len(features), batch_size, seed, lambda idx: (X_t[idx], y_t[idx])
    )


def dataset_batches(dataset, batch_size, seed):
    def take(idx):
        items = [dataset[j] for j in idx]
        x = torch.stack([item[0] for item in items])
        y = torch.as_tensor([int(item[1]) for item in items], dtype=torch.int64)
        return x, y

    return cycling_batches(len(dataset), batch_size, seed, take)
