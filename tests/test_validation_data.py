"""Validation data passed to ``fit`` (``X_val``, ``y_val``,
``sample_weight_val``), early stopping's ``n_iter_no_change`` and ``tol``,
and the user's skorch ``callbacks``: observed through the public API only.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import sklearn
from conftest import TINY, make_images
from PIL import Image
from sklearn.base import clone
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import GridSearchCV, cross_val_score
from skorch.callbacks import Callback, EarlyStopping, EpochScoring

from sktransfer import PretrainedImageClassifier, PretrainedImageRegressor


@pytest.fixture(scope="module")
def data(module_dir):
    """12 training images and 6 validation images of classes 'a' and 'b'."""
    X, y = make_images(module_dir / "train", n_per_class=6)
    X_val, y_val = make_images(module_dir / "valid", n_per_class=3, seed=1)
    return X, y, X_val, y_val


@pytest.fixture
def base(cache_dir):
    """TINY with batches of 6: two steps per epoch on 12 images."""
    return dict(TINY, cache=cache_dir, batch_size=6, random_state=0)


def flipped(labels):
    """'a' <-> 'b': the validation loss rises as the model learns ``y``."""
    return np.where(np.asarray(labels) == "a", "b", "a")


def rows_of(est, stage):
    return [row for row in est.history_ if row["stage"] == stage]


class EpochCounter(Callback):
    """Counts the epoch ends it sees and records the count in the epoch's
    history row; every instance that ever saw an epoch is listed in
    ``EpochCounter.seen`` (a class attribute: deep copies share it)."""

    seen: list = []

    def __init__(self, label="counter"):
        self.label = label

    def initialize(self):
        self.count_ = 0
        # each instance holds an object of its own for as long as it lives;
        # ids alone could be reused once an earlier stage's copy is freed
        self.alive_ = object()
        return self

    def on_epoch_end(self, net, **kwargs):
        self.count_ += 1
        net.history.record(self.label, self.count_)
        EpochCounter.seen.append((id(self), self.alive_))


# --- X_val is the validation set --------------------------------------------------


def test_probe_row_scores_x_val_as_predict_does(data, base):
    X, y, X_val, _ = data
    # half of the validation labels wrong: an accuracy strictly between 0 and 1
    y_val = np.array(["a", "b", "b", "b", "a", "a"])
    clf = PretrainedImageClassifier(**base).fit(X, y, X_val=X_val, y_val=y_val)
    (row,) = clf.history_
    assert row["stage"] == "probe"
    assert math.isfinite(row["valid_loss"]) and row["valid_loss"] > 0
    expected = accuracy_score(y_val, clf.predict(X_val))
    assert 0 < expected < 1
    assert row["valid_acc"] == pytest.approx(expected)
    # the validation loss is the log loss of predict_proba on X_val
    proba = clf.predict_proba(X_val)
    index = {c: k for k, c in enumerate(clf.classes_)}
    log_loss = -np.mean([np.log(p[index[t]]) for p, t in zip(proba, y_val)])
    assert row["valid_loss"] == pytest.approx(log_loss, rel=1e-4)


@pytest.mark.parametrize("epochs", [0, 2])
def test_validation_images_never_train(data, base, epochs):
    X, y, X_val, y_val = data
    params = dict(base, precompute_epochs=epochs)
    alone = PretrainedImageClassifier(**params).fit(X, y)
    validated = PretrainedImageClassifier(**params).fit(
        X, y, X_val=X_val, y_val=flipped(y_val)
    )
    np.testing.assert_array_equal(
        alone.predict_proba(X_val), validated.predict_proba(X_val)
    )
    assert all(math.isnan(row["valid_loss"]) for row in alone.history_)
    assert len(validated.history_) == 1 + epochs
    for row in validated.history_:
        assert math.isfinite(row["valid_loss"]) and math.isfinite(row["valid_acc"])


def test_every_stage_records_x_val_rows(data, base):
    X, y, X_val, y_val = data
    clf = PretrainedImageClassifier(
        **base,
        precompute_epochs=2,
        augmented_cycles=1,
        augmented_copies=1,
        unfrozen_cycles=1,
    ).fit(X, y, X_val=X_val, y_val=y_val)
    stages = [row["stage"] for row in clf.history_]
    assert stages == ["probe", "precomputed", "precomputed", "augmented", "unfrozen"]
    for row in clf.history_:
        assert math.isfinite(row["valid_loss"])
        assert 0 <= row["valid_acc"] <= 1
    # the last epoch's score is that of the final model on X_val
    last = clf.history_[-1]
    assert last["valid_acc"] == pytest.approx(accuracy_score(y_val, clf.predict(X_val)))


def test_sample_weight_val_weights_the_validation_loss_only(data, base):
    X, y, X_val, _ = data
    y_val = np.array(["a", "b", "b", "b", "a", "a"])
    # weight only on the rows whose labels are right: a lower loss, same score
    right = (y_val == np.array(["a"] * 3 + ["b"] * 3)).astype(float)
    plain = PretrainedImageClassifier(**base).fit(X, y, X_val=X_val, y_val=y_val)
    weighted = PretrainedImageClassifier(**base).fit(
        X, y, X_val=X_val, y_val=y_val, sample_weight_val=right
    )
    (p,), (w,) = plain.history_, weighted.history_
    assert w["valid_loss"] < p["valid_loss"]
    assert w["valid_acc"] == p["valid_acc"]
    np.testing.assert_array_equal(weighted.predict_proba(X), plain.predict_proba(X))


def test_warm_start_validates_on_the_new_x_val(data, base):
    X, y, X_val, y_val = data
    clf = PretrainedImageClassifier(**base, warm_start=True)
    clf.fit(X, y, X_val=X_val, y_val=y_val)
    clf.set_params(precompute_epochs=2).fit(X, y, X_val=X_val, y_val=flipped(y_val))
    second = [row for row in clf.history_ if row["fit"] == 2]
    assert [row["stage"] for row in second] == ["precomputed"] * 2
    # the flipped labels are now mostly wrong
    assert all(row["valid_acc"] <= 0.5 for row in second)
    assert second[-1]["valid_acc"] == pytest.approx(
        accuracy_score(flipped(y_val), clf.predict(X_val))
    )


def brightness_images(n):
    """``n`` noisy grey 32 x 32 images and their brightness (100 to 150)."""
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1, n)
    X = np.stack(
        [
            np.clip(v * 255 + rng.normal(0, 10, (32, 32, 3)), 0, 255).astype(np.uint8)
            for v in values
        ]
    )
    return X, 100 + 50 * values


def test_regression_x_val(base):
    X, y = brightness_images(18)
    reg = PretrainedImageRegressor(**base).fit(
        X[:12], y[:12], X_val=X[12:], y_val=y[12:]
    )
    (row,) = reg.history_
    assert math.isfinite(row["valid_loss"])
    # R² does not change under the standardisation learned from y
    assert row["valid_r2"] == pytest.approx(
        r2_score(y[12:], reg.predict(X[12:])), abs=1e-5
    )
    with pytest.raises(ValueError, match="y_val has 2 target columns; y has 1"):
        PretrainedImageRegressor(**base).fit(
            X[:12], y[:12], X_val=X[12:], y_val=np.c_[y[12:], y[12:]]
        )


#: an unfrozen stage at a rate that wrecks the network: early stopping undoes it
WRECKING = dict(unfrozen_cycles=1, unfrozen_lr=0.3, lr_mult=1, cycle_len=2)


def test_x_val_never_trains_also_when_every_stage_is_undone(data, base):
    """Where early stopping undoes every stage after the probe, the probe is
    fitted again on the images split from ``X`` for validation; the user's
    own ``X_val`` stays out: the model is the probe on ``X`` alone."""
    X, y, X_val, y_val = data
    probe = PretrainedImageClassifier(**base).fit(X, y)
    guarded = PretrainedImageClassifier(**base, early_stopping=True, **WRECKING)
    guarded.fit(X, y, X_val=X_val, y_val=y_val)
    undone = rows_of(guarded, "unfrozen")
    assert undone and all(row["discarded"] for row in undone)
    assert not rows_of(guarded, "refit") and guarded.n_samples_fit_ == len(X)
    np.testing.assert_array_equal(
        guarded.predict_proba(X_val), probe.predict_proba(X_val)
    )


def test_the_regressors_probe_is_refitted_when_every_stage_is_undone(base):
    X, y = brightness_images(16)
    default = PretrainedImageRegressor(**base).fit(X, y)
    wrecking = dict(WRECKING, unfrozen_lr=0.01)  # 0.3 overflows a regression
    guarded = PretrainedImageRegressor(**base, early_stopping=True, **wrecking)
    guarded.fit(X, y)
    assert [row["stage"] for row in guarded.history_][-1] == "refit"
    assert all(row["discarded"] for row in rows_of(guarded, "unfrozen"))
    assert guarded.n_samples_fit_ == len(X)
    np.testing.assert_array_equal(guarded.predict(X), default.predict(X))


def test_tuned_thresholds_keep_their_validation_images_out_of_training(data, base):
    """``threshold="tuned"`` chooses the thresholds on the validation images
    after training: the probe is not fitted again on them."""
    X = data[0]
    y = [{"a"}, {"b"}, {"a", "c"}, {"c"}] * 3
    common = dict(base, validation_fraction=0.25, early_stopping=True)
    tuned = PretrainedImageClassifier(**common, threshold="tuned").fit(X, y)
    assert [row["stage"] for row in tuned.history_] == ["probe"]
    assert tuned.n_samples_fit_ == 9
    fixed = clone(tuned).set_params(threshold=0.5).fit(X, y)
    assert [row["stage"] for row in fixed.history_] == ["probe", "refit"]
    assert fixed.n_samples_fit_ == 12


def test_multilabel_x_val(data, base):
    X, _, X_val, _ = data
    y = [{"a"}, {"b"}, {"a", "c"}, {"c"}] * 3
    y_val = [{"c"}, {"a", "b"}, {"b"}, {"a"}, set(), {"c"}]
    clf = PretrainedImageClassifier(**base, precompute_epochs=1)
    clf.fit(X, y, X_val=X_val, y_val=y_val)
    assert [row["stage"] for row in clf.history_] == ["probe", "precomputed"]
    for row in clf.history_:
        assert math.isfinite(row["valid_loss"])
        assert 0 <= row["valid_f1"] <= 1
    # an indicator matrix over classes_ is the same validation set
    indicator = np.array([[int(c in s) for c in clf.classes_] for s in y_val])
    again = PretrainedImageClassifier(**base, precompute_epochs=1)
    again.fit(X, y, X_val=X_val, y_val=indicator)
    assert again.history_[0]["valid_loss"] == clf.history_[0]["valid_loss"]
    with pytest.raises(
        ValueError, match=r"y_val holds labels that are not in y: \['d'\]"
    ):
        PretrainedImageClassifier(**base).fit(
            X, y, X_val=X_val, y_val=[{"d"}] + y_val[1:]
        )
    with pytest.raises(ValueError, match="y_val has 2 label columns; y has 3"):
        PretrainedImageClassifier(**base).fit(X, y, X_val=X_val, y_val=indicator[:, :2])
    with pytest.raises(ValueError, match="y_val is single-label but y is multi-label"):
        PretrainedImageClassifier(**base).fit(X, y, X_val=X_val, y_val=list("abcabc"))


def test_unreadable_validation_images_are_reported_and_skipped(data, base, tmp_path):
    X, y, X_val, y_val = data
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    arrays = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in X_val[:3]])
    arrays = list(arrays) + [np.zeros((0, 4, 3), np.uint8)]  # an empty image
    with pytest.raises(ValueError, match="broken.jpg"):
        PretrainedImageClassifier(**base).fit(
            X, y, X_val=[*X_val, str(broken)], y_val=[*y_val, "a"]
        )
    with pytest.warns(UserWarning, match="on_error='skip'"):
        clf = PretrainedImageClassifier(**base, on_error="skip").fit(
            X, y, X_val=[*X_val, str(broken)], y_val=[*y_val, "a"]
        )
    assert clf.skipped_ == [str(broken)]
    (row,) = clf.history_
    assert row["valid_acc"] == pytest.approx(accuracy_score(y_val, clf.predict(X_val)))
    # an in-memory validation image is named by its index in X_val
    with pytest.raises(ValueError, match=r"X_val\[3\]"):
        PretrainedImageClassifier(**base).fit(
            X, y, X_val=arrays, y_val=[*y_val[:3], "a"]
        )
    with pytest.warns(UserWarning, match="on_error='skip'"):
        clf = PretrainedImageClassifier(**base, on_error="skip").fit(
            X, y, X_val=arrays, y_val=[*y_val[:3], "a"]
        )
    assert clf.skipped_ == ["X_val[3]"]
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 1"):
        PretrainedImageClassifier(**base, on_error="skip").fit(
            X, y, X_val=[str(broken)], y_val=["a"]
        )


# --- errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, params, message",
    [
        ({"X_val": "images"}, {}, "X_val is provided, but y_val was not provided"),
        ({"y_val": "labels"}, {}, "y_val is provided, but X_val was not provided"),
        (
            {"sample_weight_val": [1.0] * 6},
            {},
            "sample_weight_val is provided, but X_val and y_val were not",
        ),
        (
            {"X_val": "images", "y_val": "labels"},
            {"validation_fraction": 0.25},
            "X_val and validation_fraction=0.25 were both given",
        ),
        (
            {"X_val": "images", "y_val": ["a", "b", "c", "a", "b", "c"]},
            {},
            r"y_val holds labels that are not in y: \['c'\]",
        ),
        (
            {"X_val": "images", "y_val": ["a", "b"]},
            {},
            "X_val and y_val have different lengths: 6 images but 2 targets",
        ),
        (
            {"X_val": "images", "y_val": "labels", "sample_weight_val": [1.0, 2.0]},
            {},
            r"sample_weight_val must be 1-D with one weight per image of X_val \(6\)",
        ),
        (
            {"X_val": "images", "y_val": "labels", "sample_weight_val": [0.0] * 6},
            {},
            "sample_weight_val is 0 for every image of X_val",
        ),
        ({"X_val": [], "y_val": []}, {}, "X_val is empty"),
        ({}, {"n_iter_no_change": 0}, "'n_iter_no_change' parameter"),
        ({}, {"n_iter_no_change": 1.5}, "'n_iter_no_change' parameter"),
        ({}, {"tol": -1.0}, "'tol' parameter"),
        ({}, {"tol": "small"}, "'tol' parameter"),
        ({}, {"callbacks": "progress"}, "'callbacks' parameter"),
        ({}, {"callbacks": [EpochCounter, EpochCounter()]}, r"callbacks\[0\]"),
        ({}, {"callbacks": [("sgdr", EpochCounter())]}, "'sgdr'"),
        (
            {},
            {"callbacks": [("c", EpochCounter()), ("c", EpochCounter())]},
            "names 'c' more than once",
        ),
    ],
)
def test_validation_errors_name_the_parameters(data, base, kwargs, params, message):
    X, y, X_val, y_val = data
    given = {"images": X_val, "labels": y_val}
    kwargs = {
        k: given.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()
    }
    clf = PretrainedImageClassifier(**base, **params)
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y, **kwargs)
    assert not hasattr(clf, "history_")


# --- early stopping's knobs -------------------------------------------------------


@pytest.fixture
def rising(base):
    """A random head learning y while the validation labels are flipped: the
    validation loss rises from the first epoch on."""
    return dict(base, head_init="random", precompute_epochs=8, lr=1e-2)


def test_fewer_epochs_without_improvement_stop_a_stage_sooner(data, rising):
    X, y, X_val, y_val = data

    def epochs(n):
        clf = PretrainedImageClassifier(
            **rising, early_stopping=True, n_iter_no_change=n
        ).fit(X, y, X_val=X_val, y_val=flipped(y_val))
        rows = rows_of(clf, "precomputed")
        losses = [row["valid_loss"] for row in rows]
        return len(rows), losses

    quick, losses = epochs(1)
    patient, _ = epochs(5)
    assert losses[1] > losses[0]  # the data does what the test needs
    assert quick == 2
    assert patient == 6
    full = PretrainedImageClassifier(**rising).fit(
        X, y, X_val=X_val, y_val=flipped(y_val)
    )
    assert len(rows_of(full, "precomputed")) == 8


@pytest.mark.parametrize("n_iter_no_change", [1, 3])
def test_a_large_tol_stops_after_the_first_n_iter_no_change_epochs(
    data, base, n_iter_no_change
):
    X, y, X_val, y_val = data
    clf = PretrainedImageClassifier(
        **base,
        precompute_epochs=8,
        early_stopping=True,
        n_iter_no_change=n_iter_no_change,
        tol=1e6,
    ).fit(X, y, X_val=X_val, y_val=y_val)
    # the first epoch sets the loss to beat; none of the next ones beats it
    assert len(rows_of(clf, "precomputed")) == 1 + n_iter_no_change


def test_early_stopping_without_x_val_still_holds_out_a_tenth(base):
    X, y = make_images_in_memory(20)
    clf = PretrainedImageClassifier(
        **base, precompute_epochs=8, early_stopping=True, tol=1e6
    ).fit(X, y)
    rows = rows_of(clf, "precomputed")
    assert len(rows) == 4  # the default n_iter_no_change=3
    assert all(math.isfinite(row["valid_loss"]) for row in rows)


def make_images_in_memory(n):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 255, size=(n, 32, 32, 3), dtype=np.uint8)
    X[n // 2 :, ..., 0] = 255
    return X, np.array(["grey"] * (n // 2) + ["red"] * (n - n // 2))


# --- the user's callbacks ---------------------------------------------------------


def test_callbacks_see_every_epoch_of_every_stage_fresh_per_stage(data, base):
    X, y, X_val, y_val = data
    counter = EpochCounter()
    EpochCounter.seen = []
    params = dict(
        base,
        precompute_epochs=2,
        augmented_cycles=1,
        augmented_copies=1,
        unfrozen_cycles=1,
        callbacks=[counter, ("second", EpochCounter("other"))],
    )
    clf = PretrainedImageClassifier(**params).fit(X, y, X_val=X_val, y_val=y_val)
    skorch_rows = [row for row in clf.history_ if row["stage"] != "probe"]
    # a count that starts at 1 in every stage: a fresh copy per stage
    assert [row["counter"] for row in skorch_rows] == [1, 2, 1, 1]
    assert [row["other"] for row in skorch_rows] == [1, 2, 1, 1]
    assert "counter" not in rows_of(clf, "probe")[0]  # the probe has no net
    assert len(EpochCounter.seen) == 2 * 4
    # two copies per stage (the objects they hold stay alive in the list)
    assert len({id(alive) for _, alive in EpochCounter.seen}) == 2 * 3
    assert id(counter) not in [i for i, _ in EpochCounter.seen]  # never used
    assert not hasattr(counter, "count_")
    # a second fit uses fresh copies again
    first = set(EpochCounter.seen)
    clf.fit(X, y)
    assert [row["counter"] for row in clf.history_ if row["stage"] != "probe"] == [
        1,
        2,
        1,
        1,
    ]
    assert not first & set(EpochCounter.seen[8:])


def test_callbacks_see_the_epoch_that_early_stopping_ends(data, base):
    X, y, X_val, y_val = data
    clf = PretrainedImageClassifier(
        **base,
        precompute_epochs=8,
        early_stopping=True,
        n_iter_no_change=2,
        tol=1e6,
        callbacks=[EpochCounter()],
    ).fit(X, y, X_val=X_val, y_val=y_val)
    assert [row["counter"] for row in rows_of(clf, "precomputed")] == [1, 2, 3]


def test_a_skorch_early_stopping_callback_ends_the_stage_not_the_fit(data, base):
    X, y, X_val, y_val = data
    stop = EarlyStopping(patience=1, threshold=1e6, threshold_mode="abs")
    clf = PretrainedImageClassifier(
        **base,
        precompute_epochs=5,
        augmented_cycles=2,
        augmented_copies=1,
        callbacks=[stop],
    ).fit(X, y, X_val=X_val, y_val=y_val)
    assert len(rows_of(clf, "precomputed")) == 2
    assert len(rows_of(clf, "augmented")) == 2


def test_an_epoch_scoring_callback_scores_the_validation_set_into_history(data, base):
    X, y, X_val, y_val = data

    def n_rows(net, X, y=None):  # the stage's validation set, as the net sees it
        return float(len(net.predict_proba(X)))

    scoring = EpochScoring(n_rows, name="n_rows", lower_is_better=False)
    clf = PretrainedImageClassifier(
        **base, precompute_epochs=2, augmented_cycles=1, callbacks=[scoring]
    ).fit(X, y, X_val=X_val, y_val=y_val)
    skorch_rows = [row for row in clf.history_ if row["stage"] != "probe"]
    assert [row["n_rows"] for row in skorch_rows] == [len(X_val)] * 3


class Interrupt(Callback):
    """The user's Ctrl-C, arriving at the end of the second epoch."""

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == 2:
            raise KeyboardInterrupt


