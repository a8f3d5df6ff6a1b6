"""The learning-rate finder: the sweep, the suggestions, LRFinder, lr='auto'.

The sweep is first checked on a problem whose converging range is known (a
linear model on Gaussian classes), then on hand-made loss curves, then on
the TINY estimator (random-init ResNet-18 at 32 px, a dozen generated
images). What a sweep inside ``fit`` did is read from ``lr_``,
``unfrozen_lr_``, ``history_`` and the warnings it gives.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from conftest import TINY, make_images
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from torch import nn

from sktransfer import LRFinder, PretrainedImageClassifier
from sktransfer._finetune import FeatureDataset
from sktransfer._suggest import suggest_lrs
from sktransfer._sweep import lr_sweep
from sktransfer.callbacks import LRSweep
from sktransfer.exceptions import InvalidParameterError

RULES = {"valley", "minimum", "steepest"}


# --- a problem with a known converging range --------------------------------------


def gaussian_problem(seed, n=256, d=4, shift=0.7):
    """Two Gaussian classes at +-shift in every coordinate.

    The classes overlap a little, so the best linear model is finite: AdamW
    converges for small rates and, once its steps (about the rate in every
    weight) overshoot by far, the loss blows up.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(0, 1, (n, d)) + (2 * y[:, None] - 1) * shift
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def full_batches(X, y, seed, weights=None):
    """The data set, swept with the whole (reshuffled) set as every batch:
    the loss moves only because the weights do."""
    torch.manual_seed(seed)
    return FeatureDataset(X, y, torch.ones(len(X)) if weights is None else weights)


def cross_entropy(outputs, target):
    return nn.functional.cross_entropy(outputs, target, reduction="none")


def run_sweep(model, groups, data, **kwargs):
    groups = [(list(params), ratio) for params, ratio in groups]
    return lr_sweep(model, groups, data, cross_entropy, batch_size=len(data), **kwargs)


def sweep(model, groups, data, **kwargs):
    out = run_sweep(model, groups, data, **kwargs)
    return out["lrs"], out["losses"], out["smoothed"], out["diverged"]


def linear_model(d, seed):
    torch.manual_seed(seed)
    return nn.Linear(d, 2)


def first_rise(lrs, smoothed):
    """The rate at which the smoothed loss first exceeds its start value."""
    above = np.nonzero(smoothed > smoothed[0])[0]
    assert len(above), "the sweep did not diverge"
    return lrs[above[0]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_suggestions_lie_in_the_converging_range(seed):
    X, y = gaussian_problem(seed)
    model = linear_model(X.shape[1], seed)
    start, end, num_it = 1e-7, 1e3, 100
    lrs, losses, smoothed, diverged = sweep(
        model,
        [(model.parameters(), 1.0)],
        full_batches(X, y, seed),
        start_lr=start,
        end_lr=end,
        num_it=num_it,
    )
    assert diverged
    assert len(lrs) == len(losses) == len(smoothed) >= 3
    mult = (end / start) ** (1 / (num_it - 1))
    np.testing.assert_allclose(lrs, start * mult ** np.arange(len(lrs)), rtol=1e-9)
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(smoothed))
    # the smoothed loss first falls, then rises above where it started
    assert smoothed.min() < 0.9 * smoothed[0]
    diverged_at = first_rise(lrs, smoothed)
    out = suggest_lrs(lrs, smoothed)
    assert set(out) == RULES
    for rule, lr in out.items():
        assert start <= lr <= diverged_at, (rule, lr, diverged_at)
    assert out["valley"] <= diverged_at / 10
    assert out["minimum"] <= diverged_at / 10


def test_divergence_stops_the_sweep_early():
    X, y = gaussian_problem(0)
    model = linear_model(X.shape[1], 0)
    num_it = 100
    lrs, losses, smoothed, diverged = sweep(
        model,
        [(model.parameters(), 1.0)],
        full_batches(X, y, 0),
        start_lr=1e-7,
        end_lr=1e8,
        num_it=num_it,
        diverge=4.0,
    )
    assert diverged
    assert 3 <= len(lrs) < num_it
    assert len(losses) == len(smoothed) == len(lrs)
    # it stopped because the smoothed loss passed 4x its best
    assert smoothed[-1] > 4.0 * smoothed.min()
    assert np.all(smoothed[:-1] <= 4.0 * np.minimum.accumulate(smoothed)[:-1])


