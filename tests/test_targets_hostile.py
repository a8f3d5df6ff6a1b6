"""Targets and labels under hostile input: rows left out of training (weight
0, unreadable photos) never rename or drop classes, labels never seen in fit
count as errors, regression targets keep their float64 precision, and the
validation split is checked on the rows that train.

Checks that need no image run before the first image is read: there X holds
a missing file, which would be reported if it were read.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn
from conftest import TINY, make_images
from sklearn.metrics import get_scorer, log_loss
from sklearn.model_selection import StratifiedKFold, cross_val_score

from sktransfer import PretrainedImageClassifier, PretrainedImageRegressor, load, save

#: Animal names for multi-label y: each picture's colour gives its first label.
TAGS = {"a": ["ant", "insect"], "b": ["bee", "insect"], "c": ["cat"]}


@pytest.fixture
def base(cache_dir):
    return dict(TINY, cache=cache_dir, batch_size=4, random_state=0)


@pytest.fixture(scope="module")
def three(module_dir):
    """12 JPEG paths, 4 of each of the classes 'a', 'b', 'c'."""
    return make_images(module_dir / "three", n_per_class=4, classes=("a", "b", "c"))


def missing(X, tmp_path):
    """X with its last image replaced by a file that does not exist."""
    return [*X[:-1], str(tmp_path / "missing.jpg")]


def subset_accuracy(clf, X, truth):
    """Subset accuracy from predict and an indicator matrix over classes_."""
    return float(np.mean(np.all(clf.predict(X) == truth, axis=1)))


def indicator(rows, classes):
    return np.array([[int(c in row) for c in classes] for row in rows])


# --- rows left out of training keep every label ----------------------------------


def test_label_lists_keep_their_names_when_a_sample_weight_is_zero(three, base):
    X, labels = three
    y = [TAGS[v] for v in labels]
    weights = np.ones(len(X))
    weights[0] = 0.0
    clf = PretrainedImageClassifier(**base, precompute_epochs=2)
    clf.fit(X, y, sample_weight=weights)
    assert clf.classes_.tolist() == ["ant", "bee", "cat", "insect"]
    truth = indicator(y, clf.classes_.tolist())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real names are known labels
        assert clf.score(X, y) == subset_accuracy(clf, X, truth)


def test_label_lists_keep_their_names_when_an_image_is_skipped(three, base, tmp_path):
    X, labels = three
    y = [TAGS[v] for v in labels]
    clf = PretrainedImageClassifier(**base, precompute_epochs=2, on_error="skip")
    with pytest.warns(UserWarning, match="missing.jpg"):
        clf.fit(missing(X, tmp_path), y)
    assert clf.classes_.tolist() == ["ant", "bee", "cat", "insect"]
    assert clf.predict_proba(X).shape == (len(X), 4)
    truth = indicator(y, clf.classes_.tolist())
    assert clf.score(X, y) == subset_accuracy(clf, X, truth)


@pytest.mark.parametrize(
    "head",
    [{}, dict(head_init="random", hidden_sizes=(512,), precompute_epochs=4, lr=1e-2)],
    ids=["probe", "random-head"],
)
def test_a_class_whose_images_all_weigh_zero_keeps_its_column(three, base, head):
    X, y = three
    weights = np.where(y == "c", 0.0, 1.0)
    clf = PretrainedImageClassifier(**base, **head)
    proba = clf.fit(X, y, sample_weight=weights).predict_proba(X)
    assert clf.classes_.tolist() == ["a", "b", "c"]
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # nothing taught the model 'c': it is the least likely class everywhere
    assert (proba.argmax(axis=1) != 2).all()
    assert (proba[:, 2] < proba[:, :2].max(axis=1)).all()


def test_cross_val_log_loss_with_routed_weights_that_zero_a_class(three, base):
    X, y = three
    weights = np.where(y == "c", 0.0, 1.0)
    clf = PretrainedImageClassifier(**base, precompute_epochs=2)
    with sklearn.config_context(enable_metadata_routing=True):
        clf.set_fit_request(sample_weight=True)
        scores = cross_val_score(
            clf,
            np.asarray(X),
            y,
            cv=StratifiedKFold(2),
            scoring=get_scorer("neg_log_loss").set_score_request(sample_weight=False),
            params={"sample_weight": weights},
        )
    assert scores.shape == (2,) and np.isfinite(scores).all()
    # the score is sklearn's log loss over the three classes of y
    folds = list(StratifiedKFold(2).split(X, y))
    train, test = folds[0]
    model = PretrainedImageClassifier(**base, precompute_epochs=2)
    model.fit([X[i] for i in train], y[train], sample_weight=weights[train])
    proba = model.predict_proba([X[i] for i in test])
    assert scores[0] == pytest.approx(-log_loss(y[test], proba, labels=["a", "b", "c"]))


def test_one_class_with_positive_weights_names_the_weights_before_reading_images(
    images, base, tmp_path, forward_count
):
    X, y = images
    weights = np.where(y == "b", 0.0, 1.0)
    clf = PretrainedImageClassifier(**base)
    with pytest.raises(ValueError, match=r"only one class \('a'\)") as err:
        clf.fit(missing(X, tmp_path), y, sample_weight=weights)
    message = str(err.value)
    assert "positive sample_weight" in message and "'b'" in message
    assert "missing.jpg" not in message and forward_count["n"] == 0
    assert not hasattr(clf, "classes_")


def test_one_class_left_by_skipped_images_says_so(images, base, tmp_path):
    X, y = images
    X = [*X[:6], *(str(tmp_path / f"gone{i}.jpg") for i in range(6))]
    clf = PretrainedImageClassifier(**base, on_error="skip")
    with pytest.warns(UserWarning, match="gone0"):
        with pytest.raises(ValueError, match=r"only one class \('a'\)") as err:
            clf.fit(X, y)
    assert "6 unreadable" in str(err.value)
    assert not hasattr(clf, "classes_")


# --- score with labels the model never saw ----------------------------------------


def test_multilabel_score_counts_unseen_labels_as_missed_and_names_them(three, base):
    X, labels = three
    y = [TAGS[v] for v in labels]
    clf = PretrainedImageClassifier(**base, precompute_epochs=20, lr=3e-2).fit(X, y)
    assert clf.score(X, y) > 0  # something to lose
    with pytest.warns(UserWarning, match="zebra"):
        assert clf.score(X, [[*row, "zebra"] for row in y]) == 0.0
    # only the rows that carry it are missed
    half = [[*row, "zebra"] if i % 2 else row for i, row in enumerate(y)]
    truth = indicator(y, clf.classes_.tolist())
    expected = np.all(clf.predict(X) == truth, axis=1) & (np.arange(len(X)) % 2 == 0)
    with pytest.warns(UserWarning, match=r"\['zebra'\]; the 6 samples"):
        assert clf.score(X, half) == expected.mean()


def test_multilabel_score_takes_y_that_names_one_label(three, base):
    X, labels = three
    y = [TAGS[v] for v in labels]
    clf = PretrainedImageClassifier(**base, precompute_epochs=2).fit(X, y)
    only_cats = [["cat"]] * 4
    truth = indicator(only_cats, clf.classes_.tolist())
    assert clf.score(X[8:], only_cats) == subset_accuracy(clf, X[8:], truth)


def test_multilabel_score_hints_at_an_indicator_given_as_lists(three, base):
    X, labels = three
    y = [TAGS[v] for v in labels]
    clf = PretrainedImageClassifier(**base, precompute_epochs=1).fit(X, y)
    truth = indicator(y, clf.classes_.tolist())
    with pytest.warns(UserWarning, match=r"\[0, 1\].*as a 2-D array"):
        assert clf.score(X, truth.tolist()) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert clf.score(X, truth) == subset_accuracy(clf, X, truth)


@pytest.mark.parametrize("weights", [np.zeros(12), np.ones(11)], ids=["zero", "short"])
def test_score_names_a_sample_weight_it_cannot_use(images, base, weights):
    X, y = images
    clf = PretrainedImageClassifier(**base, precompute_epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="sample_weight"):
        clf.score(X, y, sample_weight=weights)


# --- regression targets keep float64 precision -------------------------------------


@pytest.fixture(scope="module")
def levels(module_dir):
    """12 grey pictures whose brightness is the target (0..1500)."""
    X, _ = make_images(module_dir / "levels", n_per_class=6)
    return X, np.linspace(0.0, 1500.0, len(X))


@pytest.mark.parametrize("offset", [1e9, 1e12])
def test_large_regression_targets_are_predicted_in_float64(levels, base, offset):
    X, y = levels
    params = dict(base, head_init="random", precompute_epochs=4, lr=1e-2)
    near = PretrainedImageRegressor(**params).fit(X, y)
    far = PretrainedImageRegressor(**params).fit(X, y + offset)
    pred = far.predict(X)
    assert pred.dtype == np.float64
    # the same standardised targets train the same head: only the offset differs
    np.testing.assert_allclose(pred - offset, near.predict(X), rtol=0, atol=1e-2)
    assert far.score(X, y + offset) == pytest.approx(near.score(X, y), abs=1e-6)


def test_a_saved_regressor_predicts_large_targets_to_the_unit(levels, base, tmp_path):
    X, y = levels
    reg = PretrainedImageRegressor(**base, precompute_epochs=2).fit(X, y + 1e12)
    pred = reg.predict(X)
    assert len(np.unique(np.round(pred))) > 1  # steps of 1, not of 4096
    save(reg, tmp_path / "model")
    again = load(tmp_path / "model").predict(X)
    assert again.dtype == np.float64
    np.testing.assert_array_equal(again, pred)


@pytest.mark.parametrize("two_columns", [False, True])
def test_targets_whose_mean_or_spread_overflows_are_named_before_reading_images(
    images, base, tmp_path, forward_count, two_columns
):
    X, _ = images
    huge = np.linspace(0.2, 1.7, len(X)) * 1e308  # finite, their sum is not
    y = np.c_[np.arange(len(X)), huge] if two_columns else huge
    with pytest.raises(ValueError, match="mean or standard deviation") as err:
        PretrainedImageRegressor(**base).fit(missing(X, tmp_path), y)
    message = str(err.value)
    assert ("target column 1" in message) == two_columns
    assert "1.7e+308" in message and "diverged" not in message
    assert forward_count["n"] == 0


def test_tiny_targets_are_not_mistaken_for_a_constant(levels, base):
    X, y = levels
    params = dict(base, precompute_epochs=2)
    near = PretrainedImageRegressor(**params).fit(X, y)
    tiny = PretrainedImageRegressor(**params).fit(X, y * 1e-302)  # squares: 0
    np.testing.assert_allclose(tiny.predict(X) * 1e302, near.predict(X), rtol=1e-6)


def test_a_huge_spread_of_targets_trains_and_scores(levels, base):
    X, y = levels
    params = dict(base, precompute_epochs=2)
    near = PretrainedImageRegressor(**params).fit(X, y)
    huge = PretrainedImageRegressor(**params).fit(X, y * 1e200)  # squares: inf
    np.testing.assert_allclose(huge.predict(X) / 1e200, near.predict(X), rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way
        assert huge.score(X, y * 1e200) == pytest.approx(near.score(X, y))


def test_integers_that_float64_cannot_hold_are_named_before_reading_images(
    images, base, tmp_path, forward_count
):
    X, _ = images
    y = np.arange(len(X), dtype=np.int64) + 2**62  # all one float64
    with pytest.raises(ValueError, match="cannot hold exactly") as err:
        PretrainedImageRegressor(**base).fit(missing(X, tmp_path), y)
    assert f"row 1: {2**62 + 1}" in str(err.value)
    assert "same value" not in str(err.value)
    assert forward_count["n"] == 0


def test_the_standardisation_is_that_of_the_rows_that_train(levels, base):
    X, y = levels
    y = y.copy()
    y[0] = 1e200  # an outlier of weight 0 changes nothing
    weights = np.r_[0.0, np.ones(len(X) - 1)]
    reg = PretrainedImageRegressor(**base, precompute_epochs=2)
    reg.fit(X, y, sample_weight=weights)
    assert reg.target_mean_[0] == pytest.approx(y[1:].mean())
    assert reg.target_scale_[0] == pytest.approx(y[1:].std())


# --- labels of every hashable kind -------------------------------------------------


def test_tuple_labels_of_different_lengths(images, base):
    X, y = images
    names = {"a": ("cat",), "b": ("cat", "tabby")}
    labels = [names[v] for v in y]
    clf = PretrainedImageClassifier(**base, precompute_epochs=2).fit(X, labels)
    assert clf.classes_.tolist() == [("cat",), ("cat", "tabby")]
    pred = clf.predict(X)
    assert all(p in names.values() for p in pred.tolist())
    assert clf.score(X, labels) == np.mean([p == t for p, t in zip(pred, labels)])


def test_unhashable_labels_are_named_before_reading_images(
    images, base, tmp_path, forward_count
):
    X, y = images
    labels = [{"name": v} if i == 3 else v for i, v in enumerate(y)]
    with pytest.raises(ValueError, match=r"y\[3\] is a dict.*hashable"):
        PretrainedImageClassifier(**base).fit(missing(X, tmp_path), labels)
    assert forward_count["n"] == 0


def test_single_label_score_with_label_lists_says_what_it_needs(images, base):
    X, y = images
    clf = PretrainedImageClassifier(**base, precompute_epochs=1).fit(X, y)
    with pytest.raises(ValueError, match=r"single-label y.*y\[0\] is a list"):
        clf.score(X, [[v] for v in y])


# --- the validation split --------------------------------------------------------


def test_early_stopping_without_validation_fraction_holds_out_a_tenth(images, base):
    X, y = images
    clf = PretrainedImageClassifier(**base, precompute_epochs=3, early_stopping=True)
    clf.fit(X, y)
    assert all(np.isfinite(row["valid_loss"]) for row in clf.history_)
    assert all(np.isfinite(row["valid_acc"]) for row in clf.history_)


def test_early_stopping_names_its_implicit_split_when_it_cannot_stratify(
    three, base, tmp_path, forward_count
):
    X, y = three  # a tenth of 12 images is 2, fewer than the 3 classes
    clf = PretrainedImageClassifier(**base, early_stopping=True)
    with pytest.raises(ValueError, match=r"early_stopping=True.*3 classes") as err:
        clf.fit(missing(X, tmp_path), y)
    assert "validation_fraction=0.1" in str(err.value)
    assert forward_count["n"] == 0


def test_a_split_made_impossible_by_zero_weights_is_named_before_reading_images(
    three, base, tmp_path, forward_count
):
    X, y = three
    weights = np.ones(len(X))
    weights[[8, 9, 10]] = 0.0  # one image of 'c' left
    clf = PretrainedImageClassifier(**base, validation_fraction=0.5)
    with pytest.raises(ValueError, match="class 'c' has only 1") as err:
        clf.fit(missing(X, tmp_path), y, sample_weight=weights)
    assert "3 of sample_weight 0" in str(err.value)
    assert forward_count["n"] == 0


def test_a_split_made_impossible_by_skipped_images_gets_our_message(
    three, base, tmp_path
):
    X, y = three
    X = [*X[:9], *(str(tmp_path / f"gone{i}.jpg") for i in range(3))]
    clf = PretrainedImageClassifier(
        **base, validation_fraction=0.5, on_error="skip", precompute_epochs=1
    )
    with pytest.warns(UserWarning, match="gone0"):
        with pytest.raises(ValueError, match="class 'c' has only 1") as err:
            clf.fit(X, y)
    assert "3 unreadable" in str(err.value)
    assert not hasattr(clf, "classes_")
