"""The model card of a saved folder: ``README.md``, in Hugging Face's
convention (YAML metadata, then Markdown), for people who receive the
folder. It is written from the fitted estimator and the ``model.json``
document by :func:`sktransfer.save`; :func:`sktransfer.load` never reads it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

CARD_FILE = "README.md"
#: The line that marks a card as sktransfer's own: a save replaces such a
#: card, never a README.md it did not write.
MARK = "<!-- sktransfer model card: written by save(), never read by load() -->"
#: At most this many classes are listed one by one.
MAX_CLASSES = 50
#: The card's tags and Hugging Face pipeline, per kind of model (None: a
#: feature extractor).
_TAGS = {
    "single_label": "image-classification",
    "multi_label": "multi-label-image-classification",
    "regression": "image-regression",
    None: "image-feature-extraction",
}
_PIPELINE = {
    "single_label": "image-classification",
    "multi_label": "image-classification",
    None: "image-feature-extraction",
}


def is_own_card(path: Path) -> bool:
    """Whether ``path`` is a card written by :func:`model_card` (or absent)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            head = file.read(4096)
    except FileNotFoundError:
        return True
    return MARK in head


def model_card(estimator, document: dict) -> str:
    """The card's text for a fitted estimator and its ``model.json``
    document (parameters and library versions)."""
    kind = _kind(estimator)
    params = estimator.get_params(deep=False)
    tags = ["sktransfer", "scikit-learn", "transfer-learning"]
    meta = ["---", "library_name: sktransfer", "tags:"]
    tags.append(_TAGS[kind])
    meta += [f"- {tag}" for tag in tags]
    if kind in _PIPELINE:
        meta.append(f"pipeline_tag: {_PIPELINE[kind]}")
    meta.append("---")
    name = type(estimator).__name__
    lines = [
        *meta,
        "",
        MARK,
        "",
        f"# {name} on `{_text(params.get('backbone'))}`",
        "",
        f"A fitted `sktransfer.{name}`, saved by `sktransfer.save`: "
        "`model.json` (parameters, fitted state, library versions) and "
        "`weights.safetensors` (tensors only). Nothing in this folder is "
        "executed when it is loaded.",
        "",
        *_task_section(estimator, kind),
        *_model_section(estimator, params),
        *_training_section(estimator, params),
        *_validation_section(estimator),
        *_versions_section(document.get("versions", {})),
        "## How to use it",
        "",
        "```python",
        "from sktransfer import load",
        "",
        'model = load("path/to/this/folder")  # checks every file\'s sha256',
        'model.predict(["photo.jpg"])',
        "```",
        "",
    ]
    return "\n".join(lines)


def _kind(estimator) -> str | None:
    if not hasattr(estimator, "classes_"):
        return "regression" if hasattr(estimator, "history_") else None
    return "multi_label" if getattr(estimator, "multilabel_", False) else "single_label"


def _text(value, limit=200) -> str:
    """``value`` as one line of Markdown-safe text."""
    text = " ".join(str(value).split())
    text = text.replace("`", "'").replace("|", "/").replace("<", "&lt;")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _task_section(estimator, kind) -> list:
    if kind is None:
        n = getattr(estimator, "n_features_out_", "?")
        return ["## Task", "", f"A feature extractor: {n} features per image.", ""]
    if kind == "regression":
        n_out = _n_outputs(estimator.model_)
        what = "one target" if estimator.model_.squeeze else f"{n_out} target(s)"
        return ["## Task", "", f"Regression of {what} from an image.", ""]
    classes = list(estimator.classes_)
    counts = getattr(estimator, "class_count_", None)
    what = (
        f"Multi-label classification: any of {len(classes)} labels per image."
        if kind == "multi_label"
        else f"Classification of an image into one of {len(classes)} classes."
    )
    lines = ["## Task", "", what, "", "| class | training images |", "|---|---|"]
    for i, label in enumerate(classes[:MAX_CLASSES]):
        count = "" if counts is None else int(counts[i])
        lines.append(f"| {_text(label, 80)} | {count} |")
    if len(classes) > MAX_CLASSES:
        lines.append(f"| ... {len(classes) - MAX_CLASSES} more | |")
    return [*lines, ""]


