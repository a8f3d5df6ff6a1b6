"""Checkpoints of a fit in progress (``checkpoint_dir``).

With a folder named, a fit writes its state there after every stage and
after every epoch of a stage that runs the body on images (stages on cached
features take less time than the writing): the model's weights,
the history so far, the learning-rate sweeps, the guard's best weights, and,
inside a stage, the optimizer's moments, the callbacks' states (schedule,
early stopping, snapshots, the user's), the weights' moving average and
torch's random state. A later fit of the same estimator on the same photos
and targets finds the file and goes on from there, and ends with the model
an uninterrupted fit ends with. The file is removed when the fit succeeds.

The file is named by a digest of what decides the fit: the estimator's
parameters (but ``verbose``, ``callbacks``, ``cache`` and the folder), each
image's content fingerprint, the targets, the weights, the validation
images and, for a warm start, the weights it starts from. A checkpoint of
any other fit is never read. With ``random_state=None`` the seed a fit drew
is kept in its checkpoint, so that the resumed fit splits and draws alike.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import types
import warnings
from pathlib import Path

import numpy as np
import torch

from ._fingerprints import update_with_state
from ._persist_io import _fsync, _temporary_file

#: Written into every checkpoint; a file of another format is not read.
FORMAT = 1
#: Parameters that do not change what a fit computes.
_NOT_IN_KEY = frozenset({"verbose", "callbacks", "cache", "checkpoint_dir"})


def fit_key(estimator, body_key: str, fingerprints, arrays, start_state=None) -> str:
    """The digest that names a fit's checkpoint: the estimator's class and
    parameters, the body (``body_key``: backbone, weights, preprocessing,
    precision), each image's content ``fingerprints``, the ``arrays``
    (targets, weights) and the weights a warm start starts from."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(
        f"{type(estimator).__module__}.{type(estimator).__qualname__}".encode()
    )
    params = estimator.get_params(deep=False)
    for name in sorted(set(params) - _NOT_IN_KEY):
        digest.update(f"{name}={_stable_repr(params[name])};".encode())
    digest.update(str(body_key).encode())
    for fingerprint in fingerprints:
        digest.update(str(fingerprint).encode())
    for array in arrays:
        array = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    update_with_state(digest, start_state or {})
    return digest.hexdigest()


def _stable_repr(value) -> str:
    """A parameter as the key sees it: its ``repr``, unless it is or holds
    code (a function, a lambda, a transform pipeline) or its ``repr``
    holds a memory address, which changes from one process to the next.
    Then a digest of what :class:`_CodePickler` writes for it: functions
    by their name, compiled code, defaults and the values they close over;
    classes by their name and their methods' code (their bases' included);
    sets in sorted order; arrays and tensors by a digest of their bytes.
    So the same script finds its checkpoint after a Ctrl-C, and a function
    edited in between starts the fit again (its checkpoint would mix two
    augmentations); so does a helper function, class or plain constant of
    the same module that a function names. Not seen: other globals (a list
    it reads, another module's code) and a class's attributes other than
    its methods. A value even that cannot write keeps its ``repr``."""
    text = repr(value)
    try:
        if " at 0x" not in text and not _holds_code(value):
            return text
        buffer = io.BytesIO()
        _CodePickler(buffer).dump(value)
    except Exception:
        return text
    return "code:" + hashlib.blake2b(buffer.getvalue(), digest_size=16).hexdigest()


def _holds_code(value) -> bool:
    """Whether ``value`` is callable or is a container or object whose
    attributes hold something callable (a transform pipeline with a
    ``Lambda``, a ``functools.partial``)."""
    seen = set()

    def walk(item, depth):
        if id(item) in seen or depth > 6:
            return False
        seen.add(id(item))
        if callable(item) and not isinstance(item, type):
            return True
        if isinstance(item, (list, tuple, set, frozenset)):
            return any(walk(part, depth + 1) for part in item)
        if isinstance(item, dict):
            return any(walk(part, depth + 1) for part in item.values())
        attributes = getattr(item, "__dict__", None)
        if isinstance(attributes, dict) and not isinstance(item, type):
            return any(walk(part, depth + 1) for part in attributes.values())
        return False

    return walk(value, 0)


def _constant(value) -> str:
    """A compiled constant as text that is the same in every process (a
    frozenset's order follows the strings' hashes, which differ)."""
    if isinstance(value, types.CodeType):
        return _code_digest(value)
    if isinstance(value, frozenset):
        return "frozenset" + repr(sorted(_constant(part) for part in value))
    if isinstance(value, tuple):
        return "(" + ",".join(_constant(part) for part in value) + ")"
    return repr(value)


