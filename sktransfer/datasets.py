"""Loaders that turn photo collections on disk into ``(X, y)``, a quick look
at the sizes of the images before choosing ``image_size``, and the augmented
copies of a photo that training sees."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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

#: Most items named in one error message; the rest are counted.
_LIST_AT_MOST = 50


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
        raise FileNotFoundError(f"image folder {str(root)!r} {_not_a_folder(root)}")
    exts = _extensions(extensions)
    class_dirs = _sub_folders(root)
    if not class_dirs:
        raise ValueError(
            f"image folder {str(root)!r} has no class sub-folders: images must "
            "sit in root/<class>/ (one folder per class)."
        )
    _refuse_linked_classes(root, class_dirs)
    _refuse_split_layout(root, class_dirs, exts)
    found = {d.name: _class_files(d, exts) for d in class_dirs}
    paths, labels, empty = [], [], []
    for class_dir in class_dirs:
        files, others = found[class_dir.name]
        if not files:
            seen = f": it holds {_some_files(others)}" if others else ""
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
        raise FileNotFoundError(f"image folder {str(root)!r} {_not_a_folder(root)}")
    exts = _extensions(extensions)
    if recursive:
        files, others = _class_files(root, exts, "image folder")
    else:
        files, others = _folder_files(root, exts)
    if not files:
        seen = f"; it holds {_some_files(others)}" if others else ""
        raise ValueError(
            f"image folder {str(root)!r} holds no images (looked for "
            f"{', '.join(exts)}{'' if recursive else ', not in sub-folders'})"
            f"{seen}. Pass extensions= for other file endings."
        )
    return np.asarray([str(p) for p in files])


def _folder_files(folder: Path, exts: tuple) -> tuple[list, list]:
    """Like :func:`_class_files`, for the files directly in ``folder``."""
    files, others = [], []
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise ValueError(
            f"image folder {str(folder)!r} could not be read: {exc}"
        ) from None
    for entry in entries:
        if _is_debris(entry.name) or entry.is_dir():
            continue
        if os.path.splitext(entry.name)[1].lower() in exts:
            files.append(Path(folder, entry.name))
        elif len(others) < 3:
            others.append(entry.name)
    return sorted(files), others


#: Names operating systems and archivers leave beside photos (lower case);
#: every name starting with "." is skipped too.
_DEBRIS = frozenset(
    {"__macosx", "thumbs.db", "ehthumbs.db", "desktop.ini", "@eadir", "$recycle.bin"}
)

#: Folder names of a split layout (root/train/class/image), lower case.
_SPLITS = frozenset(
    {"train", "training", "val", "valid", "validation", "test", "testing"}
)


def _is_debris(name: str) -> bool:
    return name.startswith(".") or name.lower() in _DEBRIS


def _not_a_folder(path: Path) -> str:
    if path.exists():
        return "is not a folder."
    parent = path.parent
    if parent.is_dir():
        there = [d.name for d in _sub_folders(parent)]
        if there:
            return f"does not exist; {str(parent)!r} holds {', '.join(there[:20])}."
    return "does not exist."


def _extensions(extensions) -> tuple:
    if isinstance(extensions, str):
        extensions = (extensions,)
    try:
        exts = tuple(
            e.lower() if e.startswith(".") else "." + e.lower() for e in extensions
        )
    except (TypeError, AttributeError):
        raise ValueError(
            "extensions must be a tuple of file endings such as ('.jpg', '.png'); "
            f"got {extensions!r}."
        ) from None
    if not exts:
        raise ValueError("extensions is empty: no file would count as an image.")
    return exts


def _sub_folders(folder: Path) -> list:
    """The folders in ``folder`` (symbolic links to folders included),
    sorted, without OS debris."""
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise ValueError(
            f"image folder {str(folder)!r} could not be read: {exc}"
        ) from None
    return sorted(p for p in entries if not _is_debris(p.name) and p.is_dir())


def _class_files(
    class_dir: Path, exts: tuple, what: str = "class folder"
) -> tuple[list, list]:
    """The image files under ``class_dir`` (sorted), and the names of some
    other files there; OS debris is skipped, linked folders not followed."""
    files, others = [], []

    def unreadable(exc):
        raise ValueError(
            f"{what} {str(class_dir)!r} could not be read: {exc}"
        ) from None

    for folder, dirs, names in os.walk(class_dir, onerror=unreadable):
        dirs[:] = [d for d in dirs if not _is_debris(d)]
        for name in names:
            if _is_debris(name):
                continue
            if os.path.splitext(name)[1].lower() in exts:
                files.append(Path(folder, name))
            elif len(others) < 3:
                others.append(name)
    return sorted(files), others


def _some_files(names: list) -> str:
    shown = ", ".join(repr(n) for n in names)
    return f"other files only, such as {shown}"


def _refuse_linked_classes(root: Path, class_dirs: list) -> None:
    """Refuse class folders that are links to root (or above it) or to
    another class folder: their photos would be read twice, under two
    labels."""
    top = root.resolve()
    seen: dict[Path, str] = {}
    for folder in class_dirs:
        target = folder.resolve()
        if target == top or target in top.parents:
            raise ValueError(
                f"class folder {str(folder)!r} is a link to {str(target)!r}, which "
                f"holds the image folder {str(root)!r} itself: its photos would be "
                "read again under another label. Remove the link."
            )
        if target in seen:
            raise ValueError(
                f"class folders {seen[target]!r} and {folder.name!r} under "
                f"{str(root)!r} are the same folder ({str(target)!r}, through a "
                "link): its photos would get two labels. Remove one of them."
            )
        seen[target] = folder.name


def _refuse_split_layout(root: Path, class_dirs: list, exts: tuple) -> None:
    """Refuse a root of splits: the labels would be split names.

    Splits with class folders (``root/train/ants/``), and a root whose every
    folder is a split holding photos directly (Kaggle's ``train/`` and
    ``test/``, the labels in a CSV file).
    """
    split_dirs = [d for d in class_dirs if d.name.lower() in _SPLITS]
    with_classes = []
    for folder in split_dirs:
        inner = [d for d in _sub_folders(folder) if _class_files(d, exts)[0]]
        if inner:
            with_classes.append((folder.name, inner[0].name))
    if with_classes:
        named = ", ".join(f"{name!r}" for name, _ in with_classes)
        name, example = with_classes[0]
        raise ValueError(
            f"image folder {str(root)!r} holds the split folder(s) {named}, each "
            f"with class folders (such as {name}/{example}), not classes: every "
            f"photo would be labelled with its split. Read one split: "
            f"load_image_folder({str(root)!r}, split={name!r}), or pass "
            f"{str(root / name)!r} as root."
        )
    if split_dirs and len(split_dirs) == len(class_dirs):
        named = ", ".join(f"{d.name!r}" for d in split_dirs)
        raise ValueError(
            f"image folder {str(root)!r} holds only split folder(s) ({named}) "
            "with photos directly inside, not class folders: every photo would "
            "be labelled with its split. Sort each split's photos into "
            "<split>/<class>/ folders and pass split=, or, if the labels are in a "
            "CSV file, use load_image_csv(csv_path, image_dir)."
        )


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
    header, rows = _read_csv(csv_path)
    id_at = _column(header, id_column, 0, "id_column", name)
    label_at = _column(header, label_column, 1, "label_column", name)
    if id_at == label_at:
        raise ValueError(
            f"id_column and label_column are the same column ({header[id_at]!r}) "
            f"of {name}."
        )
    if not rows:
        raise ValueError(f"CSV file {name} has a header but no rows.")

    ids, labels, short, blank_ids, blank_labels = [], [], [], [], []
    for line, row in rows:
        if len(row) <= max(id_at, label_at):
            short.append(line)
            continue
        image_id, label = row[id_at].strip(), row[label_at].strip()
        if label_sep is not None:
            label = _split_labels(label, label_sep)
        if not image_id:
            blank_ids.append(line)
        if not label:
            blank_labels.append(line)
        ids.append((line, image_id))
        labels.append(label)
    if short:
        raise ValueError(
            f"{len(short)} rows of {name} have fewer than "
            f"{max(id_at, label_at) + 1} fields: lines {_some(short)}."
        )
    if blank_ids:
        raise ValueError(
            f"{len(blank_ids)} rows of {name} have an empty id "
            f"(column {header[id_at]!r}): lines {_some(blank_ids)}."
        )
    if blank_labels:
        raise ValueError(
            f"{len(blank_labels)} rows of {name} have an empty label "
            f"(column {header[label_at]!r}): lines {_some(blank_labels)}; drop those "
            "rows or give them a class."
        )
    _check_unique(ids, f"ids in column {header[id_at]!r} of {name}")
    if not allow_outside:
        _check_inside(ids, image_dir, suffix, name)

    resolver = _FileResolver(image_dir, suffix)
    paths, missing, ambiguous = [], [], []
    for line, image_id in ids:
        path, matches = resolver.resolve(image_id)
        if path is None and matches:
            ambiguous.append(f"{image_id!r} (line {line}): {', '.join(matches)}")
        elif path is None:
            missing.append(image_id)
        paths.append(path)
    if ambiguous:
        raise ValueError(
            f"{len(ambiguous)} ids in {name} match several image files in "
            f"{str(image_dir)!r}; pass suffix= to choose: {_some(ambiguous)}."
        )
    if missing:
        hint = (
            " None was found: is image_dir right, or do the files need suffix=?"
            if len(missing) == len(ids)
            else ""
        )
        error = FileNotFoundError(
            f"{len(missing)} of {len(ids)} images named in {name} (column "
            f"{header[id_at]!r}) are not in {str(image_dir)!r}"
            f"{f' with suffix {suffix!r}' if suffix else ''}: "
            f"{_some([repr(m) for m in missing])}.{hint}"
        )
        error.missing = missing
        raise error
    _check_unique(
        [(line, p) for (line, _), p in zip(ids, paths, strict=True)],
        f"image files named in {name}",
    )
    y = labels if label_sep is not None else np.asarray(labels)
    return np.asarray(paths), y


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"CSV file {str(path)!r} is empty.") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ValueError(
                f"CSV file {str(path)!r} could not be read: {exc}"
            ) from None
        rows = []
        try:
            for row in reader:
                if any(cell.strip() for cell in row):  # blank lines are skipped
                    rows.append((reader.line_num, row))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ValueError(
                f"CSV file {str(path)!r} could not be read near line "
                f"{reader.line_num}: {exc}"
            ) from None
    return [h.strip() for h in header], rows


def _column(header: list[str], column, default: int, param: str, name: str) -> int:
    if column is None:
        column = default
    if isinstance(column, (int, np.integer)) and not isinstance(column, bool):
        if -len(header) <= column < len(header):
            return int(column) % len(header)
        raise ValueError(
            f"{param}={column} is not a column of {name}, which has "
            f"{len(header)} column(s): {header}."
        )
    if isinstance(column, str):
        if column in header:
            return header.index(column)
        raise ValueError(
            f"{param}={column!r} is not a column of {name}; its columns are {header}."
        )
    raise ValueError(
        f"{param} must be a column name (str) or position (int); got {column!r}."
    )


def _check_inside(ids, image_dir: Path, suffix: str | None, name: str) -> None:
    base = os.path.normpath(os.path.abspath(image_dir))
    outside = []
    for line, image_id in ids:
        relative = image_id + suffix if suffix else image_id
        if os.path.isabs(relative) or Path(relative).drive:
            outside.append((line, image_id))
            continue
        target = os.path.normpath(os.path.join(base, relative))
        if os.path.commonpath([base, target]) != base:
            outside.append((line, image_id))
    if outside:
        lines = "line" if len(outside) == 1 else "lines"
        raise ValueError(
            f"{len(outside)} ids in {name} name files outside the image folder "
            f"{str(image_dir)!r}: {lines} {_some([line for line, _ in outside])} "
            f"({_some([repr(image_id) for _, image_id in outside])}). Ids are "
            "paths relative to image_dir; if the CSV is trusted to name files "
            "elsewhere, pass allow_outside=True."
        )


def _split_labels(cell: str, sep: str) -> list[str]:
    parts = cell.split() if sep.isspace() else cell.split(sep)
    return list(dict.fromkeys(p.strip() for p in parts if p.strip()))


def _check_unique(items: list[tuple[int, str]], what: str) -> None:
    first: dict[str, int] = {}
    repeated = []
    for line, item in items:
        if item in first:
            repeated.append(f"{item!r} (lines {first[item]} and {line})")
        else:
            first[item] = line
    if repeated:
        raise ValueError(f"{len(repeated)} {what} appear twice: {_some(repeated)}.")


def _some(items: list) -> str:
    shown = ", ".join(str(i) for i in items[:_LIST_AT_MOST])
    more = len(items) - _LIST_AT_MOST
    return shown + (f", ... and {more} more" if more > 0 else "")


class _FileResolver:
    """Turns ids into file paths, listing each folder once (an ``exists``
    call per id is slow on network file systems with 100,000 images)."""

    def __init__(self, image_dir: Path, suffix: str | None):
        self.image_dir = image_dir
        self.suffix = suffix
        self._listings: dict[Path, tuple[set[str], dict[str, list[str]]]] = {}

    def _listing(self, folder: Path):
        if folder not in self._listings:
            names: set[str] = set()
            by_stem: dict[str, list[str]] = {}
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if not entry.is_file():
                            continue
                        names.add(entry.name)
                        stem, ext = os.path.splitext(entry.name)
                        if ext.lower() in IMAGE_EXTENSIONS:
                            by_stem.setdefault(stem, []).append(entry.name)
            except OSError:
                pass  # a missing sub-folder: its ids are reported missing
            self._listings[folder] = names, by_stem
        return self._listings[folder]

    def resolve(self, image_id: str) -> tuple[str | None, list[str]]:
        """``(path, [])`` when found, ``(None, candidates)`` when ambiguous,
        ``(None, [])`` when missing."""
        file_name = image_id + self.suffix if self.suffix else image_id
        target = self.image_dir / file_name
        names, by_stem = self._listing(target.parent)
        if target.name in names:
            return str(target), []
        if self.suffix or Path(target.name).suffix.lower() in IMAGE_EXTENSIONS:
            return None, []
        matches = sorted(by_stem.get(target.name, []))
        if len(matches) == 1:
            return str(target.parent / matches[0]), []
        return None, matches


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

    from ._decoding import MAX_IMAGE_PIXELS, debris_hint
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
            width, height, mode, fmt = _header(source)
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


#: EXIF orientations that turn the picture by 90 or 270 degrees.
_TRANSPOSING = {5, 6, 7, 8}


def _name(source, index: int) -> str:
    """A path as it is, any other image as ``X[i]``."""
    return source if isinstance(source, str) else f"X[{index}]"


def _header(source) -> tuple[int, int, str, str]:
    from PIL import Image

    from ._decoding import exif_orientation
    from ._image_files import open_image_file
    from ._images import EncodedImage

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
    augment : {"side_on", "top_down"} or None, default="side_on"
        The augmentation preset (see ``PretrainedImageClassifier``).
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
