"""Plots for looking at data before training. matplotlib is imported only
when a plot is drawn (``pip install sktransfer[plots]``)."""

from __future__ import annotations

import numpy as np

from .datasets import ImageSizeSummary, image_size_summary

__all__ = ["plot_augmentations", "plot_image_sizes"]


def plot_image_sizes(images, ax=None, *, bins=30):
    """Histograms of the widths and heights of images, on one Axes.

    Parameters
    ----------
    images : sequence of images or ImageSizeSummary
        Paths (or PIL images, uint8 arrays), or the result of
        :func:`~sktransfer.datasets.image_size_summary`.
    ax : matplotlib Axes, default=None
        Where to draw; None makes a new figure.
    bins : int, default=30
        Number of bins, shared by both histograms.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> from sktransfer.datasets import image_size_summary, load_image_folder
    >>> X, y = load_image_folder("data/dogscats/train")  # doctest: +SKIP
    >>> summary = image_size_summary(X)  # doctest: +SKIP
    >>> plot_image_sizes(summary)  # doctest: +SKIP
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
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    edges = np.histogram_bin_edges(
        np.concatenate([summary.widths, summary.heights]), bins=bins
    )
    for name, values, stats in (
        ("width", summary.widths, summary.width),
        ("height", summary.heights, summary.height),
    ):
        ax.hist(
            values, bins=edges, alpha=0.6, label=f"{name} (median {stats['median']:g})"
        )
    ax.set_xlabel("pixels")
    ax.set_ylabel("images")
    ax.set_title(f"Image sizes ({summary.n_readable} images)")
    ax.legend()
    return ax


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
    """A grid of ``n`` augmented copies of one image (the lesson's check
    that an augmentation preset suits the photos).

    Takes the arguments of :func:`sktransfer.augmented_copies`; returns the
    array of matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    from ._transforms import augmented_copies

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
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.5 * ncols, 2.5 * nrows), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, copy in zip(axes.ravel(), copies):
        ax.imshow(copy)
    fig.suptitle(f"augment={augment!r}, max_zoom={max_zoom}")
    return axes
