"""Saving a fitted estimator without pickle: safetensors and JSON.

``save(estimator, folder)`` writes two files:

* ``weights.safetensors``: every tensor (the body, the head, an ensemble's
  members), in a format that holds numbers only;
* ``model.json``: everything else (class name, parameters, fitted
  attributes, preprocessing, library versions), the format version, and the
  sha256, name, shape and dtype of every tensor and file.

``load(folder)`` reads JSON and safetensors only: no pickle, no
``torch.load``, no import named by the files. The class comes from a fixed
list of sktransfer estimators; a file of a newer format version, a file
whose sha256 differs from the one recorded, or a tensor whose name, shape or
dtype is not what the model needs, is a clear error before anything is
built. The body is rebuilt from its architecture and the saved tensors, so
loading needs neither the original weights file nor network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import NotFittedError

#: Bumped when a saved folder changes in a way older code cannot read.
FORMAT_VERSION = 1
FORMAT_NAME = "sktransfer-model"
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
#: ``state_protocol`` of states written here (not by an estimator's own
#: ``_fitted_state``).
_BUILTIN = "sktransfer.persist-v1"


class ModelFormatError(ValueError):
    """A saved model folder cannot be loaded: newer format, tampered or
    incomplete files. The message names the file and what is wrong.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from sktransfer import ModelFormatError, PretrainedFeatures, load, save
    >>> features = PretrainedFeatures(
    ...     "resnet18", weights=None, image_size=32, cache=None
    ... ).fit()
    >>> folder = save(features, Path(tempfile.mkdtemp()) / "features")
    >>> with open(folder / "weights.safetensors", "r+b") as f:
    ...     _ = f.seek(-4, 2)
    ...     _ = f.write(b"oops")  # the file no longer matches its sha256
    >>> try:
    ...     load(folder)
    ... except ModelFormatError as error:
    ...     print("sha256" in str(error))
    True
    """


# --- public API --------------------------------------------------------------


def save(estimator, folder, *, overwrite=False) -> Path:
    """Save a fitted estimator to ``folder`` without pickle.

    Parameters
    ----------
    estimator : fitted PretrainedImageClassifier, PretrainedImageRegressor
        or PretrainedFeatures
    folder : str or path-like
        Created if missing. It receives ``model.json`` and
        ``weights.safetensors``.
    overwrite : bool, default=False
        Replace a model already saved in ``folder``.

    Returns
    -------
    folder : pathlib.Path

    Notes
    -----
    Unlike ``joblib.dump`` (a pickle: loading one runs whatever code it
    holds, so only load pickles you trust), the saved folder holds numbers
    and JSON only, and :func:`load` checks every file against its recorded
    sha256. The folder is self-contained: the body's weights are in it, so
    the weights file or registry download used by ``fit`` is not needed to
    load it. The feature cache is not saved.

    Every parameter must be a plain value (str, number, bool, None, tuple,
    list, dict, path): a ``random_state`` given as a ``RandomState`` object
    is an error (use an int).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from sktransfer import PretrainedImageClassifier, load, save
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 255, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> y = ["ant"] * 4 + ["bee"] * 4
    >>> clf = PretrainedImageClassifier(
    ...     "resnet18", weights=None, image_size=32, cache=None, random_state=0
    ... ).fit(X, y)
    >>> folder = save(clf, Path(tempfile.mkdtemp()) / "ants-bees-model")
    >>> sorted(path.name for path in folder.iterdir())
    ['model.json', 'weights.safetensors']
    >>> bool(np.array_equal(load(folder).predict_proba(X), clf.predict_proba(X)))
    True
    """
    from safetensors.torch import save_file

    from . import __version__

    cls = _registered_class(type(estimator).__name__, type(estimator))
    params = {
        name: _encode(value, f"parameter {name!r}")
        for name, value in estimator.get_params(deep=False).items()
    }
    if hasattr(estimator, "_fitted_state"):
        _check_fitted(estimator)
        meta, tensors = estimator._fitted_state()
        protocol = "estimator"
    else:
        meta, tensors = _builtin_state(estimator)
        protocol = _BUILTIN
    tensors = {name: _plain_tensor(t, name) for name, t in tensors.items()}
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / MODEL_FILE).exists() and not overwrite:
        raise FileExistsError(
            f"{str(folder)!r} already holds a saved model; pass overwrite=True "
            "to replace it, or choose another folder."
        )
    with _temporary_file(folder, WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT_NAME})
        digest = _sha256(tmp)
        os.replace(tmp, folder / WEIGHTS_FILE)
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "estimator": cls.__name__,
        "params": params,
        "state_protocol": protocol,
        "state": _encode(meta, "the fitted state"),
        "tensors": {name: _describe(t) for name, t in sorted(tensors.items())},
        "files": {WEIGHTS_FILE: digest},
        "versions": _versions(__version__),
    }
    # model.json last: a folder with an older model.json and new weights
    # fails the sha256 check instead of loading a mix of two models
    with _temporary_file(folder, MODEL_FILE) as tmp:
        tmp.write_text(json.dumps(document, indent=1, allow_nan=True) + "\n")
        os.replace(tmp, folder / MODEL_FILE)
    return folder


def load(folder):
    """Load an estimator saved by :func:`save`.

    No code from the folder runs: ``model.json`` is parsed as JSON and
    ``weights.safetensors`` holds only tensors. The estimator's class must
    be one of sktransfer's estimators.

    Parameters
    ----------
    folder : str or path-like

    Returns
    -------
    estimator : fitted estimator
        Gives the same ``predict_proba`` / ``predict`` / ``transform`` as the
        one saved (on the same kind of device), without network and without
        the weights file ``fit`` read.

    Raises
    ------
    ModelFormatError
        The folder was written by a newer sktransfer (format version), or a
        file's sha256, a tensor's name, shape or dtype differs from what
        ``model.json`` records or the model needs, or a file is missing.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from sktransfer import PretrainedImageClassifier, load, save
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 255, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> y = ["ant"] * 4 + ["bee"] * 4
    >>> clf = PretrainedImageClassifier(
    ...     "resnet18", weights=None, image_size=32, cache=None, random_state=0
    ... ).fit(X, y)
    >>> folder = save(clf, Path(tempfile.mkdtemp()) / "ants-bees-model")
    >>> loaded = load(folder)
    >>> type(loaded).__name__, loaded.classes_.tolist()
    ('PretrainedImageClassifier', ['ant', 'bee'])
    >>> bool((loaded.predict(X) == clf.predict(X)).all())
    True
    """
    folder = Path(folder).expanduser()
    document = _read_document(folder)
    cls = _registered_class(document["estimator"])
    params = _decode(document.get("params", {}))
    valid = set(cls().get_params(deep=False))
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ModelFormatError(
            f"{folder / MODEL_FILE} has parameter(s) {unknown} that "
            f"{cls.__name__} of this sktransfer version does not take (saved "
            f"with sktransfer {document.get('versions', {}).get('sktransfer')}); "
            "load it with that version."
        )
    tensors = _read_tensors(folder, document)
    meta = _decode(document.get("state", {}))
    estimator = cls(**params)
    protocol = document.get("state_protocol")
    try:
        if protocol == _BUILTIN:
            _set_builtin_state(estimator, meta, tensors)
        elif protocol == "estimator" and hasattr(estimator, "_set_fitted_state"):
            estimator._set_fitted_state(meta, tensors)
        else:
            raise ModelFormatError(
                f"{folder / MODEL_FILE} has a fitted state of kind {protocol!r} "
                f"that {cls.__name__} of this sktransfer version cannot restore."
            )
    except (RuntimeError, KeyError) as exc:
        raise ModelFormatError(
            f"the tensors of {folder / WEIGHTS_FILE} do not fit the "
            f"{cls.__name__} that {MODEL_FILE} describes: {exc}"
        ) from None
    return estimator


# --- the folder ------------------------------------------------------------------


def _read_document(folder: Path) -> dict:
    path = folder / MODEL_FILE
    if not path.is_file():
        raise ModelFormatError(
            f"{str(folder)!r} holds no saved model: {MODEL_FILE} is missing. "
            "Save one with sktransfer.save(estimator, folder)."
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path} is not valid JSON ({exc}).") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise ModelFormatError(
            f"{path} is not a model saved by sktransfer.save (no "
            f"'format': {FORMAT_NAME!r})."
        )
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFormatError(f"{path} has an invalid format_version {version!r}.")
    if version > FORMAT_VERSION:
        saved_with = document.get("versions", {}).get("sktransfer", "a newer version")
        raise ModelFormatError(
            f"{path} was saved by sktransfer {saved_with} in model format version "
            f"{version}; this sktransfer reads format versions up to "
            f"{FORMAT_VERSION}. Upgrade sktransfer (pip install -U sktransfer)."
        )
    files = document.get("files")
    if not isinstance(files, dict) or set(files) != {WEIGHTS_FILE}:
        raise ModelFormatError(
            f"{path} must list exactly the file {WEIGHTS_FILE!r} with its sha256; "
            f"it lists {sorted(files) if isinstance(files, dict) else files!r}."
        )
    return document


def _read_tensors(folder: Path, document: dict) -> dict:
    from safetensors import SafetensorError, safe_open

    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise ModelFormatError(f"{path} is missing: the saved model is incomplete.")
    expected = document["files"][WEIGHTS_FILE]
    actual = _sha256(path)
    if actual != expected:
        raise ModelFormatError(
            f"{path} has been modified or damaged: its sha256 is {actual}, "
            f"{MODEL_FILE} records {expected}. Copy the saved folder again."
        )
    manifest = document.get("tensors", {})
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            names = set(f.keys())
            if names != set(manifest):
                missing = sorted(set(manifest) - names)[:5]
                extra = sorted(names - set(manifest))[:5]
                raise ModelFormatError(
                    f"{path} and {MODEL_FILE} disagree on the tensors: missing "
                    f"{missing}, not listed {extra}."
                )
            tensors = {name: f.get_tensor(name) for name in sorted(names)}
    except SafetensorError as exc:
        raise ModelFormatError(
            f"{path} is not a valid safetensors file ({exc})."
        ) from None
    for name, tensor in tensors.items():
        if _describe(tensor) != manifest[name]:
            raise ModelFormatError(
                f"tensor {name!r} of {path} is {_describe(tensor)}; {MODEL_FILE} "
                f"records {manifest[name]}."
            )
    return tensors


def _describe(tensor) -> str:
    """dtype and shape, as ``model.json`` records them: ``float32[32, 3]``."""
    dtype = str(tensor.dtype).removeprefix("torch.")
    return f"{dtype}{list(tensor.shape)}"


@contextlib.contextmanager
def _temporary_file(folder: Path, name: str):
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _versions(own: str) -> dict:
    import safetensors
    import sklearn
    import torchvision

    versions = {
        "sktransfer": own,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }
    with contextlib.suppress(ImportError):
        import timm

        versions["timm"] = timm.__version__
    return versions


def _registered_class(name, cls=None):
    """The estimator class of a saved model: one of a fixed list, never an
    import path read from a file."""
    from ._classifier import PretrainedImageClassifier
    from ._features import PretrainedFeatures
    from ._regressor import PretrainedImageRegressor

    known = {
        c.__name__: c
        for c in (
            PretrainedImageClassifier,
            PretrainedImageRegressor,
            PretrainedFeatures,
        )
    }
    if cls is not None and known.get(getattr(cls, "__name__", None)) is not cls:
        raise TypeError(
            f"save handles sktransfer's estimators ({', '.join(sorted(known))}); "
            f"got {cls.__name__}. Use joblib.dump for other objects (a pickle: "
            "load only what you trust)."
        )
    if name not in known:
        raise ModelFormatError(
            f"{MODEL_FILE} names the estimator {name!r}, which is not one of "
            f"{', '.join(sorted(known))}."
        )
    return known[name]


def _check_fitted(estimator) -> None:
    fitted = getattr(estimator, "extractor_", None) is not None
    if not fitted:
        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet: call "
            "fit before saving it."
        )


def _plain_tensor(tensor, name) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"state tensor {name!r} is a {type(tensor).__name__}.")
    # own, contiguous CPU memory: safetensors refuses shared storage
    return tensor.detach().to("cpu").contiguous().clone()


# --- JSON values -------------------------------------------------------------

_TAGS = {"__tuple__", "__dict__", "__path__", "__ndarray__", "__cache__", "__float__"}


def _encode(value, what: str):
    """A value as JSON. What JSON lacks is tagged with a ``"__name__"`` key:
    tuples, dicts with keys that are not plain strings, paths, arrays,
    caches, NaN and infinities. Anything else is refused, naming ``what``."""
    from ._cache import FeatureCache

    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else {"__float__": repr(value)}
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
        if value.dtype.kind in "biufU":
            items = _encode(value.tolist(), what)
            return {"__ndarray__": items, "__dtype__": value.dtype.str}
    raise TypeError(
        f"{what} is a {type(value).__name__}, which cannot be saved without "
        "pickle: use plain values (str, number, bool, None, tuple, list, dict, "
        "path; an int for random_state), or joblib.dump (a pickle: load only "
        "what you trust)."
    )


def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    tags = [k for k in value if k.startswith("__")]
    if not tags:
        return {k: _decode(v) for k, v in value.items()}
    if not set(tags) <= _TAGS | {"__dtype__"} or len(tags) != len(value):
        raise ModelFormatError(f"{MODEL_FILE} holds an unknown value {value!r:.80}.")
    if "__tuple__" in value:
        return tuple(_decode(v) for v in value["__tuple__"])
    if "__dict__" in value:
        return {_decode(k): _decode(v) for k, v in value["__dict__"]}
    if "__path__" in value:
        return Path(value["__path__"])
    if "__float__" in value:
        text = value["__float__"]
        if text not in ("nan", "inf", "-inf"):
            raise ModelFormatError(f"{MODEL_FILE} holds an invalid number {text!r}.")
        return float(text)
    if "__cache__" in value:
        from ._cache import FeatureCache

        spec = value["__cache__"]
        return FeatureCache(spec["directory"], spec.get("max_bytes"))
    items = _decode(value["__ndarray__"])
    if value.get("__dtype__") == "O":
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out
    return np.asarray(items, dtype=np.dtype(value["__dtype__"]))


# --- the built-in state of sktransfer's estimators ---------------------------
#
# Used when an estimator has no ``_fitted_state`` of its own. The extractor
# helpers are the part any estimator's state needs.

#: Fitted attributes that hold torch objects, saved as tensors.
_MODULE_ATTRIBUTES = ("extractor_", "head_", "ensemble_", "preprocessing_")


def extractor_state(extractor, prefix: str) -> tuple[dict, dict]:
    """``(meta, tensors)`` of a :class:`FeatureExtractor`: the body's
    parameters and buffers under ``prefix``, and what rebuilds it."""
    bb = extractor.backbone
    body = bb.body
    flags = {}
    if hasattr(body, "transform_input"):  # GoogLeNet/Inception input remap
        flags["transform_input"] = bool(body.transform_input)
    meta = {
        "backbone": bb.name,
        "weights_id": bb.weights_id,
        "n_features": int(bb.n_features),
        "preprocessing": extractor.preprocessing.as_dict(),
        "base_preprocessing": (bb.base_preprocessing or bb.preprocessing).as_dict(),
        "precision": extractor.precision,
        "built_from": list(extractor.built_from or ()),
        "model_key": extractor.model_key,
        "body_flags": flags,
    }
    tensors = {f"{prefix}{k}": v for k, v in body.state_dict().items()}
    return meta, tensors


def restore_extractor(meta: dict, tensors: dict, prefix: str, estimator):
    """The :class:`FeatureExtractor` that :func:`extractor_state` described,
    on the device and with the cache that ``estimator``'s parameters name.
    Builds the architecture with random weights (no file, no network), then
    loads the saved tensors."""
    from ._backbones import load_backbone
    from ._cache import resolve_cache
    from ._features import FeatureExtractor, resolve_device
    from ._transforms import Preprocessing

    bb = load_backbone(meta["backbone"], None)
    for name, value in meta.get("body_flags", {}).items():
        setattr(bb.body, name, value)
    _load_module_state(
        bb.body, _under(tensors, prefix), f"the body ({meta['backbone']})"
    )
    bb = dataclasses.replace(
        bb,
        weights_id=meta["weights_id"],
        preprocessing=Preprocessing(**_decode_preprocessing(meta["preprocessing"])),
        base_preprocessing=Preprocessing(
            **_decode_preprocessing(meta["base_preprocessing"])
        ),
    )
    extractor = FeatureExtractor(
        bb,
        bb.preprocessing,
        meta["precision"],
        resolve_device(estimator.device),
        resolve_cache(estimator.cache),
    )
    extractor.built_from = tuple(meta["built_from"]) or None
    return extractor


def _under(tensors: dict, prefix: str) -> dict:
    """The tensors whose names start with ``prefix``, without it."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _decode_preprocessing(values: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _load_module_state(module, state: dict, what: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {list(state[k].shape)} != {list(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or extra or wrong:
        raise ModelFormatError(
            f"the saved tensors do not fit {what}: missing {missing[:5]}, "
            f"unexpected {extra[:5]}, shape mismatches {wrong[:5]}."
        )
    module.load_state_dict(state, strict=True)
    module.eval()


