"""skorch callbacks: SGDR (cosine annealing with warm restarts) and the
learning-rate sweep (the rate range test of the lesson's ``lr_find``).

Both are the package's own training loop's: every gradient stage of the
estimators is scheduled by :class:`SGDR`, and every sweep (``lr="auto"``,
:class:`~sktransfer.LRFinder`) runs :class:`LRSweep`. Both also work in
any skorch net.
"""

from __future__ import annotations

import copy
import math
from numbers import Integral, Real

import numpy as np
from skorch.callbacks import Callback

from ._params import Interval, Options, validate
from ._suggest import RULES, suggest_lrs
from .exceptions import InvalidParameterError

__all__ = ["LRSweep", "SGDR", "sgdr_factor", "sgdr_schedule"]


def _cycle_lengths(
    cycle_len: float, cycle_mult: float, steps_per_epoch: int, n_steps: int
):
    """Cycle lengths in batches until ``n_steps`` are covered (at least one)."""
    lengths, total, i = [], 0, 0
    while total < n_steps or not lengths:
        length = max(1, int(round(cycle_len * cycle_mult**i * steps_per_epoch)))
        lengths.append(length)
        total += length
        i += 1
    return lengths


def _check_schedule(cycle_len, cycle_mult, min_ratio, warmup=0.0, warmup_start=0.04):
    if not cycle_len > 0:
        raise ValueError(f"cycle_len must be > 0, got {cycle_len!r}.")
    if not cycle_mult >= 1:
        raise ValueError(f"cycle_mult must be >= 1, got {cycle_mult!r}.")
    if not 0 <= min_ratio <= 1:
        raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio!r}.")
    if not 0 <= warmup < 1:
        raise ValueError(f"warmup must be in [0, 1), got {warmup!r}.")
    if not 0 <= warmup_start <= 1:
        raise ValueError(f"warmup_start must be in [0, 1], got {warmup_start!r}.")


def _in_cycle(t, min_ratio, warmup, warmup_start):
    """The factor at fraction ``t`` (array) of a cycle: half a cosine up from
    ``warmup_start`` over the first ``warmup`` of it, then half a cosine down
    from 1 to ``min_ratio``."""
    t = np.asarray(t, dtype=np.float64)
    down = np.clip((t - warmup) / (1.0 - warmup), 0.0, 1.0)
    falling = min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + np.cos(np.pi * down))
    if not warmup:
        return falling
    up = np.clip(t / warmup, 0.0, 1.0)
    rising = warmup_start + (1.0 - warmup_start) * 0.5 * (1.0 - np.cos(np.pi * up))
    return np.where(t < warmup, rising, falling)


