"""The validation split of a fit: the fraction held out, the checks that
a split is possible (made before any image is read), the rows of each
side, and how the images left out of training are counted."""

from __future__ import annotations

import dataclasses

import numpy as np

#: The fraction held out when ``early_stopping=True`` and
#: ``validation_fraction=None`` (scikit-learn's MLP default).
EARLY_STOPPING_FRACTION = 0.1


def validation_fraction(estimator) -> tuple[float | None, str]:
    """The fraction held out for validation, and how to name it in an
    error. ``early_stopping=True`` without ``validation_fraction`` holds
    out 10%, as scikit-learn's MLP estimators do."""
    if estimator.validation_fraction is not None:
        fraction = estimator.validation_fraction
        return fraction, f"validation_fraction={fraction}"
    if estimator.early_stopping:
        return EARLY_STOPPING_FRACTION, (
            "early_stopping=True (which holds out "
            f"validation_fraction={EARLY_STOPPING_FRACTION})"
        )
    return None, ""


def check_split(estimator, encoded, task, info, dropped=None) -> None:
    """A stratified validation split of the rows that train must be
    possible: said before any image is read (and again when unreadable
    images were left out), naming the class that is too small."""
    fraction, name = validation_fraction(estimator)
    if fraction is None:
        return
    fix = (
        "set validation_fraction=None"
        if estimator.validation_fraction is not None
        else "set early_stopping=False, or a larger validation_fraction"
    )
    n = len(encoded)
    of = f"{n} images" + (f" ({dropped})" if dropped else "")
    n_valid = int(np.ceil(fraction * n))
    if n_valid < 1 or n - n_valid < 1:
        raise ValueError(
            f"{name} leaves no images for "
            f"{'validation' if n_valid < 1 else 'training'} out of {of}."
        )
    if not task.stratify:
        return
    counts = np.bincount(encoded, minlength=task.n_outputs)
    n_classes = int(np.count_nonzero(counts))
    small = [info["classes_"][k] for k in np.flatnonzero(counts == 1)]
    if small:
        names = ", ".join(repr(plain(c)) for c in small[:10])
        more = f" and {len(small) - 10} more" if len(small) > 10 else ""
        raise ValueError(
            f"{name} needs at least 2 images of every class for a stratified "
            f"split; class {names}{more} has only 1 of the {of}. Add images, "
            f"or {fix}."
        )
    if n - n_valid < n_classes:
        raise ValueError(
            f"{name} leaves {n - n_valid} of the {of} for training, fewer "
            f"than the {n_classes} classes; lower it, or {fix}."
        )
    if n_valid < n_classes:
        raise ValueError(
            f"{name} holds out {n_valid} of the {of}, fewer than the "
            f"{n_classes} classes; raise it, or {fix}."
        )


def split_rows(estimator, encoded, task, seed):
    n = len(encoded)
    fraction, _ = validation_fraction(estimator)
    if fraction is None:
        return np.arange(n), None
    from sklearn.model_selection import train_test_split

    train_idx, valid_idx = train_test_split(
        np.arange(n),
        test_size=fraction,
        stratify=encoded if task.stratify else None,
        random_state=seed,
    )
    return np.sort(train_idx), np.sort(valid_idx)


@dataclasses.dataclass(frozen=True)
class Dropped:
    """How many images a fit leaves out, for errors about the rest."""

    weightless: int = 0
    unreadable: int = 0

    def __bool__(self) -> bool:
        return bool(self.weightless or self.unreadable)

    def __str__(self) -> str:
        parts = []
        if self.weightless:
            parts.append(f"{self.weightless} of sample_weight 0")
        if self.unreadable:
            parts.append(f"{self.unreadable} unreadable, left out by on_error='skip'")
        return "not counting " + " and ".join(parts) if parts else ""

    @property
    def kept(self) -> str:
        """What the images that train have (``"a positive sample_weight"``)."""
        if not self.unreadable:
            return "a positive sample_weight"
        return f"images that train ({self})"


def kept_rows(n, bad, weights) -> np.ndarray:
    """Rows that train: readable, and of weight > 0 (a weight-0 image changes
    nothing but the head's BatchNorm statistics, so it is left out)."""
    return np.array([i for i in range(n) if i not in bad and weights[i] > 0], int)


def plain(value):
    """A label as a user wrote it (``'cats'``, not ``np.str_('cats')``)."""
    return value.item() if isinstance(value, np.generic) else value
