"""The rules of the recipe estimators' parameters (see :mod:`._params`):
the values each may take, and the checks that involve several of them.
``validate`` applies them in ``fit``, ``load``, the Dask helpers and the
command line, before any image is read."""

from __future__ import annotations

from numbers import Integral, Real

from ._features import FEATURE_RULES
from ._fit_args import named_callbacks
from ._params import (
    BOOLEAN,
    NONE,
    PATH,
    RANDOM_STATE,
    VERBOSE,
    InstanceOf,
    Interval,
    Options,
    Satisfies,
)
from ._plan import check_rates
from ._transforms import AUGMENTATIONS
from .callbacks import LRSweep
from .exceptions import InvalidParameterError


def _positive_ints(value) -> bool:
    return isinstance(value, (tuple, list)) and all(
        isinstance(h, Integral) and not isinstance(h, bool) and h >= 1 for h in value
    )


def _non_negative(kind):
    return Interval(kind, 0, None, "left")


_POSITIVE_RATE = Interval(Real, 0, None, "neither")

#: The rules of the recipe estimators' parameters (see ``_params``).
RECIPE_RULES = {
    **FEATURE_RULES,
    "hidden_sizes": [Satisfies(_positive_ints, "a tuple of positive ints")],
    "dropout": [Interval(Real, 0, 1, "left")],
    "head_init": [Options("auto", "linear_probe", "random")],
    "precompute_epochs": [_non_negative(Integral)],
    "augmented_cycles": [_non_negative(Integral)],
    "augmented_copies": [_non_negative(Integral)],
    "unfrozen_cycles": [_non_negative(Integral)],
    "unfreeze_from": [Interval(Integral, 0, 2, "both")],
    "cycle_len": [Interval(Real, 0, None, "neither")],
    "cycle_mult": [Interval(Real, 1, None, "left")],
    "schedule": [Options("sgdr", "one_cycle")],
    "ema_decay": [Interval(Real, 0, 1, "neither"), NONE],
    "lr": [_POSITIVE_RATE, Options("auto"), InstanceOf(LRSweep)],
    "unfrozen_lr": [
        _POSITIVE_RATE,
        Options("auto"),
        InstanceOf(LRSweep),
        InstanceOf(tuple, list),
    ],
    "lr_mult": [Interval(Real, 1, None, "left")],
    "layer_decay": [Interval(Real, 0, 1, "right"), NONE],
    "augment": [Options(*AUGMENTATIONS), Satisfies(callable, "a callable"), NONE],
    "max_zoom": [Interval(Real, 1, None, "left")],
    "batch_size": [Interval(Integral, 2, None, "left")],
    "weight_decay": [_non_negative(Real)],
    "tta": [_non_negative(Integral)],
    "snapshot_ensemble": [BOOLEAN],
    "checkpoint_dir": [PATH, NONE],
    "validation_fraction": [Interval(Real, 0, 1, "neither"), NONE],
    "early_stopping": [BOOLEAN],
    "n_iter_no_change": [Interval(Integral, 1, None, "left")],
    "tol": [_non_negative(Real)],
    "callbacks": [InstanceOf(list, tuple, None)],
    "warm_start": [BOOLEAN],
    "on_error": [Options("raise", "skip")],
    "extract_batch_size": [Interval(Integral, 1, None, "left")],
    "random_state": [RANDOM_STATE],
    "verbose": [VERBOSE],
}


def _check_probe_head(params, name) -> None:
    hidden = params["hidden_sizes"]
    if params["head_init"] == "linear_probe" and len(hidden):
        raise InvalidParameterError(
            f"head_init='linear_probe' fits a linear head, but hidden_sizes="
            f"{tuple(hidden)!r} gives {name} hidden layers. Set "
            "hidden_sizes=() for the probe, or head_init='random' (or "
            "'auto') for a head with hidden layers."
        )


def _check_snapshots(params, name) -> None:
    if params["snapshot_ensemble"] and params["ema_decay"] is not None:
        raise InvalidParameterError(
            "snapshot_ensemble=True averages the predictions of the models at "
            "the ends of the SGDR cycles, and ema_decay averages the weights "
            f"along the whole run: {name} takes one or the other. Set "
            "ema_decay=None or snapshot_ensemble=False."
        )
    if params["snapshot_ensemble"] and params["schedule"] == "one_cycle":
        raise InvalidParameterError(
            f"snapshot_ensemble=True averages the models at the ends of the "
            f"last stage's SGDR cycles, but schedule='one_cycle' gives {name} "
            "one cycle a stage: one model. Use schedule='sgdr' for a snapshot "
            "ensemble."
        )


def _check_layer_decay(params, name) -> None:
    if params["layer_decay"] is not None and isinstance(
        params["unfrozen_lr"], (tuple, list)
    ):
        raise InvalidParameterError(
            f"unfrozen_lr={tuple(params['unfrozen_lr'])!r} sets the rate of each "
            f"layer group, and layer_decay={params['layer_decay']!r} sets the "
            f"rate of each block: {name} takes one or the other. Give "
            "unfrozen_lr one number (the last block's rate) with layer_decay, "
            "or set layer_decay=None."
        )


def _check_sweeps(params, name) -> None:
    for key in ("lr", "unfrozen_lr"):
        if isinstance(params[key], LRSweep):
            try:
                params[key]._check()
            except (ValueError, TypeError) as exc:
                raise InvalidParameterError(
                    f"The {key!r} parameter of {name} is an LRSweep that cannot "
                    f"run: {exc}"
                ) from None


#: The recipe's checks that involve several parameters (or the inside of
#: one: the rates of ``unfrozen_lr``, a sweep's settings, the names of
#: ``callbacks``).
RECIPE_CHECKS = (
    _check_probe_head,
    _check_snapshots,
    _check_layer_decay,
    _check_sweeps,
    lambda params, name: check_rates(params["unfrozen_lr"], params["lr_mult"], name),
    lambda params, name: named_callbacks(params["callbacks"], name),
)
