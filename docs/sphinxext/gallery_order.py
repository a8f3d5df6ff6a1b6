"""The order of the gallery: a reader's path through the examples, not the
alphabet. Files not listed come after the listed ones, by name."""

from __future__ import annotations

from pathlib import Path

READING_ORDER = [
    "quickstart.py",
    "plot_classical_models.py",
    "plot_lesson.py",
    "plot_grid_search.py",
    "plot_interpretation.py",
    "plot_multilabel.py",
    "plot_regression.py",
]


class ReadingOrder:
    """sphinx-gallery ``within_subsection_order``: a sort key per file."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename) -> tuple:
        name = Path(filename).name
        if name in READING_ORDER:
            return (READING_ORDER.index(name), name)
        return (len(READING_ORDER), name)

    def __repr__(self) -> str:
        return "ReadingOrder"
