"""scikit-learn behaviour of PretrainedImageClassifier, PretrainedImageRegressor
and PretrainedFeatures.

Every model here is the TINY backbone (random-init ResNet-18 at 32 px) on a
dozen generated 40 px JPEGs, so each fit takes a fraction of a second.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY, make_images
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV, ParameterGrid, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from sktransfer import (
    FeatureCache,
    PretrainedFeatures,
    PretrainedImageClassifier,
    PretrainedImageRegressor,
)

#: Head settings under which the tiny model separates the colour classes of
#: ``make_images`` perfectly on its training set.
LEARNS = dict(precompute_epochs=10, lr=3e-2, hidden_sizes=(), dropout=0.0)

#: PretrainedFeatures' images-per-forward-pass parameter.
FEATURES_BATCH = (
    "extract_batch_size"
    if "extract_batch_size" in PretrainedFeatures().get_params()
    else "batch_size"
)


# --- fixtures ---------------------------------------------------------------------


@pytest.fixture
def tiny(cache_dir):
    return dict(TINY, cache=cache_dir, precompute_epochs=2, random_state=0)


def targets_for(cls, y):
    """Labels for a classifier, numbers for a regressor."""
    if cls is PretrainedImageRegressor:
        return (np.asarray(y) == "b").astype(float) + np.linspace(0, 0.5, len(y))
    return y


def _to_paths(X):
    return [Path(p) for p in X]


# --- parameters, clone ------------------------------------------------------------


def test_constructor_stores_parameters_unchanged(tmp_path):
    hidden = [64, 32]
    preprocessing = {"mean": (0.5, 0.5, 0.5)}
    weights = tmp_path / "w.pth"
    rs = np.random.RandomState(3)
    clf = PretrainedImageClassifier(
        "resnet18",
        weights=weights,
        hidden_sizes=hidden,
        preprocessing=preprocessing,
        random_state=rs,
        lr=0.123,
    )
    params = clf.get_params()
    assert params["backbone"] == "resnet18"
    assert params["weights"] is weights
    assert params["hidden_sizes"] is hidden
    assert params["preprocessing"] is preprocessing
    assert params["random_state"] is rs
    assert params["lr"] == 0.123
    feats = PretrainedFeatures("resnet18", weights=weights, preprocessing=preprocessing)
    assert feats.get_params()["weights"] is weights
    assert feats.get_params()["preprocessing"] is preprocessing


@pytest.mark.parametrize(
    "cls",
    [PretrainedImageClassifier, PretrainedImageRegressor, PretrainedFeatures],
)
def test_clone_keeps_params_and_drops_fitted_state(cls, images, tiny):
    X, y = images
    if cls is PretrainedFeatures:
        params = dict(TINY, cache=tiny["cache"], tta=1)
    else:
        params = tiny
    est = cls(**params).fit(X, targets_for(cls, y))
    twin = clone(est)
    assert type(twin) is cls
    assert twin.get_params() == est.get_params()
    for name in ("extractor_", "head_", "ensemble_", "history_"):
        assert not hasattr(twin, name), name


@pytest.mark.parametrize(
    "cls, changes",
    [
        (
            PretrainedImageClassifier,
            dict(lr=0.5, dropout=0.25, precompute_epochs=7, tta=3, threshold=0.3),
        ),
        (
            PretrainedImageRegressor,
            dict(unfrozen_lr=(1e-6, 1e-5, 1e-4), unfreeze_from=2, batch_size=8),
        ),
        (PretrainedFeatures, {FEATURES_BATCH: 5, "tta": 2, "precision": "fp32"}),
    ],
)
def test_set_params_changes_get_params(cls, changes):
    est = cls(**TINY)
    before = est.get_params()
    assert est.set_params(**changes) is est
    after = est.get_params()
    for key, value in changes.items():
        assert after[key] == value
        assert before[key] != value
    assert {k: v for k, v in after.items() if k not in changes} == {
        k: v for k, v in before.items() if k not in changes
    }
    with pytest.raises(ValueError, match="no_such_param"):
        est.set_params(no_such_param=1)


def test_the_recipe_estimators_share_their_parameters():
    classifier = set(PretrainedImageClassifier().get_params())
    regressor = set(PretrainedImageRegressor().get_params())
    assert classifier - regressor == {
        "class_weight",
        "label_smoothing",
        "mixup",
        "cutmix",
        "threshold",
    }
    assert regressor <= classifier


# --- composition ------------------------------------------------------------------


def test_features_then_logistic_regression_pipeline(images, cache_dir):
    X, y = images
    pipe = make_pipeline(
        PretrainedFeatures(**TINY, cache=cache_dir), LogisticRegression(max_iter=500)
    )
    pipe.fit(X, y)
    feats = pipe[0].transform(X)
    assert feats.shape == (len(X), pipe[0].n_features_out_)
    assert feats.dtype == np.float32
    assert np.isfinite(feats).all()
    pred = pipe.predict(X)
    assert pred.shape == (len(X),)
    assert set(pred) <= {"a", "b"}
    assert pipe.predict_proba(X).shape == (len(X), 2)


def test_classifier_as_last_pipeline_step(images, tiny):
    X, y = images
    pipe = make_pipeline(
        FunctionTransformer(_to_paths), PretrainedImageClassifier(**tiny)
    )
    pipe.fit(X, y)
    assert list(pipe.classes_) == ["a", "b"]
    proba = pipe.predict_proba(X)
    assert proba.shape == (len(X), 2)
    direct = PretrainedImageClassifier(**tiny).fit(X, y)
    np.testing.assert_allclose(proba, direct.predict_proba(X), atol=1e-6)
    assert 0.0 <= pipe.score(X, y) <= 1.0


def test_cross_val_score_returns_three_finite_scores(tmp_path):
    X, y = make_images(tmp_path / "cv", n_per_class=9)
    clf = PretrainedImageClassifier(
        **TINY, cache=str(tmp_path / "c"), precompute_epochs=2
    )
    scores = cross_val_score(clf, X, y, cv=3)
    assert scores.shape == (3,)
    assert np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search_over_head_params(n_jobs, images, tmp_path):
    X, y = images
    cache = tmp_path / "grid-cache"
    grid = {"lr": [1e-3, 3e-2], "dropout": [0.0, 0.5], "precompute_epochs": [1, 3]}
    search = GridSearchCV(
        PretrainedImageClassifier(**TINY, cache=str(cache), random_state=0),
        grid,
        cv=2,
        n_jobs=n_jobs,
    )
    search.fit(X, y)
    assert search.best_params_ in list(ParameterGrid(grid))
    assert len(search.cv_results_["params"]) == 8
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    pred = search.predict(X)
    assert set(pred) <= {"a", "b"}
    assert list(search.best_estimator_.classes_) == ["a", "b"]
    # Folds, candidates and worker processes share the cache: the body ran
    # once per image in total.
    stats = FeatureCache(cache).stats()
    assert stats["entries"] == len(X)
    assert stats["computed"] == len(X)


# --- persistence ------------------------------------------------------------------


def test_joblib_round_trip_in_fresh_process(images, tmp_path):
    X, y = images
    # No cache: the fresh process must recompute the features from the
    # pickled body's weights.
    clf = PretrainedImageClassifier(
        **TINY, cache=None, precompute_epochs=2, random_state=0
    )
    clf.fit(X, y)
    expected = clf.predict_proba(X)
    model = tmp_path / "model.joblib"
    joblib.dump(clf, model)
    paths = tmp_path / "paths.json"
    paths.write_text(json.dumps(list(X)))
    out = tmp_path / "proba.npy"
    code = textwrap.dedent(
        f"""
        import json, joblib, numpy as np
        clf = joblib.load({str(model)!r})
        X = json.load(open({str(paths)!r}))
        np.save({str(out)!r}, clf.predict_proba(X))
        print(clf.classes_.tolist())
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['a', 'b']"
    np.testing.assert_allclose(np.load(out), expected, rtol=0, atol=1e-6)


