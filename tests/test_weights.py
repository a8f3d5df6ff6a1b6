"""Sample weights on every estimator, class weights on the classifier.

Weights scale each image's term in the loss of every stage (and of the
learning-rate sweeps); an image of weight 0 is left out. Every check that
needs no image runs before the first image is read: X then holds a missing
file, which would be reported if it were, and ``forward_count`` stays 0.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY, make_images
from sklearn.utils.class_weight import compute_sample_weight

from sktransfer import PretrainedImageClassifier, PretrainedImageRegressor

#: A short fit: probabilities stay away from 0 and 1, so weights show.
SHORT = dict(precompute_epochs=2)


@pytest.fixture
def base(cache_dir):
    return dict(TINY, cache=cache_dir, batch_size=4, random_state=0)


@pytest.fixture(scope="module")
def imbalanced(module_dir):
    """10 images of 'a' and 2 of 'b'."""
    X, y = make_images(module_dir / "imbalanced", n_per_class=10)
    keep = np.r_[0:10, 10:12]
    return [X[i] for i in keep], y[keep]


@pytest.fixture(scope="module")
def unseen(module_dir):
    """12 new pictures of the same two colours."""
    return make_images(module_dir / "unseen", seed=1)[0]


#: Labels that the colours do not predict: a linear head trained to the end
#: learns their (weighted) prior, which shows on pictures it has not seen.
PRIOR = dict(precompute_epochs=10, lr=1e-2, hidden_sizes=(), dropout=0.0)


def with_missing_file(X, tmp_path):
    return [*X[:-1], str(tmp_path / "missing.jpg")]


# --- sample_weight ----------------------------------------------------------------


@pytest.mark.parametrize(
    "recipe",
    [SHORT, dict(precompute_epochs=1, augmented_cycles=1, unfrozen_cycles=1)],
    ids=["precomputed", "whole-recipe"],
)
def test_zero_sample_weights_are_the_same_as_dropping_those_images(
    images, base, recipe
):
    X, y = images
    weights = np.ones(len(X))
    weights[[0, 7, 8]] = 0.0
    kept = weights > 0
    a = PretrainedImageClassifier(**base, **recipe).fit(X, y, sample_weight=weights)
    b = PretrainedImageClassifier(**base, **recipe).fit(
        [x for x, k in zip(X, kept) if k], y[kept]
    )
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), atol=1e-7)
    assert [r["train_loss"] for r in a.history_] == pytest.approx(
        [r["train_loss"] for r in b.history_], rel=1e-6
    )


def test_zero_sample_weights_are_the_same_as_dropping_those_rows_in_regression(
    images, base
):
    X, _ = images
    y = np.linspace(0.0, 1.0, len(X))
    weights = np.r_[np.zeros(3), np.ones(9)]
    a = PretrainedImageRegressor(**base, **SHORT).fit(X, y, sample_weight=weights)
    b = PretrainedImageRegressor(**base, **SHORT).fit(X[3:], y[3:])
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-6, atol=1e-7)
    # the standardisation is that of the images that train
    assert a.target_mean_ == pytest.approx(b.target_mean_)


def test_equal_sample_weights_change_nothing(images, base):
    X, y = images
    a = PretrainedImageClassifier(**base, **SHORT).fit(X, y)
    b = PretrainedImageClassifier(**base, **SHORT).fit(
        X, y, sample_weight=np.full(len(X), 2.5)
    )
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), atol=1e-7)


def test_heavier_images_pull_the_model_their_way(images, base):
    X, _ = images
    # one picture under both labels: all a model can learn is the prior,
    # 1/2 unweighted, 10/11 for 'b' with the 'b' copies ten times heavier
    X = [X[0]] * 12
    y = np.array(["a", "b"] * 6)
    params = {**base, **PRIOR, "precompute_epochs": 40}  # to convergence
    plain = PretrainedImageClassifier(**params).fit(X, y)
    weights = np.where(y == "b", 10.0, 1.0)
    heavy = PretrainedImageClassifier(**params).fit(X, y, sample_weight=weights)
    p_plain = plain.predict_proba(X[:1])[0, 1]
    p_heavy = heavy.predict_proba(X[:1])[0, 1]
    assert p_plain == pytest.approx(0.5, abs=0.15)
    assert p_heavy == pytest.approx(10 / 11, abs=0.1)


@pytest.mark.parametrize(
    "weights, match",
    [
        (np.ones(11), r"one weight per image \(12\).*\(11,\)"),
        (np.ones((12, 2)), r"1-D.*\(12, 2\)"),
        (np.r_[np.ones(11), -1.0], r"sample_weight\[11\] is -1.0"),
        (np.r_[np.nan, np.ones(11)], r"sample_weight\[0\] is nan"),
        (np.r_[np.ones(5), np.inf, np.ones(6)], r"sample_weight\[5\] is inf"),
        (np.zeros(12), "0 for every image"),
        (np.array(["heavy"] * 12), "must hold numbers"),
    ],
    ids=["short", "2-d", "negative", "nan", "inf", "all-zero", "strings"],
)
@pytest.mark.parametrize("cls", [PretrainedImageClassifier, PretrainedImageRegressor])
def test_bad_sample_weight_is_named_before_reading_images(
    images, base, tmp_path, forward_count, cls, weights, match
):
    X, y = images
    if cls is PretrainedImageRegressor:
        y = np.linspace(0.0, 1.0, len(X))
    est = cls(**base)
    with pytest.raises(ValueError, match="sample_weight") as err:
        est.fit(with_missing_file(X, tmp_path), y, sample_weight=weights)
    assert err.match(match)
    assert forward_count["n"] == 0
    assert not hasattr(est, "head_")


def test_score_takes_sample_weight(images, base):
    X, y = images
    clf = PretrainedImageClassifier(**base, precompute_epochs=1).fit(X, y)
    wrong = np.where(y == "a", "b", "a")
    right = clf.predict(X) == wrong
    weights = np.where(right, 3.0, 1.0)
    expected = np.average(right, weights=weights)
    assert clf.score(X, wrong, sample_weight=weights) == pytest.approx(expected)


# --- class_weight -----------------------------------------------------------------


def test_balanced_class_weight_moves_predictions_toward_the_minority(images, base):
    X, _ = images
    # one picture under both labels, 'b' twice in 12: all a model can learn
    # is the prior, 1/6 unweighted, 1/2 with balanced class weights
    X = [X[0]] * 12
    y = np.array(["a"] * 10 + ["b"] * 2)
    params = {**base, **PRIOR, "precompute_epochs": 40}  # to convergence
    plain = PretrainedImageClassifier(**params).fit(X, y)
    balanced = PretrainedImageClassifier(**params, class_weight="balanced")
    balanced.fit(X, y)
    p_plain = plain.predict_proba(X[:1])[0, 1]
    p_balanced = balanced.predict_proba(X[:1])[0, 1]
    assert p_plain == pytest.approx(2 / 12, abs=0.1)
    assert p_balanced == pytest.approx(0.5, abs=0.15)


def test_balanced_class_weight_is_the_balanced_sample_weight(imbalanced, base):
    X, y = imbalanced
    a = PretrainedImageClassifier(**base, **SHORT, class_weight="balanced").fit(X, y)
    b = PretrainedImageClassifier(**base, **SHORT).fit(
        X, y, sample_weight=compute_sample_weight("balanced", y)
    )
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), atol=1e-7)


def test_dict_class_weight_multiplies_sample_weight(imbalanced, base):
    X, y = imbalanced
    sample = np.linspace(0.5, 2.0, len(X))
    a = PretrainedImageClassifier(**base, **SHORT, class_weight={"b": 4.0}).fit(
        X, y, sample_weight=sample
    )
    b = PretrainedImageClassifier(**base, **SHORT).fit(
        X, y, sample_weight=sample * np.where(y == "b", 4.0, 1.0)
    )
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), atol=1e-7)


@pytest.mark.parametrize(
    "class_weight, match",
    [
        ({"zebra": 2.0}, r"label 'zebra', which is not in y"),
        ({np.str_("zebra"): 2.0}, r"label 'zebra', which is not in y"),
        ({"a": -1.0}, r"class_weight\['a'\] must be a number >= 0"),
        ({"a": "heavy"}, r"class_weight\['a'\] must be a number >= 0"),
        ({"a": np.nan}, r"class_weight\['a'\] must be a number >= 0"),
    ],
    ids=["unknown", "unknown-np-str", "negative", "string", "nan"],
)
def test_bad_class_weight_is_named_before_reading_images(
    imbalanced, base, tmp_path, forward_count, class_weight, match
):
    X, y = imbalanced
    clf = PretrainedImageClassifier(**base, class_weight=class_weight)
    with pytest.raises(ValueError, match=match) as err:
        clf.fit(with_missing_file(X, tmp_path), y)
    assert "np.str_" not in str(err.value)
    assert forward_count["n"] == 0
    assert not hasattr(clf, "head_")
