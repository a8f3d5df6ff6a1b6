"""Parameter checks: every estimator's constructor arguments, by rules.

Each class lists the values each parameter may take in
``_parameter_rules`` (a parameter is valid when any of its rules accepts
the value) and its checks that involve several parameters in
``_parameter_checks``. :func:`validate` applies both; ``fit``, ``load``,
the Dask helpers and the command line call it, so a bad value gets the same
message everywhere and before any image is read::

    The 'dropout' parameter of PretrainedImageClassifier must be a float in
    the range [0, 1). Got 1.5 instead.

The rules are this package's own (scikit-learn's equivalent is private API).
Booleans are not numbers here: ``batch_size=True`` is refused.
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real

import numpy as np

from .exceptions import InvalidParameterError


class Interval:
    """Numbers of ``kind`` (``Integral`` or ``Real``) between ``low`` and
    ``high`` (None: unbounded); ``closed`` is "left", "right", "both" or
    "neither"."""

    def __init__(self, kind, low, high, closed):
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def accepts(self, value) -> bool:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, self.kind):
            return False
        if self.kind is Real and math.isnan(value):
            return False
        low_ok = self.low is None or (
            value >= self.low if self.closed in ("left", "both") else value > self.low
        )
        high_ok = self.high is None or (
            value <= self.high
            if self.closed in ("right", "both")
            else value < self.high
        )
        return low_ok and high_ok

    def __str__(self):
        left = "[" if self.closed in ("left", "both") and self.low is not None else "("
        right = (
            "]" if self.closed in ("right", "both") and self.high is not None else ")"
        )
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        kind = "an int" if self.kind is Integral else "a float"
        return f"{kind} in the range {left}{low}, {high}{right}"


class Options:
    """One of a few strings."""

    def __init__(self, *values):
        self.values = values

    def accepts(self, value) -> bool:
        return isinstance(value, str) and value in self.values

    def __str__(self):
        return "a str among {" + ", ".join(repr(v) for v in sorted(self.values)) + "}"


class InstanceOf:
    """An instance of one of ``types`` (None: the value None)."""

    def __init__(self, *types, name=None):
        self.types = types
        self.name = name

    def accepts(self, value) -> bool:
        if None in self.types and value is None:
            return True
        kinds = tuple(t for t in self.types if t is not None)
        return bool(kinds) and isinstance(value, kinds)

    def __str__(self):
        if self.name:
            return self.name
        names = [
            "None" if t is None else f"an instance of {t.__name__!r}"
            for t in self.types
        ]
        return _either(names)


class Satisfies:
    """A value ``test`` accepts, described by ``name``."""

    def __init__(self, test, name):
        self.test, self.name = test, name

    def accepts(self, value) -> bool:
        return bool(self.test(value))

    def __str__(self):
        return self.name


NONE = InstanceOf(None)
FINITE_NON_NEGATIVE = Satisfies(
    lambda v: (
        isinstance(v, Real)
        and not isinstance(v, (bool, np.bool_))
        and 0 <= v < math.inf
    ),
    "a finite float >= 0",
)
BOOLEAN = InstanceOf(bool, np.bool_, name="a bool")
PATH = InstanceOf(str, os.PathLike, name="a str or path-like")
RANDOM_STATE = Satisfies(
    lambda v: (
        v is None
        or isinstance(v, np.random.RandomState)
        or (isinstance(v, Integral) and not isinstance(v, bool) and 0 <= v < 2**32)
    ),
    "an int in the range [0, 2**32), a numpy RandomState or None",
)
VERBOSE = Satisfies(
    lambda v: (
        isinstance(v, (bool, np.bool_))
        or Interval(Integral, 0, None, "left").accepts(v)
    ),
    "an int >= 0 or a bool",
)


def validate(estimator, names=None) -> None:
    """Check ``estimator``'s parameters (those in ``names``, default all)
    by its class's rules, then, when all are checked, its checks that
    involve several parameters. Raises :class:`InvalidParameterError`
    (a ``ValueError`` and a ``TypeError``) naming the parameter, the
    class, what it accepts and the value given."""
    cls = type(estimator)
    params = estimator.get_params(deep=False)
    rules = cls._parameter_rules
    for name in rules if names is None else names:
        if not any(rule.accepts(params[name]) for rule in rules[name]):
            raise InvalidParameterError(
                f"The {name!r} parameter of {cls.__name__} must be "
                f"{_either([str(rule) for rule in rules[name]])}. Got "
                f"{params[name]!r} instead."
            )
    if names is None:
        for check in getattr(cls, "_parameter_checks", ()):
            check(params, cls.__name__)


def _either(names) -> str:
    names = list(names)
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]
