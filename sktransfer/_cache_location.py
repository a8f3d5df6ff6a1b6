"""Where the feature cache lives and how large it may grow.

``cache="auto"`` puts the cache in ``$SKTRANSFER_CACHE``, else
``$XDG_CACHE_HOME/sktransfer``, else ``~/.cache/sktransfer``; without a usable
home directory (no ``$HOME`` and no passwd entry, as in containers run with
``--user``), in a private folder of the temporary directory. A size limit is
a number of bytes or a string such as ``"20G"``, from the ``max_bytes``
parameter or ``$SKTRANSFER_CACHE_MAX_BYTES``.

Standard library and numpy only, like the rest of the cache.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np

MAX_BYTES_ENV = "SKTRANSFER_CACHE_MAX_BYTES"
#: The smallest ``max_bytes`` that keeps anything: an empty database, its
#: log and its shared-memory file already take about 600 KB.
MIN_MAX_BYTES = 1024**2
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def default_location() -> tuple[Path, bool, str | None]:
    """``(folder, private, why)``: ``private`` when the package chose the
    folder (not the user), ``why`` the reason a fallback was taken."""
    env = os.environ.get("SKTRANSFER_CACHE")
    reasons = []
    if env:  # set and empty means unset, as for the XDG variables
        folder, problem = expand_user(env)
        if problem is None:
            problem = folder_problem(env)
        if problem is None and not folder.is_absolute():
            # as for $XDG_CACHE_HOME: never a folder of the working directory
            problem = "is not an absolute path"
        if problem is None:
            return folder, False, None
        reasons.append(
            f"$SKTRANSFER_CACHE={env!r} {problem} (ignored: set it to an "
            "absolute folder path, or unset it)"
        )
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "sktransfer", True, _joined(reasons)
    if xdg:
        # the XDG specification: relative paths are invalid and ignored
        reasons.append(f"$XDG_CACHE_HOME={xdg!r} is not an absolute path (ignored)")
    home_var = os.environ.get("HOME")
    if home_var is not None and not os.path.isabs(home_var):
        # Python reads HOME='' as "/" and a relative HOME against the
        # working folder: neither is a home directory
        reasons.append(f"$HOME={home_var!r} is not an absolute path")
    else:
        try:
            home = Path.home()
        except RuntimeError:
            home = None
        if home is not None and home.is_absolute():
            return home / ".cache" / "sktransfer", True, _joined(reasons)
        reasons.append("there is no home directory ($HOME unset, no passwd entry)")
    return _private_temp_dir(), True, _joined(reasons)


def folder_problem(text: str) -> str | None:
    """What makes ``text`` unusable as a cache folder (the ``cache``
    parameter and ``$SKTRANSFER_CACHE`` alike), or None."""
    if not text.strip():
        return "is an empty path"
    full = os.path.abspath(os.path.expanduser(text))
    if os.path.dirname(full) == full:
        return (
            "is the root of the file system, where the cache would mix its "
            "files with the system's"
        )
    return None


def _joined(reasons: list) -> str | None:
    return "; ".join(reasons) or None


def _private_temp_dir() -> Path:
    user = os.getuid() if hasattr(os, "getuid") else os.getlogin()
    return Path(tempfile.gettempdir()) / f"sktransfer-cache-{user}"


def parse_size(value, what: str = "max_bytes") -> int | None:
    """Bytes from an int or a string such as ``"500M"`` or ``"2GiB"``
    (binary units: K = 1024). None stays None."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value >= 0:
            return int(value)
    elif isinstance(value, (float, np.floating)):
        if math.isfinite(value) and value >= 0:
            return int(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?\s*", value, re.I)
        if match:
            return int(float(match[1]) * _UNITS[match[2].lower()])
    raise ValueError(
        f"{what} must be a number of bytes >= 0, such as 2000000000 or '2G' "
        f"(binary units); got {value!r}."
    )


def expand_user(directory) -> tuple[Path, str | None]:
    """``directory`` with ``~`` expanded, and the problem if it cannot be."""
    path = Path(directory)
    first = path.parts[0] if path.parts else ""
    if not first.startswith("~"):
        return path, None
    who = "this user has" if first == "~" else f"user {first[1:]!r} has"
    problem = f"{str(path)!r} starts with {first!r} but {who} no home directory"
    home = os.environ.get("HOME")
    if first == "~" and home is not None and not os.path.isabs(home):
        return path, problem  # Python would read HOME='' as "/"
    try:
        return path.expanduser(), None
    except RuntimeError:  # no home directory, or no such user
        return path, problem


def check_limit(limit: int | None, what: str) -> int | None:
    if limit is not None and limit < MIN_MAX_BYTES:
        raise ValueError(
            f"{what}={limit:,} bytes is smaller than an empty feature cache "
            f"(about 600 KB of tables and logs), so nothing could stay cached; "
            f"give at least {MIN_MAX_BYTES:,} bytes ('1M'), or cache=None to "
            "compute without caching."
        )
    return limit
