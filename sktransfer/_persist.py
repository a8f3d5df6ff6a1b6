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
dtype is not what the model needs, or any entry that is not what the
matching parameter or fitted attribute takes, is a :class:`ModelFormatError`
naming the file and the entry, before anything is built
(:mod:`sktransfer._persist_format` holds these checks). The body is rebuilt
from its architecture and the saved tensors, so loading needs neither the
original weights file nor network. A folder never chooses where the loaded
model writes: its feature cache is the loading user's.

``save`` writes everything under new names and switches models by renames,
so that a save interrupted at any moment leaves the folder holding the old
model or the new one, and the next save cleans up what it left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import platform
import secrets
import stat
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import NotFittedError

from ._persist_format import (
    _MODULE_ATTRIBUTES,
    MODEL_FILE,
    WEIGHTS_FILE,
    _check_architectures,
    _check_state,
    _decode,
    _decode_preprocessing,
    _encode,
    _under,
    state_mismatch,
)
from .exceptions import ModelFormatError

#: Bumped when a saved folder changes in a way older code cannot read.
FORMAT_VERSION = 1
FORMAT_NAME = "sktransfer-model"
#: The next ``model.json`` while a save is switching models: complete, and
#: recording the sha256 of the weights it belongs to (see :func:`save`).
PENDING_FILE = ".model.json.next"
#: What a folder's ``model.json`` holds, at its top level.
_DOCUMENT_KEYS = {
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
#: ``state_protocol`` of states written here (not by an estimator's own
#: ``_fitted_state``).
_BUILTIN = "sktransfer.persist-v1"


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
    load it. The feature cache is not saved, and the ``cache`` and
    ``device`` recorded in the folder are not used by :func:`load`, which
    takes them from its own arguments.

    A save interrupted at any moment (Ctrl-C, a crash, a full disk) leaves
    ``folder`` holding the model it held before or the new one, never a mix;
    the next save into it removes what the interrupted one left.

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
    state = _encode(meta, "the fitted state")
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(
            f"{str(folder)!r} is a file; save writes a folder (model.json and "
            "weights.safetensors): choose a folder path."
        )
    folder.mkdir(parents=True, exist_ok=True)
    with _save_lock(folder):
        _finish_or_discard_interrupted_save(folder)
        if (folder / MODEL_FILE).exists() and not overwrite:
            raise FileExistsError(
                f"{str(folder)!r} already holds a saved model; pass overwrite=True "
                "to replace it, or choose another folder."
            )
        _write_and_switch(folder, cls, params, protocol, state, tensors)
    return folder


def _write_and_switch(folder: Path, cls, params, protocol, state, tensors) -> None:
    from safetensors.torch import save_file

    from . import __version__

    # Everything is written under new names first; then three renames switch
    # models: the complete next model.json to PENDING_FILE, the weights into
    # place, PENDING_FILE to model.json. Between the last two, load finds
    # the new model through PENDING_FILE (it records the sha256 of the new
    # weights), so an interruption at any moment leaves the old model or the
    # new one loadable, never a mix.
    with _temporary_file(folder, WEIGHTS_FILE) as weights_tmp:
        save_file(tensors, str(weights_tmp), metadata={"format": FORMAT_NAME})
        _fsync(weights_tmp)
        document = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "estimator": cls.__name__,
            "params": params,
            "state_protocol": protocol,
            "state": state,
            "tensors": {name: _describe(t) for name, t in sorted(tensors.items())},
            "files": {WEIGHTS_FILE: _sha256(weights_tmp)},
            "versions": _versions(__version__),
        }
        with _temporary_file(folder, MODEL_FILE) as model_tmp:
            text = json.dumps(document, indent=1, allow_nan=True) + "\n"
            model_tmp.write_text(text, encoding="utf-8")
            _fsync(model_tmp)
            os.replace(model_tmp, folder / PENDING_FILE)
        os.replace(weights_tmp, folder / WEIGHTS_FILE)
    os.replace(folder / PENDING_FILE, folder / MODEL_FILE)
    _fsync_folder(folder)


