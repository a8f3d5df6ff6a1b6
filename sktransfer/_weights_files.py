"""Local weights files: telling a path from a registry name, reading a
state dict safely (``weights_only=True``, or safetensors), checking it is
finite, loading it into a body with a clear error, and the file's digest
(the weights' identity in cache keys)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn


def is_path(weights, registry_name: bool = False) -> bool:
    """Whether ``weights`` names a local weights file.

    ``registry_name``: ``weights`` is also a registry name, which wins over a
    bare name in the working directory (see the notes of :mod:`._backbones`).
    """
    if isinstance(weights, os.PathLike):
        return True
    if not isinstance(weights, str):
        return False
    separators = {os.sep, os.altsep or os.sep, "/"}
    if any(sep in weights for sep in separators) or weights.endswith(
        (".pth", ".pt", ".bin", ".safetensors")
    ):
        return True
    if registry_name or weights == "DEFAULT":
        return False
    try:
        return expand(weights).is_file()  # a folder is never a weights file
    except (OSError, ValueError):  # a NUL in the name
        return False


def expand(weights) -> Path:
    try:
        return Path(weights).expanduser()
    except RuntimeError:  # "~" without a home directory
        return Path(weights)


def read_state_dict(path: Path, registry: bool = False) -> dict:
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise FileNotFoundError(f"weights file {str(path)!r} {what}.")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(
                "reading .safetensors weights needs: pip install safetensors"
            ) from None
        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            fix = (
                " Delete it and load again to download a fresh copy."
                if registry
                else ""
            )
            raise ValueError(
                f"weights file {str(path)!r} could not be read as a PyTorch state_dict "
                f"with weights_only=True ({type(exc).__name__}: {exc}).{fix}"
            ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(
        torch.is_tensor(v) for v in state.values()
    ):
        raise ValueError(
            f"weights file {str(path)!r} does not hold a state_dict of tensors."
        )
    check_finite(state, f"weights file {str(path)!r}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def check_finite(state: dict, what: str) -> None:
    """Refuse weights holding NaN or inf: every feature would be NaN."""
    bad = [
        k
        for k, v in state.items()
        if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise ValueError(
            f"{what} holds non-finite values (NaN or inf) in {len(bad)} tensor(s), "
            f"such as {bad[:5]}: every feature computed with it would be NaN. "
            "Is the file damaged, or saved from a training run that diverged?"
        )


def load_state(model: nn.Module, state: dict, path: Path, name: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}")
        if mismatched:
            parts.append(f"shape mismatches {mismatched[:5]}")
        raise ValueError(
            f"weights file {str(path)!r} does not fit backbone {name!r}: "
            + "; ".join(parts)
            + ". Is it a file for another architecture?"
        )
    model.load_state_dict(state, strict=True)


def file_digest(path: Path, length: int = 32) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]