def test_a_sweep_that_never_diverges_says_so():
    X, y = gaussian_problem(0)
    model = linear_model(X.shape[1], 0)
    lrs, _, smoothed, diverged = sweep(
        model,
        [(model.parameters(), 1.0)],
        full_batches(X, y, 0),
        start_lr=1e-7,
        end_lr=1e-5,
        num_it=30,
    )
    assert not diverged
    assert len(lrs) == len(smoothed) == 30


class NonFiniteAfter(nn.Module):
    """A linear model whose output becomes NaN (or inf) after ``k`` calls."""

    def __init__(self, k, fill):
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.k, self.fill, self.calls = k, fill, 0

    def forward(self, x):
        self.calls += 1
        out = self.linear(x)
        if self.calls > self.k:
            out = out + self.fill
        return out


@pytest.mark.parametrize("fill", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("k", [0, 7])
def test_non_finite_loss_ends_the_sweep_cleanly(k, fill):
    X, y = gaussian_problem(0)
    model = NonFiniteAfter(k, fill)
    lrs, losses, smoothed, diverged = sweep(
        model, [(model.parameters(), 1.0)], full_batches(X, y, 0), num_it=50
    )
    assert diverged
    assert len(lrs) == len(losses) == len(smoothed) == k
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(smoothed))
    assert all(torch.isfinite(p).all() for p in model.linear.parameters())


def test_weights_of_zero_leave_samples_out_of_the_sweep_loss():
    X, y = gaussian_problem(0, n=64)
    keep = torch.arange(64) % 2 == 0
    weights = keep.float()

    weighted = full_batches(X, y, 0, weights)
    kept = full_batches(X[keep], y[keep], 0)
    a, b = linear_model(4, 0), linear_model(4, 0)
    out_a = run_sweep(a, [(a.parameters(), 1.0)], weighted, num_it=20)
    out_b = run_sweep(b, [(b.parameters(), 1.0)], kept, num_it=20)
    np.testing.assert_allclose(out_a["losses"], out_b["losses"], rtol=1e-5)


