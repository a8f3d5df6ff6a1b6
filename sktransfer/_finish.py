"""The end of a fit: the fitted model built from the engine's result, and
every fitted attribute set at once (so that an error before this point
leaves the estimator as it was)."""

from __future__ import annotations

import sys
from numbers import Real

import numpy as np

from ._model import FittedModel, tuned_extractor


def set_fitted_attributes(estimator, prepared, result, seconds) -> None:
    """Set ``estimator``'s fitted attributes from a fit's checked inputs
    (``prepared``) and the engine's ``result``; ``verbose`` prints a
    one-line summary."""
    model, extractors = _fitted_model(prepared, result)
    fit_no = 1 + max((row["fit"] for row in prepared.history), default=0)
    rows = [{"fit": fit_no, **row} for row in result.history]
    for key, value in prepared.info.items():
        if not key.startswith("_"):  # private ones are for the task only
            setattr(estimator, key, value)
    sweeps = result.sweeps
    estimator.lr_ = sweeps["lr"]["rate"] if "lr" in sweeps else _rate(estimator.lr)
    estimator.unfrozen_lr_ = (
        sweeps["unfrozen_lr"]["rate"]
        if "unfrozen_lr" in sweeps
        else _rate(estimator.unfrozen_lr)
    )
    estimator.lr_sweeps_ = sweeps
    estimator.skipped_ = prepared.skipped
    _set_counts(estimator, prepared, result.refit)
    estimator.n_features_ = extractors[-1].n_features
    estimator.model_ = model
    estimator.extractor_ = extractors[-1]
    estimator.history_ = prepared.history + rows
    if estimator.verbose:
        _summary(estimator, prepared, rows, seconds)


def _rate(value):
    """The rate as set, or None where a sweep would find it (no stage that
    uses it ran)."""
    return value if isinstance(value, (Real, tuple, list)) else None


def _fitted_model(prepared, result) -> tuple[FittedModel, list]:
    """The fitted model from the engine's members, and one extractor per
    body of it (each running that body, for the feature cache)."""
    extractor = prepared.data.extractor
    bodies, extractors, member_body = [], [], []
    for body, _ in result.members:
        if not any(body is b for b in bodies):
            bodies.append(body)
            tuned = result.tuned
            extractors.append(tuned_extractor(extractor, body) if tuned else extractor)
        member_body.append(next(i for i, b in enumerate(bodies) if b is body))
    pre = extractor.preprocessing
    model = FittedModel(
        pre.mean,
        pre.std,
        bodies,
        [head for _, head in result.members],
        member_body,
        prepared.task.output_module().to(extractor.device),
        squeeze=prepared.task.squeeze,
        body_ids=[e.backbone.weights_id for e in extractors],
    )
    return model.to(extractor.device).eval(), extractors


def _set_counts(estimator, prepared, refit) -> None:
    """``n_samples_fit_``: the images the fitted model trained on (readable,
    weight > 0, not held out, unless the probe was ``refit`` on them);
    ``class_count_`` (classifiers): how many of them have each class (each
    label, multi-label), in ``classes_`` order."""
    data = prepared.data
    rows = np.concatenate([data.train, data.valid]) if refit else data.train
    estimator.n_samples_fit_ = int(len(rows))
    kind = prepared.task.kind
    targets = data.targets[rows].numpy()
    if kind == "single_label":
        n = len(prepared.info["classes_"])
        estimator.class_count_ = np.bincount(targets, minlength=n).astype(np.int64)
    elif kind == "multi_label":
        estimator.class_count_ = (targets > 0.5).sum(axis=0).astype(np.int64)


def _summary(estimator, prepared, rows, seconds) -> None:
    stages = []
    for stage in prepared.plan:
        own = [r for r in rows if r["stage"] == stage.name]
        took = f"{sum(r['seconds'] for r in own):.1f}s"
        if stage.name == "probe":  # closed form: no epochs
            stages.append(f"probe (penalty {own[0]['penalty']:.3g}) {took}")
        else:
            undone = " (undone)" if own and all(r["discarded"] for r in own) else ""
            stages.append(f"{stage.name} {len(own)} epochs {took}{undone}")
    for r in rows:
        if r["stage"] == "refit":
            stages.append(
                f"the probe fitted again with the validation images "
                f"(penalty {r['penalty']:.3g}) {r['seconds']:.1f}s"
            )
    data = prepared.data
    n = len(data.sources)
    counts = prepared.image_counts
    images = f"{n} images"
    if data.valid is not None:
        images += f", {len(data.valid)} of them for validation"
    if counts is not None:
        images += f" ({counts[0]} computed, {counts[1]} cached)"
    print(
        f"{type(estimator).__name__}: {images}, "
        + ", ".join(stages)
        + f"; fit took {seconds:.1f}s",
        file=sys.stderr,
    )
