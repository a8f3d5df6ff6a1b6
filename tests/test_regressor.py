"""PretrainedImageRegressor: continuous targets, the same recipe.

The generated pictures are grey squares whose brightness is the target, so
the TINY model (random-init ResNet-18 at 32 px) learns it from 16 pictures.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from conftest import TINY
from sklearn.base import clone, is_regressor
from sklearn.metrics import r2_score
from sklearn.model_selection import cross_val_score

from sktransfer import LRFinder, PretrainedImageRegressor

N = 16


@pytest.fixture(scope="module")
def grey():
    """16 pictures and their brightness in [0, 1]."""
    rng = np.random.default_rng(0)
    y = rng.permutation(np.linspace(0.0, 1.0, N))
    X = np.stack(
        [np.clip(20 + 200 * v + rng.normal(0, 10, (32, 32, 3)), 0, 255) for v in y]
    ).astype(np.uint8)
    return X, y


@pytest.fixture
def base(cache_dir):
    return dict(TINY, cache=cache_dir, batch_size=8, random_state=0)


@pytest.fixture(scope="module")
def fitted(grey, cache_dir):
    X, y = grey
    reg = PretrainedImageRegressor(
        **TINY, cache=cache_dir, batch_size=8, random_state=0
    )
    return reg.fit(X, y)


# --- units, shapes, score ---------------------------------------------------------


def test_predictions_come_back_in_the_units_of_y(grey, base, fitted):
    """Targets are standardised inside: scaling and shifting y scales and
    shifts the predictions, and nothing else changes."""
    X, y = grey
    p = fitted.predict(X)
    assert p.shape == (N,)
    big = PretrainedImageRegressor(**base).fit(X, 1000 * y + 500)
    np.testing.assert_allclose(big.predict(X), 1000 * p + 500, rtol=1e-5, atol=1e-3)
    assert big.target_mean_ == pytest.approx([1000 * y.mean() + 500])
    assert big.target_scale_ == pytest.approx([1000 * y.std()])
    assert big.n_outputs_ == 1
    # the scale of y: not standardised units, and close to the truth
    assert np.abs(big.predict(X) - (1000 * y + 500)).mean() < 250
    assert big.predict(X).std() > 150


def test_score_is_r2_and_the_model_learns(grey, fitted):
    X, y = grey
    pred = fitted.predict(X)
    assert fitted.score(X, y) == pytest.approx(r2_score(y, pred))
    assert fitted.score(X, y) > 0.5
    assert is_regressor(fitted)
    assert not hasattr(fitted, "predict_proba")


def test_two_targets(grey, base):
    X, y = grey
    Y = np.column_stack([y, 3 - 10 * y])
    reg = PretrainedImageRegressor(**base).fit(X, Y)
    pred = reg.predict(X)
    assert pred.shape == (N, 2)
    assert reg.n_outputs_ == 2
    assert reg.target_mean_ == pytest.approx(Y.mean(axis=0))
    assert reg.score(X, Y) == pytest.approx(r2_score(Y, pred))
    for k in range(2):
        assert r2_score(Y[:, k], pred[:, k]) > 0.5
    assert [r["valid_r2"] for r in reg.history_]  # recorded (NaN: no split)


def test_a_column_of_targets_predicts_a_column(grey, base, fitted):
    X, y = grey
    reg = PretrainedImageRegressor(**base).fit(X, y.reshape(-1, 1))
    pred = reg.predict(X)
    assert pred.shape == (N, 1)
    np.testing.assert_allclose(pred[:, 0], fitted.predict(X), rtol=1e-6)


def test_cross_val_score_gives_r2_per_fold(grey, base):
    X, y = grey
    scores = cross_val_score(PretrainedImageRegressor(**base), X, y, cv=4)
    assert scores.shape == (4,)
    assert np.all(np.isfinite(scores))
    assert scores.mean() > 0.0  # better than predicting the mean


def test_clone_keeps_the_parameters_and_drops_the_fit(fitted):
    twin = clone(fitted)
    assert twin.get_params() == fitted.get_params()
    for name in ("head_", "target_mean_", "n_outputs_", "history_"):
        assert not hasattr(twin, name)


# --- the recipe -------------------------------------------------------------------


def test_the_whole_recipe_with_tta_and_a_snapshot_ensemble(grey, base):
    X, y = grey
    reg = PretrainedImageRegressor(
        **base,
        precompute_epochs=2,
        augmented_cycles=1,
        unfrozen_cycles=2,
        unfrozen_lr=1e-3,
        snapshot_ensemble=True,
        tta=2,
        validation_fraction=0.25,
    ).fit(X, 100 * y)
    assert [r["stage"] for r in reg.history_] == [
        "probe",
        "precomputed",
        "precomputed",
        "augmented",
        "unfrozen",
        "unfrozen",
    ]
    for row in reg.history_:
        assert "valid_r2" in row and np.isfinite(row["valid_r2"])
        assert np.isfinite(row["valid_loss"])
    assert len(reg.ensemble_) == 2  # one model per unfrozen cycle
    with_tta = reg.predict(X)
    assert with_tta.shape == (N,) and np.all(np.isfinite(with_tta))
    # the average of the members' averages over the views
    members = []
    for j in range(len(reg.model_.heads)):
        alone = copy.deepcopy(reg)
        alone.model_ = alone.model_.member(j)
        members.append(alone.predict(X))
    np.testing.assert_allclose(with_tta, np.mean(members, axis=0), rtol=1e-6)
    reg.set_params(tta=0)
    assert np.abs(reg.predict(X) - with_tta).max() > 1e-4


def test_lr_auto_trains_a_useful_model(grey, base):
    """Batches of 4 give a noisy per-batch loss: a sweep that 'diverges' on
    one bad batch after a handful of steps near 1e-7 cannot be read, and
    must fall back (with a warning) rather than leave the head untrained."""
    X, y = grey
    reg = PretrainedImageRegressor(
        **{**base, "batch_size": 4, "precompute_epochs": 8}, lr="auto"
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        reg.fit(X, y)
    fallback = [w for w in record if "default rate" in str(w.message)]
    assert isinstance(reg.lr_, float) and 1e-7 < reg.lr_ < 10
    assert (reg.lr_ == 1e-3) == bool(fallback)
    assert reg.history_[1]["lrs"] == pytest.approx([reg.lr_])  # after the probe
    # the default rate reaches R^2 ~0.8 here; predicting the mean is 0
    assert reg.score(X, y) > 0.3


def test_lr_finder_sweeps_a_regression_head(grey, base):
    X, y = grey
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        finder = LRFinder(
            PretrainedImageRegressor(**{**base, "batch_size": 4}),
            num_it=30,
            random_state=0,
        ).fit(X, 1000 * y)
    assert 3 <= len(finder.lrs_) <= 30
    # standardised targets: the squared error starts near 1, not near 1000**2
    assert 0.1 < finder.losses_[0] < 10


def test_warm_start_needs_as_many_targets(grey, base):
    X, y = grey
    reg = PretrainedImageRegressor(**base, precompute_epochs=1).fit(X, y)
    reg.set_params(warm_start=True)
    with pytest.raises(ValueError, match="as many targets"):
        reg.fit(X, np.column_stack([y, y]))
    reg.fit(X, y)
    # the first fit's probe and epoch, the second fit's epoch (no new probe)
    assert [r["fit"] for r in reg.history_] == [1, 1, 2]


# --- bad targets ------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_y, match",
    [
        (lambda y: np.full_like(y, 3.0), "same value for every image"),
        (lambda y: np.where(np.arange(N) == 4, np.nan, y), r"non-finite.*row 4"),
        (lambda y: np.where(np.arange(N) == 2, np.inf, y), r"non-finite.*row 2"),
        (lambda y: np.array(["a"] * N), "must hold numbers"),
        (lambda y: y[:-1], f"{N} images but {N - 1} targets"),
        (lambda y: y.reshape(N, 1, 1), "1-D or 2-D"),
        (lambda y: None, "y is required"),
        (
            lambda y: np.column_stack([y, np.ones(N)]),
            "target column 1 has the same value",
        ),
    ],
    ids=["constant", "nan", "inf", "strings", "short", "3-d", "none", "constant-col"],
)
def test_bad_targets_are_refused_before_reading_images(
    grey, base, forward_count, make_y, match
):
    X, y = grey
    reg = PretrainedImageRegressor(**base)
    with pytest.raises(ValueError, match=match):
        reg.fit(X, make_y(y))
    assert forward_count["n"] == 0
    assert not hasattr(reg, "head_")
