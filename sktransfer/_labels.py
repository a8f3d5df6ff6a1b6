"""A classifier's ``y`` as labels: single-label classes or multi-label
indicator rows, checked (hashable, no missing values, the right length, at
least two classes) and encoded once."""

from __future__ import annotations

import warnings
from numbers import Real

import numpy as np
from sklearn.utils.multiclass import type_of_target

from ._split import plain as _plain


def encode_labels(y, n_samples, allow_one_class=False):
    """``(multilabel, classes, encoded)`` for a classifier's ``y``.

    Single-label: ``encoded`` holds class indices into the sorted
    ``classes``; every hashable label (tuples too) comes back exactly as
    given. Multi-label (a 0/1 indicator matrix, or a sequence of lists or
    sets of labels): ``encoded`` is the ``(n, n_labels)`` indicator matrix.
    """
    if y is None:
        raise ValueError("y is required: PretrainedImageClassifier is supervised.")
    if hasattr(y, "to_numpy") and getattr(y, "ndim", 1) == 2:
        y = y.to_numpy()
    if isinstance(y, np.ndarray) and y.ndim == 2:
        if y.shape[1] == 1:
            warnings.warn(
                "y was passed as a column vector; it is used as a 1-D array of labels.",
                UserWarning,
                stacklevel=4,
            )
            y = y.ravel()
        else:
            return _indicator_matrix(y, n_samples)
    if isinstance(y, np.ndarray) and y.ndim > 2:
        raise ValueError(f"y must be 1-D (one label per image); got shape {y.shape}.")
    labels = as_label_list(y)
    _check_length(len(labels), n_samples)
    if labels and all(isinstance(v, COLLECTIONS) for v in labels):
        return _label_collections(labels, allow_one_class)
    collection = [isinstance(v, COLLECTIONS) for v in labels]
    if any(collection):
        odd = sum(collection) * 2 < len(collection)  # name one of the fewer kind
        i = collection.index(odd)
        raise ValueError(
            f"y mixes single labels and label collections (y[{i}] is a "
            f"{type(labels[i]).__name__}); give one label per image, or a "
            "collection of labels for every image (multi-label)."
        )
    classes, encoded = _single_labels(labels, allow_one_class)
    return False, classes, encoded


#: What a multi-label y holds per image (a tuple is one label).
COLLECTIONS = (list, set, frozenset, np.ndarray)


def check_hashable(labels) -> None:
    for i, v in enumerate(labels):
        try:
            hash(v)
        except TypeError:
            raise ValueError(
                f"y[{i}] is a {type(v).__name__}, which cannot be a label: labels "
                "must be hashable (str, int, tuple...)."
            ) from None


def as_label_list(y) -> list:
    if isinstance(y, (str, bytes)) or np.isscalar(y):
        raise ValueError(f"y must be a sequence of labels; got {y!r}.")
    if hasattr(y, "to_numpy"):
        y = y.to_numpy()
    if isinstance(y, np.ndarray) and y.ndim == 1 and y.dtype != object:
        return [_plain(v) for v in y]
    try:
        return list(y)
    except TypeError:
        raise ValueError(
            f"y must be a sequence of labels; got {type(y).__name__}."
        ) from None


def _check_length(n_labels, n_samples):
    if n_labels != n_samples:
        raise ValueError(
            f"X and y have different lengths: {n_samples} images but {n_labels} labels."
        )