def test_pickle_round_trip_in_process(images):
    X, y = images
    clf = PretrainedImageClassifier(
        **TINY, cache=None, precompute_epochs=2, random_state=0
    )
    clf.fit(X, y)
    twin = pickle.loads(pickle.dumps(clf))
    assert twin.get_params() == clf.get_params()
    np.testing.assert_array_equal(twin.classes_, clf.classes_)
    np.testing.assert_allclose(twin.predict_proba(X), clf.predict_proba(X), atol=1e-6)
    np.testing.assert_array_equal(twin.predict(X), clf.predict(X))


def test_regressor_pickle_round_trip_with_a_snapshot_ensemble(images):
    X, y = images
    reg = PretrainedImageRegressor(
        **TINY,
        cache=None,
        precompute_epochs=3,
        cycle_len=1,
        snapshot_ensemble=True,
        random_state=0,
    ).fit(X, targets_for(PretrainedImageRegressor, y))
    assert len(reg.ensemble_) == 3
    twin = pickle.loads(pickle.dumps(reg))
    assert len(twin.ensemble_) == 3
    np.testing.assert_allclose(twin.predict(X), reg.predict(X), rtol=1e-6)


# --- randomness -------------------------------------------------------------------


def test_same_random_state_gives_identical_probabilities(images, tiny):
    X, y = images
    a = PretrainedImageClassifier(**tiny).fit(X, y).predict_proba(X)
    b = PretrainedImageClassifier(**tiny).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)