def test_sweep_keeps_the_rate_ratios_of_the_groups(monkeypatch):
    seen = []

    class SpyAdamW(torch.optim.AdamW):
        def step(self, *args, **kwargs):
            seen.append([g["lr"] for g in self.param_groups])
            return super().step(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", SpyAdamW)
    X, y = gaussian_problem(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    groups = [(model[0].parameters(), 0.01), (model[2].parameters(), 1.0)]
    lrs, *_ = sweep(model, groups, full_batches(X, y, 0), num_it=20, end_lr=1.0)
    assert len(seen) == len(lrs) == 20
    for (low, top), lr in zip(seen, lrs, strict=True):
        assert top == pytest.approx(lr, rel=1e-12)
        assert low == pytest.approx(0.01 * lr, rel=1e-12)


# --- suggestions on hand-made curves ----------------------------------------------


def spike_descent_explosion():
    """Flat, an early spike, a long descent, then an explosion."""
    lrs = np.geomspace(1e-7, 10, 100)
    loss = np.empty(100)
    loss[:5] = 1.0
    loss[5:8] = [1.6, 2.0, 1.6]  # the spike
    loss[8:80] = np.linspace(1.0, 0.3, 72)  # the long descent
    loss[80:] = 0.3 + np.geomspace(0.1, 5.0, 20)  # the explosion
    return lrs, loss


def test_valley_falls_in_the_long_descent_not_at_the_spike():
    lrs, loss = spike_descent_explosion()
    out = suggest_lrs(lrs, loss)
    assert set(out) == RULES
    i = int(np.argmin(np.abs(np.log(lrs) - np.log(out["valley"]))))
    assert lrs[i] == pytest.approx(out["valley"])
    assert 8 < i < 80, i
    assert 0.3 < loss[i] < 1.0
    # the explosion is not in the valley either, and 'minimum' reads the plot
    assert out["valley"] < lrs[80]
    assert out["minimum"] == pytest.approx(lrs[79] / 10)
    assert lrs[0] <= out["steepest"] <= lrs[79]


def test_valley_of_a_plain_descent():
    lrs = np.geomspace(1e-6, 1, 30)
    loss = np.linspace(2.0, 0.5, 30)
    out = suggest_lrs(lrs, loss)
    assert out["valley"] == pytest.approx(lrs[round(29 * 2 / 3)])
    assert out["minimum"] == pytest.approx(lrs[-1] / 10)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_fewer_than_three_points_raise(n):
    with pytest.raises(ValueError, match="iterations"):
        suggest_lrs(np.geomspace(1e-7, 1e-6, n), np.ones(n))


# --- LRFinder on the TINY estimator -----------------------------------------------


@pytest.fixture
def estimator(cache_dir):
    """Batches of 4: three per pass over the 12 images, enough for a sweep
    whose curve can be read; a random head with a hidden layer (the fastai
    start; a linear head on 12 separable images may never diverge) with the
    sweep before its first epochs."""
    return PretrainedImageClassifier(
        **TINY, cache=cache_dir, batch_size=4, random_state=0, head_init="random",
        hidden_sizes=(64,), precompute_epochs=8,
    )  # fmt: skip


def head_state(clf):
    return {k: v.detach().cpu().clone() for k, v in clf.head_.state_dict().items()}


def sweep_warnings(record):
    return [str(w.message) for w in record if "sweep" in str(w.message)]


def test_lr_finder_on_the_tiny_estimator(images, estimator):
    X, y = images
    params = estimator.get_params()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        finder = LRFinder(estimator, end_lr=100, random_state=0).fit(X, y)
    # three batches per pass, a readable curve that ends in divergence
    assert finder.diverged_ and finder.problem_ is None
    assert sweep_warnings(record) == []
    n = len(finder.lrs_)
    assert 3 <= n < 100
    assert finder.lrs_[0] == pytest.approx(1e-7)
    mult = (100.0 / 1e-7) ** (1 / 99)
    np.testing.assert_allclose(finder.lrs_[1:] / finder.lrs_[:-1], mult, rtol=1e-9)
    assert len(finder.losses_) == len(finder.smoothed_losses_) == n
    assert np.all(np.isfinite(finder.losses_))
    assert set(finder.suggestions_) == RULES
    assert finder.suggestion_ == finder.suggestions_["valley"]
    for lr in finder.suggestions_.values():
        assert isinstance(lr, float) and 1e-7 <= lr <= finder.lrs_[-1]
    # the estimator passed in is untouched
    assert estimator.get_params() == params
    assert not hasattr(estimator, "head_")
    # the same random_state gives the same curve
    again = LRFinder(estimator, end_lr=100, random_state=0).fit(X, y)
    np.testing.assert_array_equal(again.lrs_, finder.lrs_)
    np.testing.assert_array_equal(again.losses_, finder.losses_)
    np.testing.assert_array_equal(again.smoothed_losses_, finder.smoothed_losses_)
    assert again.suggestions_ == finder.suggestions_


def test_lr_finder_warns_when_the_sweep_never_diverged(images, estimator):
    X, y = images
    with pytest.warns(UserWarning, match="never diverged up to a rate of 0.0001"):
        finder = LRFinder(estimator, end_lr=1e-4, num_it=20, random_state=0).fit(X, y)
    assert not finder.diverged_
    assert "never diverged" in finder.problem_
    assert len(finder.lrs_) == 20 and finder.lrs_[-1] == pytest.approx(1e-4)


def test_lr_finder_warns_when_the_data_give_too_few_batches(images, estimator):
    X, y = images
    est = estimator.set_params(batch_size=64)
    with pytest.warns(UserWarning, match="only 12 training samples"):
        finder = LRFinder(est, num_it=20, random_state=0).fit(X, y)
    assert "12 training samples" in finder.problem_


def test_lr_finder_without_a_problem_does_not_warn_and_plots_it_if_any(
    images, estimator
):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    X, y = images
    with pytest.warns(UserWarning):
        bad = LRFinder(estimator, end_lr=1e-4, num_it=20, random_state=0).fit(X, y)
    try:
        texts = [t.get_text() for t in bad.plot().texts]
        assert any("never diverged" in t for t in texts), texts
    finally:
        plt.close("all")


def test_lr_finder_sample_weight_of_zero_is_dropping_the_rows(images, estimator):
    X, y = images
    weights = np.array([1.0, 0.0] * 6)
    kept = [x for x, w in zip(X, weights) if w > 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = LRFinder(estimator, num_it=20, random_state=0).fit(X, y, weights)
        b = LRFinder(estimator, num_it=20, random_state=0).fit(kept, y[weights > 0])
    np.testing.assert_array_equal(a.lrs_, b.lrs_)
    np.testing.assert_allclose(a.losses_, b.losses_, rtol=1e-6)


@pytest.mark.parametrize("stage", ["precomputed", "unfrozen"])
def test_lr_finder_leaves_a_fitted_estimator_unchanged(images, estimator, stage):
    X, y = images
    clf = estimator.set_params(
        precompute_epochs=1, augmented_cycles=1, unfrozen_cycles=1
    ).fit(X, y)
    params = clf.get_params()
    state, proba = head_state(clf), clf.predict_proba(X)
    rows = copy.deepcopy(clf.history_)
    key = clf.extractor_.model_key
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        LRFinder(clf, num_it=10, stage=stage, random_state=0).fit(X, y)
    assert clf.get_params() == params
    after = head_state(clf)
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], state[k]) for k in state)
    np.testing.assert_array_equal(clf.predict_proba(X), proba)
    assert clf.history_ == rows
    assert clf.extractor_.model_key == key


