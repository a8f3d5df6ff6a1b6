"""The learning-rate finder: the sweep, the suggestions, LRFinder, lr='auto'.

The sweep is first checked on a problem whose converging range is known (a
linear model on Gaussian classes), then on hand-made loss curves, then on
the TINY estimator (random-init ResNet-18 at 32 px, a dozen generated
images).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from conftest import TINY, make_images
from sklearn.model_selection import GridSearchCV
from torch import nn

import sktransfer._classifier as classifier_mod
import sktransfer._lr_finder as lr_finder_mod
from sktransfer import PretrainedImageClassifier
from sktransfer._lr_finder import LRFinder, lr_sweep, suggest_lrs

RULES = {"valley", "minimum", "steepest"}


# --- a problem with a known converging range ------------------------------------


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


def full_batches(X, y, seed):
    """The whole (reshuffled) data set as every batch, from a fixed generator:
    the loss moves only because the weights do."""
    rng = np.random.default_rng(seed)

    def batches(i):
        idx = torch.as_tensor(rng.permutation(len(X)))
        return X[idx], y[idx]

    return batches


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
    lrs, losses, smoothed = lr_sweep(
        model,
        [(model.parameters(), 1.0)],
        full_batches(X, y, seed),
        start_lr=start,
        end_lr=end,
        num_it=num_it,
    )
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
    lrs, losses, smoothed = lr_sweep(
        model,
        [(model.parameters(), 1.0)],
        full_batches(X, y, 0),
        start_lr=1e-7,
        end_lr=1e8,
        num_it=num_it,
        diverge=4.0,
    )
    assert 3 <= len(lrs) < num_it
    assert len(losses) == len(smoothed) == len(lrs)
    # it stopped because the smoothed loss passed 4x its best
    assert smoothed[-1] > 4.0 * smoothed.min()
    assert np.all(smoothed[:-1] <= 4.0 * np.minimum.accumulate(smoothed)[:-1])


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
    lrs, losses, smoothed = lr_sweep(
        model, [(model.parameters(), 1.0)], full_batches(X, y, 0), num_it=50
    )
    assert len(lrs) == len(losses) == len(smoothed) == k
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(smoothed))
    assert all(torch.isfinite(p).all() for p in model.linear.parameters())


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
    lrs, _, _ = lr_sweep(model, groups, full_batches(X, y, 0), num_it=20, end_lr=1.0)
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


# --- LRFinder on the TINY estimator -------------------------------------------------


@pytest.fixture
def estimator(cache_dir):
    return PretrainedImageClassifier(
        **TINY, cache=cache_dir, batch_size=6, random_state=0
    )


def head_state(clf):
    return {
        k: v.detach().cpu().clone() for k, v in clf.net_.module_.state_dict().items()
    }


def test_lr_finder_on_the_tiny_estimator(images, estimator):
    X, y = images
    params = estimator.get_params()
    finder = LRFinder(estimator, num_it=30, random_state=0).fit(X, y)
    n = len(finder.lrs_)
    assert 3 <= n <= 30
    assert finder.lrs_[0] == pytest.approx(1e-7)
    mult = (10.0 / 1e-7) ** (1 / 29)
    np.testing.assert_allclose(finder.lrs_[1:] / finder.lrs_[:-1], mult, rtol=1e-9)
    assert len(finder.losses_) == len(finder.smoothed_losses_) == n
    assert np.all(np.isfinite(finder.losses_))
    assert set(finder.suggestions_) == RULES
    assert finder.suggestion_ == finder.suggestions_["valley"]
    for lr in finder.suggestions_.values():
        assert isinstance(lr, float) and 0 < lr <= 10.0
    # the estimator passed in is untouched
    assert estimator.get_params() == params
    assert not hasattr(estimator, "net_")
    # the same random_state gives the same curve
    again = LRFinder(estimator, num_it=30, random_state=0).fit(X, y)
    np.testing.assert_array_equal(again.lrs_, finder.lrs_)
    np.testing.assert_array_equal(again.losses_, finder.losses_)
    np.testing.assert_array_equal(again.smoothed_losses_, finder.smoothed_losses_)
    assert again.suggestions_ == finder.suggestions_


@pytest.mark.parametrize("stage", ["precomputed", "unfrozen"])
def test_lr_finder_leaves_a_fitted_estimator_unchanged(images, estimator, stage):
    X, y = images
    clf = estimator.set_params(epochs=1, n_cycles=1, unfreeze=True).fit(X, y)
    params = clf.get_params()
    state, proba = head_state(clf), clf.predict_proba(X)
    rows = copy.deepcopy(clf.history_)
    key = clf.extractor_.model_key
    LRFinder(clf, num_it=10, stage=stage, random_state=0).fit(X, y)
    assert clf.get_params() == params
    after = head_state(clf)
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], state[k]) for k in state)
    np.testing.assert_array_equal(clf.predict_proba(X), proba)
    assert clf.history_ == rows
    assert clf.extractor_.model_key == key


@pytest.mark.parametrize(
    "unfreeze, trainable",
    [
        (True, [True, True, True, True]),
        (1, [False, True, True, True]),
        (2, [False, False, True, True]),
    ],
)
@pytest.mark.parametrize("lr_mult", [10, (1e-6, 1e-5, 1e-4)], ids=["mult", "tuple"])
def test_unfrozen_stage_sweeps_with_the_group_ratios(
    images, estimator, monkeypatch, unfreeze, trainable, lr_mult
):
    X, y = images
    captured = []
    real = lr_finder_mod.lr_sweep

    def spy(model, param_groups, batches, **kwargs):
        groups = [(list(params), ratio) for params, ratio in param_groups]
        captured.append(
            dict(
                ratios=[ratio for _, ratio in groups],
                trainable=[all(p.requires_grad for p in ps) for ps, _ in groups],
                frozen=[not any(p.requires_grad for p in ps) for ps, _ in groups],
            )
        )
        return real(model, groups, batches, **kwargs)

    monkeypatch.setattr(lr_finder_mod, "lr_sweep", spy)
    est = estimator.set_params(epochs=1, unfreeze=unfreeze, lr_mult=lr_mult)
    finder = LRFinder(est, num_it=8, stage="unfrozen", random_state=0).fit(X, y)
    (call,) = captured
    assert call["ratios"] == pytest.approx([0.01, 0.1, 1.0, 1.0], rel=1e-9)
    assert call["trainable"] == trainable
    assert call["frozen"] == [not t for t in trainable]
    assert 3 <= len(finder.lrs_) <= 8
    assert set(finder.suggestions_) == RULES
    assert not hasattr(est, "net_")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(start_lr=1.0, end_lr=1.0),
        dict(start_lr=10.0, end_lr=1.0),
        dict(start_lr=0.0),
        dict(num_it=2),
        dict(stage="foo"),
        dict(smooth=1.0),
    ],
)
def test_invalid_lr_finder_parameters_raise(images, estimator, kwargs):
    X, y = images
    with pytest.raises(ValueError):
        LRFinder(estimator, **kwargs).fit(X, y)
    assert not hasattr(estimator, "net_")


def test_plots(images, estimator):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes

    X, y = images
    finder = LRFinder(estimator, num_it=30, random_state=0).fit(X, y)
    try:
        ax = finder.plot()
        assert isinstance(ax, Axes)
        assert ax.get_xscale() == "log"
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        for rule in RULES:
            assert any(label.startswith(rule) for label in labels), labels
        ax2 = finder.plot_lr()
        assert isinstance(ax2, Axes)
        (line,) = ax2.get_lines()
        np.testing.assert_allclose(line.get_ydata(), finder.lrs_)
        _, own = plt.subplots()
        assert finder.plot(ax=own) is own
    finally:
        plt.close("all")


# --- lr="auto" and finetune_lr="auto" -------------------------------------------------


class SweepSpy:
    """Wraps lr_sweep: records the distinct samples each sweep trained on,
    the group ratios, and the fit (number of images) it ran in."""

    def __init__(self, real, num_it=None):
        self.real, self.num_it, self.calls, self.fit_sizes = real, num_it, [], []

    def __call__(self, model, param_groups, batches, **kwargs):
        param_groups = [(list(p), r) for p, r in param_groups]
        rows = set()

        def recording(i):
            x, y = batches(i)
            for row in x.reshape(len(x), -1):
                rows.add(row.detach().cpu().numpy().tobytes())
            return x, y

        if self.num_it is not None:
            kwargs["num_it"] = self.num_it
        out = self.real(model, param_groups, recording, **kwargs)
        self.calls.append(
            dict(
                rows=rows,
                ratios=[r for _, r in param_groups],
                fit_size=self.fit_sizes[-1] if self.fit_sizes else None,
            )
        )
        return out


@pytest.fixture
def sweep_spy(monkeypatch):
    spy = SweepSpy(classifier_mod.lr_sweep)
    monkeypatch.setattr(classifier_mod, "lr_sweep", spy)
    real_fit = PretrainedImageClassifier.fit
    fitted = []

    def fit(self, X, y):
        spy.fit_sizes.append(len(X))
        real_fit(self, X, y)
        fitted.append((len(X), self.lr_, self.finetune_lr_))
        return self

    monkeypatch.setattr(PretrainedImageClassifier, "fit", fit)
    spy.fitted = fitted
    return spy


def test_lr_auto_in_grid_search_sweeps_the_training_fold_only(
    images, estimator, sweep_spy
):
    X, y = images
    est = estimator.set_params(lr="auto", epochs=2)
    search = GridSearchCV(
        est, {"dropout": [0.0, 0.5]}, cv=2, n_jobs=1, error_score="raise"
    ).fit(X, y)
    # 2 candidates x 2 folds of 6 training images, then the refit on 12
    assert [n for n, _, _ in sweep_spy.fitted] == [6, 6, 6, 6, 12]
    for _, lr, _ in sweep_spy.fitted:
        assert isinstance(lr, float) and 1e-7 <= lr <= 10
    assert len(sweep_spy.calls) == 5
    for call in sweep_spy.calls:
        assert len(call["rows"]) == call["fit_size"]
        assert call["ratios"] == [1.0]
    best = search.best_estimator_
    assert isinstance(best.lr_, float) and 1e-7 <= best.lr_ <= 10
    assert best.history_[0]["lrs"] == pytest.approx([best.lr_])


def test_lr_auto_ignores_the_validation_images(images, estimator, sweep_spy):
    X, y = images
    clf = estimator.set_params(lr="auto", epochs=1, validation_fraction=0.25).fit(X, y)
    (call,) = sweep_spy.calls
    assert len(call["rows"]) == 9  # 12 images, 3 held out
    assert 1e-7 <= clf.lr_ <= 10


def test_lr_auto_without_precomputed_epochs(images, estimator):
    """With stage 1 skipped lr='auto' must still give the head a rate."""
    X, y = images
    clf = estimator.set_params(lr="auto", epochs=0, n_cycles=1).fit(X, y)
    assert isinstance(clf.lr_, float) and 1e-7 <= clf.lr_ <= 10
    (row,) = clf.history_
    assert row["stage"] == "augmented"
    assert row["lrs"][-1] == pytest.approx(clf.lr_)


def test_finetune_lr_auto(images, estimator, monkeypatch):
    X, y = images
    spy = SweepSpy(classifier_mod.lr_sweep, num_it=15)  # short sweeps on images
    monkeypatch.setattr(classifier_mod, "lr_sweep", spy)
    clf = estimator.set_params(
        epochs=1, unfreeze=True, unfrozen_cycles=1, finetune_lr="auto", lr_mult=10
    ).fit(X, y)
    (call,) = spy.calls
    assert call["ratios"] == pytest.approx([0.01, 0.1, 1.0, 1.0])
    assert isinstance(clf.finetune_lr_, float) and 1e-7 <= clf.finetune_lr_ <= 10
    assert clf.lr_ == pytest.approx(1e-3)
    (row,) = [r for r in clf.history_ if r["stage"] == "unfrozen"]
    ft = clf.finetune_lr_
    assert row["lrs"] == pytest.approx([ft / 100, ft / 10, ft, ft], rel=1e-9)
    assert not any(p.requires_grad for p in clf.extractor_.backbone.body.parameters())


def test_lr_finder_leaves_out_images_fit_skipped(tmp_path):
    X, y = make_images(tmp_path / "img", n_per_class=4)
    (tmp_path / "bad.jpg").write_text("not an image")
    X = [*X, str(tmp_path / "bad.jpg")]
    y = [*y, "a"]
    est = PretrainedImageClassifier(
        **TINY, cache=str(tmp_path / "c"), on_error="skip", epochs=1
    )
    with pytest.warns(UserWarning, match="bad.jpg"):
        finder = LRFinder(est, num_it=10, random_state=0).fit(X, y)
    assert len(finder.lrs_) > 0