def test_different_random_state_gives_different_probabilities(images, tiny):
    X, y = images
    a = PretrainedImageClassifier(**{**tiny, "random_state": 0}).fit(X, y)
    b = PretrainedImageClassifier(**{**tiny, "random_state": 1}).fit(X, y)
    assert not np.allclose(a.predict_proba(X), b.predict_proba(X))


def _global_rng_states():
    return (
        torch.random.get_rng_state().clone(),
        np.random.get_state(),
        random.getstate(),
    )


def _assert_same_rng_states(before, after):
    torch_before, np_before, py_before = before
    torch_after, np_after, py_after = after
    assert torch.equal(torch_after, torch_before), "torch's global RNG state changed"
    assert np_after[0] == np_before[0]
    np.testing.assert_array_equal(
        np_after[1], np_before[1], err_msg="numpy's global RNG state changed"
    )
    assert np_after[2:] == np_before[2:], "numpy's global RNG state changed"
    assert py_after == py_before, "Python's global RNG state changed"


def test_fit_leaves_global_rng_state_untouched(images, tiny):
    X, y = images
    before = _global_rng_states()
    PretrainedImageClassifier(**tiny).fit(X, y)
    _assert_same_rng_states(before, _global_rng_states())


def test_predict_leaves_global_rng_state_untouched(images, tiny):
    X, y = images
    clf = PretrainedImageClassifier(**{**tiny, "tta": 1}).fit(X, y)
    before = _global_rng_states()
    clf.predict_proba(X)
    clf.predict(X)
    clf.score(X, y)
    _assert_same_rng_states(before, _global_rng_states())


def test_features_transform_leaves_global_rng_state_untouched(images, cache_dir):
    X, _ = images
    before = _global_rng_states()
    PretrainedFeatures(**TINY, cache=cache_dir, tta=1).fit().transform(X)
    _assert_same_rng_states(before, _global_rng_states())


# --- classes, probabilities, score ------------------------------------------------


def test_classes_are_sorted_and_define_proba_columns(tmp_path):
    # "zeta" images are red, "alpha" images green; "zeta" comes first in y
    # but last in classes_.
    X, y = make_images(tmp_path / "za", classes=("zeta", "alpha"))
    clf = PretrainedImageClassifier(
        **TINY, cache=str(tmp_path / "c"), random_state=0, **LEARNS
    ).fit(X, y)
    assert clf.classes_.tolist() == ["alpha", "zeta"]
    proba = clf.predict_proba(X)
    zeta = y == "zeta"
    assert (proba[zeta, 1] > 0.5).all()
    assert (proba[~zeta, 0] > 0.5).all()
    np.testing.assert_array_equal(clf.predict(X), y)


