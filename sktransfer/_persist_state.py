"""The fitted state of a saved estimator: what :func:`~sktransfer.save`
writes of it, the checks :func:`~sktransfer.load` makes before building
anything, and the estimator rebuilt from it.

The tensors are the state dict of the estimator's ``model_`` (a
:class:`~._model.FittedModel`; for :class:`~sktransfer.PretrainedFeatures`,
the model of its body). ``model.json`` records what rebuilds that model
with random weights before the tensors are loaded into it:

* ``extractor``: the backbone's name, its feature width, preprocessing,
  precision and flags, shared by every body;
* ``bodies``: the identity of each body's weights (its feature cache key);
* ``heads``: each member's head (widths and dropout); ``members``: the body
  each head reads;
* ``output`` (``"softmax"``, ``"sigmoid"``, ``"affine"``, ``"identity"``)
  and ``squeeze``;
* ``attributes``: the other fitted attributes (``classes_``, ``history_``...).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._devices import PRECISIONS, resolve_precision
from ._model import (
    OUTPUT_KINDS,
    FittedModel,
    body_extractor,
    features_model,
    output_kind,
)
from ._model import output_of_kind as _output_of_kind
from ._persist_format import (
    WEIGHTS_FILE,
    _decode,
    _decode_preprocessing,
    _encode,
    _under,
    state_mismatch,
)
from .exceptions import ModelFormatError

#: Fitted attributes that are the model or hold parts of it (saved as tensors).
MODEL_ATTRIBUTES = ("model_", "extractor_", "preprocessing_")

_STATE_KEYS = {"attributes", "extractor", "bodies", "heads", "members", "output"}
_STATE_KEYS |= {"squeeze"}

_EXTRACTOR_KEYS = {
    "backbone": str,
    "n_features": int,
    "preprocessing": dict,
    "base_preprocessing": dict,
    "precision": str,
    "built_from": list,
    "body_flags": dict,
}

_HEAD_KEYS = {
    "n_features": int,
    "n_outputs": int,
    "hidden_sizes": list,
    "dropout": float,
}

#: No layer of a saved model is wider than this.
_MAX_WIDTH = 1 << 24


# --- writing ------------------------------------------------------------------


def fitted_state(estimator) -> tuple[dict, dict]:
    """``(meta, tensors)`` of a fitted estimator: its model's state dict and
    what rebuilds the model, and its other fitted attributes."""
    params = set(estimator.get_params(deep=False))
    attributes = {
        k: v
        for k, v in vars(estimator).items()
        if k not in params and k not in MODEL_ATTRIBUTES
    }
    for k, v in attributes.items():
        _encode(v, f"fitted attribute {k!r}")  # a clear error, naming it
    extractor = estimator.extractor_
    model = getattr(estimator, "model_", None) or features_model(extractor)
    meta = {
        "attributes": attributes,
        "extractor": _extractor_meta(extractor),
        "bodies": list(model.body_ids),
        "heads": [_head_spec(head) for head in model.heads],
        "members": list(model.member_body),
        "output": output_kind(model.output),
        "squeeze": model.squeeze,
    }
    return meta, dict(model.state_dict())


def _extractor_meta(extractor) -> dict:
    bb = extractor.backbone
    flags = {}
    if hasattr(bb.body, "transform_input"):  # GoogLeNet/Inception input remap
        flags["transform_input"] = bool(bb.body.transform_input)
    return {
        "backbone": bb.name,
        "n_features": int(bb.n_features),
        "preprocessing": extractor.preprocessing.as_dict(),
        "base_preprocessing": (bb.base_preprocessing or bb.preprocessing).as_dict(),
        "precision": extractor.precision,
        "built_from": list(extractor.built_from or ()),
        "body_flags": flags,
    }


def _head_spec(head) -> dict:
    from ._head import Head

    if type(head) is not Head:
        raise TypeError(
            f"the head is a {type(head).__name__}, not sktransfer's Head: it "
            "cannot be saved without pickle."
        )
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    dropouts = [m for m in head.modules() if isinstance(m, nn.Dropout)]
    return {
        "n_features": int(linears[0].in_features),
        "n_outputs": int(linears[-1].out_features),
        "hidden_sizes": [int(m.out_features) for m in linears[:-1]],
        "dropout": float(dropouts[-1].p) if dropouts else 0.0,
    }


# --- checking, before anything is built ------------------------------------------


class _Checker:
    """Checks of the decoded state of ``path``, each error naming its entry."""

    def __init__(self, path: Path):
        self.path = path

    def bad(self, where: str, why: str) -> ModelFormatError:
        return ModelFormatError(f"{self.path} has an invalid entry {where}: {why}.")

    def need(self, value, kind, where: str):
        ok = isinstance(value, kind) and not (
            isinstance(value, bool) and kind in (int, float)
        )
        if kind is float:
            ok = ok or (isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise self.bad(where, f"a {kind.__name__} is needed, got {value!r:.80}")
        return value

    def index_list(self, values, size: int, where: str) -> list:
        self.need(values, list, where)
        for k, v in enumerate(values):
            if type(v) is not int or not 0 <= v < size:
                raise self.bad(f"{where}[{k}]", f"{v!r:.80} is not an index")
        return values


def check_state(raw: dict, estimator, path: Path) -> dict:
    """The fitted state of ``model.json``, decoded and checked entry by entry
    against what :func:`fitted_state` writes, before anything is built."""
    check = _Checker(path)
    if set(raw) != _STATE_KEYS:
        raise check.bad(
            "'state'",
            f"it has the keys {sorted(str(k)[:40] for k in raw)[:10]}; "
            f"{sorted(_STATE_KEYS)} are needed",
        )
    meta = {key: _decode(value, path, f"state[{key!r}]") for key, value in raw.items()}
    check.need(meta["attributes"], dict, "state['attributes']")
    check.need(meta["squeeze"], bool, "state['squeeze']")
    _check_extractor(meta["extractor"], check)
    bodies = check.need(meta["bodies"], list, "state['bodies']")
    if not bodies or not all(isinstance(b, str) for b in bodies):
        raise check.bad("state['bodies']", "a list of strings is needed")
    heads = check.need(meta["heads"], list, "state['heads']")
    for j, spec in enumerate(heads):
        _check_head(spec, f"state['heads'][{j}]", check)
        if spec["n_features"] != meta["extractor"]["n_features"]:
            raise check.bad(f"state['heads'][{j}]", "it does not take the features")
    members = check.index_list(meta["members"], len(bodies), "state['members']")
    used = set(members) if heads else {0}
    if len(members) != len(heads) or used != set(range(len(bodies))):
        raise check.bad("state['members']", "it must name one body for each head")
    _check_output(meta, estimator, check)
    _check_attributes(meta["attributes"], estimator, meta, check)
    return meta


def _check_extractor(m, check: _Checker) -> None:
    where = "state['extractor']"
    check.need(m, dict, where)
    if set(m) != set(_EXTRACTOR_KEYS):
        raise check.bad(where, f"its keys are {sorted(str(k)[:40] for k in m)[:12]}")
    for key, kind in _EXTRACTOR_KEYS.items():
        check.need(m[key], kind, f"{where}[{key!r}]")
    if not 0 < m["n_features"] <= _MAX_WIDTH:
        raise check.bad(f"{where}['n_features']", f"{m['n_features']} is out of range")
    if m["precision"] not in PRECISIONS:
        raise check.bad(f"{where}['precision']", f"{m['precision']!r:.40}")
    if not all(isinstance(v, str) for v in m["built_from"]):
        raise check.bad(f"{where}['built_from']", "a list of strings is needed")
    for name, value in m["body_flags"].items():
        if name != "transform_input" or not isinstance(value, bool):
            raise check.bad(f"{where}['body_flags']", f"{name!r:.40}: {value!r:.40}")
    from ._transforms import Preprocessing

    for key in ("preprocessing", "base_preprocessing"):
        try:
            m[key] = Preprocessing(**_decode_preprocessing(m[key]))
        except (TypeError, ValueError) as exc:
            raise check.bad(f"{where}[{key!r}]", str(exc)) from None


def _check_head(spec, where: str, check: _Checker) -> None:
    check.need(spec, dict, where)
    if set(spec) != set(_HEAD_KEYS):
        raise check.bad(where, f"its keys are {sorted(str(k)[:40] for k in spec)[:12]}")
    for key, kind in _HEAD_KEYS.items():
        check.need(spec[key], kind, f"{where}[{key!r}]")
    widths = [spec["n_features"], spec["n_outputs"], *spec["hidden_sizes"]]
    if not all(
        isinstance(w, int) and not isinstance(w, bool) and 0 < w <= _MAX_WIDTH
        for w in widths
    ):
        raise check.bad(where, f"layer widths {widths!r:.80} are not all in range")
    if not 0 <= spec["dropout"] < 1:
        raise check.bad(f"{where}['dropout']", f"{spec['dropout']!r} is not in [0, 1)")


def _check_output(meta: dict, estimator, check: _Checker) -> None:
    heads, name = meta["heads"], type(estimator).__name__
    wants_head = not hasattr(estimator, "transform")
    if wants_head != bool(heads):
        needs = "needs a head" if wants_head else "has no head"
        raise check.bad("state['heads']", f"{name} {needs}")
    if len({spec["n_outputs"] for spec in heads}) > 1:
        raise check.bad("state['heads']", "the heads give different outputs")
    kind = meta["output"]
    if kind not in OUTPUT_KINDS or (kind == "identity") == wants_head:
        raise check.bad("state['output']", f"{kind!r:.40} is not an output of {name}")
    if meta["squeeze"] and not (heads and heads[0]["n_outputs"] == 1):
        raise check.bad("state['squeeze']", "only a model of one output squeezes")


def _check_attributes(attributes: dict, estimator, meta: dict, check) -> None:
    bad, cls = check.bad, type(estimator)
    for name in attributes:
        where = f"state['attributes'][{name!r:.40}]"
        if (
            not isinstance(name, str)
            or not name.isidentifier()
            or name.startswith("_")
            or not name.endswith("_")
            or hasattr(cls, name)
            or name in MODEL_ATTRIBUTES
        ):
            raise bad(where, "it is not the name of a fitted attribute")
    n_outputs = meta["heads"][0]["n_outputs"] if meta["heads"] else None
    if "classes_" in attributes:
        classes = attributes["classes_"]
        if not isinstance(classes, np.ndarray) or classes.ndim != 1:
            raise bad("state['attributes']['classes_']", "a 1-d array is needed")
        if len(classes) != n_outputs and not (len(classes) == 2 and n_outputs == 1):
            raise bad(
                "state['attributes']['classes_']",
                f"{len(classes)} classes for a head of {n_outputs} outputs",
            )
        try:
            if len(set(classes.tolist())) != len(classes):
                raise bad("state['attributes']['classes_']", "classes repeat")
        except TypeError:
            raise bad("state['attributes']['classes_']", "unhashable classes") from None
    if "multilabel_" in attributes and not isinstance(attributes["multilabel_"], bool):
        raise bad("state['attributes']['multilabel_']", "a bool is needed")
    if "thresholds_" in attributes:
        _check_thresholds(attributes, bad)
    if hasattr(cls, "predict_proba") and "classes_" not in attributes:
        raise bad("state['attributes']", "classes_ is missing")
    for name in ("n_features_", "n_features_out_"):
        if name in attributes and attributes[name] != meta["extractor"]["n_features"]:
            raise bad(f"state['attributes'][{name!r}]", "it differs from the body's")


def _check_thresholds(attributes: dict, bad) -> None:
    """Tuned thresholds: one probability per class, for a multi-label model
    (``predict`` compares each label's probability with its own)."""
    where = "state['attributes']['thresholds_']"
    value, classes = attributes["thresholds_"], attributes.get("classes_")
    if not attributes.get("multilabel_"):
        raise bad(where, "only a multi-label model has tuned thresholds")
    if (
        not isinstance(value, np.ndarray)
        or value.ndim != 1
        or value.dtype.kind != "f"
        or classes is None
        or len(value) != len(classes)
    ):
        raise bad(where, "a 1-d float array with one threshold per class is needed")
    if not np.all((value >= 0) & (value <= 1)):
        raise bad(where, "thresholds are probabilities, from 0 to 1")


def check_architectures(meta: dict, tensors: dict, path: Path) -> None:
    """The model the state describes, built on the meta device (no memory,
    no weights), against the saved tensors, part by part: a backbone or
    head that does not match is refused before anything is built for real."""
    with torch.device("meta"):
        model, backbone = _model_of(meta, path)
    parts = [
        (f"bodies.{i}.", body, f"the body ({backbone.name})")
        for i, body in enumerate(model.bodies)
    ]
    parts += [(f"heads.{j}.", head, f"head {j}") for j, head in enumerate(model.heads)]
    parts.append(("output.", model.output, "the output step"))
    used = set()
    for prefix, part, what in parts:
        state = _under(tensors, prefix)
        problem = state_mismatch(part, state)
        if problem:
            raise ModelFormatError(
                f"the tensors of {path.parent / WEIGHTS_FILE} do not fit {what} "
                f"that {path.name} describes: {problem}."
            )
        used.update(prefix + k for k in state)
    if int(backbone.n_features) != meta["extractor"]["n_features"]:
        raise ModelFormatError(
            f"{path} has an invalid entry state['extractor']['n_features']: "
            f"{backbone.name} gives {backbone.n_features} features."
        )
    extra = sorted(set(tensors) - used)
    if extra:
        raise ModelFormatError(
            f"{path.parent / WEIGHTS_FILE} holds tensors that no part of the model "
            f"uses: {extra[:5]}."
        )


# --- building -----------------------------------------------------------------


def restore_state(estimator, meta: dict, tensors: dict, path: Path) -> None:
    """Set the fitted attributes of ``estimator`` from a checked state: the
    model rebuilt with random weights (no file, no network), the saved
    tensors loaded into it, and its extractor on the device and with the
    cache that ``estimator``'s parameters name."""
    from ._cache import resolve_cache
    from ._devices import resolve_device
    from ._extractor import FeatureExtractor

    # building draws initial weights: leave the caller's RNG be
    with torch.random.fork_rng(devices=[]):
        model, backbone = _model_of(meta, path)
    problem = state_mismatch(model, tensors)
    if problem:
        raise ModelFormatError(f"the saved tensors do not fit the model: {problem}.")
    model.load_state_dict(tensors, strict=True)
    m = meta["extractor"]
    backbone = dataclasses.replace(
        backbone,
        body=model.bodies[-1],
        weights_id=model.body_ids[-1],
        preprocessing=m["preprocessing"],
        base_preprocessing=m["base_preprocessing"],
    )
    device = resolve_device(estimator.device)
    precision = m["precision"]
    if estimator.precision == "auto":
        # what is fast where the model is loaded (a model fitted on a T4 GPU
        # in fp16 predicts in fp32 or bf16 on a laptop's CPU)
        precision = resolve_precision("auto", device)
    extractor = FeatureExtractor(
        backbone,
        m["preprocessing"],
        precision,
        device,
        resolve_cache(estimator.cache),
    )
    extractor.built_from = tuple(m["built_from"]) or None
    for body, body_id in zip(model.bodies, model.body_ids):
        # every body on the device and in the memory layout of its extractor
        # (as in the fitted model), not only the last one's
        body_extractor(extractor, body, body_id)
    model.to(extractor.device).eval()
    for name, value in meta["attributes"].items():
        setattr(estimator, name, value)
    estimator.extractor_ = extractor
    if meta["heads"]:
        estimator.model_ = model
    else:  # PretrainedFeatures
        estimator.preprocessing_ = extractor.preprocessing


def _model_of(meta: dict, path: Path):
    """The model ``meta`` describes, with random weights, on the current
    default device (the meta device for checks), and the backbone of its
    last body."""
    from ._backbones import load_backbone
    from ._head import Head

    m = meta["extractor"]
    bodies = []
    for _ in meta["bodies"]:
        try:
            backbone = load_backbone(m["backbone"], None)
        except (ValueError, TypeError, ImportError) as exc:
            where = "state['extractor']['backbone']"
            raise ModelFormatError(
                f"{path} has an invalid entry {where}: {exc}"
            ) from None
        for name, value in m["body_flags"].items():
            setattr(backbone.body, name, value)
        bodies.append(backbone.body)
    heads = [
        Head(s["n_features"], s["n_outputs"], tuple(s["hidden_sizes"]), s["dropout"])
        for s in meta["heads"]
    ]
    n_outputs = meta["heads"][0]["n_outputs"] if meta["heads"] else 0
    pre = m["preprocessing"]
    model = FittedModel(
        pre.mean,
        pre.std,
        bodies,
        heads,
        meta["members"],
        _output_of_kind(meta["output"], n_outputs),
        squeeze=meta["squeeze"],
        body_ids=meta["bodies"],
    )
    return model, backbone