#: Saves of this process, one at a time (threads), and the folder locks
#: this process holds: ``(st_dev, st_ino) -> fd``.
_SAVES = threading.Lock()
_HELD: dict = {}


@contextlib.contextmanager
def _save_lock(folder: Path):
    """One save at a time in ``folder``: a lock between the threads of this
    process, and an advisory lock on the folder itself between processes
    (so that no lock file is left in it; POSIX only).

    A save interrupted at the wrong instant (a KeyboardInterrupt between
    taking the folder's lock and closing its descriptor) could leave this
    process holding it, and every later save into the folder would wait
    for ever. The process therefore records the locks it holds: when no
    other save of this process runs, a recorded lock is such a leftover,
    and it is released before the folder is locked again."""
    try:
        import fcntl
    except ImportError:  # Windows: saves are serialised within the process
        fcntl = None
    with _SAVES:
        if fcntl is None:
            yield
            return
        info = os.stat(folder)
        key = (info.st_dev, info.st_ino)
        leftover = _HELD.pop(key, None)
        if leftover is not None and _descriptor_of(leftover, key):
            os.close(leftover)
        fd = os.open(folder, os.O_RDONLY)
        _HELD[key] = fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock
            _HELD.pop(key, None)


def _descriptor_of(fd: int, key) -> bool:
    """Whether ``fd`` is still open on the folder ``key`` names."""
    try:
        info = os.fstat(fd)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == key


def _finish_or_discard_interrupted_save(folder: Path) -> None:
    """Clean up after a save interrupted in this folder: finish its switch
    when its weights are already in place (they belong to PENDING_FILE, and
    model.json is the older model's), otherwise drop what it left."""
    pending = folder / PENDING_FILE
    if pending.is_file():
        try:
            document = json.loads(_read_bytes(pending))
            weights = _read_bytes(folder / WEIGHTS_FILE)
            complete = document["files"][WEIGHTS_FILE] == _sha256_of(weights)
        except (OSError, ValueError, TypeError, KeyError, RecursionError):
            complete = False
        if complete:
            os.replace(pending, folder / MODEL_FILE)
        else:
            pending.unlink(missing_ok=True)
    for name in (MODEL_FILE, WEIGHTS_FILE):
        for leftover in folder.glob(f".{name}.*.tmp"):
            leftover.unlink(missing_ok=True)


