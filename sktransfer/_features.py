"""Frozen-body features of images: the precompute step, as a transformer.

:class:`PretrainedFeatures` is the public transformer; the parameters it
shares with the estimators, and the check of those read after ``fit``, are
here too. The work is done by :class:`~sktransfer._extractor.FeatureExtractor`.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._cache import FeatureCache
from ._devices import check_device_name
from ._extractor import build_extractor
from ._params import NONE, PATH, VERBOSE, InstanceOf, Interval, Options, validate
from ._transforms import MAX_CROP_SIZE, PLAIN, tta_views

#: The parameters that ``transform``, ``predict`` and ``predict_proba`` read
#: (beyond what ``fit`` built): checked there too, with ``fit``'s messages.
USED_AFTER_FIT = (
    "extract_batch_size",
    "tta",
    "augment",
    "threshold",
    "verbose",
    "device",
)


def check_parameters_in_use(estimator) -> None:
    """Check the parameters a fitted estimator reads when it predicts.

    ``set_params`` after ``fit`` is allowed, so a value set then is checked
    where it is used, with the same scikit-learn validation and message as
    in ``fit`` (never a raw error, or worse, features never computed). The
    device name is checked as ``fit`` checks it; whether this machine has
    that device is not (the fitted body stays where it was loaded).
    """
    names = [n for n in USED_AFTER_FIT if n in type(estimator)._parameter_rules]
    validate(estimator, names)
    if "device" in names:
        check_device_name(estimator.device)


#: The rules of the parameters that every estimator shares (see ``_params``).
FEATURE_RULES = {
    "backbone": [InstanceOf(str)],
    "weights": [PATH, NONE],
    "image_size": [Interval(Integral, 16, MAX_CROP_SIZE, "both"), NONE],
    "preprocessing": [InstanceOf(dict), NONE],
    "precision": [Options("auto", "fp32", "bf16", "fp16")],
    "device": [InstanceOf(str), NONE],
    "cache": [PATH, InstanceOf(FeatureCache), NONE],
}


class PretrainedFeatures(TransformerMixin, BaseEstimator):
    """Pooled features of a frozen pretrained network, as a transformer.

    Turns images into a ``(n_samples, n_features)`` float32 array that any
    scikit-learn model can learn from. Features are cached per image, so a
    pipeline refitted in cross-validation or a grid search runs the network
    once per image.

    Parameters
    ----------
    backbone : str, default="resnet34"
        A torchvision classification model name or ``"timm:NAME"``.
    weights : str, path-like or None, default="DEFAULT"
        ``"DEFAULT"``, a torchvision weights name, a path to a local
        state_dict file, or None for random initialisation.
    image_size : int, default=None
        Side of the square network input; None uses the weights' preset.
    preprocessing : dict, default=None
        Overrides of the weights' preset: ``resize_size``, ``crop_size``
        (ints >= 1), ``mean``, ``std`` (three numbers each, for pixels
        scaled to [0, 1]; std > 0), ``interpolation`` (``"bilinear"``,
        ``"bicubic"``, ``"nearest"``, ``"lanczos"``) and ``resize_mode``:
        ``"crop"`` (default: resize the short side, cut the centre square),
        ``"squish"`` (the whole picture, stretched to the square) or
        ``"pad"`` (the whole picture, fitted inside the square and padded
        with the mean colour). Each setting has its own cache entries.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        ``"auto"`` uses bf16 autocast where the hardware runs it natively,
        fp16 autocast on CUDA GPUs without native bf16 (T4, V100), fp32
        elsewhere.
    extract_batch_size : int, default=32
        Images per forward pass of the body.
    device : str, default="auto"
        ``"auto"`` picks CUDA when available, then Apple's MPS, else the
        CPU; else a torch
        device name that exists here (``"cpu"``, ``"cuda"``, ``"cuda:1"``,
        ``"mps"``).
    cache : "auto", path, FeatureCache or None, default="auto"
        Feature cache location: ``"auto"`` is ``$SKTRANSFER_CACHE`` or the
        per-user cache folder (private to the user; a private temporary
        folder when there is no usable home); None disables caching. A
        cache that cannot be used gives a ``CacheWarning``, never an error;
        an empty string is refused.
    tta : int, default=0
        When > 0, ``transform`` returns the mean of the features of the
        plain view and ``tta`` augmented views.
    verbose : int, default=0
        Show a progress bar while computing.

    Attributes
    ----------
    n_features_out_ : int
        Length of each feature vector.
    preprocessing_ : Preprocessing
        The preset used.

    Examples
    --------
    A tiny random-weights network keeps the example fast; use pretrained
    weights (``"DEFAULT"`` or a local file) for real features.

    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sktransfer import PretrainedFeatures
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 255, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> X[4:, ..., 0] = 255  # the second class is red
    >>> y = ["grey"] * 4 + ["red"] * 4
    >>> features = PretrainedFeatures(
    ...     "resnet18", weights=None, image_size=32, cache=None
    ... )
    >>> features.fit_transform(X).shape
    (8, 512)
    >>> model = make_pipeline(features, LogisticRegression(max_iter=1000))
    >>> model.fit(X, y).score(X, y)
    1.0
    """

    _parameter_rules = {
        **FEATURE_RULES,
        "extract_batch_size": [Interval(Integral, 1, None, "left")],
        "tta": [Interval(Integral, 0, None, "left")],
        "verbose": [VERBOSE],
    }

    def __init__(
        self,
        backbone="resnet34",
        *,
        weights="DEFAULT",
        image_size=None,
        preprocessing=None,
        precision="auto",
        extract_batch_size=32,
        device="auto",
        cache="auto",
        tta=0,
        verbose=0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.preprocessing = preprocessing
        self.precision = precision
        self.extract_batch_size = extract_batch_size
        self.device = device
        self.cache = cache
        self.tta = tta
        self.verbose = verbose

    def fit(self, X=None, y=None):
        """Load the backbone. ``X`` and ``y`` are not used."""
        validate(self)
        self.extractor_ = build_extractor(self)
        self.n_features_out_ = self.extractor_.n_features
        self.preprocessing_ = self.extractor_.preprocessing
        return self

    def transform(self, X):
        """Return the ``(n_samples, n_features_out_)`` float32 features."""
        check_is_fitted(self, "extractor_")
        check_parameters_in_use(self)
        _check_not_empty(X)
        views = tta_views(self.tta) if self.tta else [PLAIN]
        feats = self.extractor_.transform(
            X, views=views, batch_size=self.extract_batch_size, verbose=self.verbose
        )
        return feats.mean(axis=0) if len(views) > 1 else feats[0]

    def preprocess(self, X):
        """The uint8 network inputs of ``X``, as the body sees them.

        Each image is decoded, rotated by its EXIF orientation, converted to
        RGB, resized and centre-cropped with the preprocessing (the weights'
        preset, ``image_size`` and ``preprocessing``): the plain view, the
        pixels ``transform`` uses. This is the input of the module of
        :func:`sktransfer.export.to_torch` and of the exported files.

        Parameters
        ----------
        X : sequence of paths, PIL images, or uint8 array ``(n, H, W[, 3])``

        Returns
        -------
        batch : ndarray of shape (n, crop_size, crop_size, 3), uint8

        Examples
        --------
        >>> import numpy as np
        >>> from sktransfer import PretrainedFeatures
        >>> features = PretrainedFeatures(
        ...     "resnet18", weights=None, image_size=32, cache=None
        ... ).fit()
        >>> photos = np.zeros((2, 48, 64, 3), dtype=np.uint8)
        >>> batch = features.preprocess(photos)
        >>> batch.shape, batch.dtype
        ((2, 32, 32, 3), dtype('uint8'))
        """
        check_is_fitted(self, "extractor_")
        return self.extractor_.preprocess(X)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "extractor_")
        return np.asarray(
            [f"feature{i}" for i in range(self.n_features_out_)], dtype=object
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.requires_fit = True
        return tags


def _check_not_empty(X):
    try:
        n = len(X)
    except TypeError:
        return
    if n == 0:
        raise ValueError("X is empty: at least one image is required.")
