"""Check, after an HTML build, that every local link of the site resolves.

Sphinx's ``linkcheck`` builder fetches external pages, which an offline
build cannot do; broken *internal* links are what a reader meets anyway: a
page, an image or a ``#section`` that is not there. Every ``href`` and
``src`` that points inside the site is checked, anchors included, and each
broken one is a warning (so an error under ``-W``).
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("id", "name") if tag == "a" else ("id",):
            if attrs.get(name):
                self.ids.add(attrs[name])
        for name in ("href", "src"):
            if attrs.get(name):
                self.links.append(attrs[name])


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def broken_links(root) -> list[tuple[str, str, str]]:
    """``(page, link, reason)`` for every local link under ``root`` that does
    not resolve; pages are given relative to ``root``."""
    root = Path(root).resolve()
    pages = {path: _parse(path) for path in sorted(root.rglob("*.html"))}
    problems = []
    for path, page in list(pages.items()):
        where = path.relative_to(root).parts
        if where[0] == "_static":
            continue  # theme templates and assets, not pages of the site
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith("//"):
                continue  # external, data:, mailto:, javascript:
            target = path if not parts.path else path.parent / unquote(parts.path)
            target = target.resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(("/".join(where), link, "no such file"))
                continue
            if not parts.fragment or target.suffix != ".html":
                continue
            if where[0] == "_modules":
                # viewcode's "[docs]" links from the source of a public module
                # (sktransfer.datasets) name the object by its module path, not
                # by the public name its page documents: they land on the right
                # page, only not on the anchor.
                continue
            if target not in pages:  # outside the site, or not parsed
                pages[target] = _parse(target)
            if unquote(parts.fragment) not in pages[target].ids:
                problems.append(("/".join(where), link, "no such anchor"))
    return problems


def _check(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    for page, link, reason in broken_links(app.outdir):
        logger.warning("broken local link in %s: %s (%s)", page, link, reason)


def setup(app):
    app.connect("build-finished", _check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
