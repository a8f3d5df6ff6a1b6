"""Loaders that turn photo collections on disk into ``(X, y)``, a quick look
at the sizes of the images before choosing ``image_size``, and the augmented
copies of a photo that training sees.

The folder listing is in :mod:`sktransfer._folders`, the reading of labels
files in :mod:`sktransfer._csv`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._csv import check_inside, check_unique, image_paths, read_labelled_ids
from ._folders import (
    class_files,
    extensions_of,
    folder_files,
    not_a_folder,
    refuse_linked_classes,
    refuse_split_layout,
    some_files,
    sub_folders,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageSizeSummary",
    "augmented_copies",
    "image_size_summary",
    "load_image_csv",
    "load_image_folder",
    "load_image_paths",
]

#: File name endings treated as images (case-insensitive).
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)


def load_image_folder(root, *, split=None, extensions=IMAGE_EXTENSIONS):
    """Paths and labels of a ``root/class/image`` folder layout.

    Images may sit in sub-folders of their class folder. What operating
    systems and archivers leave beside photos is skipped: names starting
    with ``.`` (``.DS_Store``, macOS's ``._photo.jpg``), ``__MACOSX``,
    ``Thumbs.db``, ``desktop.ini``, ``@eaDir``. Symbolic links to folders
    inside a class folder are not followed (no loops); other files with an
    image ending are listed, so that one which cannot be read is named when
    it is used.

    Parameters
    ----------
    root : str or path-like
        The folder holding one sub-folder per class.
    split : str, optional
        For ``root/{train,valid}/class/image`` layouts: the split to read
        (``"train"``, ``"valid"``, ``"val"``, ...). Same as passing
        ``root / split``.
    extensions : str or tuple of str
        File name endings that count as images (case-insensitive; the dot
        may be left out).

    Returns
    -------
    X : ndarray of str, shape (n_images,)
        Image paths, sorted by class then file name.
    y : ndarray of str, shape (n_images,)
        The class (sub-folder name) of each image.

    Raises
    ------
    FileNotFoundError
        ``root`` (or its ``split``) is not a folder.
    ValueError
        ``root`` has no class folders, a class folder holds no image, or
        ``root`` holds splits (``train/``, ``val/``, ... each with class
        folders, or only splits with photos directly inside) rather than
        classes: every photo would be labelled with its split. Pass
        ``split=`` then (or use :func:`load_image_csv` for labels in a CSV).

    See Also
    --------
    load_image_csv : images in one folder, labels in a CSV file.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from sktransfer.datasets import load_image_folder
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ["train/cats/1.jpg", "train/cats/2.jpg", "train/dogs/1.jpg"]:
    ...     (root / name).parent.mkdir(parents=True, exist_ok=True)
    ...     Image.new("RGB", (40, 30)).save(root / name)
    >>> X, y = load_image_folder(root, split="train")
    >>> [Path(path).relative_to(root).as_posix() for path in X]
    ['train/cats/1.jpg', 'train/cats/2.jpg', 'train/dogs/1.jpg']
    >>> y.tolist()
    ['cats', 'cats', 'dogs']
    """
    root = Path(root).expanduser()
    if split is not None:
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {str(root)!r} does not exist.")
        root = root / split
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} {not_a_folder(root)}")
    exts = extensions_of(extensions)
    class_dirs = sub_folders(root)
    if not class_dirs:
        raise ValueError(
            f"image folder {str(root)!r} has no class sub-folders: images must "
            "sit in root/<class>/ (one folder per class)."
        )
    refuse_linked_classes(root, class_dirs)
    refuse_split_layout(root, class_dirs, exts)
    found = {d.name: class_files(d, exts) for d in class_dirs}
    paths, labels, empty = [], [], []
    for class_dir in class_dirs:
        files, others = found[class_dir.name]
        if not files:
            seen = f": it holds {some_files(others)}" if others else ""
            empty.append(f"{class_dir.name!r}{seen}")
        paths.extend(str(p) for p in files)
        labels.extend([class_dir.name] * len(files))
    if empty:
        raise ValueError(
            f"{len(empty)} class folder(s) under {str(root)!r} hold no images "
            f"(looked for {', '.join(exts)}): {'; '.join(empty)}. Add images, "
            "remove the folder, or pass extensions= for other file endings."
        )
    return np.asarray(paths), np.asarray(labels)


def load_image_paths(root, *, recursive=True, extensions=IMAGE_EXTENSIONS):
    """Paths of the photos in a folder, without labels: what to predict.

    OS and archiver debris is skipped as by :func:`load_image_folder`
    (names starting with ``.``, ``__MACOSX``, ``Thumbs.db``, ...); files
    with other endings are left out. Symbolic links to folders are not
    followed.

    Parameters
    ----------
    root : str or path-like
        The folder.
    recursive : bool, default=True
        Also list the photos in sub-folders (at any depth).
    extensions : str or tuple of str
        File name endings that count as images (case-insensitive; the dot
        may be left out).

    Returns
    -------
    X : ndarray of str, shape (n_images,)
        Image paths, sorted.

    Raises
    ------
    FileNotFoundError
        ``root`` is not a folder.
    ValueError
        ``root`` (with its sub-folders when ``recursive``) holds no image.

    See Also
    --------
    load_image_folder : paths and labels of a ``root/class/image`` layout.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from sktransfer.datasets import load_image_paths
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ["b.jpg", "a.png", "more/c.jpg", ".DS_Store", "notes.txt"]:
    ...     (root / name).parent.mkdir(parents=True, exist_ok=True)
    ...     Image.new("RGB", (8, 8)).save(root / name, format="PNG")
    >>> [Path(path).relative_to(root).as_posix() for path in load_image_paths(root)]
    ['a.png', 'b.jpg', 'more/c.jpg']
    >>> len(load_image_paths(root, recursive=False))
    2
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} {not_a_folder(root)}")
    exts = extensions_of(extensions)
    if recursive:
        files, others = class_files(root, exts, "image folder")
    else:
        files, others = folder_files(root, exts)
    if not files:
        seen = f"; it holds {some_files(others)}" if others else ""
        raise ValueError(
            f"image folder {str(root)!r} holds no images (looked for "
            f"{', '.join(exts)}{'' if recursive else ', not in sub-folders'})"
            f"{seen}. Pass extensions= for other file endings."
        )
    return np.asarray([str(p) for p in files])


