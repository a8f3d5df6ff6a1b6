"""Plots for looking at photos before training and at training afterwards.

matplotlib is imported only when a plot is drawn
(``pip install sktransfer[plots]``); every function returns the matplotlib
Axes it drew on, so a figure can be adjusted or saved by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .datasets import ImageSizeSummary, augmented_copies, image_size_summary

__all__ = ["plot_augmentations", "plot_history", "plot_image_sizes"]

#: Colours of the recipe's stages in :func:`plot_history`, in recipe order.
STAGE_COLORS = {
    "probe": "tab:purple",
    "precomputed": "tab:blue",
    "augmented": "tab:orange",
    "unfrozen": "tab:green",
}
_OTHER_COLORS = ("tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def plot_image_sizes(images, ax=None, *, image_size=224, log="auto"):
    """Width against height of every image, with the network input marked.

    One point per image shows at a glance whether photos are much smaller
    than the network input (they will be upsampled, which costs accuracy),
    much larger (decoding costs time), or of unusual shapes.

    Parameters
    ----------
    images : sequence of images or ImageSizeSummary
        Paths (or PIL images, uint8 arrays), or the result of
        :func:`~sktransfer.datasets.image_size_summary`. Only the file headers are
        read.
    ax : matplotlib Axes, default=None
        Where to draw; None makes a new figure.
    image_size : int or None, default=224
        Side of the square network input, drawn as a dashed square and
        marked on both axes; None draws no marker.
    log : "auto" or bool, default="auto"
        Logarithmic axes. ``"auto"`` uses them when the largest width or
        height is more than 4 times the smallest.

    Returns
    -------
    ax : matplotlib Axes

    See Also
    --------
    sktransfer.datasets.image_size_summary : the numbers behind the plot.

    Examples
    --------
    >>> import numpy as np
    >>> from PIL import Image
    >>> images = [Image.new("RGB", (w, h)) for w, h in [(64, 48), (500, 375)]]
    >>> ax = plot_image_sizes(images, image_size=224)
    >>> ax.get_title()
    'Image sizes (2 images)'
    >>> ax.get_xscale(), ax.get_xlabel()
    ('log', 'width (pixels)')
    """
    import matplotlib.pyplot as plt

    summary = (
        images if isinstance(images, ImageSizeSummary) else image_size_summary(images)
    )
    if summary.n_readable == 0:
        raise ValueError(
            f"no image sizes to plot: none of the {summary.n_images} images could be "
            "read (see image_size_summary(X).unreadable)."
        )
    if log not in ("auto", True, False):
        raise ValueError(f"log must be 'auto', True or False; got {log!r}.")
    widths = np.asarray(summary.widths, dtype=float)
    heights = np.asarray(summary.heights, dtype=float)
    if log == "auto":
        spread = max(widths.max() / widths.min(), heights.max() / heights.min())
        log = bool(spread > 4)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 5), layout="constrained")
    ax.scatter(
        widths,
        heights,
        s=12,
        alpha=min(1.0, max(0.15, 30 / np.sqrt(len(widths)))),
        edgecolors="none",
        label="images",
    )
    if image_size is not None:
        side = float(image_size)
        ax.plot(
            [side, side, 0 if not log else side / 1e3],
            [0 if not log else side / 1e3, side, side],
            color="tab:red",
            linestyle="--",
            linewidth=1.2,
            label=f"network input {image_size} x {image_size}",
        )
    if log:
        _log_pixel_axes(ax)
    low = min(widths.min(), heights.min(), image_size or np.inf)
    high = max(widths.max(), heights.max(), image_size or 0)
    pad = 1.25 if log else 1.05
    limits = (low / pad, high * pad) if log else (0, high * pad)
    ax.set_xlim(limits)
    ax.set_ylim(limits)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("width (pixels)")
    ax.set_ylabel("height (pixels)")
    ax.set_title(f"Image sizes ({summary.n_readable} images)")
    ax.text(
        0.02,
        0.98,
        f"median {summary.width['median']:g} x {summary.height['median']:g}",
        transform=ax.transAxes,
        va="top",
        fontsize="small",
    )
    ax.legend(loc="lower right", fontsize="small")
    return ax


def _log_pixel_axes(ax) -> None:
    """Logarithmic axes ticked 50, 100, 200 (not 5 x 10^1)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(NullFormatter())


