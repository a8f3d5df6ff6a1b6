"""A user's own augmentation: ``augment=callable``.

The callable gets each training photo as a PIL RGB image, at its decoded
size, and returns the augmented photo: a PIL image, an ``(H, W, 3)`` (or
``(H, W)``) uint8 array, or a ``(3, H, W)`` uint8 tensor, the forms
torchvision's transforms (v1 and v2) produce. A result already of the
network's input size is used as it is; any other size becomes the input
the plain way (``resize_mode``). So ``torchvision.transforms.v2.Compose``
pipelines, ``RandomResizedCrop(224)`` included, work unchanged.

The callable draws from its own random source (torchvision's transforms
draw from torch's global generator), which the package cannot seed per
photo: a fit with it is reproducible only as far as the callable is, and
its augmented copies are never stored in the feature cache (a function's
behaviour has no fingerprint; see ``AugmentedView.key``).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def user_pixels(fn, pixels: np.ndarray) -> np.ndarray:
    """``fn`` applied to the photo ``pixels`` (``(H, W, 3)`` uint8), as an
    ``(h, w, 3)`` uint8 array; a clear error naming ``fn`` for anything
    that is not an image."""
    out = fn(Image.fromarray(np.ascontiguousarray(pixels)))
    # copies: torch warns about (and may not write to) read-only arrays
    if isinstance(out, Image.Image):
        return np.array(out.convert("RGB"))
    if isinstance(out, torch.Tensor) and out.dtype == torch.uint8:
        if out.ndim == 3 and out.shape[0] in (1, 3):
            out = out.permute(1, 2, 0).expand(-1, -1, 3)
            return np.array(out.cpu().numpy())
    elif isinstance(out, np.ndarray) and out.dtype == np.uint8:
        if out.ndim == 2:
            out = out[..., None]
        if out.ndim == 3 and out.shape[2] in (1, 3) and min(out.shape[:2]) > 0:
            return np.array(np.broadcast_to(out, out.shape[:2] + (3,)))
    described = type(out).__name__
    if isinstance(out, (np.ndarray, torch.Tensor)):
        described = f"{described} of shape {tuple(out.shape)} and dtype {out.dtype}"
    raise TypeError(
        f"augment={fn!r} returned a {described}; it must return a PIL image, "
        "an (H, W, 3) uint8 array or a (3, H, W) uint8 tensor."
    )
