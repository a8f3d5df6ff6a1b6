"""Learning-rate sweeps: the rate rises exponentially, the loss is watched.

:func:`lr_sweep` trains a copy of the trainable part of the model while the
rate sweeps up; :func:`suggest_lrs` reads rates off the curve.
:func:`stage_sweep` sweeps for one stage of a plan (the head on cached
features, or the unfrozen network on images with the stage's ratios between
layer groups), and :func:`sweep_rate` is what ``lr="auto"`` runs. The public
:class:`~sktransfer.LRFinder` runs the same sweeps.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import warnings

import numpy as np
import torch
from torch.utils.data import default_collate

from ._finetune import ImageDataset, adamw_options, set_trainable
from ._head import prepare_batchnorm
from ._seeding import seeded
from ._threads import decode_plan, decoded_batches, small_work_threads


def sweep_rate(stage, model, groups, data, task, settings, seed, fallback) -> float:
    """The rate the default rule reads off a sweep for ``stage``; the stated
    ``fallback`` (with a warning) when the sweep cannot be read."""
    problem = too_few_samples(len(data.train), settings.batch_size)
    if not problem:
        sweep = stage_sweep(stage, model, groups, data, task, settings, seed)
        problem = sweep_problem(sweep, len(data.train), settings.batch_size)
    if problem:
        name = "unfrozen_lr" if stage.trains_body else "lr"
        warnings.warn(
            f"the learning-rate sweep for {name}={'auto'!r} {problem}; it uses "
            f"the default rate {fallback:g} instead.",
            UserWarning,
            stacklevel=2,
        )
        return fallback
    return float(suggest_lrs(sweep["lrs"], sweep["smoothed"])["valley"])


def stage_sweep(stage, model, groups, data, task, settings, seed, **options):
    """Sweep the rate on a copy of the trainable part of ``model``: the head
    on cached features for a head-only stage, else the unfrozen network on
    augmented images with the stage's ratios between layer groups."""
    head_only = not stage.trains_body
    if head_only:
        copy_of = copy.deepcopy(model.head)
        prepare_batchnorm(copy_of, True)
        param_groups = [(copy_of.parameters(), 1.0)]
        sweep_stage = dataclasses.replace(stage, input="features")
    else:
        copy_of = copy.deepcopy(model)
        copy_groups = _same_groups(groups, model, copy_of)
        set_trainable(copy_groups, stage.trainable_from)
        param_groups = [
            (params, ratio)
            for g, (params, ratio) in enumerate(
                zip(copy_groups, stage.ratios, strict=True)
            )
            if g >= stage.trainable_from
        ]
        sweep_stage = stage
    train_set = data.stage_dataset(
        sweep_stage, data.train, settings, seed, stage.augment
    )
    device = next(model.head.parameters()).device
    batches = dataset_batches(train_set, settings.batch_size, seed, decode_plan(device))
    with seeded(seed), small_work_threads(head_only):
        return lr_sweep(
            copy_of,
            param_groups,
            batches,
            task.loss,
            weight_decay=settings.weight_decay,
            device=device,
            **options,
        )


def _same_groups(groups, model, copy_of):
    """``groups`` (parameter lists of ``model``) on its deep copy ``copy_of``:
    a copy lists its parameters in the same order."""
    index = {id(p): i for i, p in enumerate(model.parameters())}
    copied = list(copy_of.parameters())
    return [[copied[index[id(p)]] for p in group] for group in groups]


def too_few_samples(n_train, batch_size) -> str | None:
    if n_train < 2 * batch_size and n_train < 64:
        return (
            f"had only {n_train} training samples (fewer than two batches of "
            f"{batch_size}), too few for a readable loss curve"
        )
    return None


