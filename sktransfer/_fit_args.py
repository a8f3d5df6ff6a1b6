"""Checks of ``fit``'s arguments and of the parameters that scikit-learn's
constraints cannot express: sample weights, the validation data given to
``fit`` (``X_val``, ``y_val``, ``sample_weight_val``) and the user's skorch
callbacks. Each error names the argument or parameter at fault.

Also the containers of a fit's checked inputs: :class:`Inputs` (before any
image is read), :class:`Read` (the images once read) and :class:`Prepared`
(what the engine gets)."""

from __future__ import annotations

import dataclasses

import numpy as np
from skorch.callbacks import Callback

from .exceptions import InvalidParameterError


def check_sample_weight(sample_weight, n, name="sample_weight") -> np.ndarray:
    if sample_weight is None:
        return np.ones(n, dtype=np.float64)
    w = np.asarray(sample_weight)
    if w.ndim == 0:
        w = np.full(n, float(w))
    of = "" if name == "sample_weight" else " of X_val"
    if w.ndim != 1 or len(w) != n:
        raise ValueError(
            f"{name} must be 1-D with one weight per image{of} ({n}); got shape "
            f"{w.shape}."
        )
    try:
        w = w.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must hold numbers.") from None
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        i = int(np.flatnonzero(~np.isfinite(w) | (w < 0))[0])
        raise ValueError(f"{name} must be finite and >= 0; {name}[{i}] is {w[i]}.")
    if not np.any(w > 0):
        what = "nothing to learn" if of == "" else "the validation loss is undefined"
        raise ValueError(f"{name} is 0 for every image{of}: {what}.")
    return w


def check_validation_args(X_val, y_val, sample_weight_val, estimator) -> bool:
    """Whether validation data was given; errors for half of it, or for it
    together with ``validation_fraction`` (as scikit-learn's
    ``HistGradientBoostingClassifier.fit`` words them)."""
    if X_val is None and y_val is None:
        if sample_weight_val is not None:
            raise ValueError(
                "sample_weight_val is provided, but X_val and y_val were not provided."
            )
        return False
    if y_val is None:
        raise ValueError("X_val is provided, but y_val was not provided.")
    if X_val is None:
        raise ValueError("y_val is provided, but X_val was not provided.")
    if estimator.validation_fraction is not None:
        raise ValueError(
            "X_val and validation_fraction="
            f"{estimator.validation_fraction} were both given, but only one "
            "validation set can be used: X_val is the validation set, "
            "validation_fraction holds out part of X. Set "
            "validation_fraction=None to validate on X_val."
        )
    return True


def check_validation_length(y_val, n_val) -> None:
    try:
        n_targets = len(y_val)
    except TypeError:
        raise ValueError(
            "y_val must be a sequence with one target per image of X_val; got "
            f"{type(y_val).__name__}."
        ) from None
    if n_targets != n_val:
        raise ValueError(
            f"X_val and y_val have different lengths: {n_val} images but "
            f"{n_targets} targets."
        )


def check_validation_kept(val_keep, val_weights, n_val) -> None:
    if len(val_keep) == 0:
        raise ValueError(
            f"none of the {n_val} images of X_val could be used (on_error='skip' "
            "left them all out; see the warning above): no validation set is left."
        )
    if not np.any(val_weights[val_keep] > 0):
        raise ValueError(
            "sample_weight_val is 0 for every image of X_val that could be used: "
            "the validation loss is undefined."
        )


#: Names of the callbacks the engine gives every stage's net.
OWN_CALLBACKS = frozenset(
    {"sgdr", "lrs", "copies", "valid_score", "early_stopping", "progress", "snapshots"}
    | {"fit_checkpoint"}
)


def named_callbacks(callbacks, owner) -> list:
    """``callbacks`` as ``(name, callback)`` pairs with unique names (an
    unnamed one is named after its class, numbered as skorch numbers
    repeats), or an error naming the item that is not a skorch callback."""
    if callbacks is None:
        return []
    pairs = []
    for i, item in enumerate(callbacks):
        name, callback = (None, item)
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            name, callback = item
        if not isinstance(callback, Callback):
            raise InvalidParameterError(
                f"The 'callbacks' parameter of {owner} must be a list of skorch "
                f"callback instances or (name, callback) pairs; callbacks[{i}] is "
                f"{item!r:.80}."
            )
        pairs.append((name, callback))
    named = [name for name, _ in pairs if name is not None]
    taken = sorted({name for name in named if named.count(name) > 1})
    if taken:
        raise InvalidParameterError(
            f"The 'callbacks' parameter of {owner} names {taken[0]!r} more than "
            "once; give every callback a name of its own."
        )
    reserved = sorted(set(named) & OWN_CALLBACKS)
    if reserved:
        raise InvalidParameterError(
            f"The 'callbacks' parameter of {owner} names a callback "
            f"{reserved[0]!r}, a name sktransfer's own callbacks use "
            f"({sorted(OWN_CALLBACKS)}); choose another name."
        )
    classes = [type(cb).__name__ for name, cb in pairs if name is None]
    out, seen = [], {}
    for name, callback in pairs:
        if name is None:
            name = type(callback).__name__
            if classes.count(name) > 1:
                seen[name] = seen.get(name, 0) + 1
                name = f"{name}_{seen[name]}"
            if name in named or name in OWN_CALLBACKS:
                name = f"user_{name}"
        out.append((name, callback))
    return out


@dataclasses.dataclass
class Prepared:
    """A fit's inputs, checked: what the engine needs, and what the front
    sets as fitted attributes afterwards."""

    plan: list
    data: object  # the engine's TrainingSet
    head: object  # the head to train (torch module)
    task: object
    settings: object  # the engine's Settings
    seed: int
    info: dict
    skipped: list
    history: list
    image_counts: tuple | None = None


@dataclasses.dataclass
class Inputs:
    """``X``, ``y``, ``sample_weight`` (and the validation set's) checked,
    before any image is read."""

    sources: list
    encoded: np.ndarray
    info: dict
    weights: np.ndarray
    val_sources: list = dataclasses.field(default_factory=list)
    val_encoded: np.ndarray | None = None
    val_weights: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.sources)

    def add_validation(self, sources, encoded, weights) -> None:
        self.val_sources, self.val_encoded, self.val_weights = sources, encoded, weights


@dataclasses.dataclass
class Read:
    """The images once read: the kept ones (training rows, then validation
    rows), their fingerprints and plain features (None when no stage needs
    them), which rows of ``X`` and ``X_val`` were kept, and what was
    skipped and computed."""

    sources: list
    fingerprints: list
    features: np.ndarray | None
    keep: np.ndarray
    val_keep: np.ndarray
    skipped: list
    counts: tuple | None