def test_a_keyboard_interrupt_from_a_callback_stops_the_fit(data, base):
    X, y, X_val, y_val = data
    clf = PretrainedImageClassifier(**base).fit(X, y)
    before = clf.predict_proba(X_val)
    clf.set_params(
        precompute_epochs=4,
        early_stopping=True,
        n_iter_no_change=1,
        tol=1e6,  # early stopping ends the stage at epoch 2 too
        callbacks=[Interrupt()],
    )
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y, X_val=X_val, y_val=y_val)
    np.testing.assert_array_equal(clf.predict_proba(X_val), before)
    assert len(clf.history_) == 1


def test_clone_and_get_params_keep_the_callbacks(data, base):
    X, y, _, _ = data
    clf = PretrainedImageClassifier(
        **base, precompute_epochs=1, callbacks=[("count", EpochCounter("n"))]
    )
    copy = clone(clf)
    ((name, callback),) = copy.get_params()["callbacks"]
    assert name == "count" and isinstance(callback, EpochCounter)
    assert callback is not clf.callbacks[0][1] and callback.label == "n"
    copy.fit(X, y)
    assert [row.get("n") for row in copy.history_] == [None, 1]
    again = clone(copy).set_params(callbacks=None)
    assert again.get_params()["callbacks"] is None


