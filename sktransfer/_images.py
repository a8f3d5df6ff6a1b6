"""Taking in whatever the user passed as ``X``: a list of image sources.

``X`` may be a 1-D array-like of paths (``str`` or ``pathlib.Path``, a pandas
Series too), a list of PIL images, a uint8 array of shape ``(n, H, W, 3)``
or ``(n, H, W)``, or a uint8 torch tensor of the same shapes.
:func:`as_image_list` turns it into a list of sources (path strings, PIL
images, arrays), refusing what cannot be images with an error that says how
to fix it; :mod:`._decoding` makes RGB pixels of each source.

A PIL image straight from ``Image.open`` (its pixels not loaded yet) is
read as the file it was opened from (:func:`as_encoded`): its bytes,
fingerprint, reduced-scale JPEG decoding and EXIF orientation are exactly
those of the file's path. A PIL image whose pixels are loaded is taken as it
is; arrays are taken as they are.
"""

from __future__ import annotations

import io
import os
import sys
import warnings
from collections.abc import Mapping, Set

import numpy as np
from PIL import Image, ImageFile

from ._image_files import MAX_FILE_BYTES


def _is_tensor(obj) -> bool:
    torch = sys.modules.get("torch")  # no tensors without torch imported
    return torch is not None and isinstance(obj, torch.Tensor)


def _tensor_to_array(tensor, what: str) -> np.ndarray:
    """A CPU numpy view of a torch tensor (uint8 is checked by the caller)."""
    if tensor.is_complex() or tensor.dtype.is_floating_point:
        raise ValueError(
            f"{what} is a torch tensor of dtype {tensor.dtype}; images must be "
            "uint8 (values 0-255): convert with (t * 255).round().to(torch.uint8) "
            "if its values are in [0, 1]."
        )
    try:
        return tensor.detach().cpu().numpy()
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        raise ValueError(
            f"{what} is a torch tensor on device {tensor.device} whose values "
            f"cannot be read ({type(exc).__name__}: {exc})."
        ) from None


def _channels_first_hint(shape: tuple, what: str, tensor: bool) -> str:
    if len(shape) == 4:
        fix = "X.permute(0, 2, 3, 1)" if tensor else "np.transpose(X, (0, 2, 3, 1))"
    else:
        fix = "x.permute(1, 2, 0)" if tensor else "np.transpose(x, (1, 2, 0))"
    return (
        f"{what} has shape {shape}, which looks channels-first; images must be "
        f"channels-last (height, width, 3): pass {fix}."
    )


def _check_image_array(X: np.ndarray, tensor: bool) -> None:
    """Refuse an ``(n, H, W[, C])`` array that cannot hold images."""
    what = "an image tensor X" if tensor else "an image array X"
    if X.ndim == 4 and X.shape[-1] not in (1, 3, 4) and X.shape[1] in (1, 3, 4):
        raise ValueError(_channels_first_hint(X.shape, "X", tensor))
    if X.ndim not in (3, 4) or (X.ndim == 4 and X.shape[-1] not in (1, 3, 4)):
        raise ValueError(
            f"{what} must have shape (n_samples, height, width, 3) or "
            f"(n_samples, height, width); got shape {tuple(X.shape)}."
        )
    if X.dtype != np.uint8:
        raise ValueError(f"{what} must have dtype uint8 (values 0-255); got {X.dtype}.")
    if len(X) and (X.shape[1] == 0 or X.shape[2] == 0):
        raise ValueError(
            f"X has shape {tuple(X.shape)}: its images are empty "
            f"({X.shape[1]} pixels high, {X.shape[2]} wide)."
        )


def _strings_2d_message(X) -> str:
    fix = "X.ravel()" if X.ndim == 2 and X.shape[1] == 1 else "one path per row"
    return (
        f"X has shape {tuple(X.shape)} and holds paths (or objects), not pixels; "
        f"X must be 1-D with one image per row: pass {fix}."
    )


