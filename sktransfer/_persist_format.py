"""What a saved model folder is: its files, its format version, and the
JSON values of ``model.json`` (see :mod:`sktransfer._persist`; the checks
of the fitted state are in :mod:`sktransfer._persist_state`).
"""

from __future__ import annotations

import base64
import datetime
import os
from pathlib import Path

import numpy as np

from .callbacks import LRSweep
from .exceptions import ModelFormatError

MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
#: The next ``model.json`` while a save is switching models: complete, and
#: recording the sha256 of the weights it belongs to (see
#: :func:`sktransfer.save`).
PENDING_FILE = ".model.json.next"
FORMAT_NAME = "sktransfer-model"
#: Bumped when a saved folder changes in a way other versions cannot read.
#: 2: the weights are the state dict of the estimator's ``model_``.
FORMAT_VERSION = 2
#: What a folder's ``model.json`` holds, at its top level.
DOCUMENT_KEYS = {
    "format",
    "format_version",
    "estimator",
    "params",
    "state_protocol",
    "state",
    "tensors",
    "files",
    "versions",
}
#: ``state_protocol`` of the states this version writes and reads.
STATE_PROTOCOL = "sktransfer.model-v2"


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
    "__lr_sweep__",
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
    if type(value) is LRSweep:  # the value of lr or unfrozen_lr
        return {"__lr_sweep__": _encode(value.get_params(), what)}
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
    if tag == "__lr_sweep__":
        return _decode_sweep(content, bad)
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


def _decode_sweep(content, bad) -> LRSweep:
    names = set(LRSweep().get_params())
    if not isinstance(content, dict) or not set(content) <= names:
        raise bad(
            f"__lr_sweep__ needs a dict of LRSweep parameters, got {content!r:.80}"
        )
    sweep = LRSweep(**content)
    try:
        sweep._check()
    except (ValueError, TypeError) as exc:
        raise bad(str(exc)) from None
    return sweep


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


def _under(tensors: dict, prefix: str) -> dict:
    """The tensors whose names start with ``prefix``, without it: the state
    of one named part of a model, for messages that name the part."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _decode_preprocessing(values: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


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