def load(folder, *, cache="auto", device=None):
    """Load an estimator saved by :func:`save`.

    No code from the folder runs: ``model.json`` is parsed as JSON and
    ``weights.safetensors`` holds only tensors. The estimator's class must
    be one of sktransfer's estimators.

    Parameters
    ----------
    folder : str or path-like
    cache : "auto", str, path-like, FeatureCache or None, default="auto"
        The feature cache of the loaded model (its ``cache`` parameter).
        The ``cache`` recorded in the folder is never used: a folder can
        come from anywhere, and must not choose where the model writes.
        ``"auto"`` is the loading user's own per-user cache folder.
    device : str or None, default=None
        The device of the loaded model (its ``device`` parameter). None
        keeps the device recorded in the folder when this machine has it,
        and otherwise uses ``"auto"`` with a ``UserWarning``.

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
        ``model.json`` records or the model needs, or a file is missing, or
        an entry of ``model.json`` is not what the matching parameter or
        fitted attribute takes. The message names the file and the entry.
        Everything is checked before the model is built (the architectures
        are compared with the tensors without allocating them).

    Notes
    -----
    A folder that another process is saving into at the same moment is
    read again once; :func:`save` switches models so that the folder always
    holds one complete model, the old or the new.

    Loading reads only the folder's two files. The body comes from the
    folder's tensors: a ``weights`` parameter naming a file is kept as saved
    (it is what a later ``fit`` of the loaded estimator would read) but is
    not read by ``load``, ``predict`` or ``transform``.

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
    from ._cache import resolve_cache
    from ._features import resolve_device

    # bad arguments are the caller's errors, not the folder's
    resolve_cache(cache)
    if device is not None:
        resolve_device(device)
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ModelFormatError(
            f"{str(folder)!r} is a file, not a folder saved by sktransfer.save."
        )
    try:
        path, document, tensors = _read_folder(folder)
    except _ChangedWhileReading:
        try:
            path, document, tensors = _read_folder(folder)
        except _ChangedWhileReading:
            raise ModelFormatError(
                f"{str(folder)!r} changed twice while being read: another "
                "process is saving into it. Load it when that save has finished."
            ) from None
    try:
        return _build(path, document, tensors, cache, device)
    except RecursionError:
        raise ModelFormatError(
            f"{path} holds values nested too deeply for any saved model."
        ) from None


class _ChangedWhileReading(Exception):
    """model.json or the weights were replaced while load read them."""


def _identity(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _read_folder(folder: Path) -> tuple[Path, dict, dict]:
    """``(path of the model.json used, its document, the tensors)``, read
    once each (bytes in memory, so that what is checked is what is used)."""
    model, weights, pending = (
        folder / MODEL_FILE,
        folder / WEIGHTS_FILE,
        folder / PENDING_FILE,
    )
    before = [_identity(p) for p in (model, weights)]
    if before[0] is None and not pending.is_file():
        raise ModelFormatError(
            f"{str(folder)!r} holds no saved model: {MODEL_FILE} is missing. "
            "Save one with sktransfer.save(estimator, folder)."
        )
    try:
        data = _read_bytes(weights)
    except FileNotFoundError:
        if before[1] is not None:
            raise _ChangedWhileReading() from None
        raise ModelFormatError(
            f"{weights} is missing: the saved model is incomplete."
        ) from None
    actual = _sha256_of(data)
    document = None
    if before[0] is not None:
        document = _parse_document(model, _read_text(model))
        if document["files"][WEIGHTS_FILE] == actual:
            return model, document, _parse_tensors(weights, data, document)
    # a save switching models right now (or interrupted while switching):
    # the next model.json names these weights
    with contextlib.suppress(OSError, ModelFormatError):
        candidate = _parse_document(pending, _read_text(pending))
        if candidate["files"][WEIGHTS_FILE] == actual:
            return pending, candidate, _parse_tensors(weights, data, candidate)
    if [_identity(p) for p in (model, weights)] != before:
        raise _ChangedWhileReading()
    if document is None:
        raise ModelFormatError(
            f"{str(folder)!r} holds no saved model: {MODEL_FILE} is missing. "
            "Save one with sktransfer.save(estimator, folder)."
        )
    raise ModelFormatError(
        f"{weights} has been modified or damaged: its sha256 is {actual}, "
        f"{MODEL_FILE} records {document['files'][WEIGHTS_FILE]}. Copy the saved "
        "folder again."
    )


def _read_bytes(path: Path) -> bytes:
    """The bytes of a regular file; a folder, device or pipe in its place
    (``/dev/zero`` would never end) is a :class:`ModelFormatError`."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)  # non-blocking: opening a pipe does not wait
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ModelFormatError(
                f"{path} is a folder; it must be the file that save wrote."
            )
        if not stat.S_ISREG(mode):
            raise ModelFormatError(
                f"{path} is not a regular file (a device, pipe or socket); it "
                "must be the file that save wrote."
            )
        with os.fdopen(fd, "rb") as f:
            fd = None  # closed by f
            return f.read()
    finally:
        if fd is not None:
            os.close(fd)


def _read_text(path: Path) -> str:
    try:
        return _read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelFormatError(f"{path} is not valid JSON ({exc}).") from None


