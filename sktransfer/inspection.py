"""Looking at what a fitted model gets wrong.

scikit-learn's :class:`~sklearn.metrics.ConfusionMatrixDisplay` draws the
confusion matrix; this module adds the two views the lesson reads next: the
pairs of classes confused most often, and the images the model is most
wrong about. They work with any fitted scikit-learn estimator whose input
is images (paths, PIL images or uint8 arrays), not only with this package's.

:func:`grad_cam` and :func:`plot_grad_cam` show where this package's
fitted models look: a class-activation map (Grad-CAM) per image.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ._inspection_data import (
    cam_titles,
    item_at,
    plain_value,
    sample_losses,
)

__all__ = [
    "grad_cam",
    "most_confused",
    "plot_grad_cam",
    "plot_top_losses",
    "top_k",
    "top_losses",
]


def most_confused(y_true, y_pred, *, min_count=1):
    """The pairs of classes confused most often, most frequent first.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    y_pred : array-like of shape (n_samples,)
        Predicted labels.
    min_count : int, default=1
        Leave out pairs confused fewer times than this.

    Returns
    -------
    pairs : list of (true, predicted, count)
        Each off-diagonal cell of the confusion matrix with at least
        ``min_count`` samples, sorted by decreasing count, then by labels.

    See Also
    --------
    sklearn.metrics.ConfusionMatrixDisplay : the whole matrix as a figure.

    Examples
    --------
    >>> y_true = ["cat", "cat", "cat", "dog", "dog", "fox", "fox", "fox"]
    >>> y_pred = ["cat", "dog", "dog", "dog", "cat", "dog", "fox", "cat"]
    >>> most_confused(y_true, y_pred)
    [('cat', 'dog', 2), ('dog', 'cat', 1), ('fox', 'cat', 1), ('fox', 'dog', 1)]
    >>> most_confused(y_true, y_pred, min_count=2)
    [('cat', 'dog', 2)]
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_pred.ndim != 1:
        raise ValueError(
            "most_confused needs 1-D labels; got arrays of shape "
            f"{y_true.shape} and {y_pred.shape}."
        )
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true and y_pred have different lengths: {len(y_true)} and "
            f"{len(y_pred)}."
        )
    counts = Counter(
        (plain_value(t), plain_value(p)) for t, p in zip(y_true, y_pred) if t != p
    )
    pairs = [(t, p, n) for (t, p), n in counts.items() if n >= min_count]
    return sorted(pairs, key=lambda pair: (-pair[2], str(pair[0]), str(pair[1])))


def top_losses(estimator, X, y, k=None):
    """The samples a fitted model is most wrong about, worst first.

    The loss of one sample is the one the model was trained to lower: the
    log loss of the true class for a classifier with ``predict_proba``, the
    mean binary log loss over labels for a multi-label one (``y`` an
    indicator matrix), and the squared error (summed over outputs) for a
    regressor.

    Parameters
    ----------
    estimator : fitted estimator
        A classifier with ``predict_proba`` and ``classes_``, or a regressor.
    X : sequence of images
        What ``estimator.predict`` takes.
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        True labels or targets; for a multi-label model, an indicator matrix
        or one collection of labels per sample.
    k : int, default=None
        How many to return; None returns all, sorted.

    Returns
    -------
    indices : ndarray of int, shape (k,)
        Positions in ``X``, highest loss first.
    losses : ndarray of float, shape (k,)
        Their losses.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> model = LogisticRegression().fit(X, [0, 0, 1, 1])
    >>> indices, losses = top_losses(model, X, [0, 1, 1, 1], k=2)
    >>> indices.tolist()
    [1, 2]
    """
    losses, _ = sample_losses(estimator, X, y)
    order = np.argsort(-losses, kind="stable")
    if k is not None:
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int or None; got {k!r}.")
        order = order[:k]
    return order, losses[order]