def _model_section(estimator, params) -> list:
    extractor = estimator.extractor_
    pre = extractor.preprocessing
    weights = params.get("weights")
    if weights is not None and str(weights) not in ("DEFAULT",):
        weights = Path(str(weights)).name or str(weights)
    origin = (
        "randomly initialised (`weights=None`)"
        if weights is None
        else f"pretrained weights `{_text(weights)}`"
    )
    lines = [
        "## Model",
        "",
        f"- Body: `{_text(params.get('backbone'))}`, {origin}, "
        f"{extractor.n_features} features per image.",
        f"- Input: resized to {pre.resize_size} px and centre-cropped to "
        f"{pre.crop_size} px, normalised with mean "
        f"{_numbers(pre.mean)} and std {_numbers(pre.std)}.",
    ]
    model = getattr(estimator, "model_", None)
    if model is not None:
        hidden = tuple(params.get("hidden_sizes") or ())
        head = f"hidden layers {hidden}" if hidden else "linear"
        lines.append(f"- Head: {head}, {_n_outputs(model)} outputs.")
        tuned = [
            r["stage"]
            for r in getattr(estimator, "history_", [])
            if r.get("stage") == "unfrozen" and not r.get("discarded", False)
        ]
        body = "fine-tuned (unfrozen stage)" if tuned else "frozen"
        lines.append(f"- Body weights: {body}.")
        if len(model.heads) > 1:
            lines.append(f"- Snapshot ensemble of {len(model.heads)} members.")
    return [*lines, ""]


def _training_section(estimator, params) -> list:
    lines = ["## Training", ""]
    n = getattr(estimator, "n_samples_fit_", None)
    if n is not None:
        lines += [f"Trained on {n} images (the last `fit`).", ""]
    history = getattr(estimator, "history_", None)
    if history:
        last = max(r.get("fit", 1) for r in history)
        rows = [r for r in history if r.get("fit", 1) == last]
        stages = list(dict.fromkeys(r["stage"] for r in rows))
        lines += ["| stage | epochs | seconds | kept |", "|---|---|---|---|"]
        for stage in stages:
            own = [r for r in rows if r["stage"] == stage]
            seconds = sum(r.get("seconds", 0.0) for r in own)
            kept = "no" if all(r.get("discarded", False) for r in own) else "yes"
            lines.append(f"| {_text(stage)} | {len(own)} | {seconds:.1f} | {kept} |")
        lines.append("")
    defaults = type(estimator)().get_params(deep=False)
    changed = {k: v for k, v in params.items() if not _same(v, defaults.get(k))}
    changed.pop("cache", None)  # the saver's folder: not a property of the model
    if changed:
        lines += ["Parameters other than the defaults:", "", "| parameter | value |"]
        lines.append("|---|---|")
        for key, value in sorted(changed.items()):
            shown = Path(str(value)).name if key == "weights" and value else value
            lines.append(f"| `{key}` | `{_text(repr(shown), 120)}` |")
        lines.append("")
    return lines


def _validation_section(estimator) -> list:
    history = getattr(estimator, "history_", None) or []
    kept = [
        r
        for r in history
        if not r.get("discarded", False)
        and math.isfinite(r.get("valid_loss", math.nan))
    ]
    if not kept:
        return []
    row = kept[-1]
    scores = [
        f"{key} {row[key]:.4f}"
        for key in ("valid_loss", "valid_acc", "valid_f1", "valid_r2")
        if key in row and math.isfinite(row[key])
    ]
    lines = [
        "## Validation",
        "",
        f"On the images held out for validation, after the {_text(row['stage'])} "
        f"stage (epoch {row['epoch']}): " + ", ".join(scores) + ".",
        "",
    ]
    if history[-1].get("stage") == "refit":
        lines[-1:] = [
            "Early stopping then undid every later stage, and the probe was "
            "fitted again with these images: the model this card describes "
            "has seen them.",
            "",
        ]
    return lines


def _versions_section(versions: dict) -> list:
    lines = ["## Library versions", "", "| library | version |", "|---|---|"]
    lines += [f"| {_text(k)} | {_text(v)} |" for k, v in versions.items()]
    return [*lines, ""]


def _n_outputs(model) -> int:
    return int(model.heads[-1].layers[-1].out_features)


def _numbers(values) -> str:
    return "(" + ", ".join(f"{float(v):.3f}" for v in np.ravel(values)) + ")"


def _same(a, b) -> bool:
    try:
        return bool(a == b) if type(a) is type(b) else False
    except (TypeError, ValueError):
        return False
