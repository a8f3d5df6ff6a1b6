"""Bad input gets a clear error that names the culprit, raised before any
training, and never loses features that were already computed.

Whatever can be checked without the images (parameters, labels, weights,
the validation split, a warm start's classes) is checked before the first
image is read: in those tests X holds a missing file, which would be
reported if an image were read, and ``forward_count`` stays 0.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torchvision
from conftest import TINY, make_images
from PIL import Image
from sklearn.exceptions import NotFittedError
from sklearn.metrics import accuracy_score

from sktransfer import FeatureCache, PretrainedFeatures, PretrainedImageClassifier
from sktransfer.exceptions import ImageLoadError, InvalidParameterError

#: PretrainedFeatures' images-per-forward-pass parameter.
FEATURES_BATCH = (
    "extract_batch_size"
    if "extract_batch_size" in PretrainedFeatures().get_params()
    else "batch_size"
)


@pytest.fixture
def images(tmp_path):
    X, y = make_images(tmp_path / "images")
    return list(X), list(y)


@pytest.fixture
def clf(tmp_path):
    return PretrainedImageClassifier(
        **TINY, cache=str(tmp_path / "cache"), precompute_epochs=1
    )


@pytest.fixture
def untouched(images, tmp_path, forward_count):
    """``(X with a missing file, y)``: a check that comes before reading the
    images raises its own error, not the missing file's; ``check()`` then
    says that no image went through the body."""
    X, y = images
    X = [*X[:-1], str(tmp_path / "never_read.jpg")]

    def check(err=None):
        assert forward_count["n"] == 0
        if err is not None:
            assert "never_read" not in str(err.value)
            assert "np.str_" not in str(err.value)

    return X, y, check


def not_fitted(est):
    return not hasattr(est, "head_") and not hasattr(est, "classes_")


def _jpeg(tmp_path, name="good.jpg", size=64):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    path = tmp_path / name
    Image.fromarray(arr).save(path, quality=90)
    return path


def _truncated_jpeg(tmp_path, name="truncated.jpg"):
    path = _jpeg(tmp_path, name)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _text_jpg(tmp_path, name="notes.jpg", text="this is not an image"):
    path = tmp_path / name
    path.write_text(text + "\n")
    return path


def _empty_jpg(tmp_path, name="empty.jpg"):
    path = tmp_path / name
    path.write_bytes(b"")
    return path


def _fit_with_extra(clf, images, extra):
    X, y = images
    clf.fit(X + [str(p) for p in extra], y + ["a"] * len(extra))


# --- unreadable image files -------------------------------------------------------


def test_missing_file_is_named(clf, images, tmp_path):
    missing = tmp_path / "no_such_photo.jpg"
    with pytest.raises(ImageLoadError, match=re.escape(repr(str(missing)))) as err:
        _fit_with_extra(clf, images, [missing])
    assert "does not exist" in str(err.value)
    assert not_fitted(clf)


def test_zero_byte_file_is_named(clf, images, tmp_path):
    empty = _empty_jpg(tmp_path)
    with pytest.raises(ImageLoadError, match=re.escape(str(empty))) as err:
        _fit_with_extra(clf, images, [empty])
    assert "empty" in str(err.value)
    assert not_fitted(clf)


def test_truncated_jpeg_is_named(clf, images, tmp_path):
    truncated = _truncated_jpeg(tmp_path)
    with pytest.raises(ImageLoadError, match=re.escape(str(truncated))) as err:
        _fit_with_extra(clf, images, [truncated])
    assert "truncated" in str(err.value)
    assert not_fitted(clf)


def test_text_file_named_jpg_is_named(clf, images, tmp_path):
    text = _text_jpg(tmp_path)
    with pytest.raises(ImageLoadError, match=re.escape(str(text))) as err:
        _fit_with_extra(clf, images, [text])
    assert "could not be decoded" in str(err.value)
    assert not_fitted(clf)


def test_image_load_error_is_a_value_error(clf, images, tmp_path):
    with pytest.raises(ValueError):
        _fit_with_extra(clf, images, [tmp_path / "missing.jpg"])


@pytest.mark.parametrize(
    "params",
    [dict(precompute_epochs=1), dict(precompute_epochs=0, augmented_cycles=1)],
    ids=["features-stage", "image-stage"],
)
def test_several_unreadable_files_are_listed_in_one_error(
    clf, images, tmp_path, params
):
    """Also when no stage needs features: every image is checked before
    training starts."""
    clf.set_params(**params)
    bad = [tmp_path / "missing1.jpg", _empty_jpg(tmp_path), tmp_path / "missing2.jpg"]
    with pytest.raises(ImageLoadError) as err:
        _fit_with_extra(clf, images, bad)
    message = str(err.value)
    for path in bad:
        assert str(path) in message
    assert message.startswith(f"3 of {len(images[0]) + 3} images")
    assert not_fitted(clf)


def test_several_undecodable_files_are_listed_in_one_error(clf, images, tmp_path):
    bad = [
        _truncated_jpeg(tmp_path),
        _text_jpg(tmp_path, "a.jpg", "first"),
        _text_jpg(tmp_path, "b.jpg", "second"),
    ]
    with pytest.raises(ImageLoadError) as err:
        _fit_with_extra(clf, images, bad)
    message = str(err.value)
    for path in bad:
        assert str(path) in message
    assert message.startswith(f"3 of {len(images[0]) + 3} images")
    assert not_fitted(clf)


def test_byte_identical_bad_files_are_each_named(clf, images, tmp_path):
    # Duplicate images are decoded once; each copy must still be reported
    # under its own name.
    bad = [_text_jpg(tmp_path, "copy1.jpg"), _text_jpg(tmp_path, "copy2.jpg")]
    with pytest.raises(ImageLoadError) as err:
        _fit_with_extra(clf, images, bad)
    message = str(err.value)
    assert message.startswith(f"2 of {len(images[0]) + 2} images")
    for path in bad:
        assert str(path) in message, message


def test_all_kinds_of_bad_files_are_listed_in_one_error(clf, images, tmp_path):
    bad = [
        tmp_path / "missing.jpg",
        _empty_jpg(tmp_path),
        _truncated_jpeg(tmp_path),
        _text_jpg(tmp_path),
    ]
    with pytest.raises(ImageLoadError) as err:
        _fit_with_extra(clf, images, bad)
    message = str(err.value)
    missing_from_message = [str(p) for p in bad if str(p) not in message]
    assert not missing_from_message, message
    assert not_fitted(clf)


def test_predict_names_a_missing_file(clf, images, tmp_path):
    X, y = images
    clf.fit(X, y)
    missing = tmp_path / "gone.jpg"
    with pytest.raises(ImageLoadError, match=re.escape(str(missing))):
        clf.predict(X[:2] + [str(missing)])


def test_one_bad_image_of_one_claims_no_cached_features(clf, images, tmp_path):
    X, y = images
    clf.fit(X, y)
    missing = tmp_path / "alone.jpg"
    with pytest.raises(ImageLoadError) as err:
        clf.predict([str(missing)])
    message = str(err.value)
    assert message.startswith("1 of 1 images") or "1 image" in message
    assert "cached" not in message and "other" not in message


def test_error_keeps_features_already_computed(images, tmp_path, forward_count):
    X, y = images
    cache_dir = tmp_path / "keep-cache"
    clf = PretrainedImageClassifier(**TINY, cache=str(cache_dir), precompute_epochs=1)
    truncated = _truncated_jpeg(tmp_path)
    with pytest.raises(ImageLoadError, match=re.escape(str(truncated))) as err:
        _fit_with_extra(clf, images, [truncated])
    assert f"the features of the other {len(X)} are cached" in str(err.value)
    stats = FeatureCache(cache_dir).stats()
    assert stats["entries"] == len(X)
    assert stats["computed"] == len(X)
    forward_count["n"] = 0
    clf.fit(X, y)
    assert forward_count["n"] == 0
    assert FeatureCache(cache_dir).stats()["computed"] == len(X)
    assert clf.predict(X).shape == (len(X),)


# --- labels -----------------------------------------------------------------------


def test_length_mismatch_names_both_lengths(clf, untouched):
    X, y, check = untouched
    with pytest.raises(ValueError, match=r"12 images but 11 labels") as err:
        clf.fit(X, y[:-1])
    check(err)


def test_one_class_only(clf, untouched):
    X, _, check = untouched
    with pytest.raises(ValueError, match=r"only one class \('a'\)") as err:
        clf.fit(X, np.array(["a"] * len(X)))
    check(err)


def test_nan_label_in_float_labels(clf, untouched):
    X, _, check = untouched
    y = np.array([0.0, 1.0] * (len(X) // 2))
    y[5] = np.nan
    with pytest.raises(ValueError, match=r"missing labels.*index 5") as err:
        clf.fit(X, y)
    check(err)


def test_nan_label_in_string_labels(clf, untouched):
    X, y, check = untouched
    y[2] = float("nan")
    with pytest.raises(ValueError, match=r"missing labels.*index 2") as err:
        clf.fit(X, y)
    check(err)


def test_none_label(clf, untouched):
    X, y, check = untouched
    y[7] = None
    with pytest.raises(
        ValueError, match=r"missing labels \(NaN or None\).*index 7"
    ) as err:
        clf.fit(X, y)
    check(err)


def test_y_none(clf, untouched):
    X, _, check = untouched
    with pytest.raises(ValueError, match="y is required") as err:
        clf.fit(X, None)
    check(err)


def test_continuous_float_labels(clf, untouched):
    X, _, check = untouched
    y = np.linspace(0.1, 2.3, len(X))
    with pytest.raises(ValueError, match="continuous") as err:
        clf.fit(X, y)
    assert "PretrainedImageRegressor" in str(err.value)
    check(err)


def test_two_dimensional_string_y_is_not_an_indicator_matrix(clf, untouched):
    X, y, check = untouched
    y2 = np.stack([y, y], axis=1)
    with pytest.raises(ValueError, match=r"0/1 indicator matrix") as err:
        clf.fit(X, y2)
    check(err)


def test_column_vector_y_warns_and_is_used_as_1d(clf, images):
    X, y = images
    with pytest.warns(UserWarning, match="column vector"):
        clf.fit(X, np.asarray(y).reshape(-1, 1))
    assert clf.classes_.tolist() == ["a", "b"]


def test_score_with_unseen_label_warns_naming_it(clf, images):
    X, y = images
    clf.fit(np.asarray(X), np.asarray(y))
    y_test = np.asarray(y, dtype="<U8")
    y_test[0] = "zebra"
    with pytest.warns(UserWarning, match=r"not seen during fit: \['zebra'\]") as rec:
        score = clf.score(X, y_test)
    assert all("np.str_" not in str(w.message) for w in rec)
    expected = np.mean(clf.predict(X) == np.asarray(y_test))
    assert score == pytest.approx(expected)
    assert score <= (len(X) - 1) / len(X)


@pytest.mark.parametrize(
    "as_y",
    [
        lambda labels: labels,
        lambda labels: np.array(labels + [None], dtype=object)[:-1],
    ],
    ids=["list", "object-array"],
)
def test_tuple_labels_come_back_exactly(clf, images, as_y):
    X, _ = images
    labels = [("cls", i % 2) for i in range(len(X))]
    y = as_y(labels)
    clf.fit(X, y)
    assert clf.classes_.shape == (2,)
    assert clf.classes_.tolist() == [("cls", 0), ("cls", 1)]
    assert all(type(c) is tuple and type(c[1]) is int for c in clf.classes_)
    pred = clf.predict(X)
    assert pred.shape == (len(X),)
    assert set(pred.tolist()) <= {("cls", 0), ("cls", 1)}
    assert clf.predict_proba(X).shape == (len(X), 2)
    assert clf.score(X, y) == pytest.approx(
        np.mean([p == t for p, t in zip(pred.tolist(), labels)])
    )
    assert clf.score(X, labels) == pytest.approx(
        accuracy_score([str(t) for t in labels], [str(p) for p in pred])
    )


def test_mixed_label_types_are_named(clf, untouched):
    X, _, check = untouched
    y = ["a", 1] * (len(X) // 2)
    with pytest.raises(ValueError, match=r"mixes label types \(int, str\)") as err:
        clf.fit(X, y)
    check(err)


# --- checks that come before any image is read ------------------------------------


def test_a_class_of_one_image_is_named_before_reading_images(untouched, tmp_path):
    X, y, check = untouched
    y = np.asarray(y, dtype="<U8")
    y[3] = "bird"
    clf = PretrainedImageClassifier(
        **TINY, cache=str(tmp_path / "c"), validation_fraction=0.25
    )
    with pytest.raises(ValueError, match=r"class 'bird' has only 1") as err:
        clf.fit(X, y)
    assert "[0]" not in str(err.value)
    check(err)


def test_many_small_classes_are_summarised_not_listed(untouched, tmp_path):
    X, _, check = untouched
    X = X * 100  # 1,200 sources; none is read
    y = np.array([f"c{i:04d}" for i in range(len(X) - 2)] + ["c0000", "c0001"])
    clf = PretrainedImageClassifier(
        **TINY, cache=str(tmp_path / "c"), validation_fraction=0.5
    )
    with pytest.raises(ValueError, match=r"and \d+ more") as err:
        clf.fit(X, y)
    message = str(err.value)
    assert len(message) < 600, message
    assert "'c0002'" in message
    check(err)


@pytest.mark.parametrize("fraction", [0.9, 0.05])
def test_a_split_that_cannot_be_stratified_is_named_before_reading_images(
    untouched, tmp_path, fraction
):
    X, y, check = untouched
    clf = PretrainedImageClassifier(
        **TINY, cache=str(tmp_path / "c"), validation_fraction=fraction
    )
    with pytest.raises(ValueError, match="validation_fraction") as err:
        clf.fit(X, y)
    check(err)


def test_warm_start_with_other_classes_is_refused_before_reading_images(
    clf, images, tmp_path, forward_count
):
    X, y = images
    clf.fit(X, np.asarray(y))
    rows = list(clf.history_)
    forward_count["n"] = 0
    clf.set_params(warm_start=True)
    other = np.where(np.asarray(y) == "b", "cats", np.asarray(y))
    with pytest.raises(ValueError, match="same classes") as err:
        clf.fit([*X[:-1], str(tmp_path / "never_read.jpg")], other)
    message = str(err.value)
    assert "'cats'" in message and "'b'" in message
    assert "np.str_" not in message
    assert forward_count["n"] == 0
    assert clf.classes_.tolist() == ["a", "b"] and clf.history_ == rows


# --- X ----------------------------------------------------------------------------


def test_empty_X_in_fit(clf, forward_count):
    with pytest.raises(ValueError, match="X is empty"):
        clf.fit([], [])
    assert forward_count["n"] == 0


def test_empty_X_in_predict_and_transform(clf, images):
    X, y = images
    clf.fit(X, y)
    with pytest.raises(ValueError, match="X is empty"):
        clf.predict([])
    feats = PretrainedFeatures(**TINY, cache=None).fit()
    with pytest.raises(ValueError, match="X is empty"):
        feats.transform([])


def test_single_string_path_instead_of_list(clf, images):
    X, _ = images
    with pytest.raises(ValueError, match=rf"single path {re.escape(repr(X[0]))}"):
        clf.fit(X[0], ["a"])


def test_single_pil_image_instead_of_list(clf):
    img = Image.new("RGB", (40, 40))
    with pytest.raises(ValueError, match="wrap the PIL image in a list"):
        clf.fit(img, ["a"])


def test_a_column_of_paths_gets_a_hint_to_ravel(clf, images, forward_count):
    X, y = images
    with pytest.raises(ValueError, match=r"X\.ravel\(\)"):
        clf.fit(np.asarray(X).reshape(-1, 1), y)
    assert forward_count["n"] == 0


def test_float_image_array(clf, forward_count):
    X = np.random.default_rng(0).random((4, 40, 40, 3))
    with pytest.raises(ValueError, match=r"dtype uint8.*float64"):
        clf.fit(X, ["a", "b", "a", "b"])
    assert forward_count["n"] == 0


@pytest.mark.parametrize("shape", [(4, 40), (4, 40, 40, 5), (4, 2, 40, 40, 3)])
def test_image_array_with_wrong_shape(clf, shape, forward_count):
    X = np.zeros(shape, dtype=np.uint8)
    with pytest.raises(ValueError, match=re.escape(f"got shape {shape}")):
        clf.fit(X, ["a", "b", "a", "b"])
    assert forward_count["n"] == 0


def test_list_with_a_non_image_item(clf, images):
    X, y = images
    X[3] = 3.5
    with pytest.raises(ValueError, match=r"X\[3\] is a float"):
        clf.fit(X, y)


# --- backbones and weights --------------------------------------------------------


@pytest.mark.parametrize("cls", [PretrainedImageClassifier, PretrainedFeatures])
def test_unknown_backbone_name(cls, images, tmp_path):
    X, y = images
    est = cls("resnet1000", weights=None, cache=str(tmp_path / "c"))
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet1000'"):
        est.fit(X, y)


def test_weights_file_of_another_architecture(clf, images, tmp_path, forward_count):
    X, y = images
    path = tmp_path / "resnet18-weights.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    clf.set_params(backbone="mobilenet_v2", weights=str(path))
    with pytest.raises(ValueError, match=re.escape(str(path))) as err:
        clf.fit(X, y)
    assert "mobilenet_v2" in str(err.value)
    assert forward_count["n"] == 0
    assert not_fitted(clf)


@pytest.mark.parametrize("kind", ["str", "Path"])
def test_missing_weights_file(kind, clf, images, tmp_path, forward_count):
    X, y = images
    path = tmp_path / "weights" / "missing.pth"
    clf.set_params(weights=str(path) if kind == "str" else path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        clf.fit(X, y)
    assert forward_count["n"] == 0


# --- not fitted -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_log_proba"])
def test_classifier_method_before_fit_raises_not_fitted(method, clf, images):
    X, _ = images
    with pytest.raises(NotFittedError):
        getattr(clf, method)(X)


def test_score_before_fit_raises_not_fitted(clf, images):
    X, y = images
    with pytest.raises(NotFittedError):
        clf.score(X, y)


def test_transform_before_fit_raises_not_fitted(images):
    X, _ = images
    with pytest.raises(NotFittedError):
        PretrainedFeatures(**TINY).transform(X)


# --- parameters -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value",
    [
        ("lr", -1),
        ("lr", 0.0),
        ("lr", "fast"),
        ("dropout", 1.5),
        ("dropout", 1.0),
        ("precompute_epochs", -1),
        ("augmented_cycles", -1),
        ("unfrozen_cycles", 1.5),
        ("unfreeze_from", 3),
        ("cycle_len", 0),
        ("cycle_mult", 0.5),
        ("unfrozen_lr", -1e-4),
        ("unfrozen_lr", "fast"),
        ("lr_mult", 0.5),
        ("lr_mult", (1e-6, 1e-5, 1e-4)),
        ("precision", "fp8"),
        ("tta", -1),
        ("batch_size", 0),
        ("batch_size", 1),
        ("extract_batch_size", 0),
        ("snapshot_ensemble", "yes"),
        ("class_weight", "equal"),
        ("threshold", 1.5),
        ("validation_fraction", 1.0),
        ("augment", "sideways"),
        ("image_size", 8),
        ("batch_size", True),  # a bool is not a number
        ("unfreeze_from", False),
        ("dropout", float("nan")),
        ("lr", float("nan")),
        ("random_state", -1),
        ("random_state", "seed"),
        ("verbose", -1),
        ("early_stopping", 1),
    ],
)
def test_bad_classifier_parameter_is_named_before_reading_images(
    name, value, clf, untouched
):
    X, y, check = untouched
    clf.set_params(**{name: value})
    with pytest.raises(ValueError, match=rf"'{name}' parameter") as err:
        clf.fit(X, y)
    check(err)
    assert not_fitted(clf)
    # one error class for every bad parameter value, a ValueError and a
    # TypeError as scikit-learn's is; it says what the parameter takes
    assert isinstance(err.value, InvalidParameterError)
    assert isinstance(err.value, TypeError)
    assert "must be" in str(err.value) and repr(value) in str(err.value)


@pytest.mark.parametrize("hidden", [(64, 0), (0,), (-3,), (1.5,), ("64",)])
def test_bad_hidden_sizes_is_named_before_reading_images(clf, untouched, hidden):
    X, y, check = untouched
    clf.set_params(hidden_sizes=hidden)
    with pytest.raises(ValueError, match="'hidden_sizes' parameter") as err:
        clf.fit(X, y)
    check(err)


@pytest.mark.parametrize(
    "rates",
    [
        (1e-5, 1e-4),
        (1e-6, 1e-5, 1e-4, 1e-3),
        (0.0, 1e-5, 1e-4),
        (1e-6, float("nan"), 1e-4),
        (1e-6, float("inf"), 1e-4),
        ("a", "b", "c"),
        [],
    ],
    ids=["two", "four", "zero", "nan", "inf", "strings", "empty"],
)
def test_bad_unfrozen_lr_tuple_is_named_before_reading_images(clf, untouched, rates):
    X, y, check = untouched
    clf.set_params(unfrozen_cycles=1, unfrozen_lr=rates)
    with pytest.raises(ValueError, match="'unfrozen_lr' parameter") as err:
        clf.fit(X, y)
    assert "tuple of 3 positive rates" in str(err.value)
    check(err)


@pytest.mark.parametrize(
    "name, value", [("precision", "fp8"), ("tta", -1), (FEATURES_BATCH, 0)]
)
def test_bad_features_parameter_is_named(name, value, images):
    X, _ = images
    feats = PretrainedFeatures(**TINY, cache=None, **{name: value})
    with pytest.raises(ValueError, match=rf"'{name}' parameter"):
        feats.fit(X)


def test_on_error_skip_leaves_bad_images_out_and_lists_them(tmp_path):
    X, y = make_images(tmp_path / "img", n_per_class=5)
    (tmp_path / "text.jpg").write_text("not an image")
    X = [*X, str(tmp_path / "text.jpg"), str(tmp_path / "missing.jpg")]
    y = [*y, "a", "b"]
    clf = PretrainedImageClassifier(
        **TINY, cache=str(tmp_path / "cache"), precompute_epochs=2, on_error="skip"
    )
    with pytest.warns(UserWarning, match="text.jpg"):
        clf.fit(X, y)
    assert clf.skipped_ == [str(tmp_path / "text.jpg"), str(tmp_path / "missing.jpg")]
    assert clf.classes_.tolist() == ["a", "b"]
    assert clf.predict(X[:10]).shape == (10,)


def test_on_error_skip_still_needs_two_classes(tmp_path):
    X, y = make_images(tmp_path / "img", n_per_class=3)
    X = [*X[:3], str(tmp_path / "gone1.jpg"), str(tmp_path / "gone2.jpg")]
    y = ["a", "a", "a", "b", "b"]
    clf = PretrainedImageClassifier(
        **TINY, cache=str(tmp_path / "cache"), precompute_epochs=1, on_error="skip"
    )
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="only one class"):
        clf.fit(X, y)


def test_on_error_rejects_unknown_policy(tmp_path):
    X, y = make_images(tmp_path / "img", n_per_class=2)
    with pytest.raises(ValueError, match="on_error"):
        PretrainedImageClassifier(**TINY, on_error="ignore").fit(X, y)


def test_continuous_labels_in_a_list_are_rejected(tmp_path):
    X, _ = make_images(tmp_path / "img", n_per_class=2)
    with pytest.raises(ValueError, match="continuous"):
        PretrainedImageClassifier(**TINY).fit(X, [0.1, 0.25, 0.3, 0.47])
