"""The model card a saved folder carries (README.md), and the counts it
reports (``class_count_``, ``n_samples_fit_``)."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest
from conftest import TINY
from sklearn.base import clone

from sktransfer import (
    PretrainedFeatures,
    PretrainedImageClassifier,
    PretrainedImageRegressor,
    load,
    save,
)

QUICK = dict(TINY, random_state=0)


def card_of(folder) -> str:
    return (folder / "README.md").read_text(encoding="utf-8")


def table_rows(card: str, header: str) -> dict:
    """``{first cell: second cell}`` of the Markdown table under ``header``."""
    lines = card.splitlines()
    start = lines.index(header) + 2
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1]
    return rows


@pytest.fixture(scope="module")
def fitted(images, cache_dir):
    X, y = images
    weights = np.ones(len(X))
    weights[0] = 0.0  # left out: not counted
    clf = PretrainedImageClassifier(**QUICK, cache=cache_dir, validation_fraction=0.25)
    return clf.fit(X, y, sample_weight=weights), X, y


def test_counts_are_of_the_images_that_trained(fitted):
    clf, X, y = fitted
    # 12 images, 3 held out for validation, one of weight 0
    assert clf.n_samples_fit_ == 8
    assert clf.class_count_.sum() == 8
    assert clf.class_count_.dtype == np.int64
    assert set(clf.class_count_) <= {3, 4, 5} and len(clf.class_count_) == 2


def test_saved_folder_carries_a_card_that_load_never_reads(fitted, tmp_path):
    clf, X, _ = fitted
    folder = save(clf, tmp_path / "model")
    card = card_of(folder)
    front = card.split("---")[1]
    assert "library_name: sktransfer" in front
    assert "pipeline_tag: image-classification" in front
    assert "# PretrainedImageClassifier on `resnet18`" in card
    classes = table_rows(card, "| class | training images |")
    assert classes == {
        str(c): str(n) for c, n in zip(clf.classes_, clf.class_count_, strict=True)
    }
    assert f"Trained on {clf.n_samples_fit_} images" in card
    assert "## Validation" in card  # a validation split was held out
    versions = table_rows(card, "| library | version |")
    assert versions["torch"] and versions["sktransfer"]
    params = table_rows(card, "| parameter | value |")
    assert params["`validation_fraction`"] == "`0.25`"
    assert "`cache`" not in params  # where the saver cached: not the model's

    (folder / "README.md").write_bytes(b"\xff\xfe not a card, not even text")
    np.testing.assert_array_equal(load(folder).predict_proba(X), clf.predict_proba(X))
    (folder / "README.md").unlink()
    np.testing.assert_array_equal(load(folder).predict_proba(X), clf.predict_proba(X))


def test_a_readme_the_user_wrote_is_kept(fitted, tmp_path):
    clf, _, _ = fitted
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "README.md").write_text("my notes\n")
    with pytest.warns(UserWarning, match="not written by sktransfer"):
        save(clf, folder)
    assert (folder / "README.md").read_text() == "my notes\n"
    assert load(folder).classes_.tolist() == clf.classes_.tolist()


def test_saving_again_rewrites_the_card(fitted, images, cache_dir, tmp_path):
    clf, X, y = fitted
    folder = save(clf, tmp_path / "model")
    other = PretrainedImageClassifier(**QUICK, cache=cache_dir)
    other.fit(X, np.where(np.asarray(y) == y[0], "cat", "dog|<b>\nbold</b>"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its own card: replaced silently
        save(other, folder, overwrite=True)
    card = card_of(folder)
    classes = table_rows(card, "| class | training images |")
    assert list(classes) == ["cat", "dog/&lt;b> bold&lt;/b>"]  # one line, no markup
    assert sorted(int(n) for n in classes.values()) == sorted(
        Counter(np.where(np.asarray(y) == y[0], 0, 1)).values()
    )
    assert "## Validation" not in card  # nothing was held out this time


def test_a_probe_fitted_again_with_its_validation_images_says_so(
    images, cache_dir, tmp_path
):
    """With nothing after the probe to judge, early stopping fits the probe
    again with the images it held out: the card counts them as training
    images and says that its validation scores are not of unseen images."""
    X, y = images
    clf = PretrainedImageClassifier(
        **QUICK, cache=cache_dir, validation_fraction=0.25, early_stopping=True
    ).fit(X, y)
    assert clf.n_samples_fit_ == len(X)
    card = card_of(save(clf, tmp_path / "model"))
    assert f"Trained on {len(X)} images" in card
    validation = card.split("## Validation")[1]
    assert "after the probe stage" in validation
    assert "fitted again with these images" in validation
    held_out = clone(clf).set_params(early_stopping=False).fit(X, y)
    card = card_of(save(held_out, tmp_path / "held_out"))
    assert "fitted again" not in card and "## Validation" in card


def test_multilabel_regressor_and_features_get_their_own_card(
    images, cache_dir, tmp_path
):
    X, y = images
    Y = [[label] if i % 3 else [label, "extra"] for i, label in enumerate(y)]
    clf = PretrainedImageClassifier(**QUICK, cache=cache_dir).fit(X, Y)
    assert clf.n_samples_fit_ == len(X)
    assert clf.class_count_.tolist() == [
        sum(label in row for row in Y) for label in clf.classes_
    ]
    card = card_of(save(clf, tmp_path / "multi"))
    assert "Multi-label classification: any of 3 labels" in card

    reg = PretrainedImageRegressor(**QUICK, cache=cache_dir)
    reg.fit(X, np.arange(len(X), dtype=float))
    assert reg.n_samples_fit_ == len(X) and not hasattr(reg, "class_count_")
    card = card_of(save(reg, tmp_path / "reg"))
    assert "Regression of one target" in card and "pipeline_tag" not in card

    features = PretrainedFeatures(**TINY, cache=cache_dir).fit()
    card = card_of(save(features, tmp_path / "features"))
    assert f"{features.n_features_out_} features per image" in card
