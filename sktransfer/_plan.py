"""The recipe as data: estimator parameters -> the stages ``fit`` runs.

:func:`make_plan` is a pure function of the parameters, so what ``fit``
will do (which stages, on what input, which layer groups train, for how
long, at which per-group rates and with which schedule) can be printed and
tested without loading a network or reading an image.

Layer groups are numbered 0 (early), 1 (middle), 2 (late) for the body and
3 for the head; every stage trains the head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from numbers import Real

from .exceptions import InvalidParameterError

#: Body layer groups (early, middle, late); the head is group ``N_BODY_GROUPS``.
N_BODY_GROUPS = 3
#: Every group at the stage's rate (head-only stages: the body's are frozen).
EQUAL_RATIOS = (1.0,) * (N_BODY_GROUPS + 1)

STAGES = ("probe", "precomputed", "augmented", "unfrozen")


@dataclass(frozen=True)
class Stage:
    """One stage of training.

    Attributes
    ----------
    name : {"probe", "precomputed", "augmented", "unfrozen"}
        ``"probe"`` fits the head's output layer in closed form (a
        penalised linear model on the cached features, its penalty chosen
        by cross-validation: see ``head_init``); it has no epochs.
    input : {"features", "copies", "images"}
        Cached features of the frozen body, cached features of fixed
        augmented copies of the photos, or decoded (augmented) photos.
    trainable_from : int
        First trainable layer group; ``N_BODY_GROUPS`` trains the head only.
    epochs : int
    lr : float or "auto"
        Rate of the late body group and of the head; ``"auto"`` is found by
        a learning-rate sweep when the stage starts.
    ratios : tuple of ``N_BODY_GROUPS + 1`` floats
        Each group's rate as a multiple of ``lr`` (early, middle, late, head).
    cycle_len, cycle_mult, n_cycles : the SGDR schedule of the stage; the
        cycles are stretched to fill ``epochs`` exactly.
    warmup : float
        Fraction of each cycle spent warming the rate up (0: none; the
        one-cycle schedule's 0.25).
    layer_decay : float or None
        Rates per body block instead of per layer group (the ratios' body
        entries are then unused): the last block at ``lr``, each block
        before it ``layer_decay`` times the next one's rate.
    augment : str, callable or None
        Augmentation of image stages: a preset's name or the user's
        function.
    snapshot : bool
        Keep the model at the end of every cycle (snapshot ensemble).
    copies : int
        For ``"copies"`` input: how many augmented copies of each photo the
        stage uses (epoch ``e`` trains on copy ``e % copies``).

    Examples
    --------
    >>> from sktransfer import PretrainedImageClassifier, make_plan
    >>> clf = PretrainedImageClassifier(unfrozen_cycles=2, cycle_mult=2)
    >>> stage = make_plan(clf.get_params())[-1]
    >>> stage.name, stage.input, stage.epochs, stage.trains_body
    ('unfrozen', 'images', 3, True)
    >>> [f"{rate:g}" for rate in stage.group_lrs(stage.lr)]  # early ... head
    ['1e-06', '1e-05', '0.0001', '0.0001']
    """

    name: str
    input: str
    trainable_from: int
    epochs: int
    lr: float | str
    ratios: tuple
    cycle_len: float
    cycle_mult: float
    n_cycles: int
    augment: object = None  # a preset's name, the user's function or None
    snapshot: bool = False
    copies: int = 0
    warmup: float = 0.0
    layer_decay: float | None = None

    @property
    def on_features(self) -> bool:
        """True where the stage trains the head on cached features (the
        plain view or augmented copies) rather than on decoded photos."""
        return self.input != "images"

    @property
    def trains_body(self) -> bool:
        return self.trainable_from < N_BODY_GROUPS

    def group_lrs(self, lr: float) -> list[float]:
        """The rate of every layer group for a top rate ``lr``."""
        return [lr * r for r in self.ratios]

    def block_ratios(self, n_blocks: int) -> list[float]:
        """With ``layer_decay``: each body block's rate as a multiple of the
        top rate, first block to last (the last block's is 1)."""
        return [self.layer_decay ** (n_blocks - 1 - k) for k in range(n_blocks)]


def cycle_epochs(cycle_len: float, cycle_mult: float, n_cycles: int) -> int:
    """Whole epochs that ``n_cycles`` SGDR cycles need (at least one)."""
    total = sum(cycle_len * cycle_mult**i for i in range(n_cycles))
    return max(1, math.ceil(total - 1e-9))


def unfrozen_rates(unfrozen_lr, lr_mult) -> tuple[float | str, tuple]:
    """``(lr, ratios)`` of the unfrozen stage.

    A number is the rate of the late group (and the head); earlier groups
    get ``lr / lr_mult`` and ``lr / lr_mult**2``. A tuple gives the early,
    middle and late rates explicitly (the head trains at the late rate), and
    ``lr_mult`` is not used.
    """
    if isinstance(unfrozen_lr, (tuple, list)):
        early, middle, late = (float(v) for v in unfrozen_lr)
        return late, (early / late, middle / late, 1.0, 1.0)
    mult = float(lr_mult)
    return unfrozen_lr, (1.0 / mult**2, 1.0 / mult, 1.0, 1.0)


def make_plan(params: dict) -> list[Stage]:
    """The stages that ``fit`` runs for the estimator parameters ``params``
    (``estimator.get_params()``).

    1. ``precompute_epochs`` epochs of the head on the frozen body's cached
       features: one cosine cycle, or SGDR cycles of ``cycle_len`` epochs
       when it is the last stage of a snapshot ensemble;
    2. ``augmented_cycles`` SGDR cycles of ``cycle_len`` epochs of the head
       on augmented photos through the frozen body: on the cached features
       of ``augmented_copies`` fixed copies of each photo, or (0) on photos
       augmented afresh every epoch;
    3. ``unfrozen_cycles`` SGDR cycles (the first ``cycle_len`` epochs long,
       each next one ``cycle_mult`` times longer) with layer groups
       ``unfreeze_from`` and later unfrozen, at differential rates.

    With ``head_init="linear_probe"`` (the default) a ``"probe"`` stage comes
    first: the head starts where a linear model on the frozen features
    ends, and the stages after it fine-tune from there.

    With ``schedule="one_cycle"`` every stage of 1-3 runs its epochs as one
    cycle that warms up over its first quarter (the one-cycle schedule)
    instead of SGDR's cycles.

    A stage whose count is 0 is left out; a plan with no stage is an error.

    Examples
    --------
    >>> from sktransfer import PretrainedImageClassifier, make_plan
    >>> clf = PretrainedImageClassifier(augmented_cycles=1, unfrozen_cycles=2)
    >>> [(stage.name, stage.epochs) for stage in make_plan(clf.get_params())]
    [('probe', 0), ('augmented', 1), ('unfrozen', 2)]
    """
    head_only = N_BODY_GROUPS
    probe = uses_probe(params)
    counts = {
        "probe": int(probe),
        "precomputed": params["precompute_epochs"],
        "augmented": params["augmented_cycles"],
        "unfrozen": params["unfrozen_cycles"],
    }
    active = [name for name in STAGES if counts[name] > 0]
    if not active:
        raise ValueError(_nothing_to_train(params))
    snapshot = bool(params.get("snapshot_ensemble", False))
    cycle_len, cycle_mult = params["cycle_len"], params["cycle_mult"]
    lr = params["lr"]
    stages = []
    if probe:
        stages.append(
            Stage("probe", "features", head_only, 0, 0.0, EQUAL_RATIOS, 1, 1.0, 1)
        )
    if counts["precomputed"]:
        epochs = counts["precomputed"]
        length, n_cycles = epochs, 1
        if snapshot and active[-1] == "precomputed":
            length = min(cycle_len, epochs)
            n_cycles = _cycles_within(epochs, length, cycle_mult)
        stages.append(
            Stage(
                "precomputed", "features", head_only, epochs, lr, EQUAL_RATIOS,
                length, cycle_mult if n_cycles > 1 else 1.0, n_cycles,
                snapshot=snapshot and active[-1] == "precomputed",
            )
        )  # fmt: skip
    if counts["augmented"]:
        n = counts["augmented"]
        epochs = cycle_epochs(cycle_len, 1, n)
        copies = min(int(params.get("augmented_copies", 0)), epochs)
        stages.append(
            Stage(
                "augmented", "copies" if copies else "images", head_only, epochs,
                lr, EQUAL_RATIOS, cycle_len, 1.0, n, params["augment"],
                snapshot=snapshot and active[-1] == "augmented", copies=copies,
            )
        )  # fmt: skip
    if counts["unfrozen"]:
        n = counts["unfrozen"]
        top, ratios = unfrozen_rates(params["unfrozen_lr"], params["lr_mult"])
        stages.append(
            Stage(
                "unfrozen", "images", int(params["unfreeze_from"]),
                cycle_epochs(cycle_len, cycle_mult, n), top, ratios,
                cycle_len, cycle_mult, n, params["augment"], snapshot=snapshot,
                layer_decay=params.get("layer_decay"),
            )
        )  # fmt: skip
    if params.get("schedule", "sgdr") == "one_cycle":
        stages = [_one_cycle(stage) for stage in stages]
    return stages


#: The share of a one-cycle stage that warms up (fastai's ``pct_start``).
ONE_CYCLE_WARMUP = 0.25


def _one_cycle(stage: Stage) -> Stage:
    """The stage with its epochs as one warmed-up cycle."""
    if stage.name == "probe":
        return stage
    return replace(
        stage, cycle_len=stage.epochs, cycle_mult=1.0, n_cycles=1,
        warmup=ONE_CYCLE_WARMUP,
    )  # fmt: skip


def _nothing_to_train(params: dict) -> str:
    return (
        "Nothing to train: precompute_epochs, augmented_cycles and "
        "unfrozen_cycles are all 0 and no linear probe runs (head_init="
        f"{params.get('head_init', 'random')!r}, hidden_sizes="
        f"{tuple(params.get('hidden_sizes', ()))!r}). Set at least one of "
        "them above 0, or use a linear head (hidden_sizes=()) with "
        "head_init='auto' or 'linear_probe'."
    )


def uses_probe(params: dict) -> bool:
    """Whether the plan starts with a linear probe: ``head_init`` is
    ``"linear_probe"``, or ``"auto"`` with a linear head."""
    init = params.get("head_init", "random")
    linear = len(tuple(params.get("hidden_sizes", ()))) == 0
    return init == "linear_probe" or (init == "auto" and linear)


def _cycles_within(epochs: int, cycle_len: float, cycle_mult: float) -> int:
    """How many cycles (at least one) fit into ``epochs``."""
    n, total = 0, 0.0
    while total + cycle_len * cycle_mult**n <= epochs + 1e-9:
        total += cycle_len * cycle_mult**n
        n += 1
    return max(1, n)


def check_rates(unfrozen_lr, lr_mult, owner: str) -> None:
    """Errors for rate parameters that the parameter rules let through."""
    if isinstance(unfrozen_lr, (tuple, list)):
        ok = len(unfrozen_lr) == 3 and all(
            isinstance(v, Real) and math.isfinite(v) and v > 0 for v in unfrozen_lr
        )
        if not ok:
            raise InvalidParameterError(
                f"The 'unfrozen_lr' parameter of {owner} must be a positive float, "
                "'auto', or a tuple of 3 positive rates (early, middle, late). "
                f"Got {unfrozen_lr!r} instead."
            )
