"""Listing the photos of a folder tree, for
:func:`~sktransfer.datasets.load_image_folder` and
:func:`~sktransfer.datasets.load_image_paths`.

What operating systems and archivers leave beside photos is skipped
(:func:`is_debris`), linked folders are not followed, and layouts that would
give wrong labels (class folders that are links to each other or to the root,
a root of split folders) are refused with an error that says what to pass.
"""

from __future__ import annotations

import os
from pathlib import Path


def folder_files(folder: Path, exts: tuple) -> tuple[list, list]:
    """Like :func:`class_files`, for the files directly in ``folder``."""
    files, others = [], []
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise ValueError(
            f"image folder {str(folder)!r} could not be read: {exc}"
        ) from None
    for entry in entries:
        if is_debris(entry.name) or entry.is_dir():
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


def is_debris(name: str) -> bool:
    return name.startswith(".") or name.lower() in _DEBRIS


def not_a_folder(path: Path) -> str:
    if path.exists():
        return "is not a folder."
    parent = path.parent
    if parent.is_dir():
        there = [d.name for d in sub_folders(parent)]
        if there:
            return f"does not exist; {str(parent)!r} holds {', '.join(there[:20])}."
    return "does not exist."


def extensions_of(extensions) -> tuple:
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


def sub_folders(folder: Path) -> list:
    """The folders in ``folder`` (symbolic links to folders included),
    sorted, without OS debris."""
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise ValueError(
            f"image folder {str(folder)!r} could not be read: {exc}"
        ) from None
    return sorted(p for p in entries if not is_debris(p.name) and p.is_dir())


def class_files(
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
        dirs[:] = [d for d in dirs if not is_debris(d)]
        for name in names:
            if is_debris(name):
                continue
            if os.path.splitext(name)[1].lower() in exts:
                files.append(Path(folder, name))
            elif len(others) < 3:
                others.append(name)
    return sorted(files), others


def some_files(names: list) -> str:
    shown = ", ".join(repr(n) for n in names)
    return f"other files only, such as {shown}"


def refuse_linked_classes(root: Path, class_dirs: list) -> None:
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


def refuse_split_layout(root: Path, class_dirs: list, exts: tuple) -> None:
    """Refuse a root of splits: the labels would be split names.

    Splits with class folders (``root/train/ants/``), and a root whose every
    folder is a split holding photos directly (Kaggle's ``train/`` and
    ``test/``, the labels in a CSV file).
    """
    split_dirs = [d for d in class_dirs if d.name.lower() in _SPLITS]
    with_classes = []
    for folder in split_dirs:
        inner = [d for d in sub_folders(folder) if class_files(d, exts)[0]]
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
