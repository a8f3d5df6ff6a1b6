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
Each row also holds a CRC-32 of its keys and vector bytes, checked on every
read: a vector whose bytes changed on disk (a failing disk, a program
writing into the file), which SQLite's own checks cannot see, is deleted
with a :class:`~sktransfer.exceptions.CacheWarning` and computed again, never served.

While one process computes the missing features of a model, it holds an
advisory lock for that model; a second process asking for the same images
waits, then reads what the first one wrote instead of running the backbone
again. That is what makes ``GridSearchCV(n_jobs=2)`` run the backbone once
per image in total.

A cache is a convenience, never a reason for a fit to fail: a database of
another format version, or a file that is not a database, is deleted and
rebuilt with a :class:`CacheWarning`; a location that cannot be written (read
only, disk full) gives a warning and features are computed without caching.
Without a usable home directory (no ``$HOME`` and no passwd entry, as in
containers run with ``--user``), the default cache moves to a private
temporary folder, with a warning.

The cache never touches a file that is not its own: a database file (or its
``-wal``/``-shm``/``-journal`` companion, or the ``locks`` folder) that is a
symbolic link, a hard link or not a regular file disables the cache with a
warning instead of being opened. The default folder, which the package
creates, is private to the user (folder 0700, files 0600); a folder the user
chose keeps the permissions the user's umask gives.

Here are the public :class:`FeatureCache` and :func:`resolve_cache`, which
reads the ``cache`` parameter; the database is in :mod:`._cache_db`, its
files and locks in :mod:`._cache_files`, its default folder and size limit in
:mod:`._cache_location`. These modules need only the standard library and
numpy (the fault tests load them in subprocesses without importing torch).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import warnings
from itertools import islice
from pathlib import Path

import numpy as np

from ._cache_db import (
    DB_NAME,
    add_count,
    format_problem,
    is_corrupt,
    raw_connect,
    reclaim,
    row_checksum,
    shrink,
    transaction,
)
from ._cache_files import (
    create_database_file,
    file_lock,
    foreign_files,
    make_folder,
    remove_files,
)
from ._cache_location import (
    MAX_BYTES_ENV,
    check_limit,
    default_location,
    expand_user,
    folder_problem,
    parse_size,
)
from .exceptions import CacheWarning

_CHUNK = 500  # vectors read per query (and held at once by iter_many)
#: Eviction triggered by a write goes down to this fraction of the limit, so
#: that it runs once per tenth of the limit written, not after every write.
_EVICT_TO = 0.9


def resolve_cache(cache) -> FeatureCache | None:
    """Turn the ``cache`` parameter into a :class:`FeatureCache` (or None).

    ``"auto"`` gives a cache that follows
    :meth:`FeatureCache.default_directory` where it is used (also after
    pickling), and warns (:class:`CacheWarning`) when it has to fall back
    from the usual folder. An empty path is refused with
    a ``ValueError``: it would mean the working folder, which is never what
    was meant; so is the root of the file system.
    """
    if cache is None or cache is False:
        return None
    if isinstance(cache, FeatureCache):
        return cache
    if isinstance(cache, str) and cache == "auto":
        folder, private, why = default_location()
        if why:
            warnings.warn(
                f"{why}; the feature cache is in {str(folder)!r}.",
                CacheWarning,
                stacklevel=3,
            )
        cache = FeatureCache(folder, private=private)
        cache._auto, cache._reason = True, why
        return cache
    if isinstance(cache, (str, os.PathLike)):
        text = os.fspath(cache)
        text = os.fsdecode(text) if isinstance(text, bytes) else text
        problem = folder_problem(text)
        if problem is not None:
            raise ValueError(
                f"cache={text!r} {problem}; pass a folder, 'auto' (the per-user "
                "cache folder) or None to compute without caching."
            )
        return FeatureCache(text)
    raise ValueError(
        "cache must be 'auto', a directory path, a FeatureCache or None; "
        f"got {cache!r}."
    )