# -- labels in a CSV file -------------------------------------------------------


def load_image_csv(
    csv_path,
    image_dir,
    *,
    id_column=None,
    label_column=None,
    suffix=None,
    label_sep=None,
    allow_outside=False,
):
    """Paths and labels from a Kaggle-style ``labels.csv`` and a folder of images.

    Each row names an image (its id, with or without the file extension) and
    its label(s). The file must have a header row; ``.tsv`` files are read
    tab-separated, all others comma-separated.

    Parameters
    ----------
    csv_path : str or path-like
        The CSV file.
    image_dir : str or path-like
        The folder the ids are relative to (ids may hold sub-folders).
    id_column : str or int, default=None
        The column of image ids, by header name or position; None is the
        first column.
    label_column : str or int, default=None
        The column of labels, by header name or position; None is the second
        column.
    suffix : str, default=None
        Appended to every id to make the file name (``".jpg"``, or
        ``"_rgb.png"``). None: an id that names a file is used as it is, and
        an id without an image extension matches the one image file named
        ``id + extension`` (any of :data:`IMAGE_EXTENSIONS`).
    label_sep : str, default=None
        For multi-label data: the separator between the labels of one image
        (``" "`` splits on any whitespace). Labels are stripped, empty ones
        and repeats dropped.
    allow_outside : bool, default=False
        Ids are paths relative to ``image_dir``. An id that leaves it
        (``/etc/passwd``, ``../../secret.png``) is refused unless this is
        True, so that a CSV from elsewhere cannot make a model read (and a
        cache fingerprint) files outside the folder. The check is on the
        names: symbolic links inside ``image_dir`` are followed, since whoever
        can place them controls the folder.

    Returns
    -------
    X : ndarray of str, shape (n_images,)
        Image paths, in the order of the rows.
    y : ndarray of str, shape (n_images,), or list of lists of str
        The label of each image, or with ``label_sep`` the list of its
        labels.

    Raises
    ------
    FileNotFoundError
        The CSV file or the image folder does not exist, or images named in
        the CSV are missing (all of them are counted in one error, the first
        50 named; the full list is the error's ``missing`` attribute).
    ValueError
        A column is not in the file, an id appears twice (or two ids name
        the same file), a row has an empty id or label, an id matches
        several files, an id names a file outside ``image_dir`` (unless
        ``allow_outside``), or the file has no rows.

    See Also
    --------
    load_image_folder : images sorted into one sub-folder per class.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from sktransfer.datasets import load_image_csv
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "train").mkdir()
    >>> for image_id in ["a1", "b2"]:
    ...     Image.new("RGB", (40, 30)).save(root / "train" / f"{image_id}.jpg")
    >>> _ = (root / "labels.csv").write_text("id,breed\\na1,beagle\\nb2,pug\\n")
    >>> X, y = load_image_csv(root / "labels.csv", root / "train", suffix=".jpg")
    >>> [Path(path).name for path in X], y.tolist()
    (['a1.jpg', 'b2.jpg'], ['beagle', 'pug'])

    Multi-label data (the planet competition's ``tags`` column):

    >>> _ = (root / "tags.csv").write_text(
    ...     "image_name,tags\\na1,clear primary\\nb2,haze primary water\\n"
    ... )
    >>> X, tags = load_image_csv(
    ...     root / "tags.csv", root / "train", label_column="tags", label_sep=" "
    ... )
    >>> tags
    [['clear', 'primary'], ['haze', 'primary', 'water']]
    """
    csv_path = Path(csv_path).expanduser()
    image_dir = Path(image_dir).expanduser()
    name = repr(str(csv_path))
    if not csv_path.is_file():
        what = "is not a regular file" if csv_path.exists() else "does not exist"
        raise FileNotFoundError(f"CSV file {name} {what}.")
    if not image_dir.is_dir():
        what = "is not a folder" if image_dir.exists() else "does not exist"
        raise FileNotFoundError(f"image folder {str(image_dir)!r} {what}.")
    ids, labels, id_header = read_labelled_ids(
        csv_path, name, id_column, label_column, label_sep
    )
    check_unique(ids, f"ids in column {id_header!r} of {name}")
    if not allow_outside:
        check_inside(ids, image_dir, suffix, name)
    paths = image_paths(ids, image_dir, suffix, name, id_header, IMAGE_EXTENSIONS)
    check_unique(
        [(line, p) for (line, _), p in zip(ids, paths, strict=True)],
        f"image files named in {name}",
    )
    y = labels if label_sep is not None else np.asarray(labels)
    return np.asarray(paths), y