@pytest.mark.parametrize(
    "names, expected",
    [
        (["b", "a", "c"], ["a", "b", "c"]),
        ([10, 2, 7], [2, 7, 10]),  # numeric order, not "10" < "2"
        (["b", "B", "a"], ["B", "a", "b"]),
        (np.array([5, -1], dtype=np.int32), [-1, 5]),
        ([np.int64(3), np.int64(1)], [1, 3]),
    ],
    ids=["str", "int", "mixed-case", "numpy-int32-array", "numpy-int-scalars"],
)
def test_label_types(names, expected, images, tiny):
    X, _ = images
    n = len(X)
    y = [names[i % len(names)] for i in range(n)]
    if isinstance(names, np.ndarray):
        y = np.asarray(y, dtype=names.dtype)
    clf = PretrainedImageClassifier(**tiny).fit(X, y)
    assert clf.classes_.tolist() == expected
    assert type(clf.classes_.tolist()[0]) is type(expected[0])
    proba = clf.predict_proba(X)
    assert proba.shape == (n, len(expected))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    pred = clf.predict(X)
    assert pred.dtype == clf.classes_.dtype
    assert set(pred.tolist()) <= set(expected)
    np.testing.assert_array_equal(pred, clf.classes_[proba.argmax(axis=1)])


def test_predict_log_proba_is_log_of_predict_proba(images, tiny):
    X, y = images
    clf = PretrainedImageClassifier(**tiny).fit(X, y)
    np.testing.assert_allclose(
        clf.predict_log_proba(X), np.log(clf.predict_proba(X)), rtol=1e-12
    )


def test_score_equals_accuracy_score(images, tiny):
    X, y = images
    clf = PretrainedImageClassifier(**{**tiny, "precompute_epochs": 1}).fit(X, y)
    y_flipped = y.copy()
    y_flipped[:3] = np.where(y[:3] == "a", "b", "a")
    assert clf.score(X, y_flipped) == pytest.approx(
        accuracy_score(y_flipped, clf.predict(X))
    )
    assert clf.score(X, y) == pytest.approx(accuracy_score(y, clf.predict(X)))


# --- TTA --------------------------------------------------------------------------


def test_tta_averages_real_augmented_views(images, tiny):
    X, y = images
    plain = PretrainedImageClassifier(**{**tiny, "tta": 0}).fit(X, y)
    tta = PretrainedImageClassifier(**{**tiny, "tta": 2}).fit(X, y)
    p0, p2 = plain.predict_proba(X), tta.predict_proba(X)
    assert p2.shape == p0.shape
    np.testing.assert_allclose(p2.sum(axis=1), 1.0, atol=1e-6)
    # The same head (same seed, same plain features): only the views differ.
    assert not np.allclose(p0, p2, atol=1e-6)


def test_features_tta_differs_from_plain(images, cache_dir):
    X, _ = images
    plain = PretrainedFeatures(**TINY, cache=cache_dir).fit().transform(X)
    tta = PretrainedFeatures(**TINY, cache=cache_dir, tta=2).fit().transform(X)
    assert tta.shape == plain.shape
    assert not np.allclose(plain, tta, atol=1e-5)


# --- input kinds ------------------------------------------------------------------


def _rgb_arrays(paths):
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


X_KINDS = {
    "list-of-str": lambda paths: list(paths),
    "list-of-Path": lambda paths: [Path(p) for p in paths],
    "numpy-str-array": lambda paths: np.asarray(paths),
    "pandas-series": lambda paths: pd.Series(paths, name="path"),
    "list-of-PIL": lambda paths: [Image.open(p).convert("RGB") for p in paths],
    "uint8-NHWC": _rgb_arrays,
    "uint8-NHW": lambda paths: _rgb_arrays(paths).mean(axis=-1).astype(np.uint8),
}