def _builtin_state(estimator) -> tuple[dict, dict]:
    """The state of PretrainedFeatures and of the recipe estimators, from
    their fitted attributes."""
    _check_fitted(estimator)
    params = set(estimator.get_params(deep=False))
    attributes = {
        k: v
        for k, v in vars(estimator).items()
        if k not in params and k not in _MODULE_ATTRIBUTES
    }
    for k, v in attributes.items():
        _encode(v, f"fitted attribute {k!r}")  # a clear error, naming it
    meta = {"attributes": attributes}
    tensors: dict = {}
    members = list(getattr(estimator, "ensemble_", None) or [])
    head = getattr(estimator, "head_", None)
    extractors, heads = [estimator.extractor_], []
    if head is not None:
        heads.append(head)
    pairs = []
    for member_extractor, member_head in members:
        if not any(member_extractor is e for e in extractors):
            extractors.append(member_extractor)
        if not any(member_head is h for h in heads):
            heads.append(member_head)
        pairs.append(
            [
                next(i for i, e in enumerate(extractors) if e is member_extractor),
                next(i for i, h in enumerate(heads) if h is member_head),
            ]
        )
    meta["extractors"] = []
    for i, extractor in enumerate(extractors):
        m, t = extractor_state(extractor, f"extractors.{i}.body.")
        meta["extractors"].append(m)
        tensors.update(t)
    meta["heads"] = []
    for j, h in enumerate(heads):
        meta["heads"].append(_head_spec(h))
        tensors.update({f"heads.{j}.{k}": v for k, v in h.state_dict().items()})
    meta["ensemble"] = pairs if members else None
    meta["has_head"] = head is not None
    return meta, tensors