class RecordsSteps(torch.optim.AdamW):
    """AdamW that records, at every step, each parameter group's rate and
    whether its parameters train."""

    instances: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = []
        RecordsSteps.instances.append(self)

    def step(self, *args, **kwargs):
        self.steps.append(
            [
                (g["lr"], all(p.requires_grad for p in g["params"]))
                for g in self.param_groups
            ]
        )
        return super().step(*args, **kwargs)


@pytest.fixture
def optimizers(monkeypatch):
    RecordsSteps.instances = []
    monkeypatch.setattr(torch.optim, "AdamW", RecordsSteps)
    return RecordsSteps.instances


@pytest.mark.parametrize(
    "unfreeze_from, unfrozen_lr, ratios",
    [
        (0, 1e-4, [0.01, 0.1, 1.0, 1.0]),
        # a sweep finds one rate: lr_mult's ratios, not the tuple's
        (1, (2e-6, 7e-5, 3e-4), [0.01, 0.1, 1.0, 1.0]),
        (2, 1e-4, [0.01, 0.1, 1.0, 1.0]),
    ],
    ids=["all-float", "middle-tuple", "late-float"],
)
def test_unfrozen_stage_sweeps_the_unfrozen_groups_at_their_ratios(
    images, estimator, optimizers, unfreeze_from, unfrozen_lr, ratios
):
    X, y = images
    est = estimator.set_params(
        precompute_epochs=1, unfreeze_from=unfreeze_from, unfrozen_lr=unfrozen_lr
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        finder = LRFinder(est, num_it=8, stage="unfrozen", random_state=0).fit(X, y)
    tuple_warnings = [w for w in record if "tuple of rates" in str(w.message)]
    assert len(tuple_warnings) == isinstance(unfrozen_lr, tuple)
    # the head trains first, and the unfrozen stage's own epoch after the
    # sweep: the sweep's optimizer is the one whose first step is at start_lr
    (sweep_steps,) = [
        o.steps
        for o in optimizers
        if o.steps and o.steps[0][-1][0] == pytest.approx(finder.lrs_[0])
    ]
    assert len(sweep_steps) == len(finder.lrs_)
    for step, lr in zip(sweep_steps, finder.lrs_, strict=True):
        rates = [rate for rate, _ in step]
        assert rates == pytest.approx([lr * r for r in ratios[unfreeze_from:]])
        assert all(trains for _, trains in step)
    assert 3 <= len(finder.lrs_) <= 8
    assert set(finder.suggestions_) == RULES
    assert not hasattr(est, "head_")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(start_lr=1.0, end_lr=1.0),
        dict(start_lr=10.0, end_lr=1.0),
        dict(start_lr=0.0),
        dict(num_it=2),
        dict(stage="foo"),
        dict(smooth=1.0),
        dict(diverge=1.0),
        dict(num_it=True),
        dict(estimator="resnet18"),
    ],
)
def test_invalid_lr_finder_parameters_raise(images, estimator, kwargs):
    X, y = images
    kwargs = {"estimator": estimator, **kwargs}
    with pytest.raises(InvalidParameterError):
        LRFinder(**kwargs).fit(X, y)
    assert not hasattr(estimator, "head_")


