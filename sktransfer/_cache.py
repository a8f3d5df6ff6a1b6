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

This module needs only the standard library and numpy (the fault tests load
it on its own in subprocesses, without importing torch).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sqlite3
import stat
import tempfile
import threading
import time
import warnings
import zlib
from itertools import islice
from pathlib import Path

import numpy as np

try:
    from .exceptions import CacheWarning
except ImportError:  # this file loaded on its own (writer processes in tests)
    CacheWarning = UserWarning

#: Version 2: rowid table (insertion order = eviction order), 64 KiB pages,
#: incremental auto-vacuum (evicted space is given back to the file system).
#: Version 3: a checksum per row. Each version has a file of its own, so an
#: older sktransfer sharing the folder keeps its file and never fights over
#: one with a newer one.
FORMAT_VERSION = 3
_DB_NAME = f"features-v{FORMAT_VERSION}.sqlite"
_CHUNK = 500
_BUSY_TIMEOUT = 120.0  # seconds a writer waits for another one
#: 64 KiB pages waste little space whatever the vector length: at 4 KiB, a
#: 512-float vector (2,048 bytes plus its keys) takes a page of its own.
_PAGE_SIZE = 65536
_WAL_AUTOCHECKPOINT = 256  # pages (16 MiB of write-ahead log)
#: Eviction triggered by a write goes down to this fraction of the limit, so
#: that it runs once per tenth of the limit written, not after every write.
_EVICT_TO = 0.9

_TABLES = frozenset({"meta", "features", "counters"})
_COLUMNS = ("id", "model", "image", "dim", "data", "checksum", "created")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # ``id`` grows with every insert (SQLite hands out max(id) + 1 under the
    # write lock), so ``ORDER BY id`` is the order of creation across
    # processes, independent of the clocks behind ``created``.
    """CREATE TABLE IF NOT EXISTS features (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        image TEXT NOT NULL,
        dim INTEGER NOT NULL,
        data BLOB NOT NULL,
        checksum INTEGER NOT NULL,
        created REAL NOT NULL,
        UNIQUE (model, image)
    )""",
    "CREATE TABLE IF NOT EXISTS counters "
    "(name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)

_MAX_BYTES_ENV = "SKTRANSFER_CACHE_MAX_BYTES"
#: The smallest ``max_bytes`` that keeps anything: an empty database, its
#: log and its shared-memory file already take about 600 KB.
MIN_MAX_BYTES = 1024**2
_COMPANIONS = ("-wal", "-shm", "-journal")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def _default_location() -> tuple[Path, bool, str | None]:
    """``(folder, private, why)``: ``private`` when the package chose the
    folder (not the user), ``why`` the reason a fallback was taken."""
    env = os.environ.get("SKTRANSFER_CACHE")
    reasons = []
    if env:  # set and empty means unset, as for the XDG variables
        folder, problem = _expand_user(env)
        if problem is None:
            problem = _folder_problem(env)
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


def _folder_problem(text: str) -> str | None:
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
        folder, private, why = _default_location()
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
        problem = _folder_problem(text)
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


def _expand_user(directory) -> tuple[Path, str | None]:
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