def as_image_list(X) -> list:
    """Return ``X`` as a list of image sources (path strings, PIL images, arrays).

    Raises a ``ValueError`` naming the problem for anything that is not one of
    the accepted input kinds.
    """
    if isinstance(X, (str, bytes, os.PathLike)):
        raise ValueError(
            "X must be a sequence of images (paths, PIL images or a uint8 array), "
            f"got a single path {os.fsdecode(X)!r}; wrap it in a list."
        )
    if isinstance(X, Image.Image):
        raise ValueError(
            "X must be a sequence of images; wrap the PIL image in a list."
        )
    if isinstance(X, (Mapping, Set)):
        # a set has no order, a mapping's keys are not obviously the images:
        # either would pair features with the wrong rows of y
        raise ValueError(
            f"X must be an ordered sequence of images (a list, an array, a "
            f"Series); got a {type(X).__name__}."
        )
    tensor = _is_tensor(X)
    if tensor:
        X = _tensor_to_array(X, "X")
    if isinstance(X, np.ndarray) and X.dtype.kind in "USO" and X.ndim != 1:
        raise ValueError(_strings_2d_message(X))
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.dtype.kind == "U":
            return [str(x) for x in X]
        if X.dtype.kind == "S":
            return [os.fsdecode(x) for x in X]
        _check_image_array(X, tensor)
        return list(X)
    if hasattr(X, "to_numpy") and not isinstance(X, np.ndarray):  # pandas
        if getattr(X, "ndim", 1) != 1:
            raise ValueError(
                "X must be 1-D (one image per row); got a frame with shape "
                f"{X.shape}. Select the column of paths, e.g. df['path']."
            )
        X = X.to_numpy()
    try:
        items = list(X)
    except TypeError:
        raise ValueError(
            "X must be a sequence of image paths, PIL images or a uint8 array; "
            f"got {type(X).__name__}."
        ) from None
    return [_as_source(item, i) for i, item in enumerate(items)]


def _as_source(item, i: int):
    """One item of a list ``X``: a path string, a PIL image or an array."""
    if isinstance(item, (str, os.PathLike)):
        return str(os.fspath(item))  # str() turns np.str_ into a plain str
    if isinstance(item, bytes):
        return os.fsdecode(item)
    if isinstance(item, Image.Image):
        return as_encoded(item) or item
    tensor = _is_tensor(item)
    if tensor:
        item = _tensor_to_array(item, f"X[{i}]")
    if isinstance(item, np.ndarray) and item.dtype.kind not in "USO":
        shape = tuple(item.shape)
        if item.ndim == 3 and shape[-1] not in (1, 3, 4) and shape[0] in (1, 3, 4):
            raise ValueError(_channels_first_hint(shape, f"X[{i}]", tensor))
        if item.ndim not in (2, 3) or (item.ndim == 3 and shape[-1] not in (1, 3, 4)):
            raise ValueError(
                f"X[{i}] is an array of shape {shape}; each image must have shape "
                "(height, width, 3), (height, width, 4) or (height, width)."
            )
        if item.dtype != np.uint8:
            raise ValueError(
                f"X[{i}] is an array of dtype {item.dtype}; images must be uint8 "
                "(values 0-255)."
            )
        return item
    raise ValueError(
        f"X[{i}] is a {type(item).__name__}; each image must be a path "
        "(str or pathlib.Path), a PIL image or a uint8 array (H, W[, 3])."
    )


def describe(source, index: int | None = None) -> str:
    """A short name for an image, used in error messages."""
    if isinstance(source, str):
        return repr(source)
    where = f"X[{index}]" if index is not None else "image"
    if isinstance(source, EncodedImage):
        return f"{where} ({source.what})"
    if isinstance(source, Image.Image):
        return f"{where} (PIL image {source.size[0]}x{source.size[1]} {source.mode})"
    return f"{where} (array {tuple(source.shape)})"


class EncodedImage:
    """The bytes of the file an ``Image.open`` image reads its pixels from.

    Such an image is decoded as its file would be (reduced-scale JPEG
    decoding, EXIF orientation), so a path and ``Image.open(path)`` give the
    same pixels and share one fingerprint. The bytes are read once, when
    ``X`` is taken in: the file object is never read again, from any thread.
    """

    __slots__ = ("data", "what")

    def __init__(self, data: bytes, what: str):
        self.data = data
        self.what = what

    def copy(self) -> EncodedImage:
        return self  # immutable


def as_encoded(img: Image.Image) -> EncodedImage | None:
    """``img`` as the bytes of its file when it comes from ``Image.open``
    and none of its pixels is loaded; None for any other image (or a file
    that can no longer be read: the image is then used as it is, and says
    what is wrong when it is loaded)."""
    if (
        not isinstance(img, ImageFile.ImageFile)
        or not img.tile
        or getattr(img, "fp", None) is None
    ):
        return None
    try:
        if img.tell() != 0:  # another frame of a GIF or TIFF: as given
            return None
        fp = img.fp
        position = fp.tell()
        try:
            fp.seek(0)  # Image.open reads a file from its start too
            data = fp.read(MAX_FILE_BYTES + 1)
        finally:
            fp.seek(position)
        if not data or len(data) > MAX_FILE_BYTES:
            return None
        # the same picture as the image object says (not one the caller
        # has set a draft mode on, or changed otherwise)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as again:
                if (again.size, again.mode) != (img.size, img.mode):
                    return None
    except Exception:
        return None
    filename = getattr(img, "filename", "") or ""
    where = f" from {os.fsdecode(filename)!r}" if filename else ""
    what = f"PIL image {img.size[0]}x{img.size[1]} {img.format or img.mode}{where}"
    return EncodedImage(data, what)
