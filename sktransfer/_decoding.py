"""Decoding image sources into RGB pixels.

Every image leaves this module as an RGB ``PIL.Image`` (:func:`load_image`)
or as an ``(H, W, 3)`` uint8 array (:func:`load_pixels`, what the network's
input is made from). A PIL image whose pixels are loaded is turned as its
EXIF orientation says (when it carries one), as files are.

Colour JPEG files are decoded by libjpeg-turbo directly (``simplejpeg``,
where it is installed): the same library PIL uses, with the same settings,
so the very same pixels, without building a PIL image and copying them out
of it (0.47 ms instead of 0.65 ms for a 500 x 375 photo).

Limits, so that one hostile or broken file cannot hang or exhaust the
machine:

* only regular files are read, and at most
  :data:`~sktransfer._image_files.MAX_FILE_BYTES` of them
  (:mod:`._image_files`);
* a file is read once: its fingerprint and its pixels come from the same
  bytes (:func:`~sktransfer._fingerprints.read_image_file`), so a file
  replaced in between can never get the other content's features;
* decoding is refused past PIL's own pixel limit (``Image.MAX_IMAGE_PIXELS``,
  about 89 megapixels by default), past :data:`MAX_IMAGE_PIXELS`, and when
  the decoded pixels would take more than :data:`MAX_IMAGE_BYTES`: width x
  height x the bytes PIL keeps per pixel (1 for 1-bit, 8-bit gray and palette
  modes, 2 for 16-bit gray, 4 for every colour or alpha mode, RGB included).
  Converting to RGB makes a few working copies, so the peak stays within a
  few times that bound. JPEGs are measured after DCT scaling (``draft``).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps

from ._image_files import open_image_file, read_bytes
from ._images import EncodedImage, as_encoded, describe
from .exceptions import ImageLoadError

try:
    import simplejpeg
except ImportError:  # PIL decodes every JPEG
    simplejpeg = None

#: Images with more pixels than this are refused (decompression-bomb guard):
#: 16,000 x 16,000 is far beyond any photo a classifier needs.
MAX_IMAGE_PIXELS = 256_000_000


#: Most bytes the decoded pixels of one file may take (see the module notes):
#: a 64-megapixel colour image, a 128-megapixel 16-bit gray one.
MAX_IMAGE_BYTES = 256 * 1024**2


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
        reduced scale (DCT scaling), which is several times faster. Applies
        to files, and to PIL images from ``Image.open`` not yet loaded.
    index : int, optional
        The position of the image in ``X``, for error messages.
    data : bytes, optional
        The file's bytes, when the caller has read them already (the pixels
        then come from exactly those bytes).
    """
    if isinstance(source, Image.Image):
        source = as_encoded(source) or source
    if isinstance(source, str):
        if data is None:
            data = read_bytes(source)
        return _load_file(data, repr(source), draft_size)
    name = describe(source, index)
    if isinstance(source, EncodedImage):
        return _load_file(source.data, name, draft_size)
    if isinstance(source, Image.Image):
        check_open(source, name)
        check_size(source.size, name)
        return to_rgb(_upright(source), name)
    arr = np.asarray(source)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim in (2, 3):
        h, w = arr.shape[:2]
        check_size((w, h), name)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        return to_rgb(Image.fromarray(arr, "RGBA"), name)
    if arr.ndim == 2:
        return Image.fromarray(arr, "L").convert("RGB")
    if arr.ndim == 3 and arr.shape[-1] == 3:
        return Image.fromarray(arr, "RGB")
    raise ValueError(f"{name} must have shape (H, W) or (H, W, 3).")


def _load_file(data: bytes, name: str, draft_size: int | None) -> Image.Image:
    """The RGB picture in a file's bytes; ``name`` (the file's name, quoted)
    is what error messages call it."""
    try:
        img = _decode(data, name, draft_size)
    except ValueError as exc:
        if not _text_chunk_limit(exc):
            raise _decode_error(exc, name) from None
        # Oversized PNG text chunks are metadata, never pixels: decode
        # the picture without them rather than call it broken.
        try:
            img = _decode(_without_png_text(data), name, draft_size)
        except Exception as retry_exc:
            raise _decode_error(retry_exc, name) from None
    except Exception as exc:
        raise _decode_error(exc, name) from None
    return to_rgb(_upright(img), name)


def check_open(img: Image.Image, name: str) -> None:
    """Refuse an ``Image.open`` image closed before its pixels were loaded."""
    if isinstance(img, ImageFile.ImageFile) and img.tile and img.fp is None:
        raise ImageLoadError(
            f"image {name} was closed before its pixels were loaded (was it "
            "opened in a with-block that has ended?): pass its path, or call "
            "img.load() before closing it."
        )


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation of ``img`` (1, upright, when it has none or its
    EXIF block cannot be read)."""
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a broken EXIF block must not lose the picture
        return 1
    return value if value in _ORIENTED else 1


def _upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says (itself when upright)."""
    if exif_orientation(img) == 1:
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose the picture
        return img


def _opened(data: bytes, name: str, draft_size: int | None) -> Image.Image:
    """The image in ``data``, its header read and checked, JPEG DCT scaling
    set up; no pixel decoded yet. Call with DecompressionBombWarning as an
    error."""
    img = Image.open(io.BytesIO(data))
    check_size(img.size, name)
    if draft_size and img.format == "JPEG":
        w, h = img.size
        scale = draft_size / min(w, h)
        img.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
    _check_memory(img, name)
    return img


def _decode(data: bytes, name: str, draft_size: int | None) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = _opened(data, name, draft_size)
        img.load()
    return img


def load_pixels(
    source, draft_size: int | None = None, index: int | None = None, data=None
) -> np.ndarray:
    """:func:`load_image` as an ``(H, W, 3)`` uint8 array (the same pixels).

    Colour JPEG files are decoded straight into the array by libjpeg-turbo
    (see the module notes); anything else, and any JPEG that path declines,
    goes through :func:`load_image`, which also names what is wrong with a
    bad file.
    """
    if isinstance(source, Image.Image):
        source = as_encoded(source) or source
    if simplejpeg is not None and isinstance(source, (str, EncodedImage)):
        if isinstance(source, EncodedImage):
            data, name = source.data, describe(source, index)
        else:
            data = read_bytes(source) if data is None else data
            name = repr(source)
        pixels = _jpeg_pixels(data, name, draft_size)
        if pixels is not None:
            return pixels
    return np.asarray(load_image(source, draft_size, index, data))


#: EXIF orientation -> the array operation ``ImageOps.exif_transpose`` does.
_ORIENTED = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _jpeg_pixels(data: bytes, name: str, draft_size: int | None):
    """The pixels of a colour JPEG decoded by libjpeg-turbo with the scaling
    PIL would use, EXIF orientation applied; None for anything else or
    anything it cannot decode cleanly (PIL then decodes it or says why)."""
    if not data.startswith(b"\xff\xd8"):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = _opened(data, name, draft_size)
        if img.format != "JPEG" or img.mode != "RGB":
            return None  # gray, CMYK: PIL's conversions
        width, height = img.size
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
        pixels = simplejpeg.decode_jpeg(
            data, "RGB", min_height=height, min_width=width, strict=True
        )
    except Exception:
        return None
    if pixels.shape != (height, width, 3):
        return None
    turn = _ORIENTED.get(orientation)
    return pixels if turn is None else np.ascontiguousarray(turn(pixels))


def _decode_error(exc: BaseException, name: str) -> ImageLoadError:
    """``exc`` as an error naming the image (``name``: its name, quoted)."""
    if isinstance(exc, ImageLoadError):
        return exc
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageLoadError(f"image {name} is too large to decode safely: {exc}")
    if isinstance(exc, Image.UnidentifiedImageError):
        return ImageLoadError(
            f"image {name} could not be decoded: not a recognised image "
            f"format (is it really an image file?){debris_hint(name)}"
        )
    # PIL raises many types for bad files
    return ImageLoadError(
        f"image {name} could not be decoded ({type(exc).__name__}: {exc})."
    )


