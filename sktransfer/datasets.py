"""Loaders that turn photo collections on disk into ``(X, y)``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "load_image_folder"]

#: File name endings treated as images (case-insensitive).
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
)


def load_image_folder(root, *, split=None, extensions=IMAGE_EXTENSIONS):
    """Paths and labels of a ``root/class/image`` folder layout.

    Parameters
    ----------
    root : str or path-like
        The folder holding one sub-folder per class.
    split : str, optional
        For ``root/{train,valid}/class/image`` layouts: the split to read
        (``"train"``, ``"valid"``, ``"val"``, ...). Same as passing
        ``root / split``.
    extensions : tuple of str
        File name endings that count as images.

    Returns
    -------
    X : ndarray of str, shape (n_images,)
        Image paths, sorted by class then file name.
    y : ndarray of str, shape (n_images,)
        The class (sub-folder name) of each image.

    Examples
    --------
    >>> X, y = load_image_folder("data/dogscats", split="train")  # doctest: +SKIP
    """
    root = Path(root).expanduser()
    if split is not None:
        root = root / split
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist.")
    exts = tuple(e.lower() for e in extensions)
    paths, labels, empty = [], [], []
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"image folder {str(root)!r} has no class sub-folders.")
    for class_dir in class_dirs:
        files = sorted(
            p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in exts
        )
        if not files:
            empty.append(class_dir.name)
        paths.extend(str(p) for p in files)
        labels.extend([class_dir.name] * len(files))
    if empty:
        raise ValueError(
            f"class folders {empty} under {str(root)!r} hold no images "
            f"(looked for {', '.join(exts)})."
        )
    return np.asarray(paths), np.asarray(labels)
