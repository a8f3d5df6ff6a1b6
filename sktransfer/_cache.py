"""A per-image feature cache shared by clones, CV folds, grid candidates and
worker processes.

The store is one SQLite database in WAL mode: every write is a transaction,
so a crash or a concurrent writer never leaves a half-written entry, and
readers never block writers. A row is keyed by

* the model fingerprint (backbone, weights identity, preprocessing, image
  size, precision, view), and
* the image fingerprint (a hash of the file's bytes, or of the pixels of an
  array or PIL image),

so a feature is reused only when everything that made it is the same: a
changed file gets a new fingerprint and is recomputed, never served stale.

While one process computes the missing features of a model, it holds an
advisory lock for that model; a second process asking for the same images
waits, then reads what the first one wrote instead of running the backbone
again. That is what makes ``GridSearchCV(n_jobs=2)`` run the backbone once
per image in total.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import warnings
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
_DB_NAME = f"features-v{FORMAT_VERSION}.sqlite"
_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS features (
    model TEXT NOT NULL,
    image TEXT NOT NULL,
    dim INTEGER NOT NULL,
    data BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (model, image)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class CacheWarning(UserWarning):
    """The cache could not be used; features are computed without it."""


def default_cache_dir() -> Path:
    """``$SKTRANSFER_CACHE``, else ``$XDG_CACHE_HOME/sktransfer``, else
    ``~/.cache/sktransfer``."""
    env = os.environ.get("SKTRANSFER_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sktransfer"


def resolve_cache(cache) -> FeatureCache | None:
    """Turn the ``cache`` parameter into a :class:`FeatureCache` (or None)."""
    if cache is None or cache is False:
        return None
    if isinstance(cache, FeatureCache):
        return cache
    if cache == "auto":
        return FeatureCache(default_cache_dir())
    if isinstance(cache, (str, os.PathLike)):
        return FeatureCache(cache)
    raise ValueError(
        f"cache must be 'auto', a directory path or None; got {cache!r}."
    )


class FeatureCache:
    """Feature vectors on disk, keyed by model and image fingerprints.

    Parameters
    ----------
    directory : str or path-like
        Where the database lives. Created on first use.

    Examples
    --------
    >>> import tempfile
    >>> cache = FeatureCache(tempfile.mkdtemp())
    >>> cache.stats()["entries"]
    0
    """

    def __init__(self, directory):
        self.directory = Path(directory).expanduser()
        self._conn = None
        self._pid = None
        self._disabled = False

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.directory)!r})"

    def __getstate__(self):
        return {"directory": self.directory}

    def __setstate__(self, state):
        self.__init__(state["directory"])

    # -- connection ---------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.directory / _DB_NAME

    def _connect(self):
        if self._disabled:
            return None
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=120, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('format_version', ?)",
                (str(FORMAT_VERSION),),
            )
        except (sqlite3.Error, OSError) as exc:
            self._disable(exc)
            return None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _disable(self, exc) -> None:
        self._disabled = True
        warnings.warn(
            f"the feature cache at {str(self.directory)!r} cannot be used "
            f"({type(exc).__name__}: {exc}); features are computed without caching.",
            CacheWarning,
            stacklevel=4,
        )

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    # -- reads and writes ---------------------------------------------------

    def get_many(self, model: str, images: list[str]) -> dict[str, np.ndarray]:
        """Cached vectors for ``images`` under ``model`` (missing ones absent)."""
        conn = self._connect()
        found: dict[str, np.ndarray] = {}
        if conn is None or not images:
            return found
        unique = list(dict.fromkeys(images))
        try:
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT image, dim, data FROM features WHERE model = ? "
                    f"AND image IN ({marks})",
                    [model, *chunk],
                ).fetchall()
                for image, dim, data in rows:
                    vec = np.frombuffer(data, dtype=np.float32)
                    if vec.shape[0] == dim:  # a complete entry, never a torn one
                        found[image] = vec
        except sqlite3.Error as exc:
            self._disable(exc)
            return {}
        return found

    def put_many(self, model: str, items: list[tuple[str, np.ndarray]]) -> None:
        """Store vectors in one transaction (all of them or none)."""
        conn = self._connect()
        if conn is None or not items:
            return
        now = time.time()
        rows = []
        for image, vec in items:
            vec = np.ascontiguousarray(vec, dtype=np.float32).ravel()
            rows.append((model, image, int(vec.shape[0]), vec.tobytes(), now))
        try:
            with _transaction(conn):
                conn.executemany(
                    "INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?)", rows
                )
                conn.execute(
                    "INSERT INTO counters VALUES ('computed', ?) ON CONFLICT(name) "
                    "DO UPDATE SET value = value + excluded.value",
                    (len(rows),),
                )
        except sqlite3.Error as exc:
            self._disable(exc)

    @contextlib.contextmanager
    def lock(self, model: str):
        """Hold the compute lock of ``model`` (advisory, across processes).

        The operating system releases it if the holder dies, so a killed
        worker never blocks the others.
        """
        if self._disabled or self._connect() is None:
            yield
            return
        try:
            import fcntl
        except ImportError:  # Windows: no cross-process lock, still correct
            yield
            return
        lock_dir = self.directory / "locks"
        try:
            lock_dir.mkdir(exist_ok=True)
            fd = os.open(lock_dir / f"{model}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- inspection ---------------------------------------------------------

    def stats(self) -> dict:
        """``entries`` (vectors stored), ``models`` (distinct model
        fingerprints), ``bytes`` (size on disk) and ``computed`` (vectors
        written since the cache was created or cleared)."""
        conn = self._connect()
        if conn is None:
            return {"entries": 0, "models": 0, "bytes": 0, "computed": 0}
        entries, models = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT model) FROM features"
        ).fetchone()
        row = conn.execute("SELECT value FROM counters WHERE name = 'computed'").fetchone()
        size = sum(
            p.stat().st_size
            for p in self.directory.glob(_DB_NAME + "*")
            if p.is_file()
        )
        return {
            "entries": int(entries),
            "models": int(models),
            "bytes": int(size),
            "computed": int(row[0]) if row else 0,
        }

    def clear(self) -> None:
        """Delete every cached vector and reset the counters."""
        conn = self._connect()
        if conn is None:
            return
        with _transaction(conn):
            conn.execute("DELETE FROM features")
            conn.execute("DELETE FROM counters")
        conn.execute("VACUUM")


@contextlib.contextmanager
def _transaction(conn):
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")
