"""PretrainedImageClassifier: the fastai transfer-learning recipe as a
scikit-learn classifier."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, check_random_state
from skorch import NeuralNetClassifier
from torch import nn

from ._features import (
    _COMMON_CONSTRAINTS,
    _check_not_empty,
    build_extractor,
    image_fingerprints,
)
from ._head import Head
from ._images import as_image_list
from ._transforms import PLAIN, tta_views
from .callbacks import SGDR


class PretrainedImageClassifier(ClassifierMixin, BaseEstimator):
    """Image classifier built on a pretrained network, trained the fastai way.

    ``X`` is a sequence of images: file paths, PIL images, or a uint8 array
    ``(n, H, W, 3)``; ``y`` holds any hashable labels. The frozen body's
    pooled features are computed once per image (and cached on disk, shared
    by clones, folds and grid candidates); a new head of BatchNorm, Dropout
    and Linear layers is trained on them with Adam and cosine annealing.

    Parameters
    ----------
    backbone : str, default="resnet34"
        A torchvision classification model name (``"resnet34"``,
        ``"mobilenet_v2"``, ``"efficientnet_b0"``, ...) or ``"timm:NAME"``.
    weights : str, path-like or None, default="DEFAULT"
        ``"DEFAULT"`` (downloaded once into torch's cache), a torchvision
        weights name (``"IMAGENET1K_V1"``), the path of a local state_dict
        file, or None (random initialisation).
    image_size : int, default=None
        Side of the square network input. None uses the weights' preset.
    preprocessing : dict, default=None
        Overrides of the weights' preset (``resize_size``, ``crop_size``,
        ``mean``, ``std``, ``interpolation``).
    precompute : bool, default=True
        Train the head on cached features of the frozen body.
    hidden_sizes : tuple of int, default=(512,)
        Sizes of the head's hidden layers; ``()`` for a linear head.
    dropout : float, default=0.5
        Dropout before the last Linear layer (half of it before the others).
    lr : float, default=1e-3
        Learning rate of the head (Adam).
    epochs : int, default=8
        Epochs of head training on precomputed features, one cosine cycle.
    batch_size : int, default=64
        Mini-batch size of head training.
    weight_decay : float, default=1e-2
        Decoupled weight decay (AdamW).
    tta : int, default=0
        Number of augmented views (mirror, zoomed and shifted crops)
        averaged with the plain view in ``predict_proba``.
    precision : {"auto", "fp32", "bf16"}, default="auto"
        Numeric precision of the body's forward pass. ``"auto"`` uses bf16
        autocast where the hardware runs bf16 natively, fp32 elsewhere.
    feature_batch_size : int, default=32
        Images per forward pass of the body.
    device : str, default="auto"
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``...
    cache : "auto", path or None, default="auto"
        Feature cache directory. ``"auto"`` is ``$SKTRANSFER_CACHE`` or the
        per-user cache folder (``~/.cache/sktransfer``); None disables it.
    random_state : int, RandomState instance or None, default=None
        Seeds the head's initialisation and shuffling. Global RNG state is
        left untouched.
    verbose : int, default=0
        1 shows progress bars while features are computed; 2 also prints
        the epoch table of head training.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels; the column order of ``predict_proba``.
    n_features_ : int
        Length of the body's feature vector.
    extractor_ : FeatureExtractor
        The loaded body, its preprocessing and cache key.
    net_ : skorch.NeuralNetClassifier
        The trained head.
    history_ : list of dict
        One record per epoch: stage, epoch, lr, train_loss.

    See Also
    --------
    PretrainedFeatures : the frozen body as a transformer, for pipelines
        with any scikit-learn model.

    Examples
    --------
    >>> from sktransfer import PretrainedImageClassifier
    >>> clf = PretrainedImageClassifier(
    ...     "mobilenet_v2", weights="mobilenet_v2-imagenet.pth", tta=2
    ... )  # doctest: +SKIP
    >>> clf.fit(train_paths, train_labels).score(test_paths, test_labels)  # doctest: +SKIP
    0.98...
    """

    _parameter_constraints = {
        **_COMMON_CONSTRAINTS,
        "precompute": ["boolean"],
        "hidden_sizes": [tuple, list],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "epochs": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "tta": [Interval(Integral, 0, None, closed="left")],
        "feature_batch_size": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        backbone="resnet34",
        *,
        weights="DEFAULT",
        image_size=None,
        preprocessing=None,
        precompute=True,
        hidden_sizes=(512,),
        dropout=0.5,
        lr=1e-3,
        epochs=8,
        batch_size=64,
        weight_decay=1e-2,
        tta=0,
        precision="auto",
        feature_batch_size=32,
        device="auto",
        cache="auto",
        random_state=None,
        verbose=0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.preprocessing = preprocessing
        self.precompute = precompute
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.tta = tta
        self.precision = precision
        self.feature_batch_size = feature_batch_size
        self.device = device
        self.cache = cache
        self.random_state = random_state
        self.verbose = verbose

    # -- fit ----------------------------------------------------------------

    def fit(self, X, y):
        """Train the classifier on images ``X`` with labels ``y``.

        Every image is checked (and its features computed or read from the
        cache) before any training starts; all images that cannot be read
        are reported together in one error.
        """
        self._validate_params()
        if not self.precompute:
            raise NotImplementedError(
                "precompute=False (training on augmented images) is not available yet."
            )
        sources = as_image_list(X)
        classes, y_encoded = _encode_labels(y, len(sources))
        fingerprints = image_fingerprints(sources)
        extractor = build_extractor(
            self.backbone, self.weights, self.image_size, self.preprocessing,
            self.precision, self.device, self.cache,
        )
        features = extractor.transform(
            sources, views=[PLAIN], batch_size=self.feature_batch_size,
            verbose=self.verbose, fingerprints=fingerprints,
        )[0]
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        net = self._build_head(extractor.n_features, len(classes), extractor.device)
        with _seeded(seed):
            if self.epochs > 0:
                net.fit(features, y_encoded)
            else:
                net.initialize()
        self.classes_ = classes
        self.n_features_ = extractor.n_features
        self.extractor_ = extractor
        self.net_ = net
        self.history_ = [
            {"stage": "precomputed", "epoch": int(row["epoch"]),
             "lr": float(row["batches"][-1]["lr"]) if row["batches"] else self.lr,
             "train_loss": float(row["train_loss"])}
            for row in net.history
        ] if self.epochs > 0 else []
        return self

    def _build_head(self, n_features, n_classes, device):
        hidden = tuple(self.hidden_sizes)
        if any(not isinstance(h, Integral) or h < 1 for h in hidden):
            raise ValueError(
                "The 'hidden_sizes' parameter of PretrainedImageClassifier must be a "
                f"tuple of positive ints. Got {self.hidden_sizes!r} instead."
            )
        return NeuralNetClassifier(
            Head,
            module__n_features=n_features,
            module__n_classes=n_classes,
            module__hidden_sizes=hidden,
            module__dropout=self.dropout,
            criterion=nn.CrossEntropyLoss,
            optimizer=torch.optim.AdamW,
            optimizer__weight_decay=self.weight_decay,
            lr=self.lr,
            max_epochs=self.epochs,
            batch_size=self.batch_size,
            train_split=None,
            iterator_train__shuffle=True,
            iterator_train__drop_last=False,
            callbacks=[("sgdr", SGDR(cycle_len=max(self.epochs, 1)))],
            classes=np.arange(n_classes),
            device=str(device),
            verbose=int(self.verbose > 1),
        )

    # -- predict ------------------------------------------------------------

    def _features(self, X):
        check_is_fitted(self, "net_")
        _check_not_empty(X)
        views = tta_views(self.tta) if self.tta else [PLAIN]
        return self.extractor_.transform(
            X, views=views, batch_size=self.feature_batch_size, verbose=self.verbose
        )

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``.

        With ``tta > 0`` the probabilities of the plain view and ``tta``
        augmented views are averaged.
        """
        feats = self._features(X)
        probs = np.mean([self.net_.predict_proba(f) for f in feats], axis=0)
        return probs.astype(np.float64)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable class of each image."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy on ``(X, y)``; labels never seen in ``fit`` count as
        errors (and are named in a warning)."""
        check_is_fitted(self, "net_")
        y_arr = np.asarray(y, dtype=object)
        unseen = [v for v in dict.fromkeys(y_arr.tolist()) if v not in set(self.classes_.tolist())]
        if unseen:
            warnings.warn(
                f"y contains labels not seen during fit: {unseen[:10]}; "
                "those samples count as errors.",
                UserWarning,
                stacklevel=2,
            )
        return super().score(X, y, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.non_deterministic = False
        return tags


def _encode_labels(y, n_samples):
    if y is None:
        raise ValueError("y is required: PretrainedImageClassifier is supervised.")
    y_arr = np.asarray(y, dtype=object) if not isinstance(y, np.ndarray) else y
    if y_arr.ndim == 2 and y_arr.shape[1] == 1:
        warnings.warn(
            "y was passed as a column vector; it is used as a 1-D array of labels.",
            UserWarning,
            stacklevel=3,
        )
        y_arr = y_arr.ravel()
    if y_arr.ndim != 1:
        raise ValueError(f"y must be 1-D (one label per image); got shape {y_arr.shape}.")
    if n_samples == 0:
        raise ValueError("X is empty: at least one image per class is required.")
    if len(y_arr) != n_samples:
        raise ValueError(
            f"X and y have different lengths: {n_samples} images but {len(y_arr)} labels."
        )
    missing = [i for i, v in enumerate(y_arr.tolist()) if _is_missing(v)]
    if missing:
        raise ValueError(
            f"y contains {len(missing)} missing labels (NaN or None), the first at "
            f"index {missing[0]}; drop those images or give them a label."
        )
    if y_arr.dtype.kind == "f" and type_of_target(y_arr) == "continuous":
        raise ValueError(
            "y holds continuous values; PretrainedImageClassifier needs class labels "
            "(strings, ints, or floats with integer values)."
        )
    try:
        classes, encoded = np.unique(y_arr, return_inverse=True)
    except TypeError:
        kinds = sorted({type(v).__name__ for v in y_arr.tolist()})
        raise ValueError(
            f"y mixes label types ({', '.join(kinds)}); use labels of one type."
        ) from None
    if len(classes) < 2:
        raise ValueError(
            f"y has only one class ({classes[0]!r}); a classifier needs at least 2."
        )
    if classes.dtype == object:
        try:
            classes = np.asarray(classes.tolist())
        except Exception:
            pass
        if classes.dtype.kind not in "USifb":
            classes = np.asarray(np.unique(y_arr), dtype=object)
    return classes, encoded.astype(np.int64)


def _is_missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(isinstance(v, (float, np.floating)) and np.isnan(v))
    except TypeError:
        return False


class _seeded:
    """Run a block with torch's global RNG seeded, restoring it afterwards."""

    def __init__(self, seed):
        self.seed = seed

    def __enter__(self):
        self._fork = torch.random.fork_rng(devices=_cuda_devices())
        self._fork.__enter__()
        torch.manual_seed(self.seed)
        return self

    def __exit__(self, *exc):
        return self._fork.__exit__(*exc)


def _cuda_devices():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []

