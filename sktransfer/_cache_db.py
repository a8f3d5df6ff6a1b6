"""The feature cache's SQLite database: its format, its rows and how they
are written and evicted.

One database in WAL mode: every write is a transaction, so a crash or a
concurrent writer never leaves a half-written entry, and readers never block
writers. Each row holds a CRC-32 of its keys and vector bytes
(:func:`row_checksum`), which the reader checks. Rows are evicted oldest first
(:func:`shrink`), and the freed pages are given back to the file system.

Standard library only.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import zlib
from pathlib import Path

#: Version 2: rowid table (insertion order = eviction order), 64 KiB pages,
#: incremental auto-vacuum (evicted space is given back to the file system).
#: Version 3: a checksum per row. Each version has a file of its own, so an
#: older sktransfer sharing the folder keeps its file and never fights over
#: one with a newer one.
FORMAT_VERSION = 3
DB_NAME = f"features-v{FORMAT_VERSION}.sqlite"
_BUSY_TIMEOUT = 120.0  # seconds a writer waits for another one
#: 64 KiB pages waste little space whatever the vector length: at 4 KiB, a
#: 512-float vector (2,048 bytes plus its keys) takes a page of its own.
_PAGE_SIZE = 65536
_WAL_AUTOCHECKPOINT = 256  # pages (16 MiB of write-ahead log)

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
#: The files SQLite keeps beside the database.
COMPANIONS = ("-wal", "-shm", "-journal")


def raw_connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(
        path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
    )


def format_problem(conn) -> str | None:
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
        with transaction(conn):
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


def is_corrupt(exc: BaseException) -> bool:
    """True for a file that is not a database or a damaged one (as opposed
    to one that cannot be opened, written or locked)."""
    name = getattr(exc, "sqlite_errorname", None)  # Python >= 3.11
    if name is not None:
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    text = str(exc)
    return "not a database" in text or "malformed" in text


def row_checksum(model: str, image: str, data: bytes) -> int:
    """CRC-32 of an entry's keys and vector bytes: a vector changed on disk,
    or moved to another key, no longer matches."""
    key = f"{model}\0{image}".encode("utf-8", "surrogatepass")
    return zlib.crc32(data, zlib.crc32(key))


def add_count(conn, name: str, n: int) -> None:
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


def shrink(conn, target: int) -> int:
    """Delete the oldest entries until the pages in use fit in ``target``
    bytes, give the freed pages back to the file system, and return the
    number of entries deleted."""
    deleted = 0
    for _ in range(16):  # each pass estimates better; a few always suffice
        with transaction(conn):
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
            add_count(conn, "evicted", k)
        deleted += k
    reclaim(conn)
    return deleted


def reclaim(conn) -> None:
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
def transaction(conn):
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