def _code_digest(code: types.CodeType) -> str:
    """A compiled function body's bytes, names and constants (nested
    functions' bodies included): what an edit to the source changes, but
    not the line numbers a comment above it shifts."""
    digest = hashlib.blake2b(code.co_code, digest_size=16)
    digest.update(repr((code.co_names, code.co_varnames, code.co_freevars)).encode())
    for constant in code.co_consts:
        digest.update(_constant(constant).encode())
    return digest.hexdigest()


def _named(*parts):
    """Stands for a function or class in the key's pickle (never called)."""


class _CodePickler(pickle.Pickler):
    """Pickles a parameter for the checkpoint's key only (nothing reads it
    back): functions and classes by their code, not only their names."""

    def __init__(self, file):
        super().__init__(file, protocol=4)
        self.writing = set()  # ids of the functions and classes being written

    def persistent_id(self, obj):
        # called for every object, sets included (reducer_override is not)
        if type(obj) in (set, frozenset):
            return ("set", sorted(_stable_repr(part) for part in obj))
        return None

    def reducer_override(self, obj):
        if obj is _named:
            return NotImplemented
        if isinstance(obj, np.ndarray) and obj.dtype != object:
            return _named, ("ndarray", str(obj.dtype), obj.shape, _bytes_digest(obj))
        if isinstance(obj, torch.Tensor):  # torch's own pickle is not stable
            flat = obj.detach().cpu().contiguous().reshape(-1)
            return _named, ("tensor", str(obj.dtype), tuple(obj.shape),
                            _bytes_digest(flat.view(torch.uint8).numpy()))  # fmt: skip
        if isinstance(obj, types.ModuleType):
            return _named, ("module", obj.__name__)
        if isinstance(obj, types.MethodType):
            return _named, ("method", obj.__func__, obj.__self__)
        if isinstance(obj, (types.FunctionType, type)):
            if id(obj) in self.writing:  # a function that calls itself
                return _named, ("recursive", obj.__module__, obj.__qualname__)
            self.writing.add(id(obj))
            try:
                return self._code_of(obj)
            finally:
                self.writing.discard(id(obj))
        return NotImplemented

    def _code_of(self, obj):
        if isinstance(obj, type):
            members = []
            for cls in obj.__mro__:
                if cls.__module__ == "builtins":
                    continue
                for name, member in sorted(vars(cls).items()):
                    if isinstance(member, property):
                        members.append((name, member.fget, member.fset))
                        continue
                    function = getattr(member, "__func__", member)
                    if isinstance(function, types.FunctionType):
                        members.append((name, function))
            # written now, while the class is marked as being written
            members = _stable_parts(self, members)
            return _named, ("class", obj.__module__, obj.__qualname__, members)
        cells = []
        for cell in obj.__closure__ or ():
            try:
                cells.append(cell.cell_contents)
            except ValueError:  # a cell not yet filled
                cells.append("<empty cell>")
        parts = (obj.__defaults__, obj.__kwdefaults__, tuple(cells), _globals_used(obj))
        code = _code_digest(obj.__code__)
        name = (obj.__module__, obj.__qualname__)
        return _named, ("function", *name, code, _stable_parts(self, parts))


def _globals_used(function) -> tuple:
    """The functions, classes and plain constants of ``function``'s own
    module that its code names (a helper it calls, a setting it reads):
    an edit to them changes what it does."""
    names, stack = set(), [function.__code__]
    while stack:
        code = stack.pop()
        names.update(code.co_names)
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    used = []
    space = function.__globals__
    for name in sorted(names):
        value = space.get(name)
        if isinstance(value, (types.FunctionType, type)):
            if getattr(value, "__module__", None) == function.__module__:
                used.append((name, value))
        elif isinstance(value, (bool, int, float, str, bytes, tuple, frozenset)):
            used.append((name, value))
    return tuple(used)


def _stable_parts(pickler: _CodePickler, parts) -> str:
    """``parts`` written by a pickler that shares ``pickler``'s record of
    what is being written (so recursion ends), as a digest."""
    buffer = io.BytesIO()
    inner = _CodePickler(buffer)
    inner.writing = pickler.writing
    inner.dump(parts)
    return hashlib.blake2b(buffer.getvalue(), digest_size=16).hexdigest()


def _bytes_digest(array: np.ndarray) -> str:
    """A digest of an array's bytes, without a copy where it is contiguous."""
    flat = np.ascontiguousarray(array).reshape(-1)
    return hashlib.blake2b(flat.view(np.uint8), digest_size=16).hexdigest()