def sweep_problem(sweep, n_train, batch_size) -> str | None:
    """Why a sweep cannot be trusted, or None."""
    steps = len(sweep["lrs"])
    if steps < max(3, sweep.get("num_it", 0) // 5):
        return (
            f"stopped after {steps} of {sweep.get('num_it', steps)} steps (the "
            "loss jumped at once: too few or too noisy batches)"
        )
    problem = too_few_samples(n_train, batch_size)
    if problem:
        return problem
    if not sweep["diverged"]:
        return (
            f"never diverged up to a rate of {sweep['lrs'][-1]:.3g}, so the "
            "curve has no valley to read"
        )
    return None


def lr_sweep(
    model,
    param_groups,
    batches,
    loss_fn,
    *,
    start_lr=1e-7,
    end_lr=10.0,
    num_it=100,
    smooth=0.98,
    diverge=4.0,
    weight_decay=0.0,
    device="cpu",
) -> dict:
    """Train ``model`` on ``batches`` while the base rate sweeps up
    exponentially from ``start_lr`` to ``end_lr``.

    ``param_groups`` is a list of ``(params, ratio)``: each group follows
    the sweep scaled by its ratio. ``batches(i)`` returns the ``(x, target,
    weight)`` mini-batch of iteration ``i``; ``loss_fn(outputs, target)``
    gives per-sample losses. The sweep stops when the loss is not finite or
    the smoothed loss exceeds ``diverge`` times its best.

    Returns a dict of arrays ``lrs``, ``losses``, ``smoothed`` (one value
    per iteration run) and ``diverged`` (whether it stopped on divergence).
    """
    ratios = [ratio for _, ratio in param_groups]
    groups = [{"params": list(p), "lr": start_lr * r} for p, r in param_groups]
    optimizer = torch.optim.AdamW(
        groups, lr=start_lr, weight_decay=weight_decay, **adamw_options()
    )
    model.train()
    mult = (end_lr / start_lr) ** (1.0 / max(1, num_it - 1))
    lrs, losses, smoothed = [], [], []
    avg, best, diverged = 0.0, math.inf, False
    for i in range(num_it):
        lr = start_lr * mult**i
        for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
            group["lr"] = lr * ratio
        x, target, weight = (t.to(device) for t in batches(i))
        optimizer.zero_grad(set_to_none=True)
        per_sample = loss_fn(model(x).float(), target)
        loss = (per_sample * weight).sum() / weight.sum().clamp_min(1e-12)
        value = float(loss.detach())
        if not math.isfinite(value):
            diverged = True
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
            diverged = True
            break
    model.eval()
    return {
        "lrs": np.asarray(lrs),
        "losses": np.asarray(losses),
        "smoothed": np.asarray(smoothed),
        "diverged": diverged,
        "num_it": num_it,
    }


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
    skip = min(len(loss) // 10, max(i_min - 2, 0))
    upto = max(i_min, skip + 2)
    slope = np.gradient(loss[skip : upto + 1], np.log(lrs[skip : upto + 1]))
    out["steepest"] = float(lrs[skip + int(np.argmin(slope))])
    out["valley"] = float(lrs[_valley(loss)])
    return out


def _valley(loss) -> int:
    """Two thirds down the longest run where the loss keeps falling."""
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
    return best_start + int(round((end - best_start) * 2 / 3))


def dataset_batches(dataset, batch_size, seed, plan):
    """``batches(i)``: the i-th ``(x, target, weight)`` mini-batch of a
    sweep; the data is cycled with a fresh seeded shuffle on every pass, so
    small data sets still give as many iterations as the sweep needs.
    Batches are gathered as the stages' loaders gather them: features with
    one index operation, images decoded by threads as ``plan`` says."""
    n = len(dataset)
    batch_size = min(batch_size, n)
    per_pass = max(1, n // batch_size)
    rng = np.random.default_rng(seed)
    orders = {}

    def batches(i):
        p, b = divmod(i, per_pass)
        if p not in orders:
            orders.clear()
            orders[p] = rng.permutation(n)
            if isinstance(dataset, ImageDataset):
                dataset.new_pass()  # new augmentations on every pass
        rows = orders[p][b * batch_size : (b + 1) * batch_size]
        if isinstance(dataset, ImageDataset):
            decoded = decoded_batches(dataset.__getitem__, [rows], plan)
            with contextlib.closing(decoded):
                x, (target, weight) = default_collate(next(decoded))
        else:
            x, (target, weight) = dataset[torch.as_tensor(rows)]
        return x, target, weight

    return batches