def _check_limit(limit: int | None, what: str) -> int | None:
    if limit is not None and limit < MIN_MAX_BYTES:
        raise ValueError(
            f"{what}={limit:,} bytes is smaller than an empty feature cache "
            f"(about 600 KB of tables and logs), so nothing could stay cached; "
            f"give at least {MIN_MAX_BYTES:,} bytes ('1M'), or cache=None to "
            "compute without caching."
        )
    return limit


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
        self.directory, self._problem = _expand_user(directory)
        if max_bytes is None:
            env = os.environ.get(_MAX_BYTES_ENV) or None
            self.max_bytes = _check_limit(
                parse_size(env, f"${_MAX_BYTES_ENV}"), f"${_MAX_BYTES_ENV}"
            )
        else:
            self.max_bytes = _check_limit(parse_size(max_bytes), "max_bytes")
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
        return _default_location()[0]

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
            folder, private, _ = _default_location()
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
        return self.directory / _DB_NAME

    def _follow_default(self) -> None:
        """For ``cache="auto"``: move to the folder the environment names
        now, if it is not this one (a model used in another environment)."""
        folder, private, why = _default_location()
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
            self._make_folder()
            problem = self._foreign_files()
            if problem is None:
                with self._file_lock(".open"):
                    conn = self._open()
        except (sqlite3.Error, OSError) as exc:
            self._disable(exc)
            return None
        if problem is not None:
            self._disable(problem)
            return None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _make_folder(self) -> None:
        warn_if_network_filesystem(self.directory)
        if not self.private:
            self.directory.mkdir(parents=True, exist_ok=True)
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not hasattr(os, "getuid"):
            return
        uid = os.getuid()
        link, folder = os.lstat(self.directory), os.stat(self.directory)
        if link.st_uid != uid or folder.st_uid != uid:
            # e.g. a folder (or a link) another user made in the temp folder
            raise PermissionError(
                f"the folder belongs to another user (uid {folder.st_uid}), "
                "who could read or change what is stored in it"
            )
        if stat.S_IMODE(folder.st_mode) & 0o077:
            os.chmod(self.directory, 0o700)

    def _foreign_files(self) -> str | None:
        """Why a file where the cache keeps its own is not its own, if so."""
        checks = [(self.path, "file")]
        checks += [(Path(f"{self.path}{end}"), "file") for end in _COMPANIONS]
        checks.append((self.directory / "locks", "folder"))
        for path, kind in checks:
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            is_file = stat.S_ISREG(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                why = "is a symbolic link"
            elif kind == "folder" and not stat.S_ISDIR(info.st_mode):
                why = "is not a folder"
            elif kind == "file" and not is_file:
                why = "is not a regular file"
            elif kind == "file" and info.st_nlink > 1:
                why = f"has {info.st_nlink - 1} other hard link(s)"
            else:
                continue
            return (
                f"{str(path)!r} {why}; the cache never opens a file that may "
                "belong to another program (it would modify it). Remove it, or "
                "choose another cache folder"
            )
        return None

    def _create_database_file(self) -> None:
        """Create the empty database file, private when the folder is, and
        never through a link (SQLite gives its -wal and -shm files the
        database file's permissions)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags, 0o600 if self.private else 0o666)
        except FileExistsError:
            return  # another process was faster
        os.close(fd)

    def _open(self):
        """Connect, checking the format; a database that cannot be ours is
        deleted and created again (under the open lock, so two processes
        never rebuild over each other)."""
        self._create_database_file()
        conn = _raw_connect(self.path)
        try:
            problem = _format_problem(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if not _is_corrupt(exc):
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
            self._remove_files()
            self._create_database_file()
            conn = _raw_connect(self.path)
            try:
                problem = _format_problem(conn)
                if problem is not None:
                    raise sqlite3.DatabaseError(f"a new database {problem}")
            except BaseException:
                conn.close()
                raise
        self._inode = os.stat(self.path).st_ino
        return conn

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{self.path}{suffix}")

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
        if _is_corrupt(exc):
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
            with self._file_lock(".open"):
                if os.stat(self.path).st_ino == self._inode:
                    self._remove_files()
        except OSError:
            pass

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None

    @contextlib.contextmanager
    def _file_lock(self, name: str):
        """An advisory lock held across processes. The operating system
        releases it if the holder dies, so a killed process never blocks
        the others. Without ``fcntl`` (Windows) or a writable directory,
        there is no lock, which is still correct, only slower."""
        try:
            import fcntl
        except ImportError:
            fcntl = None
        fd = None
        if fcntl is not None:
            lock_dir = self.directory / "locks"
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
            try:
                lock_dir.mkdir(mode=0o700 if self.private else 0o777, exist_ok=True)
                if not stat.S_ISDIR(os.lstat(lock_dir).st_mode):
                    raise OSError("the locks folder is a link")
                mode = 0o600 if self.private else 0o666
                fd = os.open(lock_dir / f"{name}.lock", flags, mode)
            except OSError:
                fd = None
        if fd is None:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            # closing releases the lock even when an interrupt stops LOCK_UN;
            # a descriptor left open holding it would block this process
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

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
                        and checksum == _checksum(model, image, data)
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
            with _transaction(conn):
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
                checksum = _checksum(model, image, data)
                rows.append((model, image, len(vec), data, checksum, now))
        if not rows:
            return
        with self._mutex:
            conn = self._connect()
            if conn is None or not self._writable:
                return
            try:
                with _transaction(conn):
                    conn.executemany(
                        "INSERT OR REPLACE INTO features (model, image, dim, data, "
                        "checksum, created) VALUES (?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    _count(conn, "computed", len(rows))
            except sqlite3.Error as exc:
                self._failed(exc, writing=True)
                return
            if self.max_bytes is not None and self._disk_bytes() > self.max_bytes:
                target = int(self.max_bytes * _EVICT_TO) - self._shm_bytes()
                try:
                    _shrink(conn, target)
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
                return _shrink(conn, limit - self._shm_bytes())
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
        with self._file_lock(model):
            yield

    # -- inspection ---------------------------------------------------------

    def _files(self) -> list[Path]:
        return [p for p in self.directory.glob(_DB_NAME + "*") if p.is_file()]

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
                with _transaction(conn):
                    conn.execute("DELETE FROM features")
                    conn.execute("DELETE FROM counters")
                _reclaim(conn)
            except sqlite3.Error as exc:
                self._failed(exc, writing=True)


# -- SQLite helpers -------------------------------------------------------------


def _raw_connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(
        path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
    )


def _format_problem(conn) -> str | None:
    """None when ``conn`` holds a cache of this format (creating one in an
    empty database); else what is wrong with it. Raises
    ``sqlite3.DatabaseError`` for a file that is not a database."""
    tables = _tables(conn)
    if not tables:
        # Only possible before the first table exists.
        conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_AUTOCHECKPOINT}")
    conn.execute(f"PRAGMA journal_size_limit = {_WAL_AUTOCHECKPOINT * _PAGE_SIZE}")
    if not tables:
        with _transaction(conn):
            if not _tables(conn):  # nobody was faster
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta VALUES ('format_version', ?)",
                    (str(FORMAT_VERSION),),
                )
        tables = _tables(conn)
    missing = sorted(_TABLES - tables)
    if missing:
        return f"lacks the table(s) {', '.join(missing)}"
    row = conn.execute(
        "SELECT value FROM meta WHERE name = 'format_version'"
    ).fetchone()
    if row is None:
        return "has no format version"
    if row[0] != str(FORMAT_VERSION):
        return (
            f"has format version {row[0]!r}; this version of sktransfer reads "
            f"version {FORMAT_VERSION}"
        )
    columns = tuple(r[1] for r in conn.execute("PRAGMA table_info(features)"))
    if columns != _COLUMNS:
        return f"has a features table with columns {columns}, not {_COLUMNS}"
    return None


def _tables(conn) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {name for (name,) in rows}


def _is_corrupt(exc: BaseException) -> bool:
    """True for a file that is not a database or a damaged one (as opposed
    to one that cannot be opened, written or locked)."""
    name = getattr(exc, "sqlite_errorname", None)  # Python >= 3.11
    if name is not None:
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    text = str(exc)
    return "not a database" in text or "malformed" in text


def _checksum(model: str, image: str, data: bytes) -> int:
    """CRC-32 of an entry's keys and vector bytes: a vector changed on disk,
    or moved to another key, no longer matches."""
    key = f"{model}\0{image}".encode("utf-8", "surrogatepass")
    return zlib.crc32(data, zlib.crc32(key))


def _count(conn, name: str, n: int) -> None:
    conn.execute(
        "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) "
        "DO UPDATE SET value = value + excluded.value",
        (name, n),
    )


def _content_bytes(conn) -> int:
    """Bytes of the pages in use (the file size once free pages are given
    back and the write-ahead log is checkpointed)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return (pages - free) * size


def _shrink(conn, target: int) -> int:
    """Delete the oldest entries until the pages in use fit in ``target``
    bytes, give the freed pages back to the file system, and return the
    number of entries deleted."""
    deleted = 0
    for _ in range(16):  # each pass estimates better; a few always suffice
        with _transaction(conn):
            used = _content_bytes(conn)
            if used <= target:
                break
            (n,) = conn.execute("SELECT COUNT(*) FROM features").fetchone()
            if n == 0:
                break
            k = min(n, max(1, math.ceil((used - target) / (used / n))))
            conn.execute(
                "DELETE FROM features WHERE id IN "
                "(SELECT id FROM features ORDER BY id LIMIT ?)",
                (k,),
            )
            _count(conn, "evicted", k)
        deleted += k
    _reclaim(conn)
    return deleted


def _reclaim(conn) -> None:
    """Give free pages back and fold the write-ahead log into the database.
    The checkpoint does not wait: with a reader active, the log is
    truncated by a later one."""
    # executescript steps the pragma to the end; execute() frees one page.
    conn.executescript("PRAGMA incremental_vacuum;")
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT * 1000)}")


@contextlib.contextmanager
def _transaction(conn):
    try:
        # inside the try: an interrupt (Ctrl-C) just after BEGIN must not
        # leave the write lock held, blocking every other writer
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (disk full, I/O error).
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def warn_if_network_filesystem(directory, mounts=None) -> str | None:
    """Warn with a :class:`~sktransfer.exceptions.CacheWarning` when the cache folder
    ``directory`` is on a network file system; return its type (or None)."""
    try:
        from ._mounts import network_filesystem
    except ImportError:  # this file loaded on its own (writer processes in tests)
        return None
    fstype = network_filesystem(directory, mounts)
    if fstype is not None:
        warnings.warn(
            f"the feature cache {str(directory)!r} is on a network file system "
            f"({fstype}): SQLite's locks are not reliable there, and workers "
            "on several machines writing to one cache can corrupt it. Give "
            "each machine a cache on its own local disk, e.g. "
            "cache='/local/scratch/sktransfer' or $SKTRANSFER_CACHE.",
            CacheWarning,
            stacklevel=3,
        )
    return fstype