def _head_spec(head) -> dict:
    from ._head import Head

    if type(head) is not Head:
        raise TypeError(
            f"the head is a {type(head).__name__}, not sktransfer's Head: its "
            "estimator must provide _fitted_state to be saved."
        )
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    dropouts = [m for m in head.modules() if isinstance(m, torch.nn.Dropout)]
    return {
        "n_features": int(linears[0].in_features),
        "n_outputs": int(linears[-1].out_features),
        "hidden_sizes": [int(m.out_features) for m in linears[:-1]],
        "dropout": float(dropouts[-1].p) if dropouts else 0.0,
    }


def _set_builtin_state(estimator, meta: dict, tensors: dict) -> None:
    from ._head import Head

    extractors = [
        restore_extractor(m, tensors, f"extractors.{i}.body.", estimator)
        for i, m in enumerate(meta["extractors"])
    ]
    heads = []
    for j, spec in enumerate(meta["heads"]):
        # building a head draws initial weights: leave the caller's RNG be
        with torch.random.fork_rng(devices=[]):
            head = Head(
                spec["n_features"],
                spec["n_outputs"],
                tuple(spec["hidden_sizes"]),
                spec["dropout"],
            )
        prefix = f"heads.{j}."
        state = {
            k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)
        }
        _load_module_state(head, state, f"head {j}")
        heads.append(head.to(extractors[0].device))
    for name, value in meta["attributes"].items():
        setattr(estimator, name, value)
    estimator.extractor_ = extractors[0]
    if hasattr(estimator, "n_features_out_"):  # PretrainedFeatures
        estimator.preprocessing_ = extractors[0].preprocessing
    if meta.get("has_head"):
        estimator.head_ = heads[0]
    if meta.get("ensemble") is not None:
        estimator.ensemble_ = [(extractors[i], heads[j]) for i, j in meta["ensemble"]]
