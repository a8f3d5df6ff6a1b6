"""Which file system holds a path: the check that keeps a SQLite feature
cache off network file systems, where its locks cannot be trusted.

Standard library only, so that the cache can run it without importing
anything heavy. :func:`warn_if_network_filesystem` is the warning the cache
gives.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from .exceptions import CacheWarning

#: File-system types on which SQLite's locking cannot be trusted: network
#: file systems (their POSIX advisory locks are missing, emulated or
#: per-client) and FUSE mounts of remote storage.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb",
        "smb2",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "9p",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "davfs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.cephfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.rclone",
        "fuse.davfs",
        "fuse.juicefs",
        "fuse.goofys",
        "fuse.blobfuse",
        "fuse.mountpoint-s3",
    }
)

#: The mount table :func:`network_filesystem` reads by default (Linux).
MOUNT_TABLE = "/proc/mounts"


def network_filesystem(path, mounts=None) -> str | None:
    """The network file-system type holding ``path``, or None if it is local.

    The feature cache is a SQLite database: SQLite's locks do not work
    reliably on network file systems (NFS, SMB/CIFS, sshfs and other FUSE
    mounts of remote storage), and a cache there can be corrupted by two
    machines writing at once. This check is cheap (it reads the mount
    table once) and never fails: where the type cannot be known it answers
    None.

    Parameters
    ----------
    path : str or path-like
        A file or folder; it need not exist yet (its nearest existing parent
        is checked).
    mounts : str, default=None
        The mount table to read; None reads :data:`MOUNT_TABLE`
        (``/proc/mounts``, Linux). Elsewhere only Windows UNC paths
        (``\\\\server\\share``) are recognised.

    Returns
    -------
    fstype : str or None
        For example ``"nfs4"``, ``"cifs"`` or ``"fuse.sshfs"``; None for a
        local file system or an unknown one.

    Examples
    --------
    >>> network_filesystem("/tmp") is None
    True
    """
    text = os.fspath(path)
    if text.startswith(("\\\\", "//")) and os.name == "nt":
        return "smb"
    try:
        target = _nearest_existing(Path(text).expanduser().absolute()).resolve()
    except (OSError, RuntimeError):
        return None
    table = _read_mounts(MOUNT_TABLE if mounts is None else mounts)
    best, fstype = "", None
    for mount_point, kind in table:
        if _is_under(str(target), mount_point) and len(mount_point) >= len(best):
            best, fstype = mount_point, kind
    if fstype is None:
        return None
    fstype = fstype.lower()
    if fstype in NETWORK_FILESYSTEMS or fstype.startswith("nfs"):
        return fstype
    return None


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _read_mounts(mounts) -> list[tuple[str, str]]:
    try:
        with open(mounts, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    table = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 3:
            # spaces and tabs in mount points are written as octal escapes
            point = fields[1].encode().decode("unicode_escape")
            table.append((point, fields[2]))
    return table


def _is_under(path: str, mount_point: str) -> bool:
    if mount_point == "/":
        return True
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def warn_if_network_filesystem(directory, mounts=None) -> str | None:
    """Warn with a :class:`~sktransfer.exceptions.CacheWarning` when the cache folder
    ``directory`` is on a network file system; return its type (or None)."""
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