def plot_top_losses(
    estimator, X, y, k=9, *, ncols=3, image_size=160, heatmap=False, alpha=0.5
):
    """The ``k`` images with the highest loss, with what the model said.

    Each title reads ``predicted / true / loss / probability`` (the model's
    probability of the true class), as in the lesson: the images a model
    gets most wrong are often mislabelled, cut off or not what the class
    says.

    Parameters
    ----------
    estimator : fitted estimator
        A classifier with ``predict_proba`` and ``classes_``, or a regressor.
    X : sequence of images
        Paths, PIL images or uint8 arrays.
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        True labels or targets; for a multi-label model, an indicator matrix
        or one collection of labels per sample.
    k : int, default=9
        Number of images.
    ncols : int, default=3
        Columns of the grid.
    image_size : int, default=160
        Longest side, in pixels, of each thumbnail.
    heatmap : bool, default=False
        Overlay the Grad-CAM heatmap of the predicted class (see
        :func:`grad_cam`): where the model looked for what it said. The
        images are then shown as the model sees them (its input crop, at
        its size, instead of ``image_size`` thumbnails). Needs a
        PretrainedImageClassifier or PretrainedImageRegressor.
    alpha : float, default=0.5
        Opacity of the heatmap, with ``heatmap=True``.

    Returns
    -------
    axes : ndarray of matplotlib Axes, shape (n_rows, ncols)
        One Axes per image, worst first; unused cells are empty.

    See Also
    --------
    top_losses : the indices and losses without a figure.
    plot_grad_cam : Grad-CAM heatmaps of any images.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 255, (20, 16, 16, 3), dtype=np.uint8)
    >>> y = np.where(X.mean(axis=(1, 2, 3)) > 127, "light", "dark")
    >>> flatten = FunctionTransformer(lambda X: X.reshape(len(X), -1) / 255)
    >>> model = make_pipeline(flatten, LogisticRegression()).fit(X, y)
    >>> axes = plot_top_losses(model, X, y, k=4, ncols=2)
    >>> axes.shape
    (2, 2)
    >>> axes[0, 0].get_title().count("/")
    3
    """
    import matplotlib.pyplot as plt

    from ._decoding import load_image

    losses, details = sample_losses(estimator, X, y)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int; got {k!r}.")
    order = np.argsort(-losses, kind="stable")[:k]
    if heatmap:
        worst = [item_at(X, i) for i in order]
        from ._gradcam import crops_and_maps

        crops, cams = crops_and_maps(estimator, worst, None, None)
    ncols = max(1, min(ncols, len(order)))
    nrows = int(np.ceil(len(order) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3 * ncols, 3.2 * nrows), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for j, (ax, i) in enumerate(zip(axes.ravel(), order)):
        if heatmap:
            _overlay(ax, crops[j], cams.heatmaps[j], alpha, "jet")
        else:
            image = load_image(item_at(X, i), draft_size=image_size)
            image.thumbnail((image_size, image_size))
            ax.imshow(np.asarray(image))
        ax.set_title(details(i), fontsize="small")
    fig.suptitle("predicted / true / loss / probability of the true class")
    return axes


def grad_cam(estimator, X, *, target=None, batch_size=None):
    """Grad-CAM heatmaps: where a fitted model looks for a class.

    For each image, the gradient of the target's raw output (the logit,
    before softmax or sigmoid; a regressor's standardised output) with
    respect to the body's last feature map is averaged over positions to
    weigh the map's channels; the weighted sum of the channels, through a
    ReLU, is upsampled bilinearly to the network's input and divided by its
    maximum (Selvaraju et al., 2017). 1 marks the place that raises the
    target's score most, 0 places that do not raise it.

    The heatmaps have the size of the network's input: the crop the model
    sees (``estimator.preprocess(X)``, resized and centre-cropped to the
    preprocessing's ``crop_size``), not the size of the original images.

    Parameters
    ----------
    estimator : fitted PretrainedImageClassifier or PretrainedImageRegressor
        Single-label or multi-label classifier, or regressor, with a
        convolutional backbone (torchvision or ``"timm:NAME"``).
    X : sequence of images
        Paths, PIL images or uint8 arrays, as ``predict`` takes them.
    target : label, array-like of labels, int or None, default=None
        The class to explain: None explains the predicted class (the most
        probable one; for a multi-label model, the label with the highest
        probability); a label of ``classes_`` explains that class in every
        image; an array gives one label per image. For a regressor, the
        output index (None: output 0).
    batch_size : int, default=None
        Images per forward and backward pass; None uses the estimator's
        ``extract_batch_size``.

    Returns
    -------
    heatmaps : ndarray of shape (n_samples, crop_size, crop_size), float32
        Values in [0, 1]; an image whose map is nowhere positive gets zeros.

    Raises
    ------
    TypeError
        If ``estimator`` is not a PretrainedImageClassifier or
        PretrainedImageRegressor.
    sklearn.exceptions.NotFittedError
        If it is not fitted.
    ValueError
        If ``target`` is not a class of the model (or an output index of a
        regressor), or if the backbone has no spatial feature map (a vision
        transformer, or an input so small that the last map is 1x1).

    See Also
    --------
    plot_grad_cam : the heatmaps over the images.

    Notes
    -----
    The feature map is the body's output before its global pooling, found
    generically: the last 4-D output, in forward order, with more than one
    spatial position (``layer4`` of a ResNet, ``features`` of a MobileNet,
    EfficientNet or ConvNeXt; channels-last maps of Swin models are read
    as such).

    The model is the one ``predict_proba`` uses, in the form
    :func:`~sktransfer.export.to_torch` gives it: the same preprocessing, the
    fitted (possibly fine-tuned) body and the head, in eval mode, on the
    estimator's device. It is a float32 copy, so the gradient pass runs in
    float32 even for an estimator that extracts in bf16 or fp16, and the
    estimator's parameters, ``requires_grad`` flags and modes are left as
    they were. Like that graph, it computes the plain view: ``tta`` views
    are not part of the heatmaps, and the predicted class (``target=None``)
    is that of the plain view.

    For a regressor, the score is the standardised output (the prediction
    up to a positive scale and a shift), and the map shows what raises it:
    an image whose features all lower the prediction gets zeros.

    A snapshot ensemble (``ensemble_`` with several members) is explained
    as one model: the score is the mean of the members' logits for the
    target, and each member body's feature map is weighted by the gradient
    of that mean, so the heatmap is the sum of the members' Grad-CAM maps
    before the ReLU.

    References
    ----------
    .. [1] R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh and
       D. Batra, "Grad-CAM: Visual Explanations from Deep Networks via
       Gradient-based Localization", ICCV 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import PretrainedImageClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 255, size=(8, 80, 80, 3), dtype=np.uint8)
    >>> y = ["cat"] * 4 + ["dog"] * 4
    >>> clf = PretrainedImageClassifier(
    ...     "resnet18", weights=None, image_size=64, cache=None, random_state=0
    ... ).fit(X, y)
    >>> heatmaps = grad_cam(clf, X, target="dog")
    >>> heatmaps.shape
    (8, 64, 64)
    >>> bool(heatmaps.min() >= 0 and heatmaps.max() <= 1)
    True
    """
    from ._gradcam import crops_and_maps

    crops, result = crops_and_maps(estimator, X, target, batch_size)
    return result.heatmaps


def plot_grad_cam(
    estimator,
    X,
    *,
    target=None,
    y=None,
    ncols=4,
    alpha=0.5,
    cmap="jet",
    batch_size=None,
):
    """The images as the model sees them, with their Grad-CAM heatmaps.

    Each title reads ``target / predicted / probability`` (the class the
    heatmap explains, the model's prediction and its probability of the
    target), or ``target / predicted / true / probability`` when ``y`` is
    given; for a regressor ``output / prediction`` (``/ true``).

    Parameters
    ----------
    estimator : fitted PretrainedImageClassifier or PretrainedImageRegressor
        See :func:`grad_cam`.
    X : sequence of images
        Paths, PIL images or uint8 arrays.
    target : label, array-like of labels, int or None, default=None
        The class to explain, as in :func:`grad_cam` (None: the predicted
        class).
    y : array-like of shape (n_samples,), default=None
        True labels or targets to show in the titles; for a multi-label
        model, an indicator matrix or one collection of labels per image.
    ncols : int, default=4
        Columns of the grid.
    alpha : float, default=0.5
        Opacity of the heatmap over the image.
    cmap : str, default="jet"
        Matplotlib colour map of the heatmap.
    batch_size : int, default=None
        See :func:`grad_cam`.

    Returns
    -------
    axes : ndarray of matplotlib Axes, shape (n_rows, ncols)
        One Axes per image, in the order of ``X``; unused cells are empty.
        ``axes[0, 0].figure`` is the figure.

    See Also
    --------
    grad_cam : the heatmaps as an array.
    plot_top_losses : with ``heatmap=True``, the heatmaps of the images the
        model is most wrong about.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import PretrainedImageClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 255, size=(8, 80, 80, 3), dtype=np.uint8)
    >>> y = ["cat"] * 4 + ["dog"] * 4
    >>> clf = PretrainedImageClassifier(
    ...     "resnet18", weights=None, image_size=64, cache=None, random_state=0
    ... ).fit(X, y)
    >>> axes = plot_grad_cam(clf, X[:3], y=y[:3], ncols=2)
    >>> axes.shape
    (2, 2)
    >>> axes[0, 0].get_title().count("/")
    3
    """
    import matplotlib.pyplot as plt

    from ._gradcam import crops_and_maps

    crops, result = crops_and_maps(estimator, X, target, batch_size)
    n = len(crops)
    if not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise ValueError(f"ncols must be a positive int; got {ncols!r}.")
    titles = cam_titles(estimator, result, y, n)
    ncols = min(int(ncols), n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3 * ncols, 3.2 * nrows), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, crop, heatmap, title in zip(axes.ravel(), crops, result.heatmaps, titles):
        _overlay(ax, crop, heatmap, alpha, cmap)
        ax.set_title(title, fontsize="small")
    if hasattr(estimator, "classes_"):
        parts = "target / predicted" + (" / true" if y is not None else "")
        fig.suptitle(f"Grad-CAM: {parts} / probability of the target")
    else:
        parts = "output / prediction" + (" / true" if y is not None else "")
        fig.suptitle(f"Grad-CAM: {parts}")
    return axes


def _overlay(ax, crop, heatmap, alpha, cmap) -> None:
    ax.imshow(crop)
    ax.imshow(heatmap, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0)


def top_k(estimator, X, k=3):
    """The ``k`` most probable classes of each image, with their probabilities.

    What an image-classification pipeline returns: per image, a list of
    ``(label, probability)`` pairs, most probable first (ties in the order
    of ``classes_``).

    Parameters
    ----------
    estimator : fitted classifier
        Any scikit-learn classifier with ``predict_proba`` and ``classes_``.
    X : sequence of images
        What ``estimator.predict_proba`` takes.
    k : int, default=3
        Pairs per image; at most the number of classes.

    Returns
    -------
    top : list of list of (label, float)
        One list per image, of length ``min(k, n_classes)``.

    See Also
    --------
    top_losses : the samples the model is most wrong about.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]])
    >>> y = ["cat", "cat", "dog", "dog", "fox", "fox"]
    >>> model = LogisticRegression().fit(X, y)
    >>> [label for label, _ in top_k(model, [[0.2]], k=2)[0]]
    ['cat', 'dog']
    >>> pairs = top_k(model, [[4.9]], k=5)[0]
    >>> len(pairs), pairs[0][0], round(sum(p for _, p in pairs), 6)
    (3, 'fox', 1.0)
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an int >= 1; got {k!r}.")
    if not hasattr(estimator, "predict_proba"):
        raise TypeError(
            f"top_k needs a classifier with predict_proba; {type(estimator).__name__} "
            "has none."
        )
    proba = np.asarray(estimator.predict_proba(X), dtype=float)
    classes = np.asarray(estimator.classes_)
    if proba.ndim != 2 or proba.shape[1] != len(classes):
        raise ValueError(
            f"predict_proba returned shape {proba.shape}; top_k needs one column "
            f"per class ({len(classes)} classes)."
        )
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return [
        [(plain_value(classes[j]), float(row[j])) for j in best]
        for row, best in zip(proba, order)
    ]