def _parse_document(path: Path, text: str) -> dict:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        # ValueError: bad JSON, or an integer of more than 4300 digits
        raise ModelFormatError(f"{path} is not valid JSON ({exc}).") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise ModelFormatError(
            f"{path} is not a model saved by sktransfer.save (no "
            f"'format': {FORMAT_NAME!r})."
        )
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFormatError(
            f"{path} has an invalid entry 'format_version': {version!r:.80}."
        )
    if version > FORMAT_VERSION:
        versions = document.get("versions")
        saved_with = "a newer version"
        if isinstance(versions, dict) and isinstance(versions.get("sktransfer"), str):
            saved_with = versions["sktransfer"]
        raise ModelFormatError(
            f"{path} was saved by sktransfer {saved_with:.40} in model format "
            f"version {version}; this sktransfer reads format versions up to "
            f"{FORMAT_VERSION}. Upgrade sktransfer (pip install -U sktransfer)."
        )
    unknown = sorted(set(document) - _DOCUMENT_KEYS)
    if unknown:
        raise ModelFormatError(
            f"{path} has unknown entries {[str(k)[:40] for k in unknown[:5]]}; "
            f"a model of format version {version} has {sorted(_DOCUMENT_KEYS)}."
        )
    files = document.get("files")
    if (
        not isinstance(files, dict)
        or set(files) != {WEIGHTS_FILE}
        or not isinstance(files[WEIGHTS_FILE], str)
    ):
        shown = sorted(files) if isinstance(files, dict) else files
        raise ModelFormatError(
            f"{path} must list exactly the file {WEIGHTS_FILE!r} with its sha256 "
            f"in the entry 'files'; it lists {shown!r:.200}."
        )
    for key in ("params", "state", "tensors"):
        if not isinstance(document.get(key), dict):
            raise ModelFormatError(
                f"{path} has an invalid entry {key!r}: a JSON object is needed, "
                f"got {type(document.get(key)).__name__}."
            )
    if not isinstance(document.get("versions", {}), dict):
        raise ModelFormatError(f"{path} has an invalid entry 'versions'.")
    for name, spec in document["tensors"].items():
        if not isinstance(spec, str):
            raise ModelFormatError(
                f"{path} has an invalid entry 'tensors'[{name!r:.80}]: "
                f"{spec!r:.80} (a description such as 'float32[3, 3]' is needed)."
            )
    return document


