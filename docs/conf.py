"""Sphinx configuration of the sktransfer documentation.

Builds offline: no intersphinx inventories are fetched unless
``SKTRANSFER_DOCS_INTERSPHINX=1`` is set, and the gallery examples read their
photos and weights from ``../shared`` beside the project (see
``examples/GALLERY_HEADER.rst``).
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

import sktransfer

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "sphinxext"))

project = "sktransfer"
author = "The sktransfer developers"
copyright = "2026, The sktransfer developers"  # noqa: A001 (Sphinx's name)
release = sktransfer.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "local_links",  # docs/sphinxext: every local link of the built site resolves
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
    "auto_examples/*.md5",
    "auto_examples/*.pickle",
]
default_role = "py:obj"
nitpicky = False

# -- API reference ---------------------------------------------------------

autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "member-order": "groupwise"}
autodoc_typehints = "none"  # numpydoc sections carry the types
autoclass_content = "class"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- Markdown pages (guide, benchmarks, changelog) -------------------------

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]
suppress_warnings = ["myst.header"]

# -- Gallery ---------------------------------------------------------------

os.environ.setdefault("MPLBACKEND", "Agg")
# Gallery examples must not depend on the reader's matplotlib settings.
warnings.filterwarnings(
    "ignore", message="Matplotlib is currently using agg", category=UserWarning
)

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    # Every example runs during the build, not only plot_*.py files.
    "filename_pattern": re.escape(os.sep),
    # A command-line script of docs/scale_and_export.md, not a gallery page.
    "ignore_pattern": r"(__init__|serve_onnx)\.py",
    "within_subsection_order": "gallery_config.ReadingOrder",
    "doc_module": ("sktransfer",),
    "backreferences_dir": "generated/backreferences",
    "image_scrapers": ("gallery_config.TIGHT_FIGURES",),
    "remove_config_comments": True,
    "min_reported_time": 5,
    "show_memory": False,
    "capture_repr": (),  # examples print what they mean to show
    "matplotlib_animations": False,
}

# -- HTML ------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"sktransfer {release}"
html_static_path = ["_static"]
html_css_files = ["sktransfer.css"]
html_show_sourcelink = False
html_theme_options = {
    "navbar_align": "left",
    "navbar_persistent": [],
    "navbar_end": ["search-button", "theme-switcher"],
    "header_links_before_dropdown": 7,
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
    "icon_links": [],
}
# Pages that read best at full width: every page without sub-pages (the
# left column would be an empty "Section Navigation") and the gallery's
# examples (code and printed tables are wide). The API reference keeps it.
html_sidebars = {
    "index": [],
    "install": [],
    "changelog": [],
    "guide": [],
    "benchmarks": [],
    "architecture": [],
    "cli": [],
    "scale_and_export": [],
    "auto_examples/*": [],
}
toc_object_entries_show_parents = "hide"  # "predict", not "Class.predict"
html_context = {"default_mode": "light"}

# -- Cross-references to other projects: offline by default ----------------

if os.environ.get("SKTRANSFER_DOCS_INTERSPHINX") == "1":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "sklearn": ("https://scikit-learn.org/stable", None),
        "torch": ("https://docs.pytorch.org/docs/stable", None),
        "matplotlib": ("https://matplotlib.org/stable", None),
    }

# -- Pages that are added to the user guide when they exist ----------------

#: Guide pages written separately; each joins the site's table of contents,
#: after the user guide, once its file is in docs/, so the build never refers
#: to a missing page and never leaves a page out.
OPTIONAL_GUIDE_PAGES = ["scale_and_export", "cli", "architecture"]


def _add_optional_pages(app, docname, source):
    if docname != "index":
        return
    present = [
        name
        for name in OPTIONAL_GUIDE_PAGES
        if (DOCS / f"{name}.md").exists() or (DOCS / f"{name}.rst").exists()
    ]
    source[0] = source[0].replace(
        "   .. optional guide pages\n", "".join(f"   {name}\n" for name in present)
    )


#: The modules whose ``__all__`` is the API, each a section of api.rst.
API_MODULES = [
    "sktransfer",
    "sktransfer.datasets",
    "sktransfer.plotting",
    "sktransfer.inspection",
    "sktransfer.export",
    "sktransfer.dask",
    "sktransfer.exceptions",
]


def _check_api_reference(app):
    """Every public name is in api.rst (a missing one is a build error)."""
    import importlib
    import inspect

    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    listed, module = set(), "sktransfer"
    for line in text.splitlines():
        directive = re.match(r"\.\. currentmodule:: (\S+)", line)
        if directive:
            module = directive[1]
        elif re.fullmatch(r"\s+[A-Za-z_][\w.]*\s*", line):
            listed.add(f"{module}.{line.strip()}")
    public = set()
    for name in API_MODULES:
        mod = importlib.import_module(name)
        public.update(
            f"{name}.{attr}"
            for attr in mod.__all__
            if inspect.isclass(getattr(mod, attr))
            or inspect.isfunction(getattr(mod, attr))
        )
    missing = sorted(public - listed)
    if missing:
        from sphinx.util import logging

        logging.getLogger(__name__).warning(
            "public names missing from docs/api.rst: %s", ", ".join(missing)
        )


def setup(app):
    app.connect("source-read", _add_optional_pages)
    app.connect("builder-inited", _check_api_reference)
