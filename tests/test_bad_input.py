"""Bad input gets a clear error that names the culprit, raised before any
head training, and never loses features that were already computed."""

from __future__ import annotations

import re

import numpy as np
import pytest
import skorch
import torch
import torchvision
from conftest import TINY, make_images
from PIL import Image
from sklearn.exceptions import NotFittedError

from sktransfer import (
    FeatureCache,
    ImageLoadError,
    PretrainedFeatures,
    PretrainedImageClassifier,
)
from sktransfer._features import FeatureExtractor


@pytest.fixture
def images(tmp_path):
    X, y = make_images(tmp_path / "images")
    return list(X), list(y)


@pytest.fixture
def clf(tmp_path):
    return PretrainedImageClassifier(**TINY, cache=str(tmp_path / "cache"), epochs=1)


@pytest.fixture
def training_calls(monkeypatch):
    """Record every start of head training (skorch's fit) and refuse it."""
    calls = []

    def refuse(self, *args, **kwargs):
        calls.append(self)
        raise AssertionError("head training started despite bad input")

    monkeypatch.setattr(skorch.NeuralNetClassifier, "fit", refuse)
    return calls


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


# --- unreadable image files ------------------------------------------------------


def test_missing_file_is_named(clf, images, tmp_path, training_calls):
    missing = tmp_path / "no_such_photo.jpg"
    with pytest.raises(ImageLoadError, match=re.escape(repr(str(missing)))) as err:
        _fit_with_extra(clf, images, [missing])
    assert "does not exist" in str(err.value)
    assert not training_calls
    assert not hasattr(clf, "net_")


def test_zero_byte_file_is_named(clf, images, tmp_path, training_calls):
    empty = _empty_jpg(tmp_path)
    with pytest.raises(ImageLoadError, match=re.escape(str(empty))) as err:
        _fit_with_extra(clf, images, [empty])
    assert "empty" in str(err.value)
    assert not training_calls
    assert not hasattr(clf, "net_")


def test_truncated_jpeg_is_named(clf, images, tmp_path, training_calls):
    truncated = _truncated_jpeg(tmp_path)
    with pytest.raises(ImageLoadError, match=re.escape(str(truncated))) as err:
        _fit_with_extra(clf, images, [truncated])
    assert "truncated" in str(err.value)
    assert not training_calls
    assert not hasattr(clf, "net_")


def test_text_file_named_jpg_is_named(clf, images, tmp_path, training_calls):
    text = _text_jpg(tmp_path)
    with pytest.raises(ImageLoadError, match=re.escape(str(text))) as err:
        _fit_with_extra(clf, images, [text])
    assert "could not be decoded" in str(err.value)
    assert not training_calls
    assert not hasattr(clf, "net_")


def test_image_load_error_is_a_value_error(clf, images, tmp_path):
    with pytest.raises(ValueError):
        _fit_with_extra(clf, images, [tmp_path / "missing.jpg"])


def test_several_unreadable_files_are_listed_in_one_error(
    clf, images, tmp_path, training_calls
):
    bad = [tmp_path / "missing1.jpg", _empty_jpg(tmp_path), tmp_path / "missing2.jpg"]
    with pytest.raises(ImageLoadError) as err:
        _fit_with_extra(clf, images, bad)
    message = str(err.value)
    for path in bad:
        assert str(path) in message
    assert message.startswith(f"3 of {len(images[0]) + 3} images")
    assert not training_calls


def test_several_undecodable_files_are_listed_in_one_error(
    clf, images, tmp_path, training_calls
):
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
    assert not training_calls


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


def test_all_kinds_of_bad_files_are_listed_in_one_error(
    clf, images, tmp_path, training_calls
):
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
    assert not training_calls


def test_predict_names_a_missing_file(clf, images, tmp_path):
    X, y = images
    clf.fit(X, y)
    missing = tmp_path / "gone.jpg"
    with pytest.raises(ImageLoadError, match=re.escape(str(missing))):
        clf.predict(X[:2] + [str(missing)])


def test_error_keeps_features_already_computed(images, tmp_path, monkeypatch):
    X, y = images
    cache_dir = tmp_path / "keep-cache"
    clf = PretrainedImageClassifier(**TINY, cache=str(cache_dir), epochs=1)
    truncated = _truncated_jpeg(tmp_path)
    with pytest.raises(ImageLoadError, match=re.escape(str(truncated))):
        _fit_with_extra(clf, images, [truncated])
    stats = FeatureCache(cache_dir).stats()
    assert stats["entries"] == len(X)
    assert stats["computed"] == len(X)

    computed = []
    original = FeatureExtractor.forward

    def counting_forward(self, batch):
        computed.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(FeatureExtractor, "forward", counting_forward)
    clf.fit(X, y)
    assert sum(computed) == 0
    assert FeatureCache(cache_dir).stats()["computed"] == len(X)
    assert clf.predict(X).shape == (len(X),)


# --- labels ---------------------------------------------------------------------


def test_length_mismatch_names_both_lengths(clf, images, training_calls):
    X, y = images
    with pytest.raises(ValueError, match=r"12 images but 11 labels"):
        clf.fit(X, y[:-1])
    assert not training_calls


