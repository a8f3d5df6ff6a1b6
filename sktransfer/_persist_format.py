"""What a saved model folder may hold: the JSON values of ``model.json``,
and the checks of its entries against the estimator's rules and the saved
tensors, made before anything is built (see :mod:`sktransfer._persist`).
"""

from __future__ import annotations

import base64
import datetime
import os
from pathlib import Path

import numpy as np
import torch

from .exceptions import ModelFormatError

MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"


# --- JSON values -------------------------------------------------------------

_TAGS = {
    "__tuple__",
    "__dict__",
    "__path__",
    "__ndarray__",
    "__cache__",
    "__float__",
    "__bytes__",
    "__date__",
    "__datetime__",
    "__timedelta__",
}


#: Array dtypes a saved folder may hold: bool, numbers, str, bytes, dates.
_ARRAY_KINDS = "biufUSMm"


def _encode(value, what: str):
    """A value as JSON. What JSON lacks is tagged with a ``"__name__"`` key:
    tuples, dicts with keys that are not plain strings, paths, arrays,
    caches, NaN and infinities, bytes, dates and datetimes. Anything else is
    refused, naming ``what``."""
    from ._cache import FeatureCache

    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode("ascii")}
    if type(value) is datetime.date:
        return {"__date__": value.isoformat()}
    if type(value) is datetime.datetime and (
        value.tzinfo is None or type(value.tzinfo) is datetime.timezone
    ):
        return {"__datetime__": value.isoformat()}
    if type(value) is datetime.timedelta:
        return {"__timedelta__": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, what) for v in value]}
    if isinstance(value, list):
        return [_encode(v, what) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, what) for k, v in value.items()}
        return {
            "__dict__": [[_encode(k, what), _encode(v, what)] for k, v in value.items()]
        }
    if isinstance(value, os.PathLike):
        return {"__path__": os.fspath(value)}
    if isinstance(value, FeatureCache):
        spec = {"directory": str(value.directory), "max_bytes": value.max_bytes}
        return {"__cache__": spec}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            items = [_encode(v, what) for v in value.ravel().tolist()]
            return {"__ndarray__": items, "__dtype__": "O"}
        if value.dtype.kind in "Mm":  # as integers: exact, NaT included
            items = value.astype(np.int64).tolist()
            return {"__ndarray__": items, "__dtype__": value.dtype.str}
        if value.dtype.kind in _ARRAY_KINDS:
            items = _encode(value.tolist(), what)
            return {"__ndarray__": items, "__dtype__": value.dtype.str}
    kind = type(value).__name__
    if type(value) is datetime.datetime:
        kind = f"{kind} with the time zone {value.tzinfo!r}"
    raise TypeError(
        f"{what} is a {kind}, which cannot be saved without pickle: use plain "
        "values (str, bytes, number, bool, None, date, timedelta, datetime "
        "naive or with a fixed UTC offset, tuple, list, dict, path; an int for "
        "random_state), or "
        "joblib.dump (a pickle: load only what you trust)."
    )


