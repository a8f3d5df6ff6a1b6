"""The data behind the inspection views of :mod:`sktransfer.inspection`:
per-image losses of any fitted classifier or regressor, label sets as
indicator rows, and the titles of the Grad-CAM panels."""

from __future__ import annotations

import numpy as np


def sample_losses(estimator, X, y):
    """Per-sample losses and a function giving a title for sample ``i``."""
    n = n_items(X)
    if getattr(estimator, "multilabel_", False) and not is_matrix(y):
        y = indicator(y, estimator.classes_)
    y = np.asarray(y)
    if len(y) != n:
        raise ValueError(f"X has {n} images but y has {len(y)} rows.")
    if hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_"):
        proba = estimator.predict_proba(X)
        if y.ndim == 2:  # multi-label: one probability per label
            proba = positive_column(proba)
            p = np.clip(proba, 1e-15, 1 - 1e-15)
            losses = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p), axis=1)
            predicted = p >= label_thresholds(estimator)

            def details(i):
                p_true = np.mean(np.where(y[i], p[i], 1 - p[i]))
                names = label_names(estimator, predicted[i])
                truth = label_names(estimator, y[i])
                return f"{names} / {truth} / {losses[i]:.2f} / {p_true:.2f}"

            return losses, details
        classes = np.asarray(estimator.classes_)
        proba = np.asarray(proba)
        position = {plain_value(c): j for j, c in enumerate(classes)}
        unknown = sorted({plain_value(v) for v in y} - set(position), key=str)
        if unknown:
            raise ValueError(
                f"y holds labels the model was not fitted on: {unknown[:5]}; "
                f"its classes_ are {classes.tolist()}."
            )
        true_index = np.array([position[plain_value(v)] for v in y])
        p_true = np.clip(proba[np.arange(n), true_index], 1e-15, 1.0)
        losses = -np.log(p_true)
        predicted = classes[np.argmax(proba, axis=1)]

        def details(i):
            return f"{predicted[i]} / {y[i]} / {losses[i]:.2f} / {p_true[i]:.2f}"

        return losses, details
    predicted = np.asarray(estimator.predict(X), dtype=float)
    errors = predicted.reshape(n, -1) - y.reshape(n, -1).astype(float)
    losses = np.sum(errors**2, axis=1)

    def details(i):
        shown, truth = format_number(predicted[i]), format_number(y[i])
        return f"{shown} / {truth} / {losses[i]:.3g} / -"

    return losses, details


def cam_titles(estimator, result, y, n) -> list:
    outputs, columns = result.outputs, result.columns
    if y is not None:
        if getattr(estimator, "multilabel_", False) and not is_matrix(y):
            y = indicator(y, estimator.classes_)
        y = np.asarray(y)
        if len(y) != n:
            raise ValueError(f"X has {n} images but y has {len(y)} rows.")
    titles = []
    for i in range(n):
        true = [] if y is None else [None]
        if not hasattr(estimator, "classes_"):
            column = columns[i]
            if y is not None:
                true = [format_number(np.reshape(y[i], -1)[column])]
            parts = [f"output {column}", format_number(outputs[i, column]), *true]
            titles.append(" / ".join(parts))
            continue
        classes = np.asarray(estimator.classes_)
        if getattr(estimator, "multilabel_", False):
            on = outputs[i] >= label_thresholds(estimator)
            predicted = label_names(estimator, on)
            if y is not None:
                true = [label_names(estimator, y[i])]
        else:
            predicted = str(classes[np.argmax(outputs[i])])
            if y is not None:
                true = [str(plain_value(y[i]))]
        parts = [str(classes[columns[i]]), predicted, *true]
        titles.append(" / ".join(parts + [f"{outputs[i, columns[i]]:.2f}"]))
    return titles


def is_matrix(y) -> bool:
    return getattr(y, "ndim", 0) == 2


def indicator(y, classes) -> np.ndarray:
    """Label collections (``[["rose", "tulip"], ["daisy"]]``) as a 0/1 matrix
    with one column per class."""
    column = {plain_value(c): j for j, c in enumerate(np.asarray(classes).tolist())}
    out = np.zeros((len(y), len(column)), dtype=np.int64)
    for i, labels in enumerate(y):
        for label in labels:
            if plain_value(label) not in column:
                raise ValueError(
                    f"y holds a label the model was not fitted on: {label!r}; "
                    f"its classes_ are {list(column)}."
                )
            out[i, column[plain_value(label)]] = 1
    return out


def positive_column(proba):
    """scikit-learn's multi-output classifiers give one (n, 2) array per
    label; this package's give one (n, n_labels) array."""
    if isinstance(proba, list):
        return np.column_stack([np.asarray(p)[:, -1] for p in proba])
    return np.asarray(proba)


def label_thresholds(estimator):
    """The probability at which a multi-label estimator predicts each label:
    this package's classifier's ``threshold`` (or tuned ``thresholds_``),
    0.5 for any other estimator."""
    if hasattr(estimator, "_thresholds"):
        return estimator._thresholds()
    return 0.5


def label_names(estimator, row) -> str:
    classes = np.asarray(getattr(estimator, "classes_", np.arange(len(row))))
    if classes.ndim != 1 or len(classes) != len(row):
        classes = np.arange(len(row))
    names = [str(c) for c, on in zip(classes, row) if on]
    return ";".join(names) or "(none)"


def format_number(value) -> str:
    value = np.asarray(value, dtype=float).ravel()
    return ", ".join(f"{v:.3g}" for v in value)


def n_items(X) -> int:
    return X.shape[0] if hasattr(X, "shape") else len(X)


def item_at(X, i):
    if hasattr(X, "iloc"):
        return X.iloc[i]
    item = X[i]
    return str(item) if hasattr(item, "__fspath__") else item


def plain_value(value):
    """numpy scalars as Python ones, so that results print cleanly."""
    return value.item() if isinstance(value, np.generic) else value
