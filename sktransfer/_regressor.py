"""PretrainedImageRegressor: the fastai transfer-learning recipe for
continuous targets."""

from __future__ import annotations

import numpy as np
from sklearn.base import RegressorMixin

from ._base import RecipeEstimator
from ._recipe_doc import RECIPE_PARAMETERS
from ._tasks import Regression


class PretrainedImageRegressor(RegressorMixin, RecipeEstimator):
    __doc__ = (
        """Image regressor built on a pretrained network, trained the fastai way.

    ``X`` is a sequence of images (file paths, PIL images, or a uint8 array
    ``(n, H, W, 3)``); ``y`` holds one number per image, or a row of numbers
    per image ``(n, n_targets)`` for several targets. Targets are
    standardised inside, in float64 (the head learns zero-mean,
    unit-variance targets with a squared-error loss); ``predict`` returns
    the original units in float64, so that targets far from 0 (``1e9 + k``)
    keep their units digit.

    The recipe is the classifier's: the head starts as a linear probe (a
    ridge regression on the standardised cached features, its penalty
    chosen by cross-validation, so the default model is the ridge model on
    the same features), then optional epochs on precomputed features,
    augmented SGDR cycles, unfreezing with differential learning rates, TTA
    averaging, snapshot ensembles, learning-rate sweeps. Choose ``augment``
    (and so the TTA views) so that no transform changes the target: a
    mirror negates a rotation angle, for instance; ``augment=None`` keeps
    only zooms and shifts.

    Parameters
    ----------"""
        + RECIPE_PARAMETERS
        + """
    Attributes
    ----------
    n_outputs_ : int
        Number of targets.
    target_mean_, target_scale_ : ndarray of shape (n_outputs,)
        The standardisation of the targets: their mean and standard
        deviation over the images that train (weight > 0, readable).
    n_features_ : int
        Length of the body's feature vector.
    model_ : torch.nn.Module
        The fitted network as one module: uint8 crops ``(n, H, W, 3)`` (what
        ``preprocess`` returns) -> normalisation, body, pooling, head(s),
        output step, the average over a snapshot ensemble's members -> what
        ``predict`` returns for the plain view (float64).
        ``model_.features(crops)`` and ``model_.head_outputs(features)`` are
        its two parts; save, load and :mod:`sktransfer.export` use it.
    extractor_ : FeatureExtractor
        The feature cache's view of ``model_``'s (last) body: its
        preprocessing, device and cache key; it runs that very module.
    head_ : torch.nn.Module
        The head of the final model (``model_.heads[-1]``): features ->
        standardised targets.
    ensemble_ : list of (extractor, head)
        Read-only view of ``model_``'s members, averaged at prediction time
        (one unless ``snapshot_ensemble``).
    history_ : list of dict
        One record per epoch (fit, stage, epoch, image_size, lrs, train_loss,
        valid_loss, valid_r2, seconds, discarded), as the classifier's.
    lr_, unfrozen_lr_ : float or None
        The rates used (found by a sweep when set to ``"auto"``).
    lr_sweeps_ : dict
        The learning-rate sweeps ``fit`` ran, as the classifier's.
    n_samples_fit_ : int
        The number of images the last ``fit``'s model was trained on (not
        those held out for validation, unless the probe was fitted again
        on them, a ``"refit"`` record in ``history_``; nor those skipped or
        of weight 0).
    skipped_ : list
        Images left out with ``on_error="skip"``.

    See Also
    --------
    PretrainedImageClassifier : the same recipe for labels.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import PretrainedImageRegressor
    >>> rng = np.random.default_rng(0)
    >>> y = np.linspace(0, 1, 8)
    >>> X = np.stack([np.full((32, 32, 3), int(v * 255), np.uint8) for v in y])
    >>> reg = PretrainedImageRegressor(
    ...     "resnet18", weights=None, image_size=32, cache=None, random_state=0
    ... ).fit(X, y)
    >>> reg.predict(X).shape
    (8,)
    """
    )

    def __init__(
        self,
        backbone="resnet34",
        *,
        weights="DEFAULT",
        image_size=None,
        preprocessing=None,
        hidden_sizes=(),
        dropout=0.5,
        head_init="auto",
        precompute_epochs=0,
        augmented_cycles=0,
        augmented_copies=4,
        unfrozen_cycles=0,
        unfreeze_from=0,
        cycle_len=1,
        cycle_mult=1,
        schedule="sgdr",
        lr=1e-3,
        unfrozen_lr=1e-4,
        lr_mult=10,
        layer_decay=None,
        augment="side_on",
        max_zoom=1.1,
        batch_size=64,
        weight_decay=1e-2,
        ema_decay=None,
        tta=0,
        snapshot_ensemble=False,
        validation_fraction=None,
        early_stopping=False,
        n_iter_no_change=3,
        tol=1e-4,
        warm_start=False,
        callbacks=None,
        checkpoint_dir=None,
        on_error="raise",
        precision="auto",
        extract_batch_size=32,
        device="auto",
        cache="auto",
        random_state=None,
        verbose=0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.preprocessing = preprocessing
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.head_init = head_init
        self.precompute_epochs = precompute_epochs
        self.augmented_cycles = augmented_cycles
        self.augmented_copies = augmented_copies
        self.unfrozen_cycles = unfrozen_cycles
        self.unfreeze_from = unfreeze_from
        self.cycle_len = cycle_len
        self.cycle_mult = cycle_mult
        self.schedule = schedule
        self.lr = lr
        self.unfrozen_lr = unfrozen_lr
        self.lr_mult = lr_mult
        self.layer_decay = layer_decay
        self.augment = augment
        self.max_zoom = max_zoom
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.ema_decay = ema_decay
        self.tta = tta
        self.snapshot_ensemble = snapshot_ensemble
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.callbacks = callbacks
        self.checkpoint_dir = checkpoint_dir
        self.on_error = on_error
        self.precision = precision
        self.extract_batch_size = extract_batch_size
        self.device = device
        self.cache = cache
        self.random_state = random_state
        self.verbose = verbose

    # -- what the engine needs from a regressor -------------------------------------

    def _encode_targets(self, y, n_samples):
        values = check_targets(y, n_samples)
        info = {"n_outputs_": values.shape[1], "_y_ndim": 1 if np.ndim(y) == 1 else 2}
        return values, info

    def _encode_validation(self, y_val, n_val, info):
        values = check_targets(y_val, n_val)
        if values.shape[1] != info["n_outputs_"]:
            raise ValueError(
                f"y_val has {values.shape[1]} target columns; y has "
                f"{info['n_outputs_']}."
            )
        return values

    def _fit_task(self, encoded, info, dropped):
        # the standardisation is that of the images that train, in float64
        with np.errstate(over="ignore", invalid="ignore"):
            mean = encoded.mean(axis=0)
            scale = _std(encoded, mean)
        of = f" ({dropped})" if dropped else ""
        huge = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(scale)))
        if len(huge):
            j = huge[0]
            which = "y" if encoded.shape[1] == 1 else f"target column {j} of y"
            top = np.abs(encoded[:, j]).max()
            raise ValueError(
                f"the mean or standard deviation of {which}{of} is not finite in "
                f"float64: its values reach {top:.3g}. Divide y by a constant "
                "(a power of 10) before fit and multiply the predictions by it."
            )
        constant = np.flatnonzero(scale == 0)
        if len(constant):
            which = "y" if encoded.shape[1] == 1 else f"target column {constant[0]}"
            raise ValueError(
                f"{which} has the same value for every image{of}; there is "
                "nothing to learn."
            )
        task = Regression(encoded.shape[1], mean, scale, info["_y_ndim"] == 1)
        return task, {"target_mean_": mean, "target_scale_": scale}

    def _same_targets(self, info):
        if info["n_outputs_"] != self.n_outputs_:
            return (
                f"needs as many targets as the previous fit ({self.n_outputs_}); "
                f"got {info['n_outputs_']}."
            )
        return None

    def predict(self, X):
        """Predicted targets in their original units: shape ``(n,)`` when
        ``y`` was 1-D, else ``(n, n_outputs_)``. With ``tta > 0`` the
        predictions of the plain view and ``tta`` augmented views are
        averaged (and over the snapshots of a snapshot ensemble)."""
        return self._outputs(X)

    def score(self, X, y, sample_weight=None):
        """R² of ``predict(X)`` against ``y`` (averaged over targets), as
        scikit-learn's ``r2_score`` gives it. It is computed on standardised
        values (R² does not change when ``y`` and the predictions are shifted
        and scaled alike), so that targets of any size (``1e12 + k``, a
        spread of ``1e200``) give a finite, exact score."""
        from sklearn.metrics import r2_score

        pred = self.predict(X)
        truth = check_targets(y, len(pred))
        pred = pred.reshape(len(pred), -1)
        if truth.shape[1] != pred.shape[1]:
            raise ValueError(
                f"y has {truth.shape[1]} target columns; the regressor was fitted "
                f"on {pred.shape[1]}."
            )
        mean, scale = self.target_mean_, self.target_scale_
        return float(
            r2_score(
                (truth - mean) / scale,
                (pred - mean) / scale,
                sample_weight=sample_weight,
            )
        )


