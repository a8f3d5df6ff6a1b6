"""Reading a saved model folder: the model.json and weights that belong
together (also while another process switches models), and the checks of
the document and the tensors' names, dtypes and shapes against it.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from ._persist_format import (
    DOCUMENT_KEYS,
    FORMAT_NAME,
    FORMAT_VERSION,
    MODEL_FILE,
    PENDING_FILE,
    WEIGHTS_FILE,
)
from ._persist_io import _identity, _read_bytes, _read_text, _sha256_of
from .exceptions import ModelFormatError


class _ChangedWhileReading(Exception):
    """model.json or the weights were replaced while load read them."""


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
    version = _check_version(path, document)
    unknown = sorted(set(document) - DOCUMENT_KEYS)
    if unknown:
        raise ModelFormatError(
            f"{path} has unknown entries {[str(k)[:40] for k in unknown[:5]]}; "
            f"a model of format version {version} has {sorted(DOCUMENT_KEYS)}."
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


def _check_version(path: Path, document: dict) -> int:
    """The document's format version, when this sktransfer reads it."""
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFormatError(
            f"{path} has an invalid entry 'format_version': {version!r:.80}."
        )
    versions = document.get("versions")
    saved_with = "a newer version" if version > FORMAT_VERSION else "an older version"
    if isinstance(versions, dict) and isinstance(versions.get("sktransfer"), str):
        saved_with = versions["sktransfer"]
    if version < FORMAT_VERSION:
        raise ModelFormatError(
            f"{path} was saved by sktransfer {saved_with:.40} in model format "
            f"version {version}; this sktransfer reads model format version "
            f"{FORMAT_VERSION} (since which the weights are the state dict of "
            "the estimator's model_). Load it with the sktransfer that saved "
            "it, or fit the model again and save it with this one."
        )
    if version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{path} was saved by sktransfer {saved_with:.40} in model format "
            f"version {version}; this sktransfer reads format versions up to "
            f"{FORMAT_VERSION}. Upgrade sktransfer (pip install -U sktransfer)."
        )
    return version


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


def _describe(tensor) -> str:
    """dtype and shape, as ``model.json`` records them: ``float32[32, 3]``."""
    dtype = str(tensor.dtype).removeprefix("torch.")
    return f"{dtype}{list(tensor.shape)}"
