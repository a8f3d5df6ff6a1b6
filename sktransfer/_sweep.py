"""Learning-rate sweeps: the rate rises exponentially, the loss is watched.

:func:`lr_sweep` trains a copy of the trainable part of the model while the
rate sweeps up, in the stages' own training loop (a skorch net, with the
:class:`._stage_net.RateSweep` callback setting the rates and ending the
run);
:func:`suggest_lrs` reads rates off the curve.
:func:`stage_sweep` sweeps for one stage of a plan (the head on cached
features, or the unfrozen network on images with the stage's ratios between
layer groups), and :func:`sweep_rate` is what ``lr="auto"`` runs. The public
:class:`~sktransfer.LRFinder` runs the same sweeps.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings

import numpy as np

from ._finetune import set_trainable
from ._head import prepare_batchnorm
from ._seeding import seeded
from ._stage_net import RateSweep, steps_per_epoch, training_net
from ._threads import small_work_threads
from .exceptions import DivergedError


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
        param_groups = [(list(copy_of.parameters()), 1.0)]
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
    with seeded(seed), small_work_threads(head_only):
        return lr_sweep(
            copy_of,
            param_groups,
            train_set,
            task.loss,
            batch_size=settings.batch_size,
            weight_decay=settings.weight_decay,
            on_features=head_only,
            precision=data.extractor.precision,
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
    module,
    param_groups,
    train_set,
    loss,
    *,
    batch_size,
    start_lr=1e-7,
    end_lr=10.0,
    num_it=100,
    smooth=0.98,
    diverge=4.0,
    weight_decay=0.0,
    on_features=True,
    precision="fp32",
) -> dict:
    """Train ``module`` on ``train_set`` while the base rate sweeps up
    exponentially from ``start_lr`` to ``end_lr``, in the training loop the
    stages run in (:func:`._stage_net.training_net`, same precision and
    weighted loss), with :class:`._stage_net.RateSweep` setting the rates.

    ``param_groups`` is a list of ``(params, ratio)``: each group follows
    the sweep scaled by its ratio. ``loss(outputs, target)`` gives
    per-sample losses. The data are cycled (reshuffled on every pass) until
    ``num_it`` mini-batches have run, or the loss is not finite, or the
    smoothed loss exceeds ``diverge`` times its best.

    Returns a dict of arrays ``lrs``, ``losses``, ``smoothed`` (one value
    per iteration run) and ``diverged`` (whether it stopped on divergence).
    """
    sweep = RateSweep(
        [ratio for _, ratio in param_groups],
        start_lr=start_lr,
        end_lr=end_lr,
        num_it=num_it,
        smooth=smooth,
        diverge=diverge,
    )
    batch_size = min(batch_size, len(train_set))
    steps = steps_per_epoch(len(train_set), batch_size)
    net = training_net(
        module,
        [(params, start_lr * ratio) for params, ratio in param_groups],
        loss,
        train_set,
        None,
        [("sweep", sweep)],
        epochs=math.ceil(num_it / steps),
        batch_size=batch_size,
        weight_decay=weight_decay,
        on_features=on_features,
        precision=precision,
    )
    net.initialize()
    try:
        net.partial_fit(train_set, None)
    except DivergedError:  # the loss was not finite
        sweep.diverged_ = True
    module.eval()
    return {
        "lrs": np.asarray(sweep.lrs_),
        "losses": np.asarray(sweep.losses_),
        "smoothed": np.asarray(sweep.smoothed_),
        "diverged": sweep.diverged_,
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