def sgdr_factor(
    step,
    *,
    steps_per_epoch,
    cycle_len=1.0,
    cycle_mult=1.0,
    min_ratio=0.0,
    warmup=0.0,
    warmup_start=0.04,
):
    """The SGDR multiplier of the base learning rate at batch ``step``.

    Cycle ``i`` lasts ``cycle_len * cycle_mult**i`` epochs; within a cycle the
    factor falls from 1 to ``min_ratio`` along half a cosine, and jumps back
    to 1 at the next cycle (a warm restart). With ``warmup`` > 0, the first
    ``warmup`` of every cycle rises along half a cosine from
    ``warmup_start`` to 1 instead, and the fall takes the rest (one cycle
    with ``warmup=0.25`` is the one-cycle schedule). A pure function of
    ``step``.

    Examples
    --------
    >>> [round(sgdr_factor(s, steps_per_epoch=4), 3) for s in range(6)]
    [1.0, 0.854, 0.5, 0.146, 1.0, 0.854]
    >>> [round(sgdr_factor(s, steps_per_epoch=4, warmup=0.5), 3) for s in range(4)]
    [0.04, 0.52, 1.0, 0.5]
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
    _check_schedule(cycle_len, cycle_mult, min_ratio, warmup, warmup_start)
    start = 0
    for length in _cycle_lengths(cycle_len, cycle_mult, steps_per_epoch, step + 1):
        if step < start + length:
            t = (step - start) / length
            return float(_in_cycle(t, min_ratio, warmup, warmup_start))
        start += length
    raise AssertionError("unreachable")  # pragma: no cover


def sgdr_schedule(
    n_steps,
    *,
    steps_per_epoch,
    cycle_len=1.0,
    cycle_mult=1.0,
    n_cycles=None,
    min_ratio=0.0,
    warmup=0.0,
    warmup_start=0.04,
):
    """The SGDR factors of a whole training run, and where its cycles end.

    Without ``n_cycles`` this is :func:`sgdr_factor` for every step. With
    ``n_cycles``, the cycles are stretched (keeping their proportions) so
    that exactly ``n_cycles`` of them fill the ``n_steps`` batches and the
    last one ends at the floor with the last batch, instead of being cut off
    just after a warm restart. ``warmup`` and ``warmup_start`` are as in
    :func:`sgdr_factor`.

    Returns
    -------
    factors : ndarray of shape (n_steps,)
    cycle_ends : list of int
        Batch counts (exclusive ends) at which a cycle completes.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
    _check_schedule(cycle_len, cycle_mult, min_ratio, warmup, warmup_start)
    n_steps = int(n_steps)
    if n_cycles is None:
        lengths = _cycle_lengths(cycle_len, cycle_mult, steps_per_epoch, n_steps)
        bounds = np.cumsum([0, *lengths])
    else:
        # Cycle ends are rounded where they fall in the whole run (not cycle
        # by cycle), so rounding never loses the last cycle nor ends it early.
        planned = np.cumsum([cycle_len * cycle_mult**i for i in range(int(n_cycles))])
        ends = sorted({int(round(e)) for e in planned / planned[-1] * n_steps} - {0})
        bounds = np.array([0, *ends])
    factors = np.empty(n_steps)
    for start, end in zip(bounds[:-1], bounds[1:]):
        steps = np.arange(start, min(end, n_steps))
        factors[steps] = _in_cycle(
            (steps - start) / (end - start), min_ratio, warmup, warmup_start
        )
    return factors, [int(end) for end in bounds[1:] if end <= n_steps]