def plot_augmentations(
    image,
    n=8,
    *,
    augment="side_on",
    image_size=224,
    max_zoom=1.1,
    random_state=0,
    ncols=4,
):
    """The original image next to ``n`` augmented copies of it.

    The lesson's check that an augmentation preset suits the photos: a
    ``"side_on"`` flip is harmless for a cat, a ``"top_down"`` rotation is
    not.

    Parameters
    ----------
    image : str, PIL image or uint8 array
        One image.
    n : int, default=8
        Number of augmented copies.
    augment : {"side_on", "top_down", "trivial"}, callable or None, default="side_on"
        The augmentation preset, or your own function, as in
        ``PretrainedImageClassifier``.
    image_size : int, default=224
        Side of each square copy.
    max_zoom : float, default=1.1
        Largest random zoom.
    random_state : int, default=0
        Seed of the draws: the same seed gives the same copies.
    ncols : int, default=4
        Columns of the grid of copies.

    Returns
    -------
    axes : ndarray of matplotlib Axes, shape (n_rows, ncols)
        The grid of copies. The original is drawn on one more Axes of the
        same figure, on the left (``axes[0, 0].figure.axes[0]``).

    See Also
    --------
    sktransfer.datasets.augmented_copies : the copies as an array.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    >>> axes = plot_augmentations(image, 6, image_size=32, ncols=3)
    >>> axes.shape
    (2, 3)
    >>> axes[0, 0].figure.axes[0].get_title()
    'original'
    """
    import matplotlib.pyplot as plt

    from ._decoding import load_image

    copies = augmented_copies(
        image,
        n,
        augment=augment,
        image_size=image_size,
        max_zoom=max_zoom,
        random_state=random_state,
    )
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig = plt.figure(figsize=(2.2 * (ncols + 1.6), 2.2 * nrows + 0.5))
    grid = fig.add_gridspec(
        nrows, ncols + 2, width_ratios=[1.5, 0.1] + [1] * ncols, wspace=0.05
    )
    original_ax = fig.add_subplot(grid[:, 0])
    original_ax.imshow(np.asarray(load_image(image)))
    original_ax.set_title("original")
    original_ax.axis("off")
    axes = np.empty((nrows, ncols), dtype=object)
    for i in range(nrows):
        for j in range(ncols):
            axes[i, j] = fig.add_subplot(grid[i, j + 2])
            axes[i, j].axis("off")
    for k, (ax, copy) in enumerate(zip(axes.ravel(), copies)):
        ax.imshow(copy)
        ax.set_title(f"copy {k + 1}", fontsize="small")
    # a preset by its name, the user's function by its type
    shown = type(augment).__name__ if callable(augment) else repr(augment)
    fig.suptitle(f"augment={shown}, max_zoom={max_zoom}")
    return axes