def object_array(values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _single_labels(labels, allow_one_class):
    missing = [i for i, v in enumerate(labels) if _is_missing(v)]
    if missing:
        raise ValueError(
            f"y contains {len(missing)} missing labels (NaN or None), the first at "
            f"index {missing[0]}; drop those images or give them a label."
        )
    # only numbers can be continuous; other labels (tuples of any length
    # included) are hashable objects, never an array
    numbers = [v for v in labels if isinstance(v, Real)]
    if numbers and len(numbers) == len(labels):
        values = np.asarray(numbers, dtype=np.float64)
        if type_of_target(values) == "continuous":
            raise ValueError(
                "y holds continuous values; PretrainedImageClassifier needs class "
                "labels (strings, ints, or floats with integer values). For "
                "continuous targets use PretrainedImageRegressor."
            )
    check_hashable(labels)
    try:
        unique = sorted(set(labels))
    except TypeError:
        kinds = sorted({type(v).__name__ for v in labels})
        raise ValueError(
            f"y mixes label types ({', '.join(kinds)}); use labels of one type."
        ) from None
    if len(unique) < 2 and not allow_one_class:
        label = unique[0] if unique else None
        raise ValueError(
            f"y has only one class ({label!r}); a classifier needs at least 2."
        )
    classes = _class_array(unique)
    index = {v: k for k, v in enumerate(unique)}
    encoded = np.array([index[v] for v in labels], dtype=np.int64)
    return classes, encoded


def _class_array(unique) -> np.ndarray:
    """Labels as an array of their natural dtype (strings, ints...), or an
    object array when they are not scalars (tuples) or do not round-trip."""
    if all(isinstance(v, (str, int, float, bool, np.generic)) for v in unique):
        arr = np.asarray(unique)
        if arr.ndim == 1 and [_plain(v) for v in arr] == list(unique):
            return arr
    return object_array(unique)


def same_labels(a, b) -> bool:
    return len(a) == len(b) and all(
        _plain(x) == _plain(y) for x, y in zip(a.tolist(), b.tolist())
    )


def _indicator_matrix(y, n_samples):
    _check_length(len(y), n_samples)
    values = np.asarray(y)
    if values.dtype.kind not in "biuf" or not np.isin(values, (0, 1)).all():
        raise ValueError(
            "a 2-D y must be a 0/1 indicator matrix (n_images, n_labels) for "
            f"multi-label classification; got values of dtype {values.dtype} "
            "outside {0, 1}."
        )
    if values.shape[1] < 2:
        raise ValueError("a multi-label y needs at least 2 label columns.")
    return True, np.arange(values.shape[1]), values.astype(np.int64)


def _label_collections(labels, allow_one_class=False):
    flat = [_plain(v) for row in labels for v in row]
    missing = [v for v in flat if _is_missing(v)]
    if missing:
        raise ValueError("y holds a missing label (NaN or None) inside a collection.")
    try:
        unique = sorted(set(flat))
    except TypeError:
        raise ValueError("y's label collections mix label types.") from None
    if len(unique) < 2 and not allow_one_class:
        raise ValueError(
            f"multi-label y names fewer than 2 labels ({unique}); a classifier "
            "needs at least 2."
        )
    index = {v: k for k, v in enumerate(unique)}
    encoded = np.zeros((len(labels), len(unique)), dtype=np.int64)
    for i, row in enumerate(labels):
        for v in row:
            encoded[i, index[_plain(v)]] = 1
    return True, _class_array(unique), encoded


def _is_missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(isinstance(v, (float, np.floating)) and np.isnan(v))
    except TypeError:
        return False


#: The thresholds ``threshold="tuned"`` chooses among.
THRESHOLD_GRID = np.round(np.linspace(0.05, 0.95, 19), 2)


def tune_thresholds(proba: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Each label's threshold on :data:`THRESHOLD_GRID` that maximises its F1
    on validation images (``proba`` and 0/1 ``truth`` of shape ``(n,
    n_labels)``); among equal F1s the one nearest 0.5. A label without a
    positive validation image keeps 0.5."""
    truth = np.asarray(truth) > 0.5
    grid = THRESHOLD_GRID
    pred = np.asarray(proba)[:, :, None] >= grid  # (n, labels, thresholds)
    tp = (pred & truth[:, :, None]).sum(axis=0)
    f1 = 2 * tp / np.maximum(pred.sum(axis=0) + truth.sum(axis=0)[:, None], 1)
    # the best F1, the nearest to 0.5 among ties (to 1e-12)
    near = np.abs(grid - 0.5)
    best = np.where(f1 >= f1.max(axis=1, keepdims=True) - 1e-12, near, np.inf)
    chosen = grid[np.argmin(best, axis=1)]
    return np.where(truth.any(axis=0), chosen, 0.5)
