"""Turning whatever the user passed as ``X`` into RGB images.

``X`` may be a 1-D array-like of paths (``str`` or ``pathlib.Path``, a pandas
Series too), a list of PIL images, or a uint8 array of shape ``(n, H, W, 3)``
or ``(n, H, W)``. Every image leaves this module as an RGB ``PIL.Image``.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

#: Images with more pixels than this are refused (decompression-bomb guard):
#: 16,000 x 16,000 is far beyond any photo a classifier needs.
MAX_IMAGE_PIXELS = 256_000_000


class ImageLoadError(ValueError):
    """An image could not be read or decoded. The message names the image."""


def as_image_list(X) -> list:
    """Return ``X`` as a list of image sources (path strings, PIL images, arrays).

    Raises a ``ValueError`` naming the problem for anything that is not one of
    the accepted input kinds.
    """
    if isinstance(X, (str, os.PathLike)):
        raise ValueError(
            "X must be a sequence of images (paths, PIL images or a uint8 array), "
            f"got a single path {str(X)!r}; wrap it in a list."
        )
    if isinstance(X, Image.Image):
        raise ValueError(
            "X must be a sequence of images; wrap the PIL image in a list."
        )
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim == 1 and X.dtype.kind == "U":
            return [str(x) for x in X]
        if X.ndim == 1 and X.dtype.kind == "S":
            return [os.fsdecode(x) for x in X]
        if X.ndim not in (3, 4) or (X.ndim == 4 and X.shape[-1] not in (1, 3, 4)):
            raise ValueError(
                "an array X must have shape (n_samples, height, width, 3) or "
                f"(n_samples, height, width); got shape {X.shape}."
            )
        if X.dtype != np.uint8:
            raise ValueError(
                f"an image array X must have dtype uint8 (values 0-255); got {X.dtype}."
            )
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
    out = []
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            out.append(os.fspath(item))
        elif isinstance(item, Image.Image):
            out.append(item)
        elif (
            isinstance(item, np.ndarray)
            and item.dtype == np.uint8
            and item.ndim in (2, 3)
        ):
            out.append(item)
        else:
            raise ValueError(
                f"X[{i}] is a {type(item).__name__}; each image must be a path "
                "(str or pathlib.Path), a PIL image or a uint8 array (H, W[, 3])."
            )
    return out


def describe(source, index: int | None = None) -> str:
    """A short name for an image, used in error messages."""
    if isinstance(source, str):
        return repr(source)
    where = f"X[{index}]" if index is not None else "image"
    if isinstance(source, Image.Image):
        return f"{where} (PIL image {source.size[0]}x{source.size[1]} {source.mode})"
    return f"{where} (array {tuple(source.shape)})"


def fingerprint(source) -> str:
    """A content fingerprint of one image source.

    Files are hashed by their bytes, so a file that is rewritten, replaced
    or edited in place gets a new fingerprint even when its size and
    modification time do not change, and copies of one photo share their
    cached features.
    Arrays and PIL images are hashed by their pixels.
    """
    h = hashlib.blake2b(digest_size=16)
    if isinstance(source, str):
        data = read_bytes(source)
        h.update(b"file\0")
        h.update(data)
    elif isinstance(source, Image.Image):
        h.update(f"pil\0{source.mode}\0{source.size}\0".encode())
        h.update(source.tobytes())
        # a palette image's pixels are indices: its colours live in the palette
        h.update(repr((source.getpalette(), source.info.get("transparency"))).encode())
    else:
        arr = np.ascontiguousarray(source)
        h.update(f"array\0{arr.shape}\0".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageLoadError(f"image {path!r} does not exist.") from None
    except IsADirectoryError:
        raise ImageLoadError(
            f"image {path!r} is a directory, not an image file."
        ) from None
    except OSError as exc:
        raise ImageLoadError(f"image {path!r} could not be read: {exc}") from None
    if not data:
        raise ImageLoadError(f"image {path!r} is an empty (zero-byte) file.")
    return data


def load_image(
    source, draft_size: int | None = None, index: int | None = None, data=None
):
    """Decode ``source`` into an RGB PIL image.

    Parameters
    ----------
    source : str, PIL.Image.Image or ndarray
        One image.
    draft_size : int, optional
        The smallest side the caller needs. Large JPEGs are then decoded at a
        reduced scale (DCT scaling), which is several times faster.
    data : bytes, optional
        The file's bytes, when the caller has read them already.
    """
    if isinstance(source, str):
        if data is None:
            data = read_bytes(source)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
                _check_size(img, source)
                if draft_size and img.format == "JPEG":
                    w, h = img.size
                    scale = draft_size / min(w, h)
                    img.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
                img.load()
        except ImageLoadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageLoadError(
                f"image {source!r} is too large to decode safely: {exc}"
            ) from None
        except Image.UnidentifiedImageError:
            raise ImageLoadError(
                f"image {source!r} could not be decoded: not a recognised image "
                "format (is it really an image file?)."
            ) from None
        except Exception as exc:  # PIL raises many types for bad files
            raise ImageLoadError(
                f"image {source!r} could not be decoded ({type(exc).__name__}: {exc})."
            ) from None
        try:
            img = ImageOps.exif_transpose(img)
        except Exception:  # a broken EXIF block must not lose the picture
            pass
        return to_rgb(img, source)
    if isinstance(source, Image.Image):
        _check_size(source, describe(source, index))
        return to_rgb(source, describe(source, index))
    arr = np.asarray(source)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 4:
        return to_rgb(Image.fromarray(arr, "RGBA"), describe(source, index))
    if arr.ndim == 2:
        return Image.fromarray(arr, "L").convert("RGB")
    if arr.ndim == 3 and arr.shape[-1] == 3:
        return Image.fromarray(arr, "RGB")
    raise ValueError(f"{describe(source, index)} must have shape (H, W) or (H, W, 3).")


def _check_size(img, name) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageLoadError(f"image {name} has an empty size {w}x{h}.")
    if w * h > MAX_IMAGE_PIXELS:
        raise ImageLoadError(
            f"image {name} is {w}x{h} = {w * h:,} pixels, more than the "
            f"decompression-bomb limit of {MAX_IMAGE_PIXELS:,} pixels."
        )


def to_rgb(img: Image.Image, name) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited over white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return Image.fromarray(np.nan_to_num(arr).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    try:
        return img.convert("RGB")
    except Exception as exc:
        raise ImageLoadError(
            f"image {name} has mode {mode!r}, which could not be converted to "
            f"RGB: {exc}"
        ) from None
