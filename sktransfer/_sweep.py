"""Learning-rate sweeps: the rate rises exponentially, the loss is watched.

:func:`lr_sweep` trains a copy of the trainable part of the model while the
rate sweeps up, in the stages' own training loop (a skorch net, with the
:class:`~sktransfer.callbacks.LRSweep` callback setting the rates and
ending the run); :func:`._suggest.suggest_lrs` reads rates off the curve.
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

from ._finetune import block_parameters, set_trainable
from ._head import InputNorm, prepare_batchnorm
from ._seeding import seeded
from ._stage_net import optimizer_groups, steps_per_epoch, training_net
from ._suggest import suggest_lrs
from ._threads import small_work_threads
from .callbacks import LRSweep
from .exceptions import DivergedError


def sweep_rate(stage, config, model, groups, data, task, settings, seed, fallback):
    """``(rate, record)``: the rate ``config`` (an
    :class:`~sktransfer.callbacks.LRSweep`) reads off a sweep for
    ``stage``, or the stated ``fallback`` (with a warning) when the sweep
    cannot be read; ``record`` is the sweep for ``lr_sweeps_``."""
    name = "unfrozen_lr" if stage.trains_body else "lr"
    options = config.get_params()
    options.pop("rule")
    sweep = {"lrs": [], "losses": [], "smoothed": [], "diverged": False}
    if len(data.train) >= 2:  # a batch of one cannot train the head's BatchNorm
        sweep = stage_sweep(stage, model, groups, data, task, settings, seed, **options)
    problem = sweep_problem(sweep, len(data.train), settings.batch_size)
    suggestions = {}
    if len(sweep["lrs"]) >= 3:
        suggestions = suggest_lrs(sweep["lrs"], sweep["smoothed"])
    rate = fallback if problem else float(suggestions[config.rule])
    if problem:
        default = config.get_params() == LRSweep().get_params()
        shown = "'auto'" if default else "LRSweep(...)"
        warnings.warn(
            f"the learning-rate sweep for {name}={shown} {problem}; it uses "
            f"the default rate {fallback:g} instead.",
            UserWarning,
            stacklevel=2,
        )
    record = {
        "lrs": np.asarray(sweep["lrs"], dtype=float),
        "losses": np.asarray(sweep["losses"], dtype=float),
        "smoothed_losses": np.asarray(sweep["smoothed"], dtype=float),
        "diverged": bool(sweep["diverged"]),
        "suggestions": suggestions,
        "rule": config.rule,
        "rate": rate,
        "problem": problem,
    }
    return rate, record


def stage_sweep(stage, model, groups, data, task, settings, seed, **options):
    """Sweep the rate on a copy of the trainable part of ``model``: the head
    on cached features for a head-only stage, else the unfrozen network on
    augmented images with the stage's ratios between layer groups."""
    head_only = not stage.trains_body
    if head_only:
        copy_of = _fresh_copy(model.head, seed)
        prepare_batchnorm(copy_of, True)
        param_groups = [(list(copy_of.parameters()), 1.0)]
        sweep_stage = dataclasses.replace(stage, input="features")
    else:
        copy_of = copy.deepcopy(model)
        copy_groups = _same_groups(groups, model, copy_of)
        set_trainable(copy_groups, stage.trainable_from)
        blocks = None
        if stage.layer_decay is not None:
            body = block_parameters(model, data.extractor.backbone.groups)
            blocks = _same_groups(body, model, copy_of)
        # the stage's own groups and ratios (a top rate of 1), the trainable
        # ones: what the stage's optimizer will step
        param_groups = [
            (params, ratio)
            for params, ratio in optimizer_groups(stage, 1.0, copy_groups, blocks)
            if all(p.requires_grad for p in params)
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
            task.train_loss,
            batch_size=settings.batch_size,
            weight_decay=settings.weight_decay,
            on_features=head_only,
            precision=data.extractor.precision,
            **options,
        )


def _fresh_copy(head, seed):
    """A copy of ``head`` with new random weights: the head's rate is swept
    from scratch, as the lesson's ``lr_find`` does. A head a linear probe
    started sits at its loss minimum, so its curve only rises and has no
    descent to read (measured on 400 dogs vs cats photos: the sweep from the
    probed head stopped after 7 of 100 steps and fell back to the default
    rate; from a new head it read 0.012)."""
    fresh = copy.deepcopy(head)
    with seeded(seed):
        for module in fresh.modules():
            if isinstance(module, InputNorm):
                module.frozen = False
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return fresh


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
    weight_decay=0.0,
    on_features=True,
    precision="fp32",
    **options,
) -> dict:
    """Train ``module`` on ``train_set`` while the base rate sweeps up
    exponentially, in the training loop the stages run in
    (:func:`._stage_net.training_net`: same precision, same weighted loss),
    with an :class:`~sktransfer.callbacks.LRSweep` of ``options`` setting
    the rates.

    ``param_groups`` is a list of ``(params, ratio)``: each group follows
    the sweep scaled by its ratio. ``loss(outputs, target)`` gives
    per-sample losses. The data are cycled (reshuffled on every pass) until
    the sweep is over.

    Returns a dict of arrays ``lrs``, ``losses``, ``smoothed`` (one value
    per iteration run), ``diverged`` (whether it stopped on divergence) and
    ``num_it``.
    """
    sweep = LRSweep(**options)
    start_lr = sweep.start_lr
    batch_size = min(batch_size, len(train_set))
    steps = steps_per_epoch(len(train_set), batch_size)
    net = training_net(
        module,
        [(params, start_lr * ratio) for params, ratio in param_groups],
        loss,
        train_set,
        None,
        [("sweep", sweep)],
        epochs=math.ceil(sweep.num_it / steps),
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
        "smoothed": np.asarray(sweep.smoothed_losses_),
        "diverged": sweep.diverged_,
        "num_it": sweep.num_it,
    }