@pytest.mark.parametrize("kind", list(X_KINDS))
def test_fit_predict_accepts_input_kind(kind, images, tiny):
    paths, y = images
    X = X_KINDS[kind](paths)
    clf = PretrainedImageClassifier(**tiny).fit(X, y)
    pred = clf.predict(X)
    assert pred.shape == (len(paths),)
    assert set(pred) <= {"a", "b"}
    feats = PretrainedFeatures(**TINY, cache=tiny["cache"]).fit(X).transform(X)
    assert feats.shape == (len(paths), clf.n_features_)


def test_path_kinds_give_identical_probabilities(images, tiny):
    paths, y = images
    clf = PretrainedImageClassifier(**tiny).fit(paths, y)
    expected = clf.predict_proba(paths)
    for kind in ("list-of-Path", "numpy-str-array", "pandas-series"):
        np.testing.assert_array_equal(
            clf.predict_proba(X_KINDS[kind](paths)), expected, err_msg=kind
        )


# --- scikit-learn's estimator checks ----------------------------------------------
#
# The estimators declare ``input_tags.two_d_array = False`` (X is images), so
# for them scikit-learn generates only ``check_estimator_cloneable``. To run the
# API checks on the real code anyway, the subclasses below differ from the
# public classes in that one tag only; every check that feeds them a 2-D float
# array is listed as an expected failure with the reason (strict: a check that
# starts to pass must leave the list).


class _ClassifierAs2D(PretrainedImageClassifier):
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


class _RegressorAs2D(PretrainedImageRegressor):
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


class _FeaturesAs2D(PretrainedFeatures):
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


_NOT_IMAGES = "X must be images; a 2-D float array is refused"
_NOT_IMAGES_FIRST = _NOT_IMAGES + " before y or sample_weight is looked at"
_NOT_A_SEQUENCE = "an array-like wrapper is not a sequence of images"
_SPARSE = "sparse X is refused as not a sequence of images"
_OBJECT_ROWS = "rows of a 2-D object array are not images (the message says so)"

#: What both recipe estimators fail, for the same reasons.
_RECIPE_XFAIL = {
    "check_fit_score_takes_y": _NOT_IMAGES,
    "check_estimators_overwrite_params": _NOT_IMAGES,
    "check_dont_overwrite_parameters": _NOT_IMAGES,
    "check_estimators_fit_returns_self": _NOT_IMAGES,
    "check_readonly_memmap_input": _NOT_IMAGES,
    "check_n_features_in_after_fitting": _NOT_IMAGES,
    "check_positive_only_tag_during_fit": _NOT_IMAGES,
    "check_estimators_dtypes": _NOT_IMAGES,
    "check_sample_weights_pandas_series": _NOT_IMAGES_FIRST,
    "check_sample_weights_not_an_array": _NOT_A_SEQUENCE,
    "check_sample_weights_list": _NOT_IMAGES_FIRST,
    "check_all_zero_sample_weights_error": _NOT_IMAGES_FIRST,
    "check_sample_weights_shape": _NOT_IMAGES_FIRST,
    "check_sample_weights_not_overwritten": _NOT_IMAGES_FIRST,
    "check_sample_weight_equivalence_on_dense_data": _NOT_IMAGES_FIRST,
    "check_complex_data": _NOT_IMAGES + " (with an image-shape message)",
    "check_dtype_object": _OBJECT_ROWS,
    "check_estimators_empty_data_messages": _NOT_IMAGES + " (image-shape message)",
    "check_pipeline_consistency": _NOT_IMAGES,
    "check_estimators_nan_inf": _NOT_IMAGES + " before any NaN check",
    "check_estimator_sparse_tag": _SPARSE,
    "check_estimator_sparse_array": _SPARSE,
    "check_estimator_sparse_matrix": _SPARSE,
    "check_estimators_pickle": _NOT_IMAGES,
    "check_f_contiguous_array_estimator": _NOT_IMAGES,
    "check_supervised_y_2d": _NOT_IMAGES,
    "check_methods_sample_order_invariance": _NOT_IMAGES,
    "check_methods_subset_invariance": _NOT_IMAGES,
    "check_fit2d_1sample": _NOT_IMAGES + " (image-shape message)",
    "check_fit2d_1feature": _NOT_IMAGES + " (image-shape message)",
    "check_dict_unchanged": _NOT_IMAGES,
    "check_fit_idempotent": _NOT_IMAGES,
    "check_fit_check_is_fitted": _NOT_IMAGES,
    "check_n_features_in": _NOT_IMAGES,
    "check_fit2d_predict1d": _NOT_IMAGES,
    "check_requires_y_none": _NOT_IMAGES_FIRST,
}