def test_lr_finder_is_a_scikit_learn_estimator(estimator):
    finder = LRFinder(estimator, num_it=20, stage="unfrozen")
    params = finder.get_params()
    assert params["num_it"] == 20 and params["estimator__batch_size"] == 4
    twin = clone(finder).set_params(estimator__batch_size=8, end_lr=100.0)
    assert twin.estimator is not estimator and twin.estimator.batch_size == 8
    assert estimator.batch_size == 4 and finder.end_lr == 10.0
    assert "num_it=20" in repr(finder)


def test_plots(images, estimator):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes

    X, y = images
    finder = LRFinder(estimator, random_state=0).fit(X, y)
    try:
        ax = finder.plot()
        assert isinstance(ax, Axes)
        assert ax.get_xscale() == "log"
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        for rule in RULES:
            assert any(label.startswith(rule) for label in labels), labels
        assert not ax.texts  # no problem to report
        ax2 = finder.plot_lr()
        assert isinstance(ax2, Axes)
        (line,) = ax2.get_lines()
        np.testing.assert_allclose(line.get_ydata(), finder.lrs_)
        _, own = plt.subplots()
        assert finder.plot(ax=own) is own
    finally:
        plt.close("all")


# --- lr="auto" and unfrozen_lr="auto" ---------------------------------------------


def test_lr_auto_uses_the_sweep_when_it_can_be_read(images, estimator):
    X, y = images
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        clf = estimator.set_params(lr="auto", precompute_epochs=2).fit(X, y)
    assert sweep_warnings(record) == []
    assert isinstance(clf.lr_, float) and 1e-7 < clf.lr_ < 10
    assert clf.lr_ != 1e-3
    assert clf.history_[0]["lrs"] == pytest.approx([clf.lr_])


def test_lr_auto_in_grid_search_sweeps_the_training_fold_only(images, estimator):
    """The sweep says how many samples it saw: 6 per training fold, never
    the 6 held-out images nor the whole set; with so few it falls back."""
    X, y = images
    est = estimator.set_params(lr="auto", precompute_epochs=2, batch_size=6)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        search = GridSearchCV(
            est, {"dropout": [0.0, 0.5]}, cv=2, n_jobs=1, error_score="raise"
        ).fit(X, y)
    messages = sweep_warnings(record)
    # 2 candidates x 2 folds of 6 training images; the refit on 12 has two
    # whole batches
    assert sum("had only 6 training samples" in m for m in messages) == 4
    assert not any("12 training samples" in m for m in messages)
    assert all("default rate 0.001" in m for m in messages)
    best = search.best_estimator_
    assert isinstance(best.lr_, float) and 1e-7 <= best.lr_ <= 10
    assert best.history_[0]["lrs"] == pytest.approx([best.lr_])


