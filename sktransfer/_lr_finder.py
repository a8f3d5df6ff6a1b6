"""The learning-rate finder: sweep the rate up exponentially, watch the loss.

A short training run starts from a tiny rate and multiplies it after every
mini-batch until the loss explodes; the curve of (smoothed) loss against
rate shows where training is fast and still stable. Several rules read a
suggestion off the curve; the default, ``"valley"``, takes the longest
stretch over which the smoothed loss keeps falling and picks a rate two
thirds of the way down it, which early spikes and late noise do not fool.

:class:`LRFinder` is a client of the estimators' public face: it fits a
clone whose ``lr`` (or ``unfrozen_lr``) is an
:class:`~sktransfer.callbacks.LRSweep` and reads the curve from the clone's
``lr_sweeps_``, so it runs exactly the sweep ``lr="auto"`` runs.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_random_state

from ._base import RecipeEstimator
from ._params import RANDOM_STATE, InstanceOf, Options, validate
from ._suggest import suggest_lrs
from .callbacks import SWEEP_RULES, LRSweep, check_sweep_range

__all__ = ["LRFinder"]


class LRFinder(BaseEstimator):
    """Learning-rate finder for :class:`PretrainedImageClassifier`.

    Runs a short exponential sweep on a copy of the estimator's trainable
    part and suggests rates; the estimator passed in is never changed.

    Parameters
    ----------
    estimator : PretrainedImageClassifier or PretrainedImageRegressor
        Its parameters (backbone, head shape, ``lr_mult``...) are used.
    start_lr, end_lr : float, default=1e-7, 10
        Range of the sweep.
    num_it : int, default=100
        Mini-batches in the sweep (the data is cycled when smaller).
    stage : {"precomputed", "unfrozen"}, default="precomputed"
        ``"precomputed"`` sweeps a new head on cached features (seconds),
        as the lesson's ``lr_find`` does and as ``fit`` sweeps ``lr``
        (also where the head then starts from a linear probe);
        ``"unfrozen"`` first fits the estimator's head as configured, then
        sweeps the unfrozen network with the estimator's differential rate
        ratios.
    smooth : float, default=0.98
        Exponential smoothing of the loss.
    diverge : float, default=4
        Stop when the smoothed loss exceeds this multiple of its best.
    random_state : int or None, default=None
        Seeds the head initialisation and batch order.

    Attributes
    ----------
    lrs_, losses_, smoothed_losses_ : ndarray
        The sweep.
    suggestions_ : dict
        Rate per rule (``"valley"``, ``"minimum"``, ``"steepest"``).
    suggestion_ : float
        The ``"valley"`` suggestion (what ``lr="auto"`` uses).
    diverged_ : bool
        Whether the loss diverged before ``end_lr`` (a curve that never
        does has no valley to read).
    problem_ : str or None
        Why the suggestions are not reliable (never diverged, too few
        batches), or None.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import LRFinder, PretrainedImageClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 255, size=(16, 32, 32, 3), dtype=np.uint8)
    >>> X[8:, ..., 0] = 255  # the second class is red
    >>> y = ["grey"] * 8 + ["red"] * 8
    >>> clf = PretrainedImageClassifier(
    ...     "resnet18", weights=None, image_size=32, cache=None, batch_size=4
    ... )
    >>> finder = LRFinder(clf, end_lr=100, num_it=40, random_state=0).fit(X, y)
    >>> finder.diverged_, sorted(finder.suggestions_)
    (True, ['minimum', 'steepest', 'valley'])
    >>> ax = finder.plot()  # loss against rate, suggestions marked
    >>> clf.set_params(lr=finder.suggestion_)  # doctest: +ELLIPSIS
    PretrainedImageClassifier(...)
    """

    _parameter_rules = {
        "estimator": [InstanceOf(RecipeEstimator, name="a sktransfer estimator")],
        **SWEEP_RULES,
        "stage": [Options("precomputed", "unfrozen")],
        "random_state": [RANDOM_STATE],
    }
    _parameter_checks = (check_sweep_range,)

    def __init__(
        self,
        estimator,
        *,
        start_lr=1e-7,
        end_lr=10.0,
        num_it=100,
        stage="precomputed",
        smooth=0.98,
        diverge=4.0,
        random_state=None,
    ):
        self.estimator = estimator
        self.start_lr = start_lr
        self.end_lr = end_lr
        self.num_it = num_it
        self.stage = stage
        self.smooth = smooth
        self.diverge = diverge
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None):
        """Run the sweep on ``(X, y)`` and compute the suggestions.

        A clone of the estimator is fitted with the rate to sweep set to an
        :class:`~sktransfer.callbacks.LRSweep` of this finder's settings
        (its public path: ``lr`` / ``unfrozen_lr`` accept one), on a plan
        cut down to the stage swept; the curve is read from its
        ``lr_sweeps_``. ``"unfrozen"`` fits the head as configured first;
        the fit then also trains the unfrozen stage's first cycle after the
        sweep, as ``fit`` does, which the finder discards.
        """
        validate(self)
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        sweep = LRSweep(
            start_lr=self.start_lr,
            end_lr=self.end_lr,
            num_it=self.num_it,
            smooth=self.smooth,
            diverge=self.diverge,
        )
        est = clone(self.estimator).set_params(random_state=seed)
        if self.stage == "precomputed":
            key = "lr"
            est.set_params(
                lr=sweep, precompute_epochs=1, augmented_cycles=0, unfrozen_cycles=0
            )
        else:
            key = "unfrozen_lr"
            if isinstance(est.unfrozen_lr, (tuple, list)):
                warnings.warn(
                    f"the estimator's unfrozen_lr is a tuple of rates; the sweep "
                    f"finds one rate, with the earlier groups at the ratios "
                    f"lr_mult={est.lr_mult!r} gives (1/lr_mult, 1/lr_mult**2).",
                    UserWarning,
                    stacklevel=2,
                )
            est.set_params(unfrozen_lr=sweep, unfrozen_cycles=1)
            if est.precompute_epochs == 0 and est.augmented_cycles == 0:
                est.set_params(precompute_epochs=1)  # a head to start from
        with warnings.catch_warnings():
            # the fit's own word on an unreadable sweep is replaced below
            warnings.filterwarnings("ignore", message="the learning-rate sweep for")
            est.fit(X, y, sample_weight=sample_weight)
        record = est.lr_sweeps_[key]
        self.lrs_ = record["lrs"]
        self.losses_ = record["losses"]
        self.smoothed_losses_ = record["smoothed_losses"]
        self.diverged_ = record["diverged"]
        self.suggestions_ = suggest_lrs(self.lrs_, self.smoothed_losses_)
        self.suggestion_ = self.suggestions_["valley"]
        self.problem_ = record["problem"]
        if self.problem_:
            warnings.warn(
                f"the learning-rate sweep {self.problem_}; its suggestions are not "
                "reliable (lr='auto' would fall back to the default rate).",
                UserWarning,
                stacklevel=2,
            )
        return self

    def plot(self, ax=None, skip_start=5, skip_end=3):
        """Loss against learning rate (log axis), suggestions marked."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        end = (
            len(self.lrs_) - skip_end
            if len(self.lrs_) > skip_start + skip_end + 2
            else None
        )
        lrs, loss = self.lrs_[skip_start:end], self.smoothed_losses_[skip_start:end]
        ax.plot(lrs, loss, label="smoothed loss")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss (smoothed)")
        ax.set_title(f"Learning-rate sweep ({self.stage} stage)")
        for (name, lr), marker in zip(self.suggestions_.items(), "ovs"):
            y_at = np.interp(np.log(lr), np.log(self.lrs_), self.smoothed_losses_)
            used = name == "valley"
            ax.plot(
                [lr],
                [y_at],
                marker=marker,
                markersize=11 if used else 7,
                color="C3" if used else "0.45",
                linestyle="none",
                label=f"{name}: {lr:.2g}" + (" (lr='auto')" if used else ""),
            )
        if self.problem_:
            ax.text(
                0.02,
                0.98,
                "Warning: the sweep " + self.problem_,
                transform=ax.transAxes,
                va="top",
                color="C3",
                wrap=True,
                fontsize=8,
            )
        ax.legend(loc="lower left")
        return ax

    def plot_lr(self, ax=None):
        """The learning rate of every iteration of the sweep."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3))
        ax.plot(np.arange(len(self.lrs_)), self.lrs_)
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("learning rate")
        return ax
