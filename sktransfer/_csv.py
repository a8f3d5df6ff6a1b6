"""Reading a labels file for :func:`sktransfer.datasets.load_image_csv`:
rows of image ids and labels, checked, and the image file of each id.

Every problem is one error that names the file, the column and the lines
(at most :data:`_LIST_AT_MOST` of them, the rest counted).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

#: Most items named in one error message; the rest are counted.
_LIST_AT_MOST = 50


def read_labelled_ids(path: Path, name: str, id_column, label_column, label_sep):
    """``(ids, labels, id_header)`` of the CSV file ``path`` (``name``: its
    name, quoted): ids as ``(line, id)``, labels as strings (lists of them
    with ``label_sep``), and the header of the id column."""
    header, rows = _read_csv(path)
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
    return ids, labels, header[id_at]


def image_paths(ids, image_dir: Path, suffix, name: str, id_header: str, extensions):
    """The image file of each id (``(line, id)``), found in ``image_dir``; one
    error for the ids that match several files, one for the missing ones."""
    resolver = _FileResolver(image_dir, suffix, extensions)
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
            f"{id_header!r}) are not in {str(image_dir)!r}"
            f"{f' with suffix {suffix!r}' if suffix else ''}: "
            f"{_some([repr(m) for m in missing])}.{hint}"
        )
        error.missing = missing
        raise error
    return paths


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


def check_inside(ids, image_dir: Path, suffix: str | None, name: str) -> None:
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


def check_unique(items: list[tuple[int, str]], what: str) -> None:
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

    def __init__(self, image_dir: Path, suffix: str | None, extensions: tuple):
        self.image_dir = image_dir
        self.suffix = suffix
        self.extensions = extensions
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
                        if ext.lower() in self.extensions:
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
        if self.suffix or Path(target.name).suffix.lower() in self.extensions:
            return None, []
        matches = sorted(by_stem.get(target.name, []))
        if len(matches) == 1:
            return str(target.parent / matches[0]), []
        return None, matches
