"""Reading image files, safely: only regular files, and at most
:data:`MAX_FILE_BYTES` of them.

A FIFO would block a reader forever and ``/dev/zero`` never ends, so the
file type is checked on the open file (nothing can be swapped in between),
and a file that grows while it is read is cut off at the limit and refused.
Every problem is an :class:`~sktransfer.exceptions.ImageLoadError` that names
the file.
"""

from __future__ import annotations

import os
import stat

from .exceptions import ImageLoadError

#: Largest file read as an image. An image within
#: :data:`~sktransfer._decoding.MAX_IMAGE_BYTES` is stored in at most that
#: many bytes uncompressed (twice that for 16-bit channels PIL keeps in 8
#: bits); anything larger is not a plausible image.
MAX_FILE_BYTES = 2 * 256 * 1024**2


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