def _std(values, mean) -> np.ndarray:
    """Standard deviation per column, computed on the deviations divided by
    their largest size, so that its square neither underflows (targets of
    1e-300) nor overflows (a spread of 1e200)."""
    deviations = values - mean
    size = np.abs(deviations).max(axis=0)
    safe = np.where(size > 0, size, 1.0)
    return (deviations / safe).std(axis=0) * size


def check_targets(y, n_samples) -> np.ndarray:
    """``y`` as a finite float64 ``(n, n_targets)`` array, or a clear error."""
    if y is None:
        raise ValueError("y is required: PretrainedImageRegressor is supervised.")
    if hasattr(y, "to_numpy"):
        y = y.to_numpy()
    try:
        values = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            "y must hold numbers for a regressor (for labels use "
            "PretrainedImageClassifier)."
        ) from None
    given = np.asarray(y)
    if given.dtype.kind in "iu" and given.size:
        with np.errstate(invalid="ignore"):  # 2**63 has no int64
            back = values.astype(given.dtype)
        lost = np.flatnonzero((back != given).ravel())
        if len(lost):
            row = np.unravel_index(lost[0], given.shape)[0]
            raise ValueError(
                f"y holds integers that float64 cannot hold exactly (row {row}: "
                f"{given.ravel()[lost[0]]}, beyond 2**53); subtract an offset "
                "from y before fit and add it to the predictions."
            )
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(
            f"y must be 1-D or 2-D (n_images, n_targets); got shape {values.shape}."
        )
    if len(values) != n_samples:
        raise ValueError(
            f"X and y have different lengths: {n_samples} images but "
            f"{len(values)} targets."
        )
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if len(bad):
        raise ValueError(
            f"y holds {len(bad)} non-finite values (NaN or inf), the first in row "
            f"{bad[0]}; drop those images or give them a value."
        )
    return values