# -- image sizes ----------------------------------------------------------------


@dataclass(frozen=True)
class ImageSizeSummary:
    """Sizes, modes and formats of a collection of images.

    Sizes are as the images are used: width and height are swapped for JPEG
    and TIFF files whose EXIF orientation turns them by 90 degrees.

    Attributes
    ----------
    n_images : int
        Images looked at.
    n_readable : int
        Images whose header could be read.
    width, height : dict
        ``min``, ``q05``, ``q25``, ``median``, ``q75``, ``q95`` and ``max``
        in pixels (None when no image could be read).
    modes : dict
        Number of images per PIL mode (``"RGB"``, ``"L"``, ``"P"``, ...),
        most frequent first.
    formats : dict
        Number of images per file format (``"JPEG"``, ``"PNG"``, ...), most
        frequent first; ``"array"`` and ``"PIL"`` for in-memory images.
    unreadable : list of (str, str)
        Each image that could not be opened, with the reason.
    widths, heights : ndarray of int
        The size of each readable image, in input order.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.datasets import image_size_summary
    >>> photos = [np.zeros((48, 64, 3), np.uint8), np.zeros((30, 40, 3), np.uint8)]
    >>> summary = image_size_summary(photos)
    >>> summary.n_readable, summary.width["max"], summary.height["min"]
    (2, 64, 30)
    >>> summary.formats
    {'array': 2}
    """

    n_images: int
    n_readable: int
    width: dict
    height: dict
    modes: dict
    formats: dict
    unreadable: list
    widths: np.ndarray = field(repr=False)
    heights: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        """Everything but the per-image arrays, as plain Python values."""
        return {
            "n_images": self.n_images,
            "n_readable": self.n_readable,
            "width": dict(self.width),
            "height": dict(self.height),
            "modes": dict(self.modes),
            "formats": dict(self.formats),
            "unreadable": list(self.unreadable),
        }

    def __str__(self) -> str:
        lines = [f"{self.n_readable} of {self.n_images} images readable"]
        if self.n_readable:
            keys = list(self.width)
            lines.append("        " + "".join(f"{k:>8}" for k in keys))
            for axis, stats in (("width", self.width), ("height", self.height)):
                lines.append(f"{axis:<8}" + "".join(f"{stats[k]:>8g}" for k in keys))
        lines.append("modes:   " + _counts(self.modes))
        lines.append("formats: " + _counts(self.formats))
        for image, reason in self.unreadable[:10]:
            lines.append(f"unreadable: {image}: {reason}")
        if len(self.unreadable) > 10:
            lines.append(f"... and {len(self.unreadable) - 10} more unreadable")
        return "\n".join(lines)


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "-"


