"""Checking a set of images before the work: every unreadable or
undecodable image is collected (index -> message), and all of them are
reported in one error at the end, after every good image has been used.
"""

from __future__ import annotations

from ._decoding import load_pixels
from ._fingerprints import fingerprint
from ._images import describe
from .exceptions import ImageLoadError


def image_fingerprints(sources, bad: dict) -> list:
    """Fingerprint every image. Unreadable ones get None and their error
    message goes into ``bad`` (index -> message), to be reported together
    with every other bad image."""
    fps = []
    for i, s in enumerate(sources):
        try:
            fps.append(fingerprint(s))
        except ImageLoadError as exc:
            fps.append(None)
            bad[i] = str(exc).replace(describe(s), describe(s, i), 1)
        except (ValueError, OSError) as exc:  # e.g. a closed PIL image
            fps.append(None)
            bad[i] = f"{describe(s, i)} could not be read ({type(exc).__name__}: {exc})"
    return fps


def check_decodable(sources, fingerprints, bad: dict, draft_size=None) -> None:
    """Decode every readable image once, collecting failures in ``bad``."""
    for i, fp in enumerate(fingerprints):
        if fp is None:
            continue
        try:
            load_pixels(sources[i], draft_size=draft_size, index=i)
        except ImageLoadError as exc:
            bad[i] = str(exc)


def raise_bad_images(bad: dict, n_images: int, cached: bool = False) -> None:
    """One error listing every image that could not be used."""
    if not bad:
        return
    messages = [bad[i] for i in sorted(bad)]
    lines = "\n".join(f"  {msg}" for msg in messages[:50])
    more = f"\n  ... and {len(messages) - 50} more" if len(messages) > 50 else ""
    others = n_images - len(messages)
    kept = ""
    if cached and others > 0:
        kept = (
            " (the features of the other one are cached)"
            if others == 1
            else f" (the features of the other {others} are cached)"
        )
    raise ImageLoadError(
        f"{len(messages)} of {n_images} images could not be used{kept}:\n{lines}{more}"
    )