def test_lr_auto_ignores_the_validation_images(images, estimator):
    X, y = images
    est = estimator.set_params(
        lr="auto", precompute_epochs=1, validation_fraction=0.25, batch_size=6
    )
    with pytest.warns(UserWarning, match="had only 9 training samples"):
        clf = est.fit(X, y)  # 12 images, 3 held out
    assert clf.lr_ == 1e-3


def test_lr_auto_falls_back_to_a_stated_default_on_too_little_data(images, estimator):
    X, y = images
    est = estimator.set_params(lr="auto", precompute_epochs=1, batch_size=64)
    with pytest.warns(UserWarning, match=r"lr='auto'.*default rate 0.001"):
        clf = est.fit(X, y)
    assert clf.lr_ == 1e-3
    assert clf.history_[0]["lrs"] == pytest.approx([1e-3])
    # the sweep that could not be read is still there to look at
    record = clf.lr_sweeps_["lr"]
    assert record["rate"] == 1e-3 and "12 training samples" in record["problem"]
    assert len(record["lrs"]) == len(record["smoothed_losses"]) >= 1


# --- an LRSweep as the rate ---------------------------------------------------------


def test_lr_sweeps_records_what_auto_swept_and_its_rule_chooses(images, estimator):
    X, y = images
    clf = clone(estimator).set_params(lr="auto", precompute_epochs=2).fit(X, y)
    record = clf.lr_sweeps_["lr"]
    assert set(record) == {
        "lrs", "losses", "smoothed_losses", "diverged", "suggestions", "rule",
        "rate", "problem",
    }  # fmt: skip
    assert record["problem"] is None and record["rule"] == "valley"
    assert clf.lr_ == record["rate"] == record["suggestions"]["valley"]
    # the same sweep read by another rule, with the rule as the parameter
    other = (
        clone(estimator)
        .set_params(lr=LRSweep(rule="minimum"), precompute_epochs=2)
        .fit(X, y)
    )
    np.testing.assert_array_equal(other.lr_sweeps_["lr"]["lrs"], record["lrs"])
    assert other.lr_ == record["suggestions"]["minimum"] != clf.lr_
    assert other.history_[0]["lrs"] == pytest.approx([other.lr_])
    # a fit that sweeps nothing records no sweep
    assert clone(estimator).fit(X, y).lr_sweeps_ == {}