class FeatureCache:
    """Feature vectors on disk, keyed by model and image fingerprints.

    Parameters
    ----------
    directory : str or path-like
        Where the database lives. Created on first use. The folder of
        ``cache="auto"`` is :meth:`default_directory`.
    max_bytes : int or str, default=None
        Size limit of the database files (``stats()["bytes"]``), as a number
        of bytes or a string such as ``"20G"``. When a write takes the cache
        past it, the oldest entries are deleted until it is back under 90%
        of the limit. None reads ``$SKTRANSFER_CACHE_MAX_BYTES``; when that
        is unset too, the cache grows without limit. A limit below
        ``MIN_MAX_BYTES`` (1 MiB: an empty cache takes about 600 KB) is
        refused, since nothing could stay cached.
    private : bool, default=False
        Create the folder 0700 and the files 0600, and use the folder only
        if it belongs to the user. The default cache folder is private; a
        folder you choose keeps the permissions your umask gives.

    Notes
    -----
    Problems never fail a fit: a database file of another format version,
    or one that is not a database, is deleted and rebuilt with a
    :class:`~sktransfer.exceptions.CacheWarning`; a location that cannot be
    written (read-only, disk full) gives a
    :class:`~sktransfer.exceptions.CacheWarning` and the features are
    computed without caching from then on.

    Examples
    --------
    >>> import tempfile
    >>> cache = FeatureCache(tempfile.mkdtemp(), max_bytes="1G")
    >>> cache.stats()["entries"]
    0
    """

    def __init__(self, directory, max_bytes=None, *, private=False):
        self.directory, self._problem = expand_user(directory)
        if max_bytes is None:
            env = os.environ.get(MAX_BYTES_ENV) or None
            self.max_bytes = check_limit(
                parse_size(env, f"${MAX_BYTES_ENV}"), f"${MAX_BYTES_ENV}"
            )
        else:
            self.max_bytes = check_limit(parse_size(max_bytes), "max_bytes")
        self.private = bool(private)
        self._conn = None
        self._pid = None
        self._inode = None
        self._disabled = False  # no reads, no writes
        self._writable = True
        # True for the cache of cache="auto": its folder is looked up again
        # (default_directory) each time it is opened, so a model used in
        # another environment, or unpickled there, uses that one's folder.
        self._auto = False
        self._reason = None  # why "auto" fell back (warned once)
        # One connection per process, used by any thread: the lock keeps a
        # transaction of one thread from swallowing another thread's work.
        self._mutex = threading.RLock()

    @staticmethod
    def default_directory() -> Path:
        """The folder of the feature cache when ``cache="auto"``.

        ``$SKTRANSFER_CACHE``, else ``$XDG_CACHE_HOME/sktransfer``, else
        ``~/.cache/sktransfer``; without a usable home directory, a private
        folder in the temporary directory (``sktransfer-cache-<uid>``).
        ``$SKTRANSFER_CACHE`` must be an absolute path (``~`` is expanded),
        like ``$XDG_CACHE_HOME``; an empty one, a relative one or the root of
        the file system is ignored, with a
        :class:`~sktransfer.exceptions.CacheWarning` when the cache is used.
        ``"auto"`` is resolved where the cache is used: a model fitted in one
        environment and used (or unpickled) in another uses the folder of
        the other.

        Returns
        -------
        folder : pathlib.Path

        Examples
        --------
        >>> import os
        >>> from unittest import mock
        >>> from sktransfer import FeatureCache
        >>> with mock.patch.dict(os.environ, {"SKTRANSFER_CACHE": "/data/cache"}):
        ...     print(FeatureCache.default_directory())
        /data/cache
        """
        return default_location()[0]

    def __repr__(self) -> str:
        limit = f", max_bytes={self.max_bytes}" if self.max_bytes is not None else ""
        private = ", private=True" if self.private else ""
        return f"FeatureCache({str(self.directory)!r}{limit}{private})"

    def __getstate__(self):
        if self._auto:
            # where it was fitted means nothing where it is unpickled: the
            # folder and the size limit come from the environment there
            return {"auto": True}
        return {
            "directory": self.directory,
            "max_bytes": self.max_bytes,
            "private": self.private,
        }

    def __setstate__(self, state):
        if state.get("auto"):
            folder, private, _ = default_location()
            self.__init__(folder, private=private)
            self._auto = True  # a fallback warns when the cache is opened
            return
        self.__init__(
            state["directory"], state.get("max_bytes"), private=state.get("private")
        )

    @property
    def storing(self) -> bool:
        """False once a problem stopped the cache from storing features."""
        return not self._disabled and self._writable

    # -- connection ---------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.directory / DB_NAME

    def _follow_default(self) -> None:
        """For ``cache="auto"``: move to the folder the environment names
        now, if it is not this one (a model used in another environment)."""
        folder, private, why = default_location()
        if folder == self.directory and private == self.private:
            if why is not None and why != self._reason:
                self._reason = why
                self._warn(f"{why}; the feature cache is in {str(folder)!r}.")
            return
        with self._mutex:
            self.close()
            self.directory, self._problem = folder, None
            self.private = private
            self._disabled, self._writable, self._inode = False, True, None
            self._reason = why
            if why is not None:
                self._warn(f"{why}; the feature cache is in {str(folder)!r}.")

    def _connect(self):
        if self._auto:
            self._follow_default()
        if self._disabled:
            return None
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self._conn = None  # never use a connection inherited through fork
        if self._problem is not None:
            self._disable(self._problem)
            return None
        try:
            make_folder(self.directory, self.private)
            problem = foreign_files(self.path, self.directory)
            if problem is None:
                with file_lock(self.directory, ".open", self.private):
                    conn = self._open()
        except (sqlite3.Error, OSError) as exc:
            self._disable(exc)
            return None
        if problem is not None:
            self._disable(problem)
            return None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _open(self):
        """Connect, checking the format; a database that cannot be ours is
        deleted and created again (under the open lock, so two processes
        never rebuild over each other)."""
        create_database_file(self.path, self.private)
        conn = raw_connect(self.path)
        try:
            problem = format_problem(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if not is_corrupt(exc):
                raise
            problem = f"is not a valid SQLite database ({exc})"
        except BaseException:
            conn.close()
            raise
        if problem is not None:
            conn.close()
            self._warn(
                f"the feature cache database {str(self.path)!r} {problem}; it is "
                "deleted and rebuilt (its features will be computed again)."
            )
            remove_files(self.path)
            create_database_file(self.path, self.private)
            conn = raw_connect(self.path)
            try:
                problem = format_problem(conn)
                if problem is not None:
                    raise sqlite3.DatabaseError(f"a new database {problem}")
            except BaseException:
                conn.close()
                raise
        self._inode = os.stat(self.path).st_ino
        return conn

    def _warn(self, message: str) -> None:
        warnings.warn(message, CacheWarning, stacklevel=5)

    def _disable(self, exc) -> None:
        """Stop using the cache; ``exc`` is an exception or a reason."""
        self._disabled = True
        self.close()
        why = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else exc
        self._warn(
            f"the feature cache at {str(self.directory)!r} cannot be used "
            f"({why}); features are computed without caching."
        )

    def _failed(self, exc, writing: bool) -> None:
        """React to an error of an open database."""
        if is_corrupt(exc):
            self._rebuild_after(exc)
        elif writing:
            self._writable = False
            self._warn(
                f"the feature cache at {str(self.directory)!r} cannot be used to "
                f"store new features ({type(exc).__name__}: {exc}); features are "
                "computed without caching from now on."
            )
        else:
            self._disable(exc)

    def _rebuild_after(self, exc) -> None:
        """A corrupt page found while working: start a new database (the
        next call creates it) unless another process did so already."""
        self._warn(
            f"the feature cache database {str(self.path)!r} is corrupt "
            f"({type(exc).__name__}: {exc}); it is deleted and rebuilt."
        )
        self.close()
        try:
            with file_lock(self.directory, ".open", self.private):
                if os.stat(self.path).st_ino == self._inode:
                    remove_files(self.path)
        except OSError:
            pass

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None

    # -- reads and writes ---------------------------------------------------

    def iter_many(self, model: str, images):
        """Yield ``(image, vector)`` for each of ``images`` cached under
        ``model``, 500 at a time; at most 500 vectors are held at once.

        The vectors are read-only float32 arrays over the database's bytes
        (no copy). An image given twice may be yielded twice. An entry whose
        checksum does not match its bytes is never yielded: it is deleted
        with a :class:`~sktransfer.exceptions.CacheWarning`, so that it is
        computed again.
        """
        keys = iter(images)
        while True:
            chunk = list(islice(keys, _CHUNK))
            if not chunk:
                return
            with self._mutex:
                conn = self._connect()
                if conn is None:
                    return
                marks = ",".join("?" * len(chunk))
                try:
                    rows = conn.execute(
                        f"SELECT id, image, dim, data, checksum FROM features "
                        f"WHERE model = ? AND image IN ({marks})",
                        [model, *chunk],
                    ).fetchall()
                except sqlite3.Error as exc:
                    self._failed(exc, writing=False)
                    return
                good, damaged = [], []
                for row_id, image, dim, data, checksum in rows:
                    if (
                        isinstance(data, bytes)
                        and len(data) == 4 * dim
                        and checksum == row_checksum(model, image, data)
                    ):
                        good.append((image, data))
                    else:
                        damaged.append((row_id, checksum))
                if damaged:
                    self._drop_damaged(damaged)
            for image, data in good:
                vec = np.frombuffer(data, dtype=np.float32)
                if np.isfinite(vec).all():  # never stored, so never served
                    yield image, vec

    def _drop_damaged(self, damaged: list) -> None:
        """Delete entries whose bytes no longer match their checksum (unless
        another process has replaced them meanwhile)."""
        self._warn(
            f"{len(damaged)} cached feature vector(s) in {str(self.path)!r} "
            "failed their checksum: their bytes changed on disk since they "
            "were written (a failing disk, or another program writing into "
            "the file). They are not used, and are computed again."
        )
        conn = self._conn
        if conn is None or not self._writable:
            return
        try:
            with transaction(conn):
                conn.executemany(
                    "DELETE FROM features WHERE id = ? AND checksum IS ?", damaged
                )
        except sqlite3.Error as exc:
            self._failed(exc, writing=True)

    def get_many(self, model: str, images) -> dict[str, np.ndarray]:
        """Cached vectors for ``images`` under ``model`` (missing ones absent).

        The vectors are read-only views of the bytes read from the database;
        nothing else is copied. To fill a large array, :meth:`iter_many`
        avoids holding all vectors at once.
        """
        return dict(self.iter_many(model, images))

    def put_many(self, model: str, items) -> None:
        """Store ``(image, vector)`` pairs in one transaction (all or none);
        then, past ``max_bytes``, evict the oldest entries. Vectors holding
        NaN or inf are left out."""
        if self._disabled or not self._writable:
            return
        rows = []
        now = time.time()
        for image, vec in items:
            vec = np.ascontiguousarray(vec, dtype=np.float32).ravel()
            if np.isfinite(vec).all():  # NaN or inf is never a feature
                data = vec.tobytes()
                checksum = row_checksum(model, image, data)
                rows.append((model, image, len(vec), data, checksum, now))
        if not rows:
            return
        with self._mutex:
            conn = self._connect()
            if conn is None or not self._writable:
                return
            try:
                with transaction(conn):
                    conn.executemany(
                        "INSERT OR REPLACE INTO features (model, image, dim, data, "
                        "checksum, created) VALUES (?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    add_count(conn, "computed", len(rows))
            except sqlite3.Error as exc:
                self._failed(exc, writing=True)
                return
            if self.max_bytes is not None and self._disk_bytes() > self.max_bytes:
                target = int(self.max_bytes * _EVICT_TO) - self._shm_bytes()
                try:
                    shrink(conn, target)
                except sqlite3.Error as exc:
                    self._failed(exc, writing=True)

    def evict(self, max_bytes) -> int:
        """Delete the oldest entries until the files take at most
        ``max_bytes`` (int, or a string such as ``"5G"``); return how many
        entries were deleted.

        The files shrink at once unless another process is reading at that
        moment; then the write-ahead log is truncated by a later checkpoint.
        """
        limit = parse_size(max_bytes)
        if limit is None:
            raise ValueError("evict needs a size: max_bytes must not be None.")
        with self._mutex:
            conn = self._connect()
            if conn is None or not self._writable:
                return 0
            try:
                return shrink(conn, limit - self._shm_bytes())
            except sqlite3.Error as exc:
                self._failed(exc, writing=True)
                return 0

    @contextlib.contextmanager
    def lock(self, model: str):
        """Hold the compute lock of ``model`` (advisory, across processes).

        The operating system releases it if the holder dies, so a killed
        worker never blocks the others.
        """
        if self._connect() is None or not self._writable:
            yield  # nothing will be stored: waiting for others gains nothing
            return
        with file_lock(self.directory, model, self.private):
            yield

    # -- inspection ---------------------------------------------------------

    def _files(self) -> list[Path]:
        return [p for p in self.directory.glob(DB_NAME + "*") if p.is_file()]

    def _disk_bytes(self) -> int:
        total = 0
        for p in self._files():
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    def _shm_bytes(self) -> int:
        try:
            return os.stat(f"{self.path}-shm").st_size
        except OSError:
            return 0

    def stats(self) -> dict:
        """``entries`` (vectors stored), ``models`` (distinct model
        fingerprints), ``bytes`` (size of the database files on disk),
        ``computed`` (vectors written since the cache was created or
        cleared), ``evicted`` (entries deleted by the size limit since then)
        and ``max_bytes`` (the limit, or None)."""
        empty = {"entries": 0, "models": 0, "bytes": 0, "computed": 0, "evicted": 0}
        with self._mutex:
            conn = self._connect()
            if conn is None:
                return {**empty, "max_bytes": self.max_bytes}
            try:
                entries, models = conn.execute(
                    "SELECT COUNT(*), COUNT(DISTINCT model) FROM features"
                ).fetchone()
                counters = dict(conn.execute("SELECT name, value FROM counters"))
            except sqlite3.Error as exc:
                self._failed(exc, writing=False)
                return {**empty, "max_bytes": self.max_bytes}
        return {
            "entries": int(entries),
            "models": int(models),
            "bytes": self._disk_bytes(),
            "computed": int(counters.get("computed", 0)),
            "evicted": int(counters.get("evicted", 0)),
            "max_bytes": self.max_bytes,
        }

    def clear(self) -> None:
        """Delete every cached vector and reset the counters."""
        with self._mutex:
            conn = self._connect()
            if conn is None:
                return
            try:
                with transaction(conn):
                    conn.execute("DELETE FROM features")
                    conn.execute("DELETE FROM counters")
                reclaim(conn)
            except sqlite3.Error as exc:
                self._failed(exc, writing=True)
