"""Multi-label classification: y as a 0/1 indicator matrix or as label
collections (what ``load_image_csv(label_sep=...)`` returns).

The generated images carry one label per colour channel that is lit, so a
picture can be "red" and "blue" at once; the TINY model learns that on a
dozen 32 px pictures in a fraction of a second.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from conftest import DATA, MOBILENET, TINY, requires_shared
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import cross_val_score

from sktransfer import LRFinder, PretrainedImageClassifier
from sktransfer.datasets import load_image_csv

COLOURS = ("red", "green", "blue")
LABEL_SETS = [
    {"red"},
    {"green"},
    {"red", "green"},
    {"blue"},
    {"red", "blue"},
    {"green", "blue"},
]

#: Head settings under which the tiny model learns the colours perfectly.
LEARNS = dict(precompute_epochs=20, lr=3e-2, hidden_sizes=(), dropout=0.0)


def colour_picture(labels, rng, size=32):
    base = np.zeros((size, size, 3))
    for k, name in enumerate(COLOURS):
        if name in labels:
            base[..., k] = 200
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tagged(module_dir):
    """12 JPEG paths and their label sets (each set twice)."""
    rng = np.random.default_rng(0)
    folder = module_dir / "tagged"
    folder.mkdir()
    paths, labels = [], []
    for i, tags in enumerate(LABEL_SETS * 2):
        path = folder / f"img_{i}.jpg"
        Image.fromarray(colour_picture(tags, rng)).save(path, quality=95)
        paths.append(str(path))
        labels.append(sorted(tags))
    return paths, labels


def indicator(labels, columns=("blue", "green", "red")):
    return np.array([[int(c in row) for c in columns] for row in labels])


@pytest.fixture
def base(cache_dir):
    return dict(TINY, cache=cache_dir, batch_size=6, random_state=0)


@pytest.fixture(scope="module")
def learned(tagged, cache_dir):
    """A model fitted on label lists, shared by read-only tests."""
    X, labels = tagged
    clf = PretrainedImageClassifier(
        **TINY, cache=cache_dir, batch_size=6, random_state=0, **LEARNS
    )
    return clf.fit(X, labels)


# --- y as an indicator matrix or as label collections -----------------------------


def test_indicator_y_gives_label_columns_and_indicator_predictions(tagged, base):
    X, labels = tagged
    Y = indicator(labels)
    clf = PretrainedImageClassifier(**base, **LEARNS).fit(X, Y)
    assert clf.multilabel_
    assert clf.classes_.tolist() == [0, 1, 2]
    proba = clf.predict_proba(X)
    assert proba.shape == (12, 3)
    assert np.all((proba >= 0) & (proba <= 1))
    # independent probabilities, not a distribution over labels
    assert np.abs(proba.sum(axis=1) - 1).max() > 0.3
    pred = clf.predict(X)
    assert pred.shape == (12, 3) and pred.dtype.kind == "i"
    np.testing.assert_array_equal(pred, (proba >= 0.5).astype(int))
    np.testing.assert_array_equal(pred, Y)
    assert clf.score(X, Y) == 1.0
    assert {r["stage"] for r in clf.history_} == {"probe", "precomputed"}


def test_label_lists_name_the_columns_in_sorted_order(learned, tagged):
    X, labels = tagged
    assert learned.multilabel_
    assert learned.classes_.tolist() == ["blue", "green", "red"]
    np.testing.assert_array_equal(learned.predict(X), indicator(labels))


@pytest.mark.parametrize(
    "as_y",
    [
        lambda labels: [set(row) for row in labels],
        lambda labels: [frozenset(row) for row in labels],
        lambda labels: [list(reversed(row)) for row in labels],
        lambda labels: indicator(labels),
    ],
    ids=["sets", "frozensets", "reordered-lists", "indicator"],
)
def test_every_form_of_multilabel_y_trains_the_same_model(learned, tagged, base, as_y):
    X, labels = tagged
    clf = PretrainedImageClassifier(**base, **LEARNS).fit(X, as_y(labels))
    np.testing.assert_array_equal(clf.predict_proba(X), learned.predict_proba(X))


def test_tuples_are_single_labels_not_collections(tagged, base):
    X, _ = tagged
    y = [("cls", i % 2) for i in range(12)]
    clf = PretrainedImageClassifier(**base, precompute_epochs=1).fit(X, y)
    assert not clf.multilabel_
    assert clf.classes_.tolist() == [("cls", 0), ("cls", 1)]
    assert clf.predict_proba(X).shape == (12, 2)


def test_lists_from_load_image_csv_with_label_sep_are_multilabel(tmp_path, base):
    rng = np.random.default_rng(1)
    folder = tmp_path / "train"
    folder.mkdir()
    rows = ["id,tags"]
    for i, tags in enumerate(LABEL_SETS * 2):
        Image.fromarray(colour_picture(tags, rng)).save(folder / f"p{i}.jpg")
        rows.append(f"p{i},{' '.join(sorted(tags))}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    X, y = load_image_csv(tmp_path / "labels.csv", folder, suffix=".jpg", label_sep=" ")
    clf = PretrainedImageClassifier(**base, precompute_epochs=2).fit(X, y)
    # one column per label, not one class per combination of labels
    assert clf.multilabel_
    assert clf.classes_.tolist() == ["blue", "green", "red"]
    assert clf.predict(X).shape == (12, 3)
    assert 0.0 <= clf.score(X, y) <= 1.0


# --- threshold and score ----------------------------------------------------------


def test_threshold_decides_which_labels_are_predicted(tagged, base):
    X, labels = tagged
    # a random head and one epoch: probabilities spread between 0 and 1
    base = dict(base, head_init="random")
    clf = PretrainedImageClassifier(**base, precompute_epochs=1).fit(X, labels)
    proba = clf.predict_proba(X)
    for threshold in (0.2, 0.5, 0.8):
        clf.set_params(threshold=threshold)
        np.testing.assert_array_equal(clf.predict(X), (proba >= threshold).astype(int))
    assert ((proba >= 0.2) != (proba >= 0.8)).any()
    # a threshold set at construction acts the same
    same = PretrainedImageClassifier(**base, precompute_epochs=1, threshold=0.8)
    np.testing.assert_array_equal(same.fit(X, labels).predict(X), clf.predict(X))


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.5, "half"])
def test_threshold_outside_zero_one_is_refused_before_reading_images(
    tagged, base, threshold, tmp_path, forward_count
):
    X, labels = tagged
    clf = PretrainedImageClassifier(**base, threshold=threshold)
    with pytest.raises(ValueError, match="'threshold' parameter"):
        clf.fit([*X, str(tmp_path / "missing.jpg")], [*labels, ["red"]])
    assert forward_count["n"] == 0


def _f1(truth, pred):
    tp = (truth & pred).sum()
    return 2 * tp / max(truth.sum() + pred.sum(), 1)


def test_tuned_thresholds_maximise_each_labels_f1_on_the_validation_images(
    tagged, base
):
    X, labels = tagged
    # a random head and one epoch: probabilities spread between 0 and 1
    clf = PretrainedImageClassifier(
        **base, head_init="random", precompute_epochs=1, threshold="tuned"
    ).fit(X[:8], labels[:8], X_val=X, y_val=labels)
    grid = np.round(np.linspace(0.05, 0.95, 19), 2)
    assert clf.thresholds_.shape == (3,)
    assert set(clf.thresholds_) <= set(grid)
    proba, truth = clf.predict_proba(X), indicator(labels).astype(bool)
    for j, chosen in enumerate(clf.thresholds_):
        best = max(_f1(truth[:, j], proba[:, j] >= t) for t in grid)
        assert _f1(truth[:, j], proba[:, j] >= chosen) == pytest.approx(best)
    np.testing.assert_array_equal(clf.predict(X), proba >= clf.thresholds_)
    assert (clf.thresholds_ != 0.5).any()  # the spread moved some
    # a number set later is used as it is
    clf.set_params(threshold=0.5)
    np.testing.assert_array_equal(clf.predict(X), proba >= 0.5)


def test_tuned_thresholds_of_a_perfect_model_stay_at_one_half(tagged, base):
    """Every threshold that separates the labels scores F1 = 1: the one
    nearest 0.5 is kept."""
    X, labels = tagged
    clf = PretrainedImageClassifier(**base, **LEARNS, threshold="tuned")
    clf.fit(X, labels, X_val=X, y_val=labels)
    np.testing.assert_array_equal(clf.predict(X), indicator(labels))
    np.testing.assert_array_equal(clf.thresholds_, [0.5, 0.5, 0.5])


def test_tuned_thresholds_from_a_validation_fraction_survive_save_and_load(
    tagged, base, tmp_path
):
    from sktransfer import load, save

    X, labels = tagged
    clf = PretrainedImageClassifier(
        **base, head_init="random", precompute_epochs=1, threshold="tuned",
        validation_fraction=0.5,
    ).fit(X, labels)  # fmt: skip
    assert clf.thresholds_.shape == (3,)
    again = load(save(clf, tmp_path / "model"), cache=base["cache"])
    np.testing.assert_array_equal(again.thresholds_, clf.thresholds_)
    np.testing.assert_array_equal(again.predict(X), clf.predict(X))


@pytest.mark.parametrize(
    "thresholds, message",
    [
        ([0.5, 0.5], "one threshold per class"),
        ([0.5, 1.5, 0.5], "from 0 to 1"),
        ([0.5, float("nan"), 0.5], "from 0 to 1"),
        ("0.5", "one threshold per class"),
    ],
)
def test_edited_tuned_thresholds_are_refused_at_load(
    tagged, base, tmp_path, thresholds, message
):
    import json

    from sktransfer import load, save
    from sktransfer.exceptions import ModelFormatError

    X, labels = tagged
    clf = PretrainedImageClassifier(
        **base, threshold="tuned", validation_fraction=0.5
    ).fit(X, labels)
    folder = save(clf, tmp_path / "model")
    document = json.loads((folder / "model.json").read_text())
    state = document["state"]["attributes"]
    assert state["thresholds_"]["__ndarray__"] == clf.thresholds_.tolist()
    if isinstance(thresholds, list):
        state["thresholds_"]["__ndarray__"] = thresholds
    else:
        state["thresholds_"] = thresholds
    (folder / "model.json").write_text(json.dumps(document))
    with pytest.raises(ModelFormatError, match=f"thresholds_.*{message}"):
        load(folder, cache=base["cache"])


def test_tuned_thresholds_need_validation_images(tagged, base, forward_count):
    X, labels = tagged
    clf = PretrainedImageClassifier(**base, threshold="tuned")
    with pytest.raises(ValueError, match="X_val and y_val"):
        clf.fit(X, labels)
    assert not hasattr(clf, "model_")
    assert forward_count["n"] == 0  # said before any image went through
    # a model fitted with a number has no thresholds to use
    clf.set_params(threshold=0.5).fit(X, labels)
    assert not hasattr(clf, "thresholds_")
    with pytest.raises(ValueError, match="fitted without them"):
        clf.set_params(threshold="tuned").predict(X)


def test_the_command_line_and_inspection_predict_with_tuned_thresholds(
    tagged, base, tmp_path
):
    import csv
    import os
    import subprocess
    import sys
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    from sktransfer import save
    from sktransfer.inspection import plot_grad_cam, plot_top_losses, top_losses

    X, labels = tagged
    clf = PretrainedImageClassifier(  # 64 px: Grad-CAM needs a 2x2 map
        **dict(base, image_size=64), head_init="random", precompute_epochs=1,
        threshold="tuned",
    ).fit(X[:8], labels[:8], X_val=X, y_val=labels)  # fmt: skip
    predicted = clf.predict(X)
    assert (predicted != (clf.predict_proba(X) >= 0.5)).any()  # tuning shows
    folder = save(clf, tmp_path / "model")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), SKTRANSFER_CACHE=base["cache"])
    done = subprocess.run(
        [sys.executable, "-m", "sktransfer", "predict", str(folder), *X,
         "--out", str(tmp_path / "p.csv"), "-q"],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "p.csv", newline="") as f:
        rows = {row["path"]: row["prediction"] for row in csv.DictReader(f)}
    for path, row in zip(X, predicted):
        expected = {c for c, on in zip(clf.classes_, row) if on}
        assert set(rows[path].split()) == expected

    # the titles of inspection's plots name the tuned predictions
    def names(row):
        return ";".join(c for c, on in zip(clf.classes_, row) if on) or "(none)"

    worst, _ = top_losses(clf, X, labels, k=2)
    axes = plot_top_losses(clf, X, labels, k=2, ncols=2)
    shown = [ax.get_title().split(" / ")[0] for ax in axes.ravel() if ax.images]
    assert shown == [names(predicted[i]) for i in worst]
    axes = plot_grad_cam(clf, X[:2], y=labels[:2])
    titles = [ax.get_title() for ax in np.ravel(axes) if ax.images]
    assert [t.split(" / ")[1] for t in titles] == [names(r) for r in predicted[:2]]


def test_single_label_y_ignores_tuned_thresholds(images, base):
    X, y = images
    clf = PretrainedImageClassifier(**base, threshold="tuned").fit(X, y)
    assert not hasattr(clf, "thresholds_")
    assert set(clf.predict(X)) <= set(y)


def test_score_is_subset_accuracy(learned, tagged):
    X, labels = tagged
    wrong = [list(row) for row in labels]
    wrong[0] = ["red", "green", "blue"]  # one extra label makes row 0 wrong
    wrong[5] = ["green"]  # one label missing makes row 5 wrong
    pred = learned.predict(X)
    expected = accuracy_score(indicator(wrong), pred)
    assert expected == pytest.approx(10 / 12)
    assert learned.score(X, wrong) == pytest.approx(expected)
    assert learned.score(X, indicator(wrong)) == pytest.approx(expected)


def test_cross_val_score_with_f1_samples(tagged, base):
    X, labels = tagged
    Y = indicator(labels)
    clf = PretrainedImageClassifier(**base, **LEARNS)
    scores = cross_val_score(clf, X, Y, cv=3, scoring="f1_samples")
    assert scores.shape == (3,)
    assert np.all((scores >= 0) & (scores <= 1))
    # each fold holds every label set once or twice: the colours generalise
    assert scores.mean() > 0.8
    subset = cross_val_score(clf, X, Y, cv=3)  # the estimator's own score
    assert np.all(subset <= scores + 1e-12)


# --- the whole recipe -------------------------------------------------------------


def test_the_whole_recipe_with_tta_and_lr_auto(tagged, base):
    X, labels = tagged
    clf = PretrainedImageClassifier(
        **base,
        lr="auto",
        precompute_epochs=2,
        augmented_cycles=1,
        unfrozen_cycles=1,
        tta=2,
        validation_fraction=0.25,
    )
    with pytest.warns(UserWarning, match="lr='auto'"):  # 9 images: fallback
        clf.fit(X, labels)
    assert [r["stage"] for r in clf.history_] == [
        "probe",
        "precomputed",
        "precomputed",
        "augmented",
        "unfrozen",
    ]
    for row in clf.history_:
        assert "valid_f1" in row and "valid_acc" not in row
        assert 0.0 <= row["valid_f1"] <= 1.0
        assert np.isfinite(row["valid_loss"])
    assert clf.lr_ == 1e-3
    proba = clf.predict_proba(X)
    assert proba.shape == (12, 3)
    clf.set_params(tta=0)
    plain = clf.predict_proba(X)
    assert np.abs(proba - plain).max() > 1e-6  # the views were averaged


def test_lr_finder_sweeps_a_multilabel_head(tagged, base):
    X, labels = tagged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        finder = LRFinder(
            PretrainedImageClassifier(**{**base, "batch_size": 4}),
            num_it=30,
            random_state=0,
        ).fit(X, labels)
    assert 3 <= len(finder.lrs_) <= 30
    assert np.all(np.isfinite(finder.losses_))
    # binary cross-entropy of 3 labels starts near log(2) per label: the
    # sweep trains a new head, also where fit starts from a linear probe
    assert 0.3 < finder.losses_[0] < 1.5


# --- errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_y, match",
    [
        (lambda labels: [*labels[:-1], "red"], r"mixes single labels.*y\[11\]"),
        (lambda labels: np.full((12, 3), 2), "0/1 indicator"),
        (lambda labels: [["red"]] * 12, "fewer than 2 labels"),
        (lambda labels: [*labels[:-1], ["red", None]], "missing label"),
    ],
    ids=["mixed", "not-0-1", "one-label", "none-inside"],
)
def test_bad_multilabel_y_is_refused_before_reading_images(
    tagged, base, tmp_path, forward_count, make_y, match
):
    X, labels = tagged
    X = [*X[:-1], str(tmp_path / "missing.jpg")]
    clf = PretrainedImageClassifier(**base)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, make_y(labels))
    assert forward_count["n"] == 0


def test_class_weight_is_refused_for_multilabel_y(tagged, base, tmp_path):
    X, labels = tagged
    X = [*X[:-1], str(tmp_path / "missing.jpg")]
    clf = PretrainedImageClassifier(**base, class_weight="balanced")
    with pytest.raises(ValueError, match="sample_weight"):
        clf.fit(X, labels)


def test_warm_start_needs_the_same_labels(learned, tagged):
    X, labels = tagged
    clf = copy.deepcopy(learned).set_params(warm_start=True, precompute_epochs=1)
    other = [[{"red": "pink"}.get(v, v) for v in row] for row in labels]
    with pytest.raises(ValueError, match="same classes"):
        clf.fit(X, other)
    clf.fit(X, labels)  # the same labels continue
    assert [r["fit"] for r in clf.history_][-1] == 2


# --- real photos ------------------------------------------------------------------


def collages(folder, n, seed=0):
    """``n`` pictures of a cat or dog next to an ant or bee (sides alternate),
    each labelled with both."""
    rng = np.random.default_rng(seed)
    pets = [
        (path, kind[:-1])
        for kind in ("cats", "dogs")
        for path in sorted((DATA / "dogscats" / "train" / kind).iterdir())[:50]
    ]
    bugs = [
        (path, kind[:-1])
        for kind in ("ants", "bees")
        for path in sorted((DATA / "hymenoptera_data" / "train" / kind).iterdir())
        if path.suffix == ".jpg"
    ]
    bugs = bugs[:50] + [b for b in bugs if b[1] == "bee"][:50]
    folder.mkdir()
    X, y = [], []
    for i, (p, b) in enumerate(
        zip(rng.permutation(len(pets))[:n], rng.permutation(len(bugs))[:n])
    ):
        (pet, pet_label), (bug, bug_label) = pets[p], bugs[b]
        picture = Image.new("RGB", (320, 160))
        left, right = (pet, bug) if i % 2 else (bug, pet)
        for x, path in ((0, left), (160, right)):
            photo = Image.open(path).convert("RGB").resize((160, 160))
            picture.paste(photo, (x, 0))
        X.append(str(folder / f"collage_{i}.jpg"))
        picture.save(X[-1], quality=90)
        y.append([pet_label, bug_label])
    return X, y


@requires_shared
@pytest.mark.real_data
def test_real_photos_side_by_side_carry_both_labels(tmp_path):
    X, y = collages(tmp_path / "collages", 100)
    clf = PretrainedImageClassifier(
        "mobilenet_v2",
        weights=str(MOBILENET),
        image_size=160,
        precompute_epochs=20,
        cache=str(tmp_path / "cache"),
        random_state=0,
    ).fit(X[:60], y[:60])
    assert clf.classes_.tolist() == ["ant", "bee", "cat", "dog"]
    pred = clf.predict(X[60:])
    truth = np.array([[int(c in row) for c in clf.classes_] for row in y[60:]])
    # predicting all four labels scores 2/3, predicting none 0 (60 training
    # collages: the bounds leave room for a few pictures either way)
    assert f1_score(truth, pred, average="samples") > 0.75
    assert clf.score(X[60:], y[60:]) > 0.5
    # cats and dogs fill half the picture: seen on most
    assert (pred == truth)[:, 2:].mean() > 0.8
