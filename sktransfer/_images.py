"""Turning whatever the user passed as ``X`` into RGB images.

``X`` may be a 1-D array-like of paths (``str`` or ``pathlib.Path``, a pandas
Series too), a list of PIL images, a uint8 array of shape ``(n, H, W, 3)``
or ``(n, H, W)``, or a uint8 torch tensor of the same shapes. Every image
leaves this module as an RGB ``PIL.Image`` (:func:`load_image`) or as an
``(H, W, 3)`` uint8 array (:func:`load_pixels`, what the network's input is
made from).

A PIL image straight from ``Image.open`` (its pixels not loaded yet) is
read as the file it was opened from: its bytes, fingerprint, reduced-scale
JPEG decoding and EXIF orientation are exactly those of the file's path. A
PIL image whose pixels are loaded is taken as it is, turned as its EXIF
orientation says (when it carries one); arrays are taken as they are.

Colour JPEG files are decoded by libjpeg-turbo directly (``simplejpeg``,
where it is installed): the same library PIL uses, with the same settings,
so the very same pixels, without building a PIL image and copying them out
of it (0.47 ms instead of 0.65 ms for a 500 x 375 photo).

Limits, so that one hostile or broken file cannot hang or exhaust the
machine:

* only regular files are read (a FIFO would block forever, ``/dev/zero``
  never ends), and at most :data:`MAX_FILE_BYTES` of them;
* a file is read once: its fingerprint and its pixels come from the same
  bytes (:func:`read_image_file`), so a file replaced in between can never
  get the other content's features;
* decoding is refused past PIL's own pixel limit (``Image.MAX_IMAGE_PIXELS``,
  about 89 megapixels by default), past :data:`MAX_IMAGE_PIXELS`, and when
  the decoded pixels would take more than :data:`MAX_IMAGE_BYTES`: width x
  height x the bytes PIL keeps per pixel (1 for 1-bit, 8-bit gray and palette
  modes, 2 for 16-bit gray, 4 for every colour or alpha mode, RGB included).
  Converting to RGB makes a few working copies, so the peak stays within a
  few times that bound. JPEGs are measured after DCT scaling (``draft``).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import sys
import warnings
from collections.abc import Mapping, Set

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps

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

#: Largest file read as an image. An image within :data:`MAX_IMAGE_BYTES` is
#: stored in at most that many bytes uncompressed (twice that for 16-bit
#: channels PIL keeps in 8 bits); anything larger is not a plausible image.
MAX_FILE_BYTES = 2 * MAX_IMAGE_BYTES


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


def fingerprint(source) -> str:
    """A content fingerprint of one image source.

    Files are hashed by their bytes, so a file that is rewritten, replaced
    or edited in place gets a new fingerprint even when its size and
    modification time do not change, and copies of one photo share their
    cached features.
    An image from ``Image.open`` whose pixels are not loaded yet is hashed
    as its file (the same fingerprint as the file's path, and the same
    pixels). Arrays and loaded PIL images are hashed by their pixels, and a
    PIL image by its EXIF orientation too (the pixels it gives are turned).
    """
    if isinstance(source, Image.Image):
        source = as_encoded(source) or source
    if isinstance(source, str):
        return fingerprint_bytes(read_bytes(source))
    if isinstance(source, EncodedImage):
        return fingerprint_bytes(source.data)
    h = hashlib.blake2b(digest_size=16)
    if isinstance(source, Image.Image):
        _check_open(source, describe(source))
        _check_size(source.size, describe(source))  # before tobytes copies it
        h.update(f"pil\0{source.mode}\0{source.size}\0".encode())
        orientation = _orientation(source)
        if orientation != 1:  # unturned images keep the keys they had
            h.update(f"orientation\0{orientation}\0".encode())
        h.update(source.tobytes())
        # a palette image's pixels are indices: its colours live in the palette
        h.update(repr((source.getpalette(), source.info.get("transparency"))).encode())
    else:
        arr = np.asarray(source)
        if arr.ndim >= 2:
            _check_size((arr.shape[1], arr.shape[0]), describe(arr))  # before a copy
        arr = np.ascontiguousarray(arr)
        h.update(f"array\0{arr.shape}\0".encode())
        h.update(arr.data)  # the buffer itself: no second copy of the pixels
    return h.hexdigest()


def fingerprint_bytes(data: bytes) -> str:
    """The fingerprint of a file whose bytes are ``data``."""
    h = hashlib.blake2b(digest_size=16)
    h.update(b"file\0")
    h.update(data)
    return h.hexdigest()


def read_image_file(path: str) -> tuple[bytes, str]:
    """The bytes of an image file and their fingerprint, from one read."""
    data = read_bytes(path)
    return data, fingerprint_bytes(data)


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_image_file(path: str):
    """Open a regular file for reading (a binary file object), or raise an
    ``ImageLoadError`` naming it: missing, a folder, a FIFO, a device, or
    larger than :data:`MAX_FILE_BYTES`."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer (it has no
    # effect on regular files); the file type is checked on the open file,
    # so nothing can be swapped in between.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ImageLoadError(f"image {path!r} does not exist.") from None
    except IsADirectoryError:
        raise ImageLoadError(
            f"image {path!r} is a directory, not an image file."
        ) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ImageLoadError(f"image {path!r} could not be read: {exc}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ImageLoadError(f"image {path!r} is a directory, not an image file.")
        if not stat.S_ISREG(info.st_mode):
            kind = next((k for test, k in _FILE_KINDS if test(info.st_mode)), None)
            raise ImageLoadError(
                f"image {path!r} is {kind or 'not a regular file'}, not a regular "
                "file; only regular files are read as images."
            )
        if info.st_size > MAX_FILE_BYTES:
            raise ImageLoadError(_too_big(path, info.st_size))
    except BaseException:
        os.close(fd)
        raise
    # outside the try: once the file object owns the descriptor, only it
    # closes it (closing it here too, after a KeyboardInterrupt, could
    # close a descriptor another thread has opened since)
    return open(fd, "rb", closefd=True)


def read_bytes(path: str) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_FILE_BYTES`."""
    with open_image_file(path) as f:
        try:
            # ask for the size the file has (asking for the limit would
            # allocate 512 MiB per read), and for the rest if it grew since
            size = min(os.fstat(f.fileno()).st_size, MAX_FILE_BYTES)
            data = f.read(size + 1)
            if len(data) > size:
                data += f.read(MAX_FILE_BYTES + 1 - len(data))
        except OSError as exc:
            raise ImageLoadError(f"image {path!r} could not be read: {exc}") from None
    if len(data) > MAX_FILE_BYTES:  # it grew while being read
        raise ImageLoadError(_too_big(path, len(data)))
    if not data:
        raise ImageLoadError(f"image {path!r} is an empty (zero-byte) file.")
    return data


def _too_big(path: str, size: int) -> str:
    return (
        f"image {path!r} is {size:,} bytes, larger than any image this package "
        f"decodes ({MAX_FILE_BYTES:,} bytes); is it really an image? Downscale "
        "it or leave it out."
    )


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
        _check_open(source, name)
        _check_size(source.size, name)
        return to_rgb(_upright(source), name)
    arr = np.asarray(source)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim in (2, 3):
        h, w = arr.shape[:2]
        _check_size((w, h), name)
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


def _check_open(img: Image.Image, name: str) -> None:
    """Refuse an ``Image.open`` image closed before its pixels were loaded."""
    if isinstance(img, ImageFile.ImageFile) and img.tile and img.fp is None:
        raise ImageLoadError(
            f"image {name} was closed before its pixels were loaded (was it "
            "opened in a with-block that has ended?): pass its path, or call "
            "img.load() before closing it."
        )


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation of ``img`` (1, upright, when it has none or its
    EXIF block cannot be read)."""
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a broken EXIF block must not lose the picture
        return 1
    return value if value in _ORIENTED else 1


def _upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says (itself when upright)."""
    if _orientation(img) == 1:
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose the picture
        return img


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


def _opened(data: bytes, name: str, draft_size: int | None) -> Image.Image:
    """The image in ``data``, its header read and checked, JPEG DCT scaling
    set up; no pixel decoded yet. Call with DecompressionBombWarning as an
    error."""
    img = Image.open(io.BytesIO(data))
    _check_size(img.size, name)
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
            f"format (is it really an image file?){_debris_hint(name)}"
        )
    # PIL raises many types for bad files
    return ImageLoadError(
        f"image {name} could not be decoded ({type(exc).__name__}: {exc})."
    )


#: Files that operating systems leave beside photos (lower case).
_OS_FILES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini"})


def _debris_hint(name: str) -> str:
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


def _check_size(size: tuple, name: str) -> None:
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