# --- model selection --------------------------------------------------------------


def test_cross_val_score_passes_x_val_to_every_fold(data, base):
    X, y, X_val, y_val = data
    clf = PretrainedImageClassifier(**base, precompute_epochs=1)
    plain = cross_val_score(clf, X, y, cv=2, error_score="raise")
    with_val = cross_val_score(
        clf, X, y, cv=2, params={"X_val": X_val, "y_val": y_val}, error_score="raise"
    )
    np.testing.assert_array_equal(plain, with_val)  # validation never trains
    with sklearn.config_context(enable_metadata_routing=True):
        routed = clone(clf).set_fit_request(X_val=True, y_val=True)
        scores = cross_val_score(
            routed, X, y, cv=2, params={"X_val": X_val, "y_val": y_val}
        )
        np.testing.assert_array_equal(plain, scores)
        search = GridSearchCV(
            routed, {"precompute_epochs": [1, 2]}, cv=2, error_score="raise"
        ).fit(X, y, X_val=X_val, y_val=y_val)
    assert all(math.isfinite(r["valid_loss"]) for r in search.best_estimator_.history_)


def test_verbose_summary_counts_the_validation_images(data, tmp_path, capfd):
    X, y, X_val, y_val = data
    params = dict(TINY, cache=str(tmp_path / "c"), random_state=0, verbose=1)
    PretrainedImageClassifier(**params).fit(X, y, X_val=X_val, y_val=y_val)
    (summary,) = [ln for ln in capfd.readouterr().err.splitlines() if "took" in ln]
    # every image read once, in one pass: 12 training and 6 validation images
    assert "18 images, 6 of them for validation (18 computed, 0 cached)" in summary
    # early stopping with nothing after the probe: the probe fitted again
    PretrainedImageClassifier(**params, early_stopping=True).fit(X, y)
    (summary,) = [ln for ln in capfd.readouterr().err.splitlines() if "took" in ln]
    assert "12 images, 2 of them for validation" in summary  # a tenth
    assert "the probe fitted again with the validation images (penalty" in summary


def test_fit_params_are_not_kept_between_fits(data, base):
    X, y, X_val, y_val = data
    clf = PretrainedImageClassifier(**base).fit(X, y, X_val=X_val, y_val=y_val)
    assert math.isfinite(clf.history_[0]["valid_loss"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.fit(X, y)
    assert math.isnan(clf.history_[0]["valid_loss"])