def test_the_head_rate_is_swept_from_a_new_head_after_a_probe(images, estimator):
    """A probed head sits at its loss minimum, where a sweep has no descent
    to read: the sweep trains a copy with new weights, as the lesson's
    lr_find does, and the probed head then trains at the rate found."""
    X, y = images
    probed = clone(estimator).set_params(
        head_init="auto", hidden_sizes=(), lr="auto", precompute_epochs=1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        probed.fit(X, y)
    assert probed.history_[0]["stage"] == "probe"
    probe_loss = probed.history_[0]["train_loss"]
    first = probed.lr_sweeps_["lr"]["losses"][0]
    assert first > 0.3 > probe_loss  # two classes from scratch: about log(2)
    assert probed.history_[1]["lrs"] == pytest.approx([probed.lr_])


def test_an_lr_sweep_as_the_rate_clones_searches_and_saves(images, estimator, tmp_path):
    from sktransfer import load, save

    X, y = images
    est = clone(estimator).set_params(precompute_epochs=2)
    search = GridSearchCV(
        est,
        {
            "lr": [
                LRSweep(end_lr=100, rule="valley"),
                LRSweep(end_lr=100, rule="steepest"),
            ]
        },
        cv=2,
        error_score="raise",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 6 images a fold
        search.fit(X, y)
    best = search.best_estimator_
    assert isinstance(best.lr, LRSweep) and best.lr.end_lr == 100
    save(best, tmp_path / "model")
    again = load(tmp_path / "model")
    assert again.lr.get_params() == best.lr.get_params()
    np.testing.assert_array_equal(
        again.lr_sweeps_["lr"]["lrs"], best.lr_sweeps_["lr"]["lrs"]
    )
    np.testing.assert_allclose(again.predict_proba(X), best.predict_proba(X), atol=1e-6)


@pytest.mark.parametrize(
    "sweep", [LRSweep(start_lr=1.0, end_lr=0.1), LRSweep(num_it=2), LRSweep(rule="max")]
)
@pytest.mark.parametrize("name", ["lr", "unfrozen_lr"])
def test_an_lr_sweep_that_cannot_run_is_named_before_any_image(estimator, sweep, name):
    clf = clone(estimator).set_params(**{name: sweep})
    with pytest.raises(InvalidParameterError, match=rf"'{name}' parameter.*LRSweep"):
        clf.fit(["missing.jpg", "gone.jpg"], ["a", "b"])


def test_lr_auto_without_precomputed_epochs(images, estimator):
    """With stage 1 skipped lr='auto' must still give the head a rate."""
    X, y = images
    clf = estimator.set_params(lr="auto", precompute_epochs=0, augmented_cycles=1)
    clf.fit(X, y)
    assert isinstance(clf.lr_, float) and 1e-7 <= clf.lr_ <= 10
    (row,) = clf.history_
    assert row["stage"] == "augmented"
    assert row["lrs"][-1] == pytest.approx(clf.lr_)


#: The unfrozen sweep takes 100 optimizer steps of the whole network: with
#: SqueezeNet 1.1 (1.2M parameters, a tenth of ResNet-18) that is seconds.
SMALL = dict(TINY, backbone="squeezenet1_1")


@pytest.fixture
def four_images(tmp_path):
    """Two images per class, in batches of 2."""
    return make_images(tmp_path / "four", n_per_class=2)


def test_unfrozen_lr_auto(tmp_path, estimator):
    # eight images in batches of 2: four batches per pass, enough for a
    # readable curve whatever the augmentations drawn
    X, y = make_images(tmp_path / "eight", n_per_class=4)
    estimator.set_params(**SMALL, batch_size=2)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        clf = estimator.set_params(
            precompute_epochs=1, unfrozen_cycles=1, unfrozen_lr="auto", lr_mult=10
        ).fit(X, y)
    assert sweep_warnings(record) == []  # a readable sweep, not the fallback
    u = clf.unfrozen_lr_
    assert isinstance(u, float) and 1e-7 <= u <= 10 and u != 1e-4
    assert clf.lr_ == pytest.approx(1e-3)
    (row,) = [r for r in clf.history_ if r["stage"] == "unfrozen"]
    assert row["lrs"] == pytest.approx([u / 100, u / 10, u, u], rel=1e-9)
    assert not any(p.requires_grad for p in clf.extractor_.backbone.body.parameters())


def test_unfrozen_lr_auto_falls_back_to_a_stated_default(four_images, estimator):
    X, y = four_images
    est = estimator.set_params(
        **SMALL,
        precompute_epochs=1,
        unfrozen_cycles=1,
        unfrozen_lr="auto",
        batch_size=3,
    )
    with pytest.warns(UserWarning, match=r"unfrozen_lr='auto'.*default rate 0.0001"):
        clf = est.fit(X, y)
    assert clf.unfrozen_lr_ == 1e-4
    (row,) = [r for r in clf.history_ if r["stage"] == "unfrozen"]
    assert row["lrs"] == pytest.approx([1e-6, 1e-5, 1e-4, 1e-4], rel=1e-9)


def test_lr_finder_leaves_out_images_fit_skipped(tmp_path):
    X, y = make_images(tmp_path / "img", n_per_class=4)
    (tmp_path / "bad.jpg").write_text("not an image")
    X = [*X, str(tmp_path / "bad.jpg")]
    y = [*y, "a"]
    est = PretrainedImageClassifier(
        **TINY, cache=str(tmp_path / "c"), on_error="skip", precompute_epochs=1
    )
    with pytest.warns(UserWarning, match="bad.jpg"):
        finder = LRFinder(est, num_it=10, random_state=0).fit(X, y)
    assert len(finder.lrs_) > 0
    assert "8 training samples" in finder.problem_
