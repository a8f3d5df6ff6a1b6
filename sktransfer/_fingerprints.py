"""Content fingerprints of images: the image half of a feature-cache key.

Files are hashed by their bytes, read once (:func:`read_image_file`), so a
file replaced between hashing and decoding can never get the other
content's features. Arrays and loaded PIL images are hashed by their pixels,
with what changes them (the palette's colours, the EXIF orientation).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from PIL import Image

from ._decoding import check_open, check_size, exif_orientation, load_pixels
from ._image_files import read_bytes
from ._images import EncodedImage, as_encoded, describe


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
        check_open(source, describe(source))
        check_size(source.size, describe(source))  # before tobytes copies it
        h.update(f"pil\0{source.mode}\0{source.size}\0".encode())
        orientation = exif_orientation(source)
        if orientation != 1:  # unturned images keep the keys they had
            h.update(f"orientation\0{orientation}\0".encode())
        h.update(source.tobytes())
        # a palette image's pixels are indices: its colours live in the palette
        h.update(repr((source.getpalette(), source.info.get("transparency"))).encode())
    else:
        arr = np.asarray(source)
        if arr.ndim >= 2:
            check_size((arr.shape[1], arr.shape[0]), describe(arr))  # before a copy
        arr = np.ascontiguousarray(arr)
        h.update(f"array\0{arr.shape}\0".encode())
        h.update(arr.data)  # the buffer itself: no second copy of the pixels
    return h.hexdigest()


def update_with_state(digest, state: dict) -> None:
    """Feed a state dict's names and raw bytes (any dtype) to ``digest``."""
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(
            tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()
        )


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


def decoded_with_fingerprint(source, draft_size: int, index: int):
    """Decode ``source`` and fingerprint exactly what was decoded.

    A file is read once: its pixels and its fingerprint come from the same
    bytes. An array or PIL image is copied first, so that a caller changing
    it in place meanwhile cannot split the two either.
    """
    if isinstance(source, str):
        data, now = read_image_file(source)
        return load_pixels(source, draft_size=draft_size, index=index, data=data), now
    source = source.copy()  # an array or a PIL image
    now = fingerprint(source)
    return load_pixels(source, draft_size=draft_size, index=index), now