def image_size_summary(X, *, verbose=0) -> ImageSizeSummary:
    """Sizes, modes and formats of images, from their headers only.

    Opens each file without decoding its pixels, so it takes seconds for
    100,000 photos. Files that cannot be opened are listed, never raised:
    decoding errors further into a file (a truncated JPEG) are not seen
    here.

    Parameters
    ----------
    X : sequence of images
        Paths (or PIL images, or uint8 arrays), as passed to ``fit``.
    verbose : int, default=0
        Show a progress bar.

    Returns
    -------
    ImageSizeSummary

    See Also
    --------
    sktransfer.plotting.plot_image_sizes : width against height, with the
        network input marked.

    Examples
    --------
    >>> import numpy as np
    >>> summary = image_size_summary(np.zeros((3, 20, 30, 3), dtype=np.uint8))
    >>> summary.width["median"], summary.height["max"], summary.formats
    (30.0, 20, {'array': 3})
    """
    from PIL import UnidentifiedImageError

    from ._decoding import MAX_IMAGE_PIXELS, debris_hint, read_header
    from ._images import as_image_list
    from .exceptions import ImageLoadError

    sources = as_image_list(X)
    widths, heights, unreadable = [], [], []
    modes: Counter = Counter()
    formats: Counter = Counter()
    items = sources
    if verbose:
        from tqdm.auto import tqdm

        items = tqdm(sources, desc="image sizes", unit="img", leave=False)
    for i, source in enumerate(items):
        try:
            width, height, mode, fmt = read_header(source)
        except ImageLoadError as exc:  # not a regular file: says so itself
            unreadable.append((_name(source, i), str(exc)))
            continue
        except Exception as exc:  # PIL raises many types for bad files
            name = _name(source, i)
            if isinstance(exc, UnidentifiedImageError):  # its text: a file handle
                reason = "UnidentifiedImageError: not a recognised image format."
                reason += debris_hint(name)
            else:
                reason = f"{type(exc).__name__}: {exc}{debris_hint(name)}"
            unreadable.append((name, reason))
            continue
        if width * height > MAX_IMAGE_PIXELS:
            unreadable.append(
                (
                    _name(source, i),
                    f"{width}x{height} is more than {MAX_IMAGE_PIXELS:,} pixels",
                )
            )
            continue
        widths.append(width)
        heights.append(height)
        modes[mode] += 1
        formats[fmt] += 1
    widths_arr = np.asarray(widths, dtype=np.int64)
    heights_arr = np.asarray(heights, dtype=np.int64)
    return ImageSizeSummary(
        n_images=len(sources),
        n_readable=len(widths),
        width=_size_stats(widths_arr),
        height=_size_stats(heights_arr),
        modes=dict(modes.most_common()),
        formats=dict(formats.most_common()),
        unreadable=unreadable,
        widths=widths_arr,
        heights=heights_arr,
    )


def _name(source, index: int) -> str:
    """A path as it is, any other image as ``X[i]``."""
    return source if isinstance(source, str) else f"X[{index}]"


def _size_stats(values: np.ndarray) -> dict:
    keys = ("min", "q05", "q25", "median", "q75", "q95", "max")
    if values.size == 0:
        return dict.fromkeys(keys)
    q05, q25, median, q75, q95 = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "min": int(values.min()),
        "q05": float(q05),
        "q25": float(q25),
        "median": float(median),
        "q75": float(q75),
        "q95": float(q95),
        "max": int(values.max()),
    }


def augmented_copies(
    image,
    n=8,
    *,
    augment="side_on",
    image_size=224,
    max_zoom=1.1,
    random_state=0,
    resize_mode="crop",
):
    """``n`` randomly augmented copies of one image, as training sees them.

    Parameters
    ----------
    image : str, PIL image or uint8 array
        One image (a path is decoded like any training image).
    n : int, default=8
        Number of copies.
    augment : {"side_on", "top_down", "trivial"}, callable or None, default="side_on"
        The augmentation preset, or your own function (see
        ``PretrainedImageClassifier``).
    image_size : int, default=224
        Side of each square copy.
    max_zoom : float, default=1.1
        Largest random zoom.
    random_state : int, default=0
        Seed of the draws: the same seed gives the same copies.
    resize_mode : {"crop", "squish", "pad"}, default="crop"
        How the picture becomes a square (see ``preprocessing``).

    Returns
    -------
    copies : ndarray of shape (n, image_size, image_size, 3), uint8

    See Also
    --------
    sktransfer.plotting.plot_augmentations : the original next to its copies.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.datasets import augmented_copies
    >>> photo = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    >>> copies = augmented_copies(photo, 4, image_size=32, random_state=0)
    >>> copies.shape, copies.dtype
    ((4, 32, 32, 3), dtype('uint8'))
    >>> again = augmented_copies(photo, 4, image_size=32, random_state=0)
    >>> bool((again == copies).all())  # the same seed, the same copies
    True
    """
    from ._decoding import load_pixels
    from ._transforms import Preprocessing, random_augment

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}.")
    pre = Preprocessing(resize_mode=resize_mode).with_image_size(int(image_size))
    img = load_pixels(image, draft_size=pre.resize_size)
    rng = np.random.default_rng(random_state)
    return np.stack(
        [random_augment(img, pre, rng, augment, max_zoom) for _ in range(n)]
    )
