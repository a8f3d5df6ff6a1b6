"""The documentation's contracts.

- every public name (of the package and of its public submodules) has a page
  in the API reference (``docs/api.rst``);
- the examples in docstrings run (the same doctests as
  ``pytest --doctest-modules sktransfer``, with matplotlib off-screen and
  each module in its own temporary folder);
- every public name has an example of its own that runs;
- every gallery script has the title sphinx-gallery needs;
- the build's local-link check finds broken links and anchors.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path

import pytest

import sktransfer

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
MODULES = ["sktransfer"] + sorted(
    info.name for info in pkgutil.iter_modules(sktransfer.__path__, "sktransfer.")
)
#: Packages that only optional extras install; a module that needs a missing
#: one has its doctests skipped, not failed.
OPTIONAL = {"dask", "distributed", "onnx", "onnxruntime", "onnxscript", "safetensors"}

#: Modules whose docstring examples do not run yet (skipped first lines, names
#: they never define).
DOCTESTS_PENDING: set[str] = set()

#: Gallery-ignored scripts (``ignore_pattern`` in docs/conf.py): plain scripts
#: run from the command line, not pages of the gallery.
NOT_IN_GALLERY = {"serve_onnx.py"}

#: Public names whose docstring has no running example yet.
WITHOUT_EXAMPLE: set[str] = set()

#: The modules whose ``__all__`` is the API: the package and its public
#: submodules (each a section of docs/api.rst). ``sktransfer.cli`` is
#: documented in docs/cli.md and ``sktransfer.callbacks`` through ``SGDR``.
API_MODULES = [
    "sktransfer",
    "sktransfer.datasets",
    "sktransfer.plotting",
    "sktransfer.inspection",
    "sktransfer.export",
    "sktransfer.dask",
    "sktransfer.exceptions",
]


def _public_names() -> list[str]:
    """Every class and function of the API, by its full name."""
    names = []
    for module_name in API_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                names.append(f"{module_name}.{name}")
    return sorted(names)


def _api_entries() -> set[str]:
    """The autosummary entries of docs/api.rst, by their full names (each
    relative to the ``currentmodule`` above it)."""
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    entries, module = set(), "sktransfer"
    for match in re.finditer(
        r"^\.\. currentmodule:: (\S+)\n|\.\. autosummary::\n((?:[ \t]+.*\n|\n)+)",
        text,
        re.M,
    ):
        if match[1]:
            module = match[1]
            continue
        entries.update(
            f"{module}.{line.strip()}"
            for line in match[2].splitlines()
            if line.strip() and not line.strip().startswith(":")
        )
    return entries


def test_every_public_name_has_a_page_in_the_api_reference():
    entries = _api_entries()
    assert sorted(set(_public_names()) - entries) == []
    for entry in entries:  # and every entry names something that exists
        module_name, _, name = entry.rpartition(".")
        obj = importlib.import_module(module_name)
        for part in name.split("."):
            obj = getattr(obj, part)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(reason="examples not runnable yet", strict=False)
            if name in DOCTESTS_PENDING
            else (),
        )
        for name in MODULES
    ],
)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] in OPTIONAL:
            pytest.skip(f"{name} needs the optional package {exc.name}")
        raise
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    report = []
    try:
        for test in tests:
            runner.run(test, out=report.append)
    finally:
        plt.close("all")
    assert runner.failures == 0, "".join(report)


def _examples_section(doc: str) -> str:
    match = re.search(
        r"^Examples\n-{8}\n(.*?)(?=^\w[\w ]*\n-{3,}\n|\Z)", doc, re.M | re.S
    )
    return match.group(1) if match else ""


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(reason="no running example yet", strict=False)
            if name in WITHOUT_EXAMPLE
            else (),
        )
        for name in _public_names()
    ],
)
def test_every_public_name_has_an_example_that_runs(name):
    module_name, _, attribute = name.rpartition(".")
    obj = getattr(importlib.import_module(module_name), attribute)
    section = _examples_section(inspect.getdoc(obj) or "")
    assert ">>>" in section, f"{name} has no Examples section"
    running = [
        line
        for line in section.splitlines()
        if line.lstrip().startswith(">>>") and "+SKIP" not in line
    ]
    # a skipped first line skips nothing else: the lines after it would fail
    first = next(line for line in section.splitlines() if ">>>" in line)
    assert running and "+SKIP" not in first, f"{name}'s example is skipped, not run"


@pytest.mark.parametrize(
    "path",
    sorted(p for p in EXAMPLES.glob("*.py") if p.name not in NOT_IN_GALLERY),
    ids=lambda path: path.name,
)
def test_every_gallery_script_starts_with_a_titled_docstring(path):
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False)
    assert doc, f"{path.name} has no module docstring"
    lines = doc.strip("\n").splitlines()
    assert len(lines) >= 2 and re.fullmatch(r"=+", lines[1]), (
        f"{path.name}: the docstring must start with a title underlined with '='"
    )
    assert len(lines[1]) >= len(lines[0]), f"{path.name}: title underline too short"


def test_local_link_check_finds_missing_pages_images_and_anchors(tmp_path):
    sys.path.insert(0, str(DOCS / "sphinxext"))
    try:
        from local_links import broken_links
    finally:
        sys.path.remove(str(DOCS / "sphinxext"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="sub/page.html#here">ok</a> <a href="#top" id="top">ok</a>'
        '<a href="https://example.org/x">external</a> <a href="sub/">dir</a>'
        '<a href="missing.html">page</a> <img src="_images/gone.png">'
        '<a href="sub/page.html#nowhere">anchor</a>'
    )
    (tmp_path / "sub" / "page.html").write_text(
        '<h2 id="here">Here</h2><a href="../index.html#top">back</a>'
    )
    (tmp_path / "sub" / "index.html").write_text("<p>the folder's page</p>")

    problems = broken_links(tmp_path)

    assert sorted(problems) == [
        ("index.html", "_images/gone.png", "no such file"),
        ("index.html", "missing.html", "no such file"),
        ("index.html", "sub/page.html#nowhere", "no such anchor"),
    ]