class SGDR(Callback):
    """Cosine annealing with warm restarts (Loshchilov & Hutter, 2017).

    Sets the learning rate of every parameter group before each training
    batch to ``base_lr * factor(step)`` (see :func:`sgdr_schedule`), where
    ``base_lr`` is the group's own rate when training began; so differential
    rates keep their ratios through every restart.

    It is the schedule of every gradient stage of the estimators of this
    package. Compared with skorch's ``LRScheduler`` over a ``LambdaLR``, the
    number of batches per epoch is read from the training data when
    training starts, and ``snapshot`` keeps weights at cycle ends that fall
    inside an epoch (skorch's ``Checkpoint`` acts on epoch ends). To keep
    the best epoch's weights, use ``EarlyStopping(load_best=True)``.

    Parameters
    ----------
    cycle_len : float, default=1
        Length of the first cycle in epochs (fractions allowed).
    cycle_mult : float, default=1
        Each cycle is this many times longer than the one before.
    min_ratio : float, default=0.0
        The floor of each cycle as a fraction of the base rate.
    steps_per_epoch : int, default=None
        Batches per epoch; None infers it from the training data.
    snapshot : bool, default=False
        Keep a copy of the module's weights at the end of every cycle in
        ``snapshots_`` (snapshot ensembles, Huang et al., 2017).
    n_cycles : int, default=None
        When set, the cycles are stretched (keeping their proportions) so
        that exactly ``n_cycles`` of them fill the training run and the last
        one ends at the floor with the last batch.
    warmup : float, default=0.0
        Fraction of every cycle over which the rate rises (half a cosine)
        from ``warmup_start`` times the base rate to the base rate, before
        it falls. ``SGDR(n_cycles=1, warmup=0.25)`` is the one-cycle
        schedule (Smith, 2018) with cosine phases, as fastai's
        ``fit_one_cycle`` runs it.
    warmup_start : float, default=0.04
        Where a warm-up starts, as a fraction of the base rate (fastai's
        ``div=25``).

    Examples
    --------
    >>> SGDR(cycle_len=1, cycle_mult=2).simulate(steps_per_epoch=2, n_epochs=3)
    array([1.        , 0.5       , 1.        , 0.85355339, 0.5       ,
           0.14644661])
    >>> SGDR(cycle_len=1, n_cycles=2).simulate(steps_per_epoch=2, n_epochs=3)
    array([1.  , 0.75, 0.25, 1.  , 0.75, 0.25])
    >>> SGDR(n_cycles=1, warmup=0.25).simulate(steps_per_epoch=4, n_epochs=1)
    array([0.04, 1.  , 0.75, 0.25])

    References
    ----------
    I. Loshchilov and F. Hutter, "SGDR: Stochastic Gradient Descent with Warm
    Restarts", ICLR 2017.
    """

    def __init__(
        self,
        cycle_len=1.0,
        cycle_mult=1.0,
        min_ratio=0.0,
        steps_per_epoch=None,
        snapshot=False,
        n_cycles=None,
        warmup=0.0,
        warmup_start=0.04,
    ):
        self.cycle_len = cycle_len
        self.cycle_mult = cycle_mult
        self.min_ratio = min_ratio
        self.steps_per_epoch = steps_per_epoch
        self.snapshot = snapshot
        self.n_cycles = n_cycles
        self.warmup = warmup
        self.warmup_start = warmup_start

    def _check(self):
        _check_schedule(
            self.cycle_len,
            self.cycle_mult,
            self.min_ratio,
            self.warmup,
            self.warmup_start,
        )
        if self.n_cycles is not None and not (
            isinstance(self.n_cycles, (int, np.integer)) and self.n_cycles >= 1
        ):
            raise ValueError(f"n_cycles must be an int >= 1, got {self.n_cycles!r}.")

    def schedule(self, steps_per_epoch, n_steps):
        """``(factors, cycle_ends)`` of a run of ``n_steps`` batches."""
        self._check()
        return sgdr_schedule(
            n_steps,
            steps_per_epoch=steps_per_epoch,
            cycle_len=self.cycle_len,
            cycle_mult=self.cycle_mult,
            n_cycles=self.n_cycles,
            min_ratio=self.min_ratio,
            warmup=self.warmup,
            warmup_start=self.warmup_start,
        )

    def simulate(self, steps_per_epoch, n_epochs, base_lr=1.0):
        """The learning rate of every batch of ``n_epochs`` epochs: exactly
        what training that long runs (``n_cycles`` included)."""
        n = int(round(steps_per_epoch * n_epochs))
        return base_lr * self.schedule(steps_per_epoch, n)[0]

    def cycle_ends(self, steps_per_epoch, n_steps):
        """Batch indices (exclusive) at which cycles end, up to ``n_steps``."""
        return self.schedule(steps_per_epoch, n_steps)[1]

    def plot_schedule(self, steps_per_epoch, n_epochs, ax=None):
        """Plot the schedule training will run; returns the matplotlib Axes."""
        import matplotlib.pyplot as plt

        lrs = self.simulate(steps_per_epoch, n_epochs)
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3))
        ax.plot(np.arange(len(lrs)) / steps_per_epoch, lrs)
        for end in self.cycle_ends(steps_per_epoch, len(lrs))[:-1]:
            ax.axvline(end / steps_per_epoch, color="0.8", linewidth=0.8, zorder=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel("learning rate / base rate")
        cycles = "" if self.n_cycles is None else f", n_cycles={self.n_cycles}"
        warmup = f", warmup={self.warmup:g}" if self.warmup else ""
        ax.set_title(
            f"SGDR cycle_len={self.cycle_len}, cycle_mult={self.cycle_mult}"
            f"{cycles}{warmup}"
        )
        return ax

    # -- skorch hooks -------------------------------------------------------

    def initialize(self):
        self._check()
        self.step_ = 0
        self.snapshots_ = []
        self.base_lrs_ = None
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.step_ = 0
        self.snapshots_ = []
        self.base_lrs_ = [group["lr"] for group in net.optimizer_.param_groups]
        spe = self.steps_per_epoch
        if spe is None:
            if net.train_split is not None and y is not None:
                dataset, _ = net.get_split_datasets(X, y)
            else:
                dataset = net.get_dataset(X, y)
            spe = len(net.get_iterator(dataset, training=True))
        self.steps_per_epoch_ = max(1, int(spe))
        n_steps = self.steps_per_epoch_ * max(1, int(net.max_epochs))
        self.factors_, ends = self.schedule(self.steps_per_epoch_, n_steps)
        self.cycle_ends_ = set(ends)

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        f = self.factors_[min(self.step_, len(self.factors_) - 1)]
        for group, base in zip(net.optimizer_.param_groups, self.base_lrs_):
            group["lr"] = base * f

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        groups = net.optimizer_.param_groups
        net.history.record_batch("lr", groups[-1]["lr"])
        if len(groups) > 1:
            net.history.record_batch("lrs", [g["lr"] for g in groups])
        self.step_ += 1
        if self.snapshot and self.step_ in self.cycle_ends_:
            self.snapshots_.append(copy.deepcopy(net.module_.state_dict()))

    def on_train_end(self, net, X=None, y=None, **kwargs):
        for group, base in zip(net.optimizer_.param_groups, self.base_lrs_ or []):
            group["lr"] = base


def check_sweep_range(params, name) -> None:
    """A sweep must rise: ``start_lr`` below ``end_lr``."""
    if not params["start_lr"] < params["end_lr"]:
        raise InvalidParameterError(
            f"{name} needs start_lr < end_lr; got start_lr={params['start_lr']!r}, "
            f"end_lr={params['end_lr']!r}."
        )


#: The rules of a sweep's settings (see ``_params``), shared by
#: :class:`LRSweep` and :class:`~sktransfer.LRFinder`.
SWEEP_RULES = {
    "start_lr": [Interval(Real, 0, None, "neither")],
    "end_lr": [Interval(Real, 0, None, "neither")],
    "num_it": [Interval(Integral, 5, None, "left")],
    "smooth": [Interval(Real, 0, 1, "left")],
    "diverge": [Interval(Real, 1, None, "neither")],
}


class LRSweep(Callback):
    """A learning-rate sweep: the rate rises exponentially, the loss is
    watched (the rate range test behind the lesson's ``lr_find``).

    Before each training batch ``i`` the top rate is ``start_lr *
    (end_lr / start_lr) ** (i / (num_it - 1))``; every parameter group
    keeps the ratio its rate had to the last group's when training began
    (differential rates sweep together). After each batch the loss is
    recorded and smoothed. Training stops after ``num_it`` batches, on a
    non-finite loss, or once the smoothed loss passes ``diverge`` times its
    best; give the net enough epochs to reach ``num_it``.

    As the value of an estimator's ``lr`` or ``unfrozen_lr`` it says how
    that rate is found: ``lr="auto"`` is ``lr=LRSweep()``, and
    ``lr=LRSweep(rule="minimum")`` reads the rate by another rule. The
    curve the fit swept is in the estimator's ``lr_sweeps_``.

    Parameters
    ----------
    start_lr, end_lr : float, default=1e-7, 10
        Range of the sweep.
    num_it : int, default=100
        Mini-batches in the sweep.
    smooth : float, default=0.98
        Exponential smoothing of the loss (bias-corrected).
    diverge : float, default=4
        Stop when the smoothed loss exceeds this multiple of its best.
    rule : {"valley", "minimum", "steepest"}, default="valley"
        How :meth:`suggestion` reads a rate off the curve (see
        :meth:`suggestions`).

    Attributes
    ----------
    lrs_, losses_, smoothed_losses_ : list of float
        The top rate, the loss and the smoothed loss of every batch run.
    diverged_ : bool
        Whether the sweep stopped on divergence (a curve that never
        diverges has no valley to read).

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skorch import NeuralNetClassifier
    >>> from sktransfer.callbacks import LRSweep
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(256, 4)).astype(np.float32)
    >>> y = (X[:, 0] + 0.5 * rng.normal(size=256) > 0).astype(np.int64)
    >>> sweep = LRSweep(end_lr=1e3, num_it=60)
    >>> net = NeuralNetClassifier(
    ...     torch.nn.Linear(4, 2), criterion=torch.nn.CrossEntropyLoss,
    ...     optimizer=torch.optim.AdamW, batch_size=32, max_epochs=10,
    ...     train_split=None, callbacks=[sweep], verbose=0,
    ... )
    >>> _ = torch.manual_seed(0)
    >>> _ = net.fit(X, y)
    >>> sweep.diverged_, sweep.lrs_[0]
    (True, 1e-07)
    >>> 1e-4 < sweep.suggestion() < 1
    True
    """

    _parameter_rules = {**SWEEP_RULES, "rule": [Options(*RULES)]}
    _parameter_checks = (check_sweep_range,)

    def __init__(
        self,
        start_lr=1e-7,
        end_lr=10.0,
        num_it=100,
        smooth=0.98,
        diverge=4.0,
        rule="valley",
    ):
        self.start_lr = start_lr
        self.end_lr = end_lr
        self.num_it = num_it
        self.smooth = smooth
        self.diverge = diverge
        self.rule = rule

    def _check(self):
        validate(self)

    def initialize(self):
        self._check()
        self.lrs_, self.losses_, self.smoothed_losses_ = [], [], []
        self.diverged_ = False
        self.done_ = False
        self._average, self._best = 0.0, math.inf
        return self

    def on_train_begin(self, net, **kwargs):
        self.initialize()
        groups = net.optimizer_.param_groups
        top = groups[-1]["lr"]
        self._ratios = [g["lr"] / top if top else 1.0 for g in groups]

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        mult = (self.end_lr / self.start_lr) ** (1.0 / max(1, self.num_it - 1))
        self._lr = self.start_lr * mult ** len(self.lrs_)
        for group, ratio in zip(net.optimizer_.param_groups, self._ratios):
            group["lr"] = self._lr * ratio

    def on_batch_end(self, net, batch=None, training=False, loss=None, **kwargs):
        if not training or self.done_:
            return
        value = float(loss.detach() if hasattr(loss, "detach") else loss)
        if not math.isfinite(value):
            self._stop(diverged=True)
        i = len(self.lrs_)
        self._average = self.smooth * self._average + (1 - self.smooth) * value
        smoothed = self._average / (1 - self.smooth ** (i + 1))
        self.lrs_.append(self._lr)
        self.losses_.append(value)
        self.smoothed_losses_.append(smoothed)
        self._best = min(self._best, smoothed)
        if i > 5 and smoothed > self.diverge * self._best:
            self._stop(diverged=True)
        if len(self.lrs_) >= self.num_it:
            self._stop(diverged=False)

    def _stop(self, diverged):
        # skorch's way to end training from a callback (its EarlyStopping
        # does the same); ``done_`` tells it apart from a Ctrl-C
        self.diverged_ = diverged
        self.done_ = True
        raise KeyboardInterrupt

    def suggestions(self) -> dict:
        """The rate each rule reads off the curve: ``"valley"`` (two thirds
        down the longest stretch over which the smoothed loss keeps
        falling), ``"minimum"`` (a tenth of the rate at the lowest smoothed
        loss, the lesson's reading) and ``"steepest"`` (where it falls
        fastest). Needs at least 3 batches."""
        return suggest_lrs(self.lrs_, self.smoothed_losses_)

    def suggestion(self) -> float:
        """The rate ``rule`` reads off the curve."""
        return self.suggestions()[self.rule]
