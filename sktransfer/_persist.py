"""Saving a fitted estimator without pickle: safetensors and JSON.

``save(estimator, folder)`` writes two files, and a model card:

* ``weights.safetensors``: the state dict of the estimator's ``model_``
  (the bodies, the heads of an ensemble's members, the output step), in a
  format that holds numbers only;
* ``model.json``: everything else (class name, parameters, fitted
  attributes, preprocessing, library versions), the format version, and the
  sha256, name, shape and dtype of every tensor and file;
* ``README.md``: a model card for people (task, classes and their numbers
  of training images, body, preprocessing, stages, validation scores,
  library versions, how to load it), in Hugging Face's convention; never
  read by ``load``.

``load(folder)`` reads JSON and safetensors only: no pickle, no
``torch.load``, no import named by the files. The class comes from a fixed
list of sktransfer estimators; a file of a newer format version, a file
whose sha256 differs from the one recorded, or a tensor whose name, shape or
dtype is not what the model needs, or any entry that is not what the
matching parameter or fitted attribute takes, is a :class:`ModelFormatError`
naming the file and the entry, before anything is built
(:mod:`sktransfer._persist_read` checks the files,
:mod:`sktransfer._persist_state` the fitted state). The model is rebuilt
from its architecture and the saved tensors, so loading needs neither the
original weights file nor network. A folder never chooses where the loaded
model writes: its feature cache is the loading user's.

``save`` writes everything under new names and switches models by renames
(:mod:`sktransfer._persist_io`), so that a save interrupted at any moment
leaves the folder holding the old model or the new one, and the next save
cleans up what it left.
"""

from __future__ import annotations

import contextlib
import platform
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import NotFittedError

from ._model_card import CARD_FILE, is_own_card, model_card
from ._params import validate
from ._persist_format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MODEL_FILE,
    STATE_PROTOCOL,
    WEIGHTS_FILE,
    _decode,
    _encode,
)
from ._persist_io import (
    _save_lock,
    finish_or_discard_interrupted_save,
    write_and_switch,
    write_text,
)
from ._persist_read import _ChangedWhileReading, _describe, _read_folder
from ._persist_state import (
    check_architectures,
    check_state,
    fitted_state,
    restore_state,
)
from .exceptions import InvalidParameterError, ModelFormatError

# --- public API --------------------------------------------------------------


def save(estimator, folder, *, overwrite=False) -> Path:
    """Save a fitted estimator to ``folder`` without pickle.

    Parameters
    ----------
    estimator : fitted PretrainedImageClassifier, PretrainedImageRegressor
        or PretrainedFeatures
    folder : str or path-like
        Created if missing. It receives ``model.json``,
        ``weights.safetensors`` and a model card, ``README.md`` (not written
        over a ``README.md`` that sktransfer did not write; a warning says
        so). ``load`` reads the first two only.
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
    ['README.md', 'model.json', 'weights.safetensors']
    >>> bool(np.array_equal(load(folder).predict_proba(X), clf.predict_proba(X)))
    True
    """
    from . import __version__

    cls = _registered_class(type(estimator).__name__, type(estimator))
    params = {
        name: _encode(value, f"parameter {name!r}")
        for name, value in estimator.get_params(deep=False).items()
    }
    _check_fitted(estimator)
    meta, tensors = fitted_state(estimator)
    tensors = {name: _plain_tensor(t) for name, t in tensors.items()}
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "estimator": cls.__name__,
        "params": params,
        "state_protocol": STATE_PROTOCOL,
        "state": _encode(meta, "the fitted state"),
        "tensors": {name: _describe(t) for name, t in sorted(tensors.items())},
        "versions": _versions(__version__),
    }
    card = model_card(estimator, document)
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(
            f"{str(folder)!r} is a file; save writes a folder (model.json and "
            "weights.safetensors): choose a folder path."
        )
    folder.mkdir(parents=True, exist_ok=True)
    with _save_lock(folder):
        finish_or_discard_interrupted_save(folder)
        if (folder / MODEL_FILE).exists() and not overwrite:
            raise FileExistsError(
                f"{str(folder)!r} already holds a saved model; pass overwrite=True "
                "to replace it, or choose another folder."
            )
        write_and_switch(folder, document, tensors)
        if is_own_card(folder / CARD_FILE):
            write_text(folder, CARD_FILE, card)
        else:
            warnings.warn(
                f"{str(folder / CARD_FILE)!r} was not written by sktransfer: it "
                "is kept as it is, and the saved model gets no model card.",
                UserWarning,
                stacklevel=2,
            )
    return folder


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
    from ._devices import resolve_device

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
        if name not in ("cache", "device", "checkpoint_dir")
    }
    saved_device = _decode(raw.get("device", "auto"), path, "params['device']")
    estimator = cls(**params)
    estimator.set_params(device=saved_device)
    _validate_params(estimator, path)
    if device is None:
        from ._devices import resolve_device

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
    validate(estimator)  # load's own arguments: the caller's errors
    protocol = document.get("state_protocol")
    if protocol != STATE_PROTOCOL:
        raise ModelFormatError(
            f"{path} has a fitted state of kind {protocol!r:.80} (entry "
            f"'state_protocol') that {cls.__name__} of this sktransfer version "
            "cannot restore."
        )
    meta = check_state(document["state"], estimator, path)
    check_architectures(meta, tensors, path)
    try:
        restore_state(estimator, meta, tensors, path)
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
    try:
        validate(estimator)
    except InvalidParameterError as exc:
        raise ModelFormatError(f"{path} has an invalid entry 'params': {exc}") from None


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


def _plain_tensor(tensor) -> torch.Tensor:
    # own, contiguous CPU memory: safetensors refuses shared storage
    return tensor.detach().to("cpu").contiguous().clone()
