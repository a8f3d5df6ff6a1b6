"""Settings of the gallery that sphinx-gallery takes as importable names:
the reading order of the examples, and how figures are saved."""

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
    """sphinx-gallery ``within_subsection_order``: a reader's path through
    the examples, not the alphabet. Files not listed come after the listed
    ones, by name."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename) -> tuple:
        name = Path(filename).name
        if name in READING_ORDER:
            return (READING_ORDER.index(name), name)
        return (len(READING_ORDER), name)

    def __repr__(self) -> str:
        return "ReadingOrder"


class TightFigures:
    """sphinx-gallery image scraper: matplotlib figures saved with a tight
    bounding box, so that no axis label or legend outside the axes is cut
    off, whichever function drew the figure."""

    def __call__(self, block, block_vars, gallery_conf, **kwargs):
        from sphinx_gallery.scrapers import matplotlib_scraper

        return matplotlib_scraper(
            block, block_vars, gallery_conf, bbox_inches="tight", **kwargs
        )

    def __repr__(self) -> str:
        return "TightFigures"


TIGHT_FIGURES = TightFigures()
