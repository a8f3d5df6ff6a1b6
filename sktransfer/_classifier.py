"""PretrainedImageClassifier: the fastai transfer-learning recipe as a
scikit-learn classifier, single- or multi-label."""

from __future__ import annotations

import warnings
from numbers import Real

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ._base import RecipeEstimator
from ._labels import (
    COLLECTIONS,
    as_label_list,
    check_hashable,
    encode_labels,
    object_array,
    same_labels,
    tune_thresholds,
)
from ._params import FINITE_NON_NEGATIVE, NONE, InstanceOf, Interval, Options
from ._recipe_doc import RECIPE_PARAMETERS
from ._recipe_rules import RECIPE_RULES
from ._split import plain as _plain
from ._tasks import MultiLabel, SingleLabel


class PretrainedImageClassifier(ClassifierMixin, RecipeEstimator):
    __doc__ = (
        """Image classifier built on a pretrained network, trained the fastai way.

    ``X`` is a sequence of images: file paths, PIL images, or a uint8 array
    ``(n, H, W, 3)``. ``y`` holds one hashable label per image (strings,
    ints, tuples...), or, for multi-label problems, a 0/1 indicator matrix
    ``(n, n_labels)`` or a sequence of label collections (lists or sets, as
    :func:`load_image_csv` returns with ``label_sep``).

    The frozen body's pooled features are computed once per image (and
    cached on disk, shared by clones, folds and grid candidates); a new head
    (BatchNorm, Dropout, Linear) starts on them as a linear probe: a
    penalised logistic regression on the standardised features, its penalty
    chosen by cross-validation, so the default model is at least the linear
    model on the same features. Optional further stages train the head on
    augmented photos, then fine-tune the unfrozen network with SGDR and
    differential learning rates (the fast.ai 2018 recipe), starting from
    there. :func:`sktransfer.make_plan` shows the stages a set of
    parameters gives without training.

    Parameters
    ----------"""
        + RECIPE_PARAMETERS
        + """    class_weight : None, "balanced" or dict, default=None
        Weights of the classes in the loss (single-label ``y``): "balanced"
        weights each class by ``n_samples / (n_classes * count)``; a dict maps
        labels to weights (absent labels weigh 1).
    label_smoothing : float, default=0.0
        Label smoothing of the loss the gradient stages (1-3) and the
        learning-rate sweeps minimise: the target puts ``1 -
        label_smoothing`` on the true class and spreads ``label_smoothing``
        evenly over all classes (Szegedy et al., 2016; for multi-label ``y``
        each label's 0/1 moves ``label_smoothing / 2`` towards 1/2). The
        linear probe, the validation loss, early stopping and the guard
        measure the plain log loss.
    mixup : float, default=0.0
        Mixup (Zhang et al., 2018) in the gradient stages: each training
        batch is blended with a shuffled copy of itself, images or cached
        features and targets alike, at a ratio drawn from ``Beta(mixup,
        mixup)`` (0 turns it off; 0.2-0.4 are usual). The rest of the fit
        (probe, validation, guard, sweeps) sees the photos as they are.
    cutmix : float, default=0.0
        CutMix (Yun et al., 2019) in the stages that train on images: a box
        of each training image is replaced by the same box of another
        image, and the targets mix by the area kept, drawn from
        ``Beta(cutmix, cutmix)`` (0 turns it off; 1.0 is usual). With
        ``mixup`` too, each batch gets one of them at even odds.
    threshold : float or "tuned", default=0.5
        Multi-label ``predict``: a label is predicted when its probability
        reaches this value. ``"tuned"`` gives each label its own threshold
        (``thresholds_``), the one among 0.05, 0.10, ..., 0.95 that
        maximises the label's F1 on the validation images (``X_val``, or
        ``validation_fraction`` of ``X``; one of them is required), with
        the fitted model; a label without a positive validation image keeps
        0.5. Single-label ``y`` ignores it.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels (the column order of ``predict_proba``); for multi-label
        ``y``, the labels of the indicator columns. Every label of ``y`` is in
        it, also that of a class whose images all have ``sample_weight`` 0
        or were skipped (``on_error="skip"``): it keeps its column, with a
        low probability.
    multilabel_ : bool
        Whether ``y`` was multi-label.
    thresholds_ : ndarray of shape (n_classes,)
        With multi-label ``y`` and ``threshold="tuned"``: each label's
        threshold, chosen on the validation images.
    class_count_ : ndarray of shape (n_classes,)
        How many training images of the last ``fit`` have each class (each
        label, for multi-label ``y``), in ``classes_`` order; images held
        out for validation (unless the probe was fitted again on them, a
        ``"refit"`` record in ``history_``), skipped or of weight 0 are not
        counted.
    n_samples_fit_ : int
        The number of images the last ``fit``'s model was trained on,
        counted as ``class_count_``.
    n_features_ : int
        Length of the body's feature vector.
    model_ : torch.nn.Module
        The fitted network as one module: uint8 crops ``(n, H, W, 3)`` (what
        ``preprocess`` returns) -> normalisation, body, pooling, head(s),
        output step, the average over a snapshot ensemble's members -> what
        ``predict_proba`` returns for the plain view (float64).
        ``model_.features(crops)`` and ``model_.head_outputs(features)`` are
        its two parts; save, load and :mod:`sktransfer.export` use it.
    extractor_ : FeatureExtractor
        The feature cache's view of ``model_``'s (last) body: its
        preprocessing, device and cache key; it runs that very module.
    head_ : torch.nn.Module
        The head of the final model (``model_.heads[-1]``): features ->
        logits.
    ensemble_ : list of (extractor, head)
        Read-only view of ``model_``'s members, averaged at prediction time
        (one unless ``snapshot_ensemble``).
    history_ : list of dict
        One record per epoch: fit (1 for the first fit, then counting warm
        starts), stage, epoch, image_size, lrs (per layer group, or per
        block with ``layer_decay``), train_loss, valid_loss, valid_acc
        (valid_f1 for multi-label), seconds.
        The validation columns come from ``X_val`` when ``fit`` gets it, else
        from ``validation_fraction`` (NaN without either). The probe's record
        (stage ``"probe"``, one "epoch", no rates) adds the chosen
        ``penalty``. ``discarded`` is True for the epochs whose weights the
        fitted model does not continue (undone by ``early_stopping``). A
        ``"refit"`` record (as the probe's, without validation columns)
        says that ``early_stopping`` undid every later stage and the probe
        was fitted again on the training and validation images together.
    lr_, unfrozen_lr_ : float or None
        The rates used (found by a sweep when set to ``"auto"``).
    lr_sweeps_ : dict
        The learning-rate sweeps ``fit`` ran, by parameter (``"lr"``,
        ``"unfrozen_lr"``): ``lrs``, ``losses``, ``smoothed_losses``
        (arrays), ``diverged``, ``suggestions`` (rate per rule), ``rule``,
        ``rate`` (the one used) and ``problem`` (why the curve could not
        be read and the default rate was used, or None).
    skipped_ : list
        Images left out with ``on_error="skip"``.

    See Also
    --------
    PretrainedImageRegressor : the same recipe for continuous targets.
    PretrainedFeatures : the frozen body as a transformer, for pipelines
        with any scikit-learn model.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import PretrainedImageClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 255, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> X[4:, ..., 0] = 255  # the second class is red
    >>> y = ["grey"] * 4 + ["red"] * 4
    >>> clf = PretrainedImageClassifier(
    ...     "resnet18", weights=None, image_size=32, cache=None, random_state=0
    ... ).fit(X, y)
    >>> clf.classes_
    array(['grey', 'red'], dtype='<U4')
    >>> clf.predict_proba(X).shape
    (8, 2)
    """
    )

    _parameter_rules = {
        **RECIPE_RULES,
        "class_weight": [Options("balanced"), InstanceOf(dict), NONE],
        "threshold": [Interval(Real, 0, 1, "neither"), Options("tuned")],
        "label_smoothing": [Interval(Real, 0, 1, "left")],
        "mixup": [FINITE_NON_NEGATIVE],
        "cutmix": [FINITE_NON_NEGATIVE],
    }

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
        class_weight=None,
        label_smoothing=0.0,
        mixup=0.0,
        cutmix=0.0,
        threshold=0.5,
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
        self.class_weight = class_weight
        self.label_smoothing = label_smoothing
        self.mixup = mixup
        self.cutmix = cutmix
        self.threshold = threshold
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

    # -- what the engine needs from a classifier ------------------------------------

    def _encode_targets(self, y, n_samples):
        multilabel, classes, encoded = encode_labels(y, n_samples)
        if multilabel and self.class_weight is not None:
            raise ValueError(
                "class_weight applies to single-label y; for multi-label y "
                "pass per-image weights as fit(..., sample_weight=...)."
            )
        return encoded, {"classes_": classes, "multilabel_": multilabel}

    def _fit_task(self, encoded, info, dropped):
        classes = info["classes_"]
        if info["multilabel_"]:
            return MultiLabel(len(classes), self.label_smoothing), {}
        # every class of y keeps its column (as in scikit-learn), even one
        # whose images all weigh 0; but two of them must have images to learn
        present = np.flatnonzero(np.bincount(encoded, minlength=len(classes)))
        if len(present) < 2:
            label = _plain(classes[present[0]])
            raise ValueError(
                f"only one class ({label!r}) has {dropped.kept}; a classifier "
                f"needs images of at least 2 of y's {len(classes)} classes "
                f"{[_plain(c) for c in classes[:20]]}."
            )
        return SingleLabel(len(classes), self.label_smoothing), {}

    def _settings(self):
        settings = super()._settings()
        settings.mixup, settings.cutmix = self.mixup, self.cutmix
        return settings

    def _class_weights(self, encoded, info, rows=None):
        if self.class_weight is None:
            return 1.0
        classes = info["classes_"]
        if self.class_weight == "balanced":
            # scikit-learn's formula over the classes that have images
            counts = np.bincount(encoded, minlength=len(classes))
            n_present = np.count_nonzero(counts)
            per_class = len(encoded) / (n_present * np.maximum(counts, 1))
        else:
            per_class = np.ones(len(classes))
            index = {_plain(c): k for k, c in enumerate(classes.tolist())}
            for label, weight in self.class_weight.items():
                if _plain(label) not in index:
                    raise ValueError(
                        f"class_weight names the label {_plain(label)!r}, which is "
                        f"not in y (classes: {[_plain(c) for c in classes[:20]]})."
                    )
                if not (
                    isinstance(weight, Real) and np.isfinite(weight) and weight >= 0
                ):
                    raise ValueError(
                        f"class_weight[{_plain(label)!r}] must be a number >= 0; "
                        f"got {weight!r}."
                    )
                per_class[index[_plain(label)]] = float(weight)
        return per_class[encoded if rows is None else rows]

    def _encode_validation(self, y_val, n_val, info):
        multilabel, labels, encoded = encode_labels(y_val, n_val, allow_one_class=True)
        classes = info["classes_"]
        if multilabel != info["multilabel_"]:
            kinds = ("single-label", "multi-label")
            raise ValueError(
                f"y_val is {kinds[multilabel]} but y is {kinds[not multilabel]}; "
                "give the validation targets in the form of y."
            )
        if multilabel and (isinstance(y_val, np.ndarray) or hasattr(y_val, "to_numpy")):
            # an indicator matrix: its columns are classes_, in order
            if encoded.shape[1] != len(classes):
                raise ValueError(
                    f"y_val has {encoded.shape[1]} label columns; y has {len(classes)}."
                )
            return encoded
        index = {_plain(c): k for k, c in enumerate(classes.tolist())}
        unseen = [_plain(v) for v in labels.tolist() if _plain(v) not in index]
        if unseen:
            more = f" and {len(unseen) - 10} more" if len(unseen) > 10 else ""
            raise ValueError(
                f"y_val holds labels that are not in y: {unseen[:10]}{more}. The "
                "validation set can only use the classes learned from y "
                f"({[_plain(c) for c in classes[:20]]})."
            )
        remap = np.array([index[_plain(v)] for v in labels.tolist()], dtype=np.int64)
        if not multilabel:
            return remap[encoded]
        out = np.zeros((n_val, len(classes)), dtype=np.int64)
        out[:, remap] = encoded
        return out

    def _same_targets(self, info):
        if info["multilabel_"] != self.multilabel_ or not same_labels(
            info["classes_"], self.classes_
        ):
            return (
                "needs the same classes as the previous fit: had "
                f"{[_plain(c) for c in self.classes_[:20]]}, got "
                f"{[_plain(c) for c in info['classes_'][:20]]}."
            )
        return None

    # -- predict --------------------------------------------------------------------

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``.

        With ``tta > 0`` the probabilities of the plain view and ``tta``
        augmented views are averaged (and over the snapshots of a snapshot
        ensemble). For multi-label ``y``, each column is the independent
        probability of its label.
        """
        proba = self._outputs(X)
        if self.multilabel_:
            return proba
        return proba / proba.sum(axis=1, keepdims=True)  # exact in float64

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable class of each image; for multi-label ``y``, a 0/1
        indicator matrix of the labels whose probability reaches
        ``threshold``."""
        proba = self.predict_proba(X)
        if self.multilabel_:
            return (proba >= self._thresholds()).astype(np.int64)
        return self.classes_[np.argmax(proba, axis=1)]

    def _thresholds(self):
        if self.threshold != "tuned":
            return self.threshold
        if getattr(self, "thresholds_", None) is None:
            raise ValueError(
                "threshold='tuned' uses the thresholds chosen on validation "
                "images in fit, and this model was fitted without them: fit "
                "again with threshold='tuned', or set a number."
            )
        return self.thresholds_

    # -- threshold="tuned": each label's threshold on the validation images -------

    def _reads_validation_after_fit(self, info) -> bool:
        # threshold="tuned" chooses the thresholds on them
        return self.threshold == "tuned" and info["multilabel_"]

    def _check_validation_use(self, info, validated) -> None:
        if self._reads_validation_after_fit(info) and not validated:
            raise ValueError(
                "threshold='tuned' chooses each label's threshold on "
                "validation images: pass X_val and y_val to fit, or set "
                "validation_fraction."
            )

    def _finish(self, prepared, result, seconds):
        before = dict(vars(self))
        super()._finish(prepared, result, seconds)
        if not (self.threshold == "tuned" and self.multilabel_):
            self.__dict__.pop("thresholds_", None)
            return
        data = prepared.data
        # the validation images, but those of weight 0 (as in the valid loss)
        rows = data.valid[data.weights[data.valid].numpy() > 0]
        try:
            if len(rows) == 0:
                self.thresholds_ = np.full(len(self.classes_), 0.5)
                return
            proba = self.predict_proba([data.sources[i] for i in rows])
            self.thresholds_ = tune_thresholds(proba, data.targets[rows].numpy())
        except BaseException:
            vars(self).clear()  # the fit fails as a whole: the old one stays
            vars(self).update(before)
            raise

    def score(self, X, y, sample_weight=None):
        """Mean accuracy on ``(X, y)`` (subset accuracy for multi-label ``y``,
        as scikit-learn defines it). Labels never seen in ``fit`` count as
        errors and are named in a warning."""
        check_is_fitted(self, "head_")
        pred = self.predict(X)
        n = len(pred)
        if self.multilabel_:
            truth, unseen = self._indicator(y, n)
            # a row naming a label the model cannot predict is never right
            correct = np.all(truth == pred, axis=1) & ~unseen
        else:
            truth = object_array(as_label_list(y))
            if len(truth) != len(pred):
                raise ValueError(
                    f"X and y have different lengths: {len(pred)} images but "
                    f"{len(truth)} labels."
                )
            collection = [isinstance(v, COLLECTIONS) for v in truth.tolist()]
            if any(collection):
                i = collection.index(True)
                raise ValueError(
                    "the classifier was fitted on single-label y; score needs one "
                    f"label per image too (y[{i}] is a {type(truth[i]).__name__})."
                )
            check_hashable(truth.tolist())
            known = {_plain(c) for c in self.classes_.tolist()}
            unseen = [
                v for v in dict.fromkeys(truth.tolist()) if _plain(v) not in known
            ]
            if unseen:
                warnings.warn(
                    "y contains labels not seen during fit: "
                    f"{[_plain(v) for v in unseen[:10]]}; those samples count as "
                    "errors.",
                    UserWarning,
                    stacklevel=2,
                )
            correct = np.array(
                [_plain(a) == _plain(b) for a, b in zip(truth.tolist(), pred.tolist())]
            )
        return float(np.average(correct, weights=_score_weights(sample_weight, n)))

    def _indicator(self, y, n):
        """``y`` as an indicator matrix over ``classes_``, and which rows
        carry labels never seen in fit (named in a warning)."""
        multilabel, classes, encoded = encode_labels(y, n, allow_one_class=True)
        if not multilabel:
            raise ValueError(
                "the classifier was fitted on multi-label y; score needs "
                "multi-label y too."
            )
        if isinstance(y, np.ndarray) or hasattr(y, "to_numpy"):
            if encoded.shape[1] != len(self.classes_):
                raise ValueError(
                    f"y has {encoded.shape[1]} label columns; the classifier "
                    f"was fitted on {len(self.classes_)}."
                )
            return encoded, np.zeros(n, dtype=bool)
        out = np.zeros((n, len(self.classes_)), dtype=np.int64)
        unseen = np.zeros(n, dtype=bool)
        unseen_labels = []
        index = {_plain(c): k for k, c in enumerate(self.classes_.tolist())}
        for j, label in enumerate(classes.tolist()):
            if _plain(label) in index:
                out[:, index[_plain(label)]] = encoded[:, j]
            elif encoded[:, j].any():
                unseen |= encoded[:, j].astype(bool)
                unseen_labels.append(_plain(label))
        if unseen_labels:
            hint = ""
            if set(unseen_labels) <= {0, 1}:
                hint = (
                    " (give a 0/1 indicator matrix as a 2-D array: lists of "
                    "lists are read as label collections)"
                )
            warnings.warn(
                f"y contains labels not seen during fit: {unseen_labels[:10]}"
                f"{' and more' if len(unseen_labels) > 10 else ''}; the "
                f"{int(unseen.sum())} samples that carry them count as errors"
                f"{hint}.",
                UserWarning,
                stacklevel=3,
            )
        return out, unseen


def _score_weights(sample_weight, n):
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(
            f"sample_weight must be 1-D with one weight per image ({n}); got shape "
            f"{w.shape}."
        )
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
        raise ValueError(
            "sample_weight must be finite and >= 0 with a positive sum to weight "
            f"the score; got {w[:10].tolist()}{'...' if n > 10 else ''}."
        )
    return w
