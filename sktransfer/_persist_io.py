"""Files of a saved model folder, written and read safely: a save writes
everything under temporary names and switches models by renames (with
fsync), one save at a time per folder (a lock); reads take regular files
only, once, into memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import stat
import threading
from pathlib import Path

from ._model_card import CARD_FILE
from ._persist_format import FORMAT_NAME, MODEL_FILE, PENDING_FILE, WEIGHTS_FILE
from .exceptions import ModelFormatError


def write_and_switch(folder: Path, document: dict, tensors: dict) -> None:
    """Write ``tensors`` and ``document`` (completed with the weights'
    sha256 under ``"files"``) into ``folder`` as one switch of models.

    Everything is written under new names first; then three renames switch
    models: the complete next model.json to PENDING_FILE, the weights into
    place, PENDING_FILE to model.json. Between the last two, load finds the
    new model through PENDING_FILE (it records the sha256 of the new
    weights), so an interruption at any moment leaves the old model or the
    new one loadable, never a mix."""
    from safetensors.torch import save_file

    with _temporary_file(folder, WEIGHTS_FILE) as weights_tmp:
        save_file(tensors, str(weights_tmp), metadata={"format": FORMAT_NAME})
        _fsync(weights_tmp)
        document = {**document, "files": {WEIGHTS_FILE: _sha256(weights_tmp)}}
        with _temporary_file(folder, MODEL_FILE) as model_tmp:
            text = json.dumps(document, indent=1, allow_nan=True) + "\n"
            model_tmp.write_text(text, encoding="utf-8")
            _fsync(model_tmp)
            os.replace(model_tmp, folder / PENDING_FILE)
        os.replace(weights_tmp, folder / WEIGHTS_FILE)
    os.replace(folder / PENDING_FILE, folder / MODEL_FILE)
    _fsync_folder(folder)


def write_text(folder: Path, name: str, text: str) -> None:
    """Write ``text`` to ``folder / name`` by a rename (never half a file)."""
    with _temporary_file(folder, name) as tmp:
        tmp.write_text(text, encoding="utf-8")
        _fsync(tmp)
        os.replace(tmp, folder / name)


#: Saves of this process, one at a time (threads), and the folder locks
#: this process holds: ``(st_dev, st_ino) -> fd``.
# re-entrant: a save interrupted inside contextlib, before the generator
# resumes, can leave the lock held by this thread until garbage collection
_SAVES = threading.RLock()
_HELD: dict = {}


@contextlib.contextmanager
def _save_lock(folder: Path):
    """One save at a time in ``folder``: a lock between the threads of this
    process, and an advisory lock on the folder itself between processes
    (so that no lock file is left in it; POSIX only).

    A save interrupted at the wrong instant (a KeyboardInterrupt between
    taking the folder's lock and closing its descriptor) could leave this
    process holding it, and every later save into the folder would wait
    for ever. The process therefore records the locks it holds: when no
    other save of this process runs, a recorded lock is such a leftover,
    and it is released before the folder is locked again."""
    try:
        import fcntl
    except ImportError:  # Windows: saves are serialised within the process
        fcntl = None
    with _SAVES:
        if fcntl is None:
            yield
            return
        info = os.stat(folder)
        key = (info.st_dev, info.st_ino)
        # forgotten only once closed: an interrupt in between must not
        # lose the record of a descriptor that still holds the lock
        leftover = _HELD.get(key)
        if leftover is not None:
            if _descriptor_of(leftover, key):
                os.close(leftover)
            del _HELD[key]
        fd = os.open(folder, os.O_RDONLY)
        _HELD[key] = fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock
            _HELD.pop(key, None)


def _descriptor_of(fd: int, key) -> bool:
    """Whether ``fd`` is still open on the folder ``key`` names."""
    try:
        info = os.fstat(fd)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == key


def finish_or_discard_interrupted_save(folder: Path) -> None:
    """Clean up after a save interrupted in this folder: finish its switch
    when its weights are already in place (they belong to PENDING_FILE, and
    model.json is the older model's), otherwise drop what it left."""
    pending = folder / PENDING_FILE
    if pending.is_file():
        try:
            document = json.loads(_read_bytes(pending))
            weights = _read_bytes(folder / WEIGHTS_FILE)
            complete = document["files"][WEIGHTS_FILE] == _sha256_of(weights)
        except (OSError, ValueError, TypeError, KeyError, RecursionError):
            complete = False
        if complete:
            os.replace(pending, folder / MODEL_FILE)
        else:
            pending.unlink(missing_ok=True)
    for name in (MODEL_FILE, WEIGHTS_FILE, CARD_FILE):
        for leftover in folder.glob(f".{name}.*.tmp"):
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def _temporary_file(folder: Path, name: str):
    """A new empty file ``.{name}.{random}.tmp`` in ``folder``, removed on
    exit unless it was renamed. Created with the permissions the umask gives
    (mkstemp's are owner-only), since it becomes the saved file."""
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync(path: Path) -> None:
    """Data on disk before the rename that publishes it."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_folder(folder: Path) -> None:
    """The renames on disk too (POSIX; Windows cannot open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_bytes(path: Path) -> bytes:
    """The bytes of a regular file; a folder, device or pipe in its place
    (``/dev/zero`` would never end) is a :class:`ModelFormatError`."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)  # non-blocking: opening a pipe does not wait
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ModelFormatError(
                f"{path} is a folder; it must be the file that save wrote."
            )
        if not stat.S_ISREG(mode):
            raise ModelFormatError(
                f"{path} is not a regular file (a device, pipe or socket); it "
                "must be the file that save wrote."
            )
        with os.fdopen(fd, "rb") as f:
            fd = None  # closed by f
            return f.read()
    finally:
        if fd is not None:
            os.close(fd)


def _read_text(path: Path) -> str:
    try:
        return _read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelFormatError(f"{path} is not valid JSON ({exc}).") from None


def _identity(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