#: Files that operating systems leave beside photos (lower case).
_OS_FILES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini"})


def debris_hint(name: str) -> str:
    """A hint for the files operating systems leave beside photos."""
    base = os.path.basename(name.strip("'\""))
    if base.startswith("._") or "__MACOSX" in name:
        return (
            " Its name says it is macOS metadata (AppleDouble '._' file or "
            "'__MACOSX' folder), not a photo: leave it out."
        )
    if base.lower() in _OS_FILES:
        return (
            f" {base!r} is a folder-settings file of the operating system, not "
            "a photo: leave it out."
        )
    return ""


def _text_chunk_limit(exc: BaseException) -> bool:
    """True for PIL's refusal of large PNG text chunks (MAX_TEXT_CHUNK,
    MAX_TEXT_MEMORY), which guards memory, not the pixels."""
    return "MAX_TEXT_CHUNK" in str(exc) or "MAX_TEXT_MEMORY" in str(exc)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


_PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def _without_png_text(data: bytes) -> bytes:
    """A PNG's bytes without its text chunks (nothing is decompressed).

    Chunks are copied whole, CRCs included; a malformed chunk table is left
    for the decoder to report.
    """
    if not data.startswith(_PNG_SIGNATURE):
        return data
    out = [_PNG_SIGNATURE]
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            out.append(data[pos:])
            break
        if kind not in _PNG_TEXT_CHUNKS:
            out.append(data[pos:end])
        pos = end
    return b"".join(out)


#: Bytes PIL keeps per pixel: 1 for these modes, 2 for 16-bit gray, else 4.
_ONE_BYTE_MODES = frozenset({"1", "L", "P"})


def _bytes_per_pixel(mode: str) -> int:
    if mode in _ONE_BYTE_MODES:
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _check_memory(img: Image.Image, name) -> None:
    w, h = img.size
    need = w * h * _bytes_per_pixel(img.mode)
    if need > MAX_IMAGE_BYTES:
        raise ImageLoadError(
            f"image {name} is {w}x{h} pixels in mode {img.mode}: decoding it "
            f"takes {need / 1e6:,.0f} MB, more than the limit of "
            f"{MAX_IMAGE_BYTES / 1e6:,.0f} MB (MAX_IMAGE_BYTES); downscale the "
            "file (the network sees a few hundred pixels)."
        )


def check_size(size: tuple, name: str) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageLoadError(f"image {name} is empty: {w}x{h} pixels (width x height).")
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
        finite = arr[np.isfinite(arr)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0, 0)
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


#: EXIF orientations that turn the picture by 90 or 270 degrees.
_TRANSPOSING = {5, 6, 7, 8}


def read_header(source) -> tuple[int, int, str, str]:
    """``(width, height, mode, format)`` of an image source as it is used
    (turned by its EXIF orientation), from the file's header: no pixel is
    decoded."""
    if isinstance(source, Image.Image):
        width, height = source.size
        if exif_orientation(source) in _TRANSPOSING:  # turned when used
            width, height = height, width
        return width, height, source.mode, source.format or "PIL"
    if isinstance(source, np.ndarray):
        height, width = source.shape[:2]
        channels = source.shape[2] if source.ndim == 3 else 1
        mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels, f"{channels} channels")
        return int(width), int(height), mode, "array"
    if isinstance(source, EncodedImage):  # from Image.open: read as its file
        opened = contextlib.nullcontext(io.BytesIO(source.data))
    else:
        opened = open_image_file(source)
    with warnings.catch_warnings(), opened as f:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(f) as img:  # reads the header, not the pixels
            width, height = img.size
            if img.format in ("JPEG", "MPO", "TIFF"):
                # EXIF of these sits before the pixels: no decoding needed
                if img.getexif().get(0x0112, 1) in _TRANSPOSING:
                    width, height = height, width
            return width, height, img.mode, img.format or "unknown"
