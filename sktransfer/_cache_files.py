"""The feature cache's files on disk: its folder, the files it refuses to
open, and the advisory locks that order processes.

The cache never touches a file that is not its own: a database file (or its
``-wal``/``-shm``/``-journal`` companion, or the ``locks`` folder) that is a
symbolic link, a hard link or not a regular file is reported by
:func:`foreign_files` instead of being opened. A private folder (the default
one, which the package creates) is 0700 with files 0600, and is used only if
it belongs to the user; a folder the user chose keeps the permissions the
user's umask gives.

Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from ._cache_db import COMPANIONS
from ._mounts import warn_if_network_filesystem


def make_folder(directory: Path, private: bool) -> None:
    """Create the cache folder; a private one must belong to the user, and
    loses any permission for others."""
    warn_if_network_filesystem(directory)
    if not private:
        directory.mkdir(parents=True, exist_ok=True)
        return
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not hasattr(os, "getuid"):
        return
    uid = os.getuid()
    link, folder = os.lstat(directory), os.stat(directory)
    if link.st_uid != uid or folder.st_uid != uid:
        # e.g. a folder (or a link) another user made in the temp folder
        raise PermissionError(
            f"the folder belongs to another user (uid {folder.st_uid}), "
            "who could read or change what is stored in it"
        )
    if stat.S_IMODE(folder.st_mode) & 0o077:
        os.chmod(directory, 0o700)


def foreign_files(path: Path, directory: Path) -> str | None:
    """Why a file where the cache keeps its own (the database ``path``, its
    companions, the ``locks`` folder of ``directory``) is not its own, if so."""
    checks = [(path, "file")]
    checks += [(Path(f"{path}{end}"), "file") for end in COMPANIONS]
    checks.append((directory / "locks", "folder"))
    for where, kind in checks:
        try:
            info = os.lstat(where)
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
            f"{str(where)!r} {why}; the cache never opens a file that may "
            "belong to another program (it would modify it). Remove it, or "
            "choose another cache folder"
        )
    return None


def create_database_file(path: Path, private: bool) -> None:
    """Create the empty database file, private when the folder is, and
    never through a link (SQLite gives its -wal and -shm files the
    database file's permissions)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600 if private else 0o666)
    except FileExistsError:
        return  # another process was faster
    os.close(fd)


def remove_files(path: Path) -> None:
    """Delete the database file and its companions."""
    for suffix in ("", *COMPANIONS):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")


@contextlib.contextmanager
def file_lock(directory: Path, name: str, private: bool):
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
        lock_dir = directory / "locks"
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            lock_dir.mkdir(mode=0o700 if private else 0o777, exist_ok=True)
            if not stat.S_ISDIR(os.lstat(lock_dir).st_mode):
                raise OSError("the locks folder is a link")
            mode = 0o600 if private else 0o666
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