def test_one_class_only(clf, images, training_calls):
    X, _ = images
    with pytest.raises(ValueError, match=r"only one class \('a'\)"):
        clf.fit(X, ["a"] * len(X))
    assert not training_calls


def test_nan_label_in_float_labels(clf, images, training_calls):
    X, _ = images
    y = np.array([0.0, 1.0] * (len(X) // 2))
    y[5] = np.nan
    with pytest.raises(ValueError, match=r"missing labels.*index 5"):
        clf.fit(X, y)
    assert not training_calls


def test_nan_label_in_string_labels(clf, images, training_calls):
    X, y = images
    y[2] = float("nan")
    with pytest.raises(ValueError, match=r"missing labels.*index 2"):
        clf.fit(X, y)
    assert not training_calls


def test_none_label(clf, images, training_calls):
    X, y = images
    y[7] = None
    with pytest.raises(ValueError, match=r"missing labels \(NaN or None\).*index 7"):
        clf.fit(X, y)
    assert not training_calls


def test_y_none(clf, images):
    X, _ = images
    with pytest.raises(ValueError, match="y is required"):
        clf.fit(X, None)


def test_continuous_float_labels(clf, images, training_calls):
    X, _ = images
    y = np.linspace(0.1, 2.3, len(X))
    with pytest.raises(ValueError, match="continuous"):
        clf.fit(X, y)
    assert not training_calls


def test_two_dimensional_y(clf, images, training_calls):
    X, y = images
    y2 = np.stack([y, y], axis=1)
    with pytest.raises(ValueError, match=r"y must be 1-D.*\(12, 2\)"):
        clf.fit(X, y2)
    assert not training_calls


def test_column_vector_y_warns_and_is_used_as_1d(clf, images):
    X, y = images
    with pytest.warns(UserWarning, match="column vector"):
        clf.fit(X, np.asarray(y).reshape(-1, 1))
    assert clf.classes_.tolist() == ["a", "b"]


def test_score_with_unseen_label_warns_naming_it(clf, images):
    X, y = images
    clf.fit(X, y)
    y_test = list(y)
    y_test[0] = "zebra"
    with pytest.warns(UserWarning, match=r"not seen during fit: \['zebra'\]"):
        score = clf.score(X, y_test)
    expected = np.mean(clf.predict(X) == np.asarray(y_test))
    assert score == pytest.approx(expected)
    assert score <= (len(X) - 1) / len(X)


# --- X --------------------------------------------------------------------------


def test_empty_X_in_fit(clf, training_calls):
    with pytest.raises(ValueError, match="X is empty"):
        clf.fit([], [])
    assert not training_calls


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


def test_float_image_array(clf, training_calls):
    X = np.random.default_rng(0).random((4, 40, 40, 3))
    with pytest.raises(ValueError, match=r"dtype uint8.*float64"):
        clf.fit(X, ["a", "b", "a", "b"])
    assert not training_calls


@pytest.mark.parametrize("shape", [(4, 40), (4, 40, 40, 5), (4, 2, 40, 40, 3)])
def test_image_array_with_wrong_shape(clf, shape, training_calls):
    X = np.zeros(shape, dtype=np.uint8)
    with pytest.raises(ValueError, match=re.escape(f"got shape {shape}")):
        clf.fit(X, ["a", "b", "a", "b"])
    assert not training_calls


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


def test_weights_file_of_another_architecture(clf, images, tmp_path, training_calls):
    X, y = images
    path = tmp_path / "resnet18-weights.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    clf.set_params(backbone="mobilenet_v2", weights=str(path))
    with pytest.raises(ValueError, match=re.escape(str(path))) as err:
        clf.fit(X, y)
    assert "mobilenet_v2" in str(err.value)
    assert not training_calls


@pytest.mark.parametrize("kind", ["str", "Path"])
def test_missing_weights_file(kind, clf, images, tmp_path, training_calls):
    X, y = images
    path = tmp_path / "weights" / "missing.pth"
    clf.set_params(weights=str(path) if kind == "str" else path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        clf.fit(X, y)
    assert not training_calls


# --- not fitted -----------------------------------------------------------------


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


# --- parameters -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value",
    [
        ("lr", -1),
        ("lr", 0.0),
        ("dropout", 1.5),
        ("dropout", 1.0),
        ("epochs", -1),
        ("precision", "fp8"),
        ("tta", -1),
        ("batch_size", 0),
        ("image_size", 8),
    ],
)
def test_bad_classifier_parameter_is_named(name, value, clf, images, training_calls):
    X, y = images
    clf.set_params(**{name: value})
    with pytest.raises(ValueError, match=rf"'{name}' parameter"):
        clf.fit(X, y)
    assert not training_calls


def test_bad_hidden_sizes_is_named(clf, images, training_calls):
    X, y = images
    clf.set_params(hidden_sizes=(64, 0))
    with pytest.raises(ValueError, match="'hidden_sizes' parameter"):
        clf.fit(X, y)
    assert not training_calls


@pytest.mark.parametrize(
    "name, value", [("precision", "fp8"), ("tta", -1), ("batch_size", 0)]
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
        **TINY, cache=str(tmp_path / "cache"), epochs=2, on_error="skip"
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
        **TINY, cache=str(tmp_path / "cache"), epochs=1, on_error="skip"
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