_CLASSIFIER_XFAIL = {
    **_RECIPE_XFAIL,
    "check_classifier_data_not_an_array": _NOT_A_SEQUENCE,
    "check_classifiers_one_label": _NOT_IMAGES_FIRST,
    "check_classifiers_one_label_sample_weights": _NOT_IMAGES_FIRST,
    "check_classifiers_classes": _NOT_IMAGES,
    "check_classifiers_train": _NOT_IMAGES,
    "check_classifiers_regression_target": _NOT_IMAGES_FIRST,
    "check_class_weight_classifiers": _NOT_IMAGES,
}

_REGRESSOR_XFAIL = {
    **_RECIPE_XFAIL,
    "check_regressors_train": _NOT_IMAGES,
    "check_regressor_data_not_an_array": _NOT_A_SEQUENCE,
    "check_regressors_no_decision_function": _NOT_IMAGES,
    "check_regressors_int": _NOT_IMAGES,
}

_FIT_IGNORES_X = "fit only loads the backbone and does not look at X"
_NO_N_FEATURES_IN = "images have no feature columns: n_features_in_ is not set"

_FEATURES_XFAIL = {
    "check_fit_score_takes_y": _NOT_IMAGES + " by transform",
    "check_n_features_in_after_fitting": _NO_N_FEATURES_IN,
    "check_n_features_in": _NO_N_FEATURES_IN,
    "check_estimators_dtypes": _NOT_IMAGES,
    "check_complex_data": _FIT_IGNORES_X,
    "check_dtype_object": _OBJECT_ROWS,
    "check_estimators_empty_data_messages": _FIT_IGNORES_X,
    "check_pipeline_consistency": _NOT_IMAGES,
    "check_estimators_nan_inf": _FIT_IGNORES_X,
    "check_estimator_sparse_tag": _FIT_IGNORES_X,
    "check_estimators_pickle": _NOT_IMAGES,
    "check_f_contiguous_array_estimator": _NOT_IMAGES,
    "check_transformer_data_not_an_array": _NOT_A_SEQUENCE,
    "check_transformer_general": _NOT_IMAGES,
    "check_transformer_preserve_dtypes": _NOT_IMAGES,
    "check_methods_sample_order_invariance": _NOT_IMAGES,
    "check_methods_subset_invariance": _NOT_IMAGES,
    "check_dict_unchanged": _NOT_IMAGES,
    "check_fit_idempotent": _NOT_IMAGES,
    "check_fit1d": _FIT_IGNORES_X,
    "check_fit2d_predict1d": _NOT_IMAGES + " (image-shape message)",
}


def _expected_failed_checks(estimator):
    if isinstance(estimator, _ClassifierAs2D):
        return _CLASSIFIER_XFAIL
    if isinstance(estimator, _RegressorAs2D):
        return _REGRESSOR_XFAIL
    if isinstance(estimator, _FeaturesAs2D):
        return _FEATURES_XFAIL
    return {}


_CHECK_PARAMS = dict(TINY, cache=None)


@parametrize_with_checks(
    [
        PretrainedImageClassifier(**_CHECK_PARAMS, precompute_epochs=1),
        PretrainedImageRegressor(**_CHECK_PARAMS, precompute_epochs=1),
        PretrainedFeatures(**_CHECK_PARAMS),
        _ClassifierAs2D(**_CHECK_PARAMS, precompute_epochs=1),
        _RegressorAs2D(**_CHECK_PARAMS, precompute_epochs=1),
        _FeaturesAs2D(**_CHECK_PARAMS),
    ],
    expected_failed_checks=_expected_failed_checks,
    xfail_strict=True,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
