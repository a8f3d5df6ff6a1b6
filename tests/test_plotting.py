"""The plots in sktransfer.plotting, checked on the Axes they return."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.colors import to_hex
from PIL import Image

from sktransfer.datasets import ImageSizeSummary, image_size_summary
from sktransfer.plotting import (
    STAGE_COLORS,
    plot_augmentations,
    plot_history,
    plot_image_sizes,
)

matplotlib = pytest.importorskip("matplotlib")


@pytest.fixture(autouse=True)
def plt():
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def _write_sizes(directory, sizes):
    paths = []
    for i, size in enumerate(sizes):
        paths.append(str(directory / f"{i}.png"))
        Image.new("RGB", size).save(paths[-1])
    return paths


# -- plot_image_sizes -------------------------------------------------------------


def test_plot_image_sizes_draws_one_point_per_readable_image(tmp_path):
    sizes = [(200, 200), (300, 200), (300, 400), (500, 600)]
    paths = _write_sizes(tmp_path, sizes)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")

    ax = plot_image_sizes(paths + [str(tmp_path / "broken.jpg")], image_size=224)

    points = ax.collections[0].get_offsets()
    assert sorted(map(tuple, np.asarray(points).tolist())) == sorted(
        (float(w), float(h)) for w, h in sizes
    )
    assert ax.get_title() == "Image sizes (4 images)"
    assert ax.get_xlabel() == "width (pixels)"
    assert ax.get_ylabel() == "height (pixels)"
    assert ax.get_xscale() == "linear"  # 200..600 is not a wide spread
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["images", "network input 224 x 224"]
    (marker,) = ax.get_lines()
    assert 224.0 in marker.get_xdata() and 224.0 in marker.get_ydata()


def test_plot_image_sizes_uses_log_axes_when_sizes_spread(tmp_path):
    paths = _write_sizes(tmp_path, [(20, 20), (40, 30), (2000, 1500)])

    auto = plot_image_sizes(paths)
    assert (auto.get_xscale(), auto.get_yscale()) == ("log", "log")
    auto.figure.canvas.draw()
    labels = [t.get_text() for t in auto.get_xticklabels() if t.get_text()]
    assert "100" in labels and "1000" in labels  # plain numbers, not 10^2
    forced = plot_image_sizes(paths, log=False)
    assert forced.get_xscale() == "linear"
    assert forced.get_xlim()[1] >= 2000  # every point is inside the axes


def test_plot_image_sizes_takes_a_summary_and_an_axes(tmp_path, plt):
    summary = image_size_summary(_write_sizes(tmp_path, [(10, 20), (30, 40)]))
    _, given = plt.subplots()

    ax = plot_image_sizes(summary, ax=given, image_size=None)

    assert ax is given
    assert len(ax.collections[0].get_offsets()) == 2
    assert ax.get_lines() == []  # no input size marker
    with pytest.raises(ValueError, match="log must be"):
        plot_image_sizes(summary, log="yes")


def test_plot_image_sizes_without_readable_images_is_an_error():
    empty = ImageSizeSummary(0, 0, {}, {}, {}, {}, [], np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="no image sizes to plot"):
        plot_image_sizes(empty)


# -- plot_augmentations -----------------------------------------------------------


def test_plot_augmentations_shows_the_original_next_to_the_copies():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)

    axes = plot_augmentations(image, 5, image_size=32, ncols=3)

    assert axes.shape == (2, 3)
    assert sum(len(ax.images) for ax in axes.ravel()) == 5
    figure_axes = axes[0, 0].figure.axes
    assert len(figure_axes) == 1 + 6
    original = figure_axes[0]
    assert original.get_title() == "original"
    np.testing.assert_array_equal(original.images[0].get_array(), image)
    assert axes[0, 0].images[0].get_array().shape == (32, 32, 3)
    assert axes[0, 0].get_title() == "copy 1"


# -- plot_history -----------------------------------------------------------------


def _rows(stage, n, valid=True, start_loss=1.0):
    rows = []
    for epoch in range(1, n + 1):
        loss = start_loss / epoch
        rows.append(
            {
                "stage": stage,
                "epoch": epoch,
                "lrs": [1e-3],
                "train_loss": loss,
                "valid_loss": loss * 1.1 if valid else float("nan"),
                "valid_acc": 1 - loss / 2 if valid else float("nan"),
                "seconds": 1.0,
            }
        )
    return rows


class _Fitted:
    def __init__(self, history):
        self.history_ = history


def test_plot_history_colours_each_stage_and_numbers_epochs_across_stages():
    history = (
        _rows("precomputed", 3)
        + _rows("augmented", 2)
        + _rows("unfrozen", 2, start_loss=0.5)
    )

    loss_ax, acc_ax = plot_history(_Fitted(history))

    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    for stage in ("precomputed", "augmented", "unfrozen"):
        train, valid = lines[f"{stage}: train"], lines[f"{stage}: valid"]
        assert to_hex(train.get_color()) == to_hex(STAGE_COLORS[stage])
        assert train.get_linestyle() == "-" and valid.get_linestyle() == "--"
    # epochs run on across stages; each stage's curve starts at the previous
    # stage's last epoch, so there is no gap
    assert list(lines["precomputed: train"].get_xdata()) == [1, 2, 3]
    assert list(lines["augmented: train"].get_xdata()) == [3, 4, 5]
    assert list(lines["unfrozen: train"].get_ydata()) == [0.5, 0.5, 0.25]
    acc_lines = [line for line in acc_ax.get_lines() if line.get_label()[0] != "_"]
    assert [line.get_label() for line in acc_lines] == [
        "precomputed",
        "augmented",
        "unfrozen",
    ]
    assert acc_ax.get_ylabel() == "validation accuracy"
    assert loss_ax.get_title() == "Loss"
    stage_changes = [
        line.get_xdata()[0]
        for line in loss_ax.get_lines()
        if line.get_linestyle() == ":"
    ]
    assert stage_changes == [3.5, 5.5]
    assert loss_ax.get_xlim() == (0.5, 7.5)


def test_plot_history_marks_the_epochs_early_stopping_undid():
    history = _rows("probe", 1) + _rows("unfrozen", 3, start_loss=0.5)
    for row in history:
        row["discarded"] = row["stage"] == "unfrozen"
    loss_ax, acc_ax = plot_history(history)
    for ax, key in ((loss_ax, "valid_loss"), (acc_ax, "valid_acc")):
        (crosses,) = [
            line
            for line in ax.get_lines()
            if line.get_label() == "undone (early_stopping)"
        ]
        assert crosses.get_marker() == "x" and crosses.get_linestyle() == "None"
        assert list(crosses.get_xdata()) == [2, 3, 4]
        assert list(crosses.get_ydata()) == [row[key] for row in history[1:]]
    plain = plot_history(_rows("precomputed", 3))[0]
    assert "undone (early_stopping)" not in [x.get_label() for x in plain.get_lines()]


def test_plot_history_without_validation_says_so():
    loss_ax, acc_ax = plot_history(_rows("precomputed", 4, valid=False))

    assert [line.get_label() for line in loss_ax.get_lines()] == ["precomputed: train"]
    assert acc_ax.get_lines() == []
    assert "no validation split" in acc_ax.texts[0].get_text()


def test_plot_history_takes_a_dataframe_and_given_axes(plt):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(_rows("precomputed", 2) + _rows("precomputed", 2))
    _, given = plt.subplots(1, 2)

    axes = plot_history(frame, axes=given)

    assert axes[0] is given[0]
    # a stage that comes back (a second, warm-started fit) keeps one legend entry
    labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert labels == ["precomputed: train", "precomputed: valid"]
    assert list(axes[0].get_lines()[0].get_xdata()) == [1, 2]


@pytest.mark.parametrize(
    "bad, error, match",
    [
        ([], ValueError, "history is empty"),
        ([{"epoch": 1, "train_loss": 1.0}], ValueError, "no 'stage' key"),
        (3, TypeError, "needs a fitted estimator"),
    ],
)
def test_plot_history_rejects_what_is_not_a_history(bad, error, match):
    with pytest.raises(error, match=match):
        plot_history(bad)


def test_plot_history_needs_two_axes(plt):
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="two Axes"):
        plot_history(_rows("precomputed", 1), axes=[ax])


# -- lazy import ------------------------------------------------------------------


def test_importing_the_plotting_modules_does_not_import_matplotlib():
    code = (
        "import sys, sktransfer.plotting, sktransfer.inspection; "
        "assert 'matplotlib' not in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr


def test_plot_history_shows_the_score_the_history_holds_and_marks_new_fits():
    rows = _rows("precomputed", 2) + _rows("precomputed", 2)
    for i, row in enumerate(rows):
        row["valid_r2"] = row.pop("valid_acc")
        row["fit"], row["image_size"] = (1, 224) if i < 2 else (2, 288)

    loss_ax, score_ax = plot_history(rows)

    assert score_ax.get_ylabel() == "validation R²"
    assert score_ax.get_title() == "Validation R²"
    (label,) = loss_ax.texts
    assert label.get_text() == "fit 2, 288 px"
    assert label.get_horizontalalignment() == "right"  # the line is at 2.5 of 4
    stage_changes = [
        line.get_xdata()[0]
        for line in loss_ax.get_lines()
        if line.get_linestyle() == ":"
    ]
    assert stage_changes == [2.5]