class FitCheckpoint:
    """The checkpoint file of one fit, in ``folder``: written atomically
    (a whole new file replaces the old one, so an interruption while it is
    written leaves the previous checkpoint), read back, removed."""

    def __init__(self, folder, key: str):
        self.folder = Path(folder)
        self.path = self.folder / f"fit-{key}.ckpt"
        self.key = key
        self.disabled = False  # an epoch's state could not be written

    def load(self) -> dict | None:
        """The saved state, or None where there is none (or it is of another
        format or fit, which is then left alone)."""
        try:
            with open(self.path, "rb") as file:
                state = _Unpickler(file, {}).load()
        except FileNotFoundError:
            return None
        except Exception as exc:  # damaged: start again, and say so
            warnings.warn(
                f"The checkpoint {self.path} could not be read ({exc}); the fit "
                "starts from the beginning.",
                stacklevel=3,
            )
            return None
        if state.get("format") != FORMAT or state.get("key") != self.key:
            return None
        return state

    def pack(self, value, live: dict) -> bytes | None:
        """``value`` pickled, with the objects of ``live`` (name -> object)
        saved by name only (:meth:`unpack` puts them back); None, after one
        warning, where something in it cannot be pickled (a user's callback
        that holds a lock): the fit then goes on without checkpoints inside
        its stages."""
        if self.disabled:
            return None
        buffer = io.BytesIO()
        try:
            _Pickler(buffer, live).dump(value)
        except Exception as exc:
            self.disabled = True
            warnings.warn(
                f"The state of this fit's stage cannot be written to {self.path} "
                f"({exc}); the fit goes on, with checkpoints between its stages "
                "only.",
                stacklevel=2,
            )
            return None
        return buffer.getvalue()

    def describe(self, state: dict, plan) -> str:
        """Where the fit of ``state`` (as :meth:`load` read it) goes on, in
        the words of a progress line."""
        done = state["progress"]["done"]
        text = (
            f"going on from the checkpoint {self.path}: {done} of {len(plan)} "
            "stages done"
        )
        if state.get("stage") and done < len(plan):
            text += f", and part of the '{plan[done].name}' stage"
        return text

    def unpack(self, blob: bytes, live: dict):
        """What :meth:`pack` wrote, with the objects of ``live`` in place."""
        return _Unpickler(io.BytesIO(blob), live).load()

    def save(self, state: dict) -> None:
        """Write ``state`` (tensors, numbers, lists, dicts and :meth:`pack`'s
        bytes) in place of the last checkpoint."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with _temporary_file(self.folder, self.path.name) as temporary:
            with open(temporary, "wb") as file:
                pickle.dump(
                    {**state, "format": FORMAT, "key": self.key},
                    file,
                    protocol=pickle.HIGHEST_PROTOCOL,
                )
            _fsync(temporary)
            os.replace(temporary, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def module_attributes(model: torch.nn.Module) -> dict:
    """The plain attributes the fit sets on the model's modules (the probe's
    scaling, frozen statistics, train/eval mode), which its state dict does
    not hold."""
    return {
        name: {
            k: v
            for k, v in vars(module).items()
            if not k.startswith("_") and isinstance(v, (bool, int, float, str))
        }
        for name, module in model.named_modules()
    }


def set_module_attributes(model: torch.nn.Module, attributes: dict) -> None:
    modules = dict(model.named_modules())
    for name, values in attributes.items():
        for key, value in values.items():
            setattr(modules[name], key, value)


def live_objects(model: torch.nn.Module, **others) -> dict:
    """Name -> object of what a checkpoint refers to rather than holds: the
    model, its modules, parameters and buffers (their values are in the
    state dict the checkpoint holds), and ``others``."""
    live = {f"module:{n}": m for n, m in model.named_modules()}
    live.update({f"param:{n}": p for n, p in model.named_parameters()})
    live.update({f"buffer:{n}": b for n, b in model.named_buffers()})
    live.update(others)
    return live


class _Pickler(pickle.Pickler):
    def __init__(self, file, live: dict):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._names = {id(obj): name for name, obj in live.items()}

    def persistent_id(self, obj):
        return self._names.get(id(obj))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, live: dict):
        super().__init__(file)
        self._live = live

    def persistent_load(self, name):
        try:
            return self._live[name]
        except KeyError:
            raise pickle.UnpicklingError(
                f"the checkpoint refers to {name!r}, which this fit does not have"
            ) from None