def _decode(value, path: Path, where: str):
    """The value :func:`_encode` wrote; a :class:`ModelFormatError` naming
    ``path`` and the entry ``where`` for anything it could not have written."""

    def bad(why: str):
        return ModelFormatError(f"{path} has an invalid entry {where}: {why}.")

    if isinstance(value, list):
        return [_decode(v, path, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    tags = [k for k in value if k.startswith("__")]
    if not tags:
        return {k: _decode(v, path, f"{where}[{k!r}]") for k, v in value.items()}
    allowed = _TAGS - {"__cache__"}  # a cache is never read back from a file
    if not set(tags) <= allowed | {"__dtype__"} or len(tags) != len(value):
        raise bad(f"{MODEL_FILE} holds an unknown value {value!r:.80}")
    (tag,) = [t for t in tags if t != "__dtype__"] or ["__dtype__"]
    content = value[tag]
    if tag == "__dtype__" or (tag == "__ndarray__") != ("__dtype__" in value):
        raise bad(f"an array needs both '__ndarray__' and '__dtype__': {value!r:.80}")
    if tag in (
        "__tuple__",
        "__dict__",
        "__ndarray__",
        "__timedelta__",
    ) and not isinstance(content, list):
        raise bad(f"{tag} needs a list, got {content!r:.80}")
    if tag in ("__path__", "__float__", "__bytes__", "__date__", "__datetime__"):
        if not isinstance(content, str):
            raise bad(f"{tag} needs a string, got {content!r:.80}")
    if tag == "__tuple__":
        return tuple(_decode(v, path, f"{where}[{i}]") for i, v in enumerate(content))
    if tag == "__dict__":
        out = {}
        for i, pair in enumerate(content):
            if not isinstance(pair, list) or len(pair) != 2:
                raise bad(f"item {i} of __dict__ is not a [key, value] pair")
            key = _decode(pair[0], path, f"{where}[{i}]")
            try:
                out[key] = _decode(pair[1], path, f"{where}[{key!r}]")
            except TypeError:
                raise bad(f"the key {key!r:.80} cannot be a dict key") from None
        return out
    if tag == "__path__":
        return Path(content)
    try:
        if tag == "__float__":
            if content not in ("nan", "inf", "-inf"):
                raise ValueError(f"invalid number {content!r:.80}")
            return float(content)
        if tag == "__bytes__":
            return base64.b64decode(content.encode("ascii"), validate=True)
        if tag == "__date__":
            return datetime.date.fromisoformat(content)
        if tag == "__datetime__":
            return datetime.datetime.fromisoformat(content)
        if tag == "__timedelta__":
            days, seconds, microseconds = content
            return datetime.timedelta(days, seconds, microseconds)
        return _decode_array(content, value["__dtype__"], path, where)
    except (ValueError, TypeError, OverflowError, UnicodeError) as exc:
        raise bad(str(exc)) from None


def _decode_array(items, dtype_text, path: Path, where: str) -> np.ndarray:
    if dtype_text == "O":
        items = [_decode(v, path, f"{where}[{i}]") for i, v in enumerate(items)]
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out
    if not isinstance(dtype_text, str):
        raise ValueError(f"data type {dtype_text!r:.80} is not a string")
    try:
        dtype = np.dtype(dtype_text)
    except TypeError:
        raise ValueError(f"data type {dtype_text!r:.80} not understood") from None
    if dtype.kind not in _ARRAY_KINDS or dtype.fields or dtype.subdtype:
        raise ValueError(
            f"data type {dtype_text!r:.80} is not one an estimator saves "
            "(bool, numbers, str, bytes, datetime64, timedelta64)"
        )
    if dtype.kind in "Mm":
        return np.asarray(items, dtype=np.int64).astype(dtype)
    items = _decode(items, path, where)
    if dtype.kind in "US" and any(
        not isinstance(v, str if dtype.kind == "U" else bytes)
        for v in np.ravel(np.asarray(items, dtype=object))
    ):
        raise ValueError(f"an array of dtype {dtype_text!r} holds other values")
    return np.asarray(items, dtype=dtype)


#: Fitted attributes that hold torch objects, saved as tensors.
_MODULE_ATTRIBUTES = ("extractor_", "head_", "ensemble_", "preprocessing_")


def _under(tensors: dict, prefix: str) -> dict:
    """The tensors whose names start with ``prefix``, without it."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _decode_preprocessing(values: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


# --- checks of the fitted state, before anything is built ---------------------

#: Private fitted attributes a saved state may set (all others are public
#: names ending in ``_``).
_PRIVATE_ATTRIBUTES = {"_y_ndim": (1, 2)}


_EXTRACTOR_KEYS = {
    "backbone": str,
    "weights_id": str,
    "n_features": int,
    "preprocessing": dict,
    "base_preprocessing": dict,
    "precision": str,
    "built_from": list,
    "model_key": str,
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


def _check_state(raw: dict, estimator, path: Path) -> dict:
    """The fitted state of ``model.json``, decoded and checked entry by entry
    against what :func:`_builtin_state` writes, before anything is built."""
    from ._transforms import Preprocessing

    def bad(where: str, why: str):
        return ModelFormatError(f"{path} has an invalid entry {where}: {why}.")

    def need(value, kind, where: str):
        ok = isinstance(value, kind) and not (
            isinstance(value, bool) and kind in (int, float)
        )
        if kind is float:
            ok = ok or (isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise bad(where, f"a {kind.__name__} is needed, got {value!r:.80}")
        return value

    expected = {"attributes", "extractors", "heads", "ensemble", "has_head"}
    if set(raw) != expected:
        raise bad(
            "'state'",
            f"it has the keys {sorted(str(k)[:40] for k in raw)[:10]}; "
            f"{sorted(expected)} are needed",
        )
    meta = {key: _decode(value, path, f"state[{key!r}]") for key, value in raw.items()}
    need(meta["attributes"], dict, "state['attributes']")
    extractors = need(meta["extractors"], list, "state['extractors']")
    heads = need(meta["heads"], list, "state['heads']")
    need(meta["has_head"], bool, "state['has_head']")
    if not extractors:
        raise bad("state['extractors']", "it is empty")
    for i, m in enumerate(extractors):
        where = f"state['extractors'][{i}]"
        need(m, dict, where)
        if set(m) != set(_EXTRACTOR_KEYS):
            raise bad(where, f"its keys are {sorted(str(k)[:40] for k in m)[:12]}")
        for key, kind in _EXTRACTOR_KEYS.items():
            need(m[key], kind, f"{where}[{key!r}]")
        if not 0 < m["n_features"] <= _MAX_WIDTH:
            raise bad(f"{where}['n_features']", f"{m['n_features']} is out of range")
        if m["precision"] not in ("fp32", "bf16"):
            raise bad(f"{where}['precision']", f"{m['precision']!r:.40}")
        if not all(isinstance(v, str) for v in m["built_from"]):
            raise bad(f"{where}['built_from']", "a list of strings is needed")
        for name, value in m["body_flags"].items():
            if name != "transform_input" or not isinstance(value, bool):
                raise bad(f"{where}['body_flags']", f"{name!r:.40}: {value!r:.40}")
        for key in ("preprocessing", "base_preprocessing"):
            try:
                m[key] = Preprocessing(**_decode_preprocessing(m[key]))
            except (TypeError, ValueError) as exc:
                raise bad(f"{where}[{key!r}]", str(exc)) from None
    for j, spec in enumerate(heads):
        where = f"state['heads'][{j}]"
        need(spec, dict, where)
        if set(spec) != set(_HEAD_KEYS):
            raise bad(where, f"its keys are {sorted(str(k)[:40] for k in spec)[:12]}")
        for key, kind in _HEAD_KEYS.items():
            need(spec[key], kind, f"{where}[{key!r}]")
        widths = [spec["n_features"], spec["n_outputs"], *spec["hidden_sizes"]]
        if not all(
            isinstance(w, int) and not isinstance(w, bool) and 0 < w <= _MAX_WIDTH
            for w in widths
        ):
            raise bad(where, f"layer widths {widths!r:.80} are not all in range")
        if not 0 <= spec["dropout"] < 1:
            raise bad(f"{where}['dropout']", f"{spec['dropout']!r} is not in [0, 1)")
    ensemble = meta["ensemble"]
    if ensemble is not None:
        need(ensemble, list, "state['ensemble']")
        for k, pair in enumerate(ensemble):
            if not (
                isinstance(pair, list)
                and len(pair) == 2
                and all(type(v) is int for v in pair)
                and 0 <= pair[0] < len(extractors)
                and 0 <= pair[1] < len(heads)
            ):
                raise bad(f"state['ensemble'][{k}]", f"{pair!r:.80}")
    for i, j in ensemble or []:
        if heads[j]["n_features"] != extractors[i]["n_features"]:
            raise bad(f"state['heads'][{j}]", "it does not take the features")
    wants_head = not hasattr(estimator, "transform")
    if meta["has_head"] != wants_head or (wants_head and not heads):
        needs = "needs a head" if wants_head else "has no head"
        raise bad("state['has_head']", f"{type(estimator).__name__} {needs}")
    if wants_head and not ensemble:
        raise bad("state['ensemble']", f"{type(estimator).__name__} needs members")
    _check_attributes(meta["attributes"], estimator, meta, bad)
    return meta


def _check_attributes(attributes: dict, estimator, meta: dict, bad) -> None:
    cls = type(estimator)
    for name, value in attributes.items():
        where = f"state['attributes'][{name!r:.40}]"
        if name in _PRIVATE_ATTRIBUTES:
            if value not in _PRIVATE_ATTRIBUTES[name] or isinstance(value, bool):
                raise bad(where, f"{value!r:.80}")
            continue
        if (
            not isinstance(name, str)
            or not name.isidentifier()
            or name.startswith("_")
            or not name.endswith("_")
            or hasattr(cls, name)
            or name in _MODULE_ATTRIBUTES
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
    if hasattr(cls, "predict_proba") and "classes_" not in attributes:
        raise bad("state['attributes']", "classes_ is missing")
    for name in ("n_features_", "n_features_out_"):
        if (
            name in attributes
            and attributes[name] != meta["extractors"][0]["n_features"]
        ):
            raise bad(f"state['attributes'][{name!r}]", "it differs from the body's")


def _check_architectures(meta: dict, tensors: dict, path: Path) -> None:
    """Each body and head the state names, built on the meta device (no
    memory, no weights), against the saved tensors: a backbone or head that
    does not match is refused before anything is built for real."""
    from ._backbones import load_backbone
    from ._head import Head

    used = set()
    for i, m in enumerate(meta["extractors"]):
        prefix = f"extractors.{i}.body."
        try:
            with torch.device("meta"):
                bb = load_backbone(m["backbone"], None)
        except (ValueError, TypeError, ImportError) as exc:
            raise ModelFormatError(
                f"{path} has an invalid entry state['extractors'][{i}]"
                f"['backbone']: {exc}"
            ) from None
        state = _under(tensors, prefix)
        _compare_state(bb.body, state, f"the body ({m['backbone']})", path)
        if int(bb.n_features) != m["n_features"]:
            raise ModelFormatError(
                f"{path} has an invalid entry state['extractors'][{i}]"
                f"['n_features']: {m['backbone']} gives {bb.n_features} features."
            )
        used.update(prefix + k for k in state)
    for j, spec in enumerate(meta["heads"]):
        prefix = f"heads.{j}."
        with torch.device("meta"):
            head = Head(
                spec["n_features"],
                spec["n_outputs"],
                tuple(spec["hidden_sizes"]),
                spec["dropout"],
            )
        state = _under(tensors, prefix)
        _compare_state(head, state, f"head {j}", path)
        used.update(prefix + k for k in state)
    extra = sorted(set(tensors) - used)
    if extra:
        raise ModelFormatError(
            f"{path.parent / WEIGHTS_FILE} holds tensors that no part of the model "
            f"uses: {extra[:5]}."
        )


def state_mismatch(module, state: dict) -> str | None:
    """How the tensors ``state`` do not fit ``module`` (missing, unexpected
    and mis-shaped names), or None when they do."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {list(state[k].shape)} != {list(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or extra or wrong):
        return None
    return (
        f"missing {missing[:5]}, unexpected {extra[:5]}, shape mismatches {wrong[:5]}"
    )


def _compare_state(module, state: dict, what: str, path: Path) -> None:
    problem = state_mismatch(module, state)
    if problem:
        raise ModelFormatError(
            f"the tensors of {path.parent / WEIGHTS_FILE} do not fit {what} that "
            f"{path.name} describes: {problem}."
        )