def _parse_tensors(path: Path, data: bytes, document: dict) -> dict:
    """The tensors of the weights file, after checking that their names,
    dtypes and shapes are those ``model.json`` records."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    try:
        tensors = load_bytes(data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise ModelFormatError(
            f"{path} is not a valid safetensors file ({exc})."
        ) from None
    manifest = document["tensors"]
    if set(tensors) != set(manifest):
        missing = sorted(set(manifest) - set(tensors))[:5]
        extra = sorted(set(tensors) - set(manifest))[:5]
        raise ModelFormatError(
            f"{path} and {MODEL_FILE} disagree on the tensors (entry 'tensors'): "
            f"missing {missing}, not listed {extra}."
        )
    for name, tensor in tensors.items():
        if _describe(tensor) != manifest[name]:
            raise ModelFormatError(
                f"tensor {name!r} of {path} is {_describe(tensor)}; {MODEL_FILE} "
                f"records {manifest[name]!r:.80}."
            )
    return tensors


def _build(path: Path, document: dict, tensors: dict, cache, device):
    """The estimator that a checked document and its tensors describe."""
    cls = _registered_class(document.get("estimator"), where=path)
    raw = document["params"]
    valid = set(cls().get_params(deep=False))
    unknown = sorted(set(raw) - valid)
    if unknown:
        versions = document.get("versions", {})
        raise ModelFormatError(
            f"{path} has parameter(s) {[k[:40] for k in unknown[:5]]} that "
            f"{cls.__name__} of this sktransfer version does not take (saved "
            f"with sktransfer {str(versions.get('sktransfer'))[:40]}); load it "
            "with that version."
        )
    # where the model writes is the loading user's choice, never the folder's
    params = {
        name: _decode(value, path, f"params[{name!r}]")
        for name, value in raw.items()
        if name not in ("cache", "device")
    }
    saved_device = _decode(raw.get("device", "auto"), path, "params['device']")
    estimator = cls(**params)
    estimator.set_params(device=saved_device)
    _validate_params(estimator, path)
    if device is None:
        from ._features import resolve_device

        try:
            resolve_device(saved_device)
        except ValueError as exc:
            warnings.warn(
                f"{path} records device={saved_device!r}, which this machine "
                f"does not have ({exc}); the loaded model uses device='auto'. "
                "Pass load(..., device=...) to choose.",
                UserWarning,
                stacklevel=3,
            )
            device = "auto"
        else:
            device = saved_device
    estimator.set_params(cache=cache, device=device)
    estimator._validate_params()  # load's own arguments: the caller's errors
    protocol = document.get("state_protocol")
    if protocol == "estimator" and hasattr(estimator, "_set_fitted_state"):
        # an estimator that saves its own state checks it itself
        restore = estimator._set_fitted_state
        meta = _decode(document["state"], path, "'state'")
    elif protocol == _BUILTIN:
        meta = _check_state(document["state"], estimator, path)
        _check_architectures(meta, tensors, path)
        restore = functools.partial(_set_builtin_state, estimator)
    else:
        raise ModelFormatError(
            f"{path} has a fitted state of kind {protocol!r:.80} (entry "
            f"'state_protocol') that {cls.__name__} of this sktransfer version "
            "cannot restore."
        )
    try:
        restore(meta, tensors)
    except ModelFormatError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise ModelFormatError(
            f"the tensors of {path.parent / WEIGHTS_FILE} do not fit the "
            f"{cls.__name__} that {path} describes: {exc}"
        ) from None
    return estimator


def _validate_params(estimator, path: Path) -> None:
    """The folder's parameters, checked by the estimator's own rules."""
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        estimator._validate_params()
    except InvalidParameterError as exc:
        raise ModelFormatError(f"{path} has an invalid entry 'params': {exc}") from None


def _describe(tensor) -> str:
    """dtype and shape, as ``model.json`` records them: ``float32[32, 3]``."""
    dtype = str(tensor.dtype).removeprefix("torch.")
    return f"{dtype}{list(tensor.shape)}"


@contextlib.contextmanager
def _temporary_file(folder: Path, name: str):
    """A new empty file ``.{name}.{random}.tmp`` in ``folder``, removed on
    exit unless it was renamed. Created with the permissions the umask gives
    (mkstemp's are owner-only), since it becomes the saved file."""
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync(path: Path) -> None:
    """Data on disk before the rename that publishes it."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_folder(folder: Path) -> None:
    """The renames on disk too (POSIX; Windows cannot open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def _registered_class(name, cls=None, where=MODEL_FILE):
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
    if not isinstance(name, str) or name not in known:
        raise ModelFormatError(
            f"{where} names the estimator {name!r:.80} (entry 'estimator'), "
            "which is not one of "
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


# --- the built-in state of sktransfer's estimators ---------------------------
#
# Used when an estimator has no ``_fitted_state`` of its own. The extractor
# helpers are the part any estimator's state needs.


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
    pre, base = (
        value
        if isinstance(value, Preprocessing)
        else Preprocessing(**_decode_preprocessing(value))
        for value in (meta["preprocessing"], meta["base_preprocessing"])
    )
    bb = dataclasses.replace(
        bb, weights_id=meta["weights_id"], preprocessing=pre, base_preprocessing=base
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


def _load_module_state(module, state: dict, what: str) -> None:
    problem = state_mismatch(module, state)
    if problem:
        raise ModelFormatError(f"the saved tensors do not fit {what}: {problem}.")
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