def plot_history(estimator_or_history, axes=None):
    """Loss and validation score of every epoch, coloured by stage.

    The recipe trains in stages (``"probe"``: the head fitted in closed
    form on cached features, one point; ``"precomputed"``: the head's
    epochs on cached features; ``"augmented"``: the head on augmented photos;
    ``"unfrozen"``: the whole network). Epochs are numbered one after the
    other across stages and fits, so the plot reads as one training run; a
    dotted vertical line marks each change of stage, and a label the start
    of each further (warm-started) fit with its image size. Epochs whose
    weights ``early_stopping`` undid (``discarded`` in the history) get a
    grey cross on the validation curves.

    Parameters
    ----------
    estimator_or_history : estimator or sequence of dict
        A fitted estimator with a ``history_`` attribute, or the rows
        themselves (dicts with ``stage``, ``train_loss`` and, when a
        validation split was held out, ``valid_loss`` and one score:
        ``valid_acc``, ``valid_f1`` or ``valid_r2``), or a pandas DataFrame
        of them.
    axes : sequence of two matplotlib Axes, default=None
        Where to draw the losses and the score; None makes a new figure.

    Returns
    -------
    axes : ndarray of two matplotlib Axes
        Loss (train solid, validation dashed) and validation score
        (accuracy, F1 or R², whichever the history holds). The score Axes
        says so when there is no validation split
        (``validation_fraction=None``).

    Examples
    --------
    >>> history = [
    ...     {"stage": "precomputed", "epoch": 1, "train_loss": 0.6,
    ...      "valid_loss": 0.5, "valid_acc": 0.8},
    ...     {"stage": "precomputed", "epoch": 2, "train_loss": 0.4,
    ...      "valid_loss": 0.4, "valid_acc": 0.85},
    ...     {"stage": "unfrozen", "epoch": 1, "train_loss": 0.3,
    ...      "valid_loss": 0.35, "valid_acc": 0.9},
    ... ]
    >>> loss_ax, score_ax = plot_history(history)
    >>> [line.get_label() for line in loss_ax.get_lines()][:2]
    ['precomputed: train', 'precomputed: valid']
    >>> score_ax.get_ylabel()
    'validation accuracy'
    """
    import matplotlib.pyplot as plt

    rows = _history_rows(estimator_or_history)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    axes = np.asarray(axes, dtype=object).ravel()
    if axes.shape != (2,):
        raise ValueError(f"axes must hold two Axes; got {axes.shape[0]}.")
    loss_ax, score_ax = axes

    def column(key):
        return np.array([_as_float(row.get(key)) for row in rows])

    score_key, score_name = _SCORES[0]
    for key, name in _SCORES:
        if np.isfinite(column(key)).any():
            score_key, score_name = key, name
            break
    values = {key: column(key) for key in ("train_loss", "valid_loss", score_key)}
    has_valid = bool(np.isfinite(values[score_key]).any())
    epochs = np.arange(1, len(rows) + 1)
    colors = _stage_colors(row["stage"] for row in rows)
    labelled = set()
    for stage, start, stop in _stage_segments(rows):
        color = colors[stage]
        # Join each segment to the last epoch of the previous one, so the
        # curve has no gaps where the stage changes.
        lo = max(start - 1, 0)
        first = stage not in labelled
        labelled.add(stage)
        for key, ax, style, suffix in (
            ("train_loss", loss_ax, "-", ": train"),
            ("valid_loss", loss_ax, "--", ": valid"),
            (score_key, score_ax, "-", ""),
        ):
            y = values[key]
            if not np.isfinite(y[start:stop]).any():
                continue
            ax.plot(
                epochs[lo:stop],
                y[lo:stop],
                style,
                color=color,
                marker="o",
                markersize=3,
                markevery=list(range(start - lo, stop - lo)),
                label=f"{stage}{suffix}" if first else None,
            )
        if start > 0:
            _mark_stage_change(axes, rows, start)
    _mark_undone(rows, epochs, values, ((loss_ax, "valid_loss"), (score_ax, score_key)))
    _label_history_axes(loss_ax, score_ax, score_name, has_valid)
    for ax in axes:
        ax.set_xlim(0.5, len(rows) + 0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return axes


def _mark_stage_change(axes, rows, start) -> None:
    """A dotted line before epoch ``start`` on both Axes, and the fit's
    number and image size where a new (warm-started) fit begins."""
    loss_ax = axes[0]
    for ax in axes:
        ax.axvline(start + 0.5, color="0.7", linestyle=":", linewidth=1)
    if rows[start].get("fit") == rows[start - 1].get("fit"):
        return
    size = rows[start].get("image_size")
    text = f"fit {rows[start]['fit']}" + (f", {size} px" if size else "")
    # Beside the line, on the side with more room.
    right_half = start >= len(rows) / 2
    loss_ax.annotate(
        text,
        (start + (0.4 if right_half else 0.6), 0.98),
        xycoords=("data", "axes fraction"),
        ha="right" if right_half else "left",
        va="top",
        fontsize="small",
        color="0.3",
    )


def _mark_undone(rows, epochs, values, where) -> None:
    """A grey cross on the validation curves at each epoch whose weights
    ``early_stopping`` undid (``discarded`` in the history)."""
    undone = np.array([bool(row.get("discarded", False)) for row in rows])
    for ax, key in where:
        shown = undone & np.isfinite(values[key])
        if shown.any():
            ax.plot(
                epochs[shown],
                values[key][shown],
                "x",
                color="0.35",
                markersize=7,
                linestyle="none",
                label="undone (early_stopping)",
            )


def _label_history_axes(loss_ax, score_ax, score_name, has_valid) -> None:
    loss_ax.set_title("Loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(fontsize="small")
    score_ax.set_title(f"Validation {score_name}")
    score_ax.set_xlabel("epoch")
    score_ax.set_ylabel(f"validation {score_name}")
    if has_valid:
        score_ax.legend(fontsize="small")
        return
    score_ax.text(
        0.5,
        0.5,
        "no validation split\n(set validation_fraction)",
        transform=score_ax.transAxes,
        ha="center",
        va="center",
        color="0.4",
    )


#: History keys of validation scores, with their names on the plot.
_SCORES = (
    ("valid_acc", "accuracy"),
    ("valid_f1", "F1"),
    ("valid_r2", "R²"),
    ("valid_score", "score"),
)


def _history_rows(estimator_or_history) -> list[dict]:
    history = getattr(estimator_or_history, "history_", estimator_or_history)
    if hasattr(history, "to_dict") and hasattr(history, "columns"):
        history = history.to_dict("records")
    try:
        rows = [dict(row) for row in history]
    except (TypeError, ValueError):
        rows = None
    if rows is None or not all(isinstance(row, Mapping) for row in history):
        raise TypeError(
            "plot_history needs a fitted estimator with history_ or a sequence "
            f"of dicts; got {type(estimator_or_history).__name__}."
        )
    if not rows:
        raise ValueError("no epochs to plot: the history is empty.")
    missing = [i for i, row in enumerate(rows) if "stage" not in row]
    if missing:
        raise ValueError(
            f"history row {missing[0]} has no 'stage' key; rows need 'stage' and "
            "'train_loss'."
        )
    return rows


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _stage_colors(stages) -> dict:
    colors, others = {}, iter(_OTHER_COLORS * 10)
    for stage in stages:
        if stage not in colors:
            colors[stage] = STAGE_COLORS.get(stage) or next(others)
    return colors


def _stage_segments(rows: list) -> list[tuple]:
    """Runs of epochs of one stage as ``(stage, start, stop)``. A run ends
    where the stage changes, where a new fit starts, or where the epoch count
    starts again (a stage that comes back in a warm-started fit)."""

    def key(row):
        return row["stage"], row.get("fit")

    segments, start = [], 0
    for i in range(1, len(rows) + 1):
        restarted = i < len(rows) and _as_float(rows[i].get("epoch")) <= _as_float(
            rows[i - 1].get("epoch")
        )
        if i == len(rows) or key(rows[i]) != key(rows[start]) or restarted:
            segments.append((rows[start]["stage"], start, i))
            start = i
    return segments
