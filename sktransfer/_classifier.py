"""PretrainedImageClassifier: the fastai transfer-learning recipe as a
scikit-learn classifier, single- or multi-label."""

from __future__ import annotations

import warnings
from numbers import Real

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted

from ._base import RECIPE_RULES, RecipeEstimator
from ._params import NONE, InstanceOf, Interval, Options
from ._split import plain as _plain
from ._tasks import MultiLabel, SingleLabel

_RECIPE_DOC = """
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
        ``mean``, ``std``, ``interpolation``, ``resize_mode``).
    hidden_sizes : tuple of int, default=()
        Sizes of the head's hidden layers; ``()`` for a linear head (the
        default: on the benchmarks' photo sets a linear head started by the
        probe is as accurate as fastai's head with a hidden layer of 512,
        and never collapses on a few images a class).
    dropout : float, default=0.5
        Dropout before the last Linear layer (half of it before the others).
    head_init : {"auto", "linear_probe", "random"}, default="auto"
        Where the head starts. ``"linear_probe"`` fits its output layer in
        closed form before any other stage: an L2-penalised logistic
        (softmax, or one sigmoid per label) or ridge regression on the
        standardised cached features of the training images, the penalty
        chosen by 3-fold cross-validation among 9 strengths. With a linear
        head (``hidden_sizes=()``) that is the linear model itself, so the
        stages after it fine-tune from where a linear model ends (linear
        probing, then fine-tuning). ``"random"`` starts from a random head.
        ``"auto"`` probes a linear head and starts a head with hidden layers
        at random.
    precompute_epochs : int, default=0
        Stage 1: epochs of the head on the frozen body's precomputed (cached)
        features, one cosine cycle, after the linear probe (if any). 0 skips
        the stage: the probe alone is the default (8 more epochs on top of
        it moved held-out accuracy and log loss only within noise on the
        benchmark sets; a random head needs them).
    augmented_cycles : int, default=0
        Stage 2: SGDR cycles of ``cycle_len`` epochs training the head on
        augmented photos through the frozen body. 0 skips the stage.
    augmented_copies : int, default=4
        Stage 2 trains on the cached features of this many fixed augmented
        copies of each photo (epoch ``e`` sees copy ``e % augmented_copies``;
        only the copies the epochs use are computed). Like the plain
        features, they are computed once and shared by every fold, grid
        candidate and refit. 0 augments afresh on every epoch instead,
        pushing every photo through the body each time.
    unfrozen_cycles : int, default=0
        Stage 3: SGDR cycles with the body unfrozen (the first ``cycle_len``
        epochs long, each next one ``cycle_mult`` times longer), at
        differential learning rates. 0 skips the stage.
    unfreeze_from : {0, 1, 2}, default=0
        First layer group trained in stage 3: 0 unfreezes the whole body, 1
        the middle and late groups, 2 only the late group.
    cycle_len : float, default=1
        Epochs of the first SGDR cycle of stages 2 and 3 (fractions allowed).
    cycle_mult : float, default=1
        Each cycle of stage 3 is ``cycle_mult`` times longer than the last.
    lr : float, "auto" or LRSweep, default=1e-3
        Learning rate of the head (AdamW) in stages 1 and 2. ``"auto"`` runs
        a learning-rate sweep of the head on cached features inside ``fit``;
        an :class:`~sktransfer.callbacks.LRSweep` sets that sweep's range
        and rule (``"auto"`` is ``LRSweep()``).
    unfrozen_lr : float, "auto", LRSweep or tuple of 3 floats, default=1e-4
        Stage 3 rate of the late layer group and the head; earlier groups
        get ``unfrozen_lr / lr_mult`` and ``unfrozen_lr / lr_mult**2``. A
        tuple gives the early, middle and late rates explicitly; ``"auto"``
        or an ``LRSweep`` sweeps it (all unfrozen groups together, at their
        ratios) when stage 3 starts.
    lr_mult : float, default=10
        Ratio between neighbouring layer groups' rates in stage 3.
    augment : {"side_on", "top_down"} or None, default="side_on"
        Augmentation of training photos in stages 2 and 3; TTA views follow
        it. Use None when flips or rotations would change the target.
    max_zoom : float, default=1.1
        Largest random zoom of the augmentation.
    batch_size : int, default=64
        Mini-batch size of training, in every stage (at least 2: the head's
        BatchNorm needs it).
    weight_decay : float, default=1e-2
        Decoupled weight decay (AdamW).
    tta : int, default=0
        Number of augmented views (mirror, zoomed and shifted crops) averaged
        with the plain view at prediction time.
    snapshot_ensemble : bool, default=False
        Keep the model at the end of every SGDR cycle of the last stage and
        average their predictions. Cheap when the last stage trains only the
        head (one feature pass, several heads); when the body was unfrozen,
        every snapshot runs its own body at prediction time.
    validation_fraction : float, default=None
        Hold out this fraction of the training data (stratified for
        single-label classes); its loss and score are recorded per epoch.
        None holds out nothing, unless ``early_stopping=True``, which then
        holds out 0.1 (as scikit-learn's ``MLPClassifier`` does). Validation
        images passed to ``fit`` as ``X_val``, ``y_val`` are used instead
        (giving both is an error).
    early_stopping : bool, default=False
        Stop a stage after ``n_iter_no_change`` epochs without improvement
        of the validation loss by at least ``tol``, and keep its best
        weights; and undo a whole stage whose best validation loss is not
        lower (by ``tol``) than that of the model it started from, so that
        the fit ends with the best stage end: never worse on the validation
        images than the linear probe, when fine-tuning does not pay. The
        validation set is ``fit``'s ``X_val``, or else
        ``validation_fraction`` of the training data (0.1 when that is
        None). ``history_`` marks the epochs undone (``discarded``).
    n_iter_no_change : int, default=3
        With ``early_stopping``: how many epochs in a row a stage may go
        without lowering its best validation loss by at least ``tol``
        before it stops (the stage runs at least ``1 + n_iter_no_change``
        epochs, or all of its epochs if fewer).
    tol : float, default=1e-4
        With ``early_stopping``: the smallest decrease of the validation
        loss that counts as an improvement (absolute, as in scikit-learn's
        ``MLPClassifier``).
    warm_start : bool, default=False
        A new ``fit`` continues from the current head and body weights (the
        linear probe, which starts a new head, is skipped).
    callbacks : list of skorch callbacks, default=None
        skorch callbacks (instances, or ``(name, callback)`` pairs) added to
        the net of every skorch-trained stage, after sktransfer's own: e.g.
        ``ProgressBar``, ``EpochScoring``, ``Checkpoint``, ``TensorBoard``
        or a ``Callback`` subclass of your own. Each stage trains its own
        skorch net and gets fresh deep copies of them, so nothing carries
        over from stage to stage or from fit to fit (the instances given
        are never called; one that cannot be deep-copied, holding an open
        writer, is copied shallowly and shares what it holds); a callback
        sees ``net.history`` of its stage only. The linear probe is fitted
        in closed form, without a net, so callbacks do not see it. A
        stage's net works on the head's raw outputs (logits, or
        standardised targets) and its data sets yield ``(target, weight)``
        pairs as ``y``: an ``EpochScoring`` needs a scoring function of its
        own rather than a scikit-learn scorer name. Numbers a callback
        records in an epoch's ``net.history`` row (an ``EpochScoring``'s
        score) are copied into that epoch's ``history_`` record. A skorch
        ``EarlyStopping`` among them ends the stage as ``early_stopping``
        does, and the fit goes on.
    on_error : {"raise", "skip"}, default="raise"
        What ``fit`` does with images that cannot be read or decoded:
        ``"raise"`` lists them all in one error before training; ``"skip"``
        leaves them out, warns, and lists them in ``skipped_``.
    precision : {"auto", "fp32", "bf16"}, default="auto"
        Numeric precision of the network's matrix work, in feature
        extraction and in every training stage (bf16 autocast; weights,
        optimizer state and losses stay fp32). ``"auto"`` uses bf16 where
        the hardware runs it natively (AVX-512 BF16/AMX CPUs, GPUs with
        bf16 tensor cores: Ampere and later), fp32 elsewhere (also on T4 or
        V100 GPUs, where torch only emulates bf16).
    extract_batch_size : int, default=32
        Images per forward pass of the body when computing features.
    device : str, default="auto"
        ``"auto"`` (CUDA if available, then Apple's MPS, else the CPU),
        ``"cpu"``, ``"cuda"``, ``"mps"``...
    cache : "auto", path or None, default="auto"
        Feature cache directory. ``"auto"`` is ``$SKTRANSFER_CACHE`` or the
        per-user cache folder; None disables it.
    random_state : int, RandomState instance or None, default=None
        Seeds the head's initialisation, shuffling and augmentation. Global
        RNG state is left untouched.
    verbose : int, default=0
        1 shows a progress bar per stage and one summary line per fit; 2
        adds one line per epoch (stage, rates, losses).
"""


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
        + _RECIPE_DOC
        + """    class_weight : None, "balanced" or dict, default=None
        Weights of the classes in the loss (single-label ``y``): "balanced"
        weights each class by ``n_samples / (n_classes * count)``; a dict maps
        labels to weights (absent labels weigh 1).
    threshold : float, default=0.5
        Multi-label ``predict``: a label is predicted when its probability
        reaches this value.

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
    class_count_ : ndarray of shape (n_classes,)
        How many training images of the last ``fit`` have each class (each
        label, for multi-label ``y``), in ``classes_`` order; images held
        out for validation, skipped or of weight 0 are not counted.
    n_samples_fit_ : int
        The number of images the last ``fit`` trained on.
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
        starts), stage, epoch, image_size, lrs (per layer group),
        train_loss, valid_loss, valid_acc (valid_f1 for multi-label), seconds.
        The validation columns come from ``X_val`` when ``fit`` gets it, else
        from ``validation_fraction`` (NaN without either). The probe's record
        (stage ``"probe"``, one "epoch", no rates) adds the chosen
        ``penalty``. ``discarded`` is True for the epochs whose weights the
        fitted model does not continue (undone by ``early_stopping``).
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
        "threshold": [Interval(Real, 0, 1, "neither")],
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
        lr=1e-3,
        unfrozen_lr=1e-4,
        lr_mult=10,
        augment="side_on",
        max_zoom=1.1,
        batch_size=64,
        weight_decay=1e-2,
        tta=0,
        snapshot_ensemble=False,
        class_weight=None,
        threshold=0.5,
        validation_fraction=None,
        early_stopping=False,
        n_iter_no_change=3,
        tol=1e-4,
        warm_start=False,
        callbacks=None,
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
        self.lr = lr
        self.unfrozen_lr = unfrozen_lr
        self.lr_mult = lr_mult
        self.augment = augment
        self.max_zoom = max_zoom
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.tta = tta
        self.snapshot_ensemble = snapshot_ensemble
        self.class_weight = class_weight
        self.threshold = threshold
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.callbacks = callbacks
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
            return MultiLabel(len(classes)), {}
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
        return SingleLabel(len(classes)), {}

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
        if info["multilabel_"] != self.multilabel_ or not _same_labels(
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
            return (proba >= self.threshold).astype(np.int64)
        return self.classes_[np.argmax(proba, axis=1)]

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
            truth = _object_array(_as_label_list(y))
            if len(truth) != len(pred):
                raise ValueError(
                    f"X and y have different lengths: {len(pred)} images but "
                    f"{len(truth)} labels."
                )
            collection = [isinstance(v, _COLLECTIONS) for v in truth.tolist()]
            if any(collection):
                i = collection.index(True)
                raise ValueError(
                    "the classifier was fitted on single-label y; score needs one "
                    f"label per image too (y[{i}] is a {type(truth[i]).__name__})."
                )
            _check_hashable(truth.tolist())
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


# -- labels ---------------------------------------------------------------------------


def encode_labels(y, n_samples, allow_one_class=False):
    """``(multilabel, classes, encoded)`` for a classifier's ``y``.

    Single-label: ``encoded`` holds class indices into the sorted
    ``classes``; every hashable label (tuples too) comes back exactly as
    given. Multi-label (a 0/1 indicator matrix, or a sequence of lists or
    sets of labels): ``encoded`` is the ``(n, n_labels)`` indicator matrix.
    """
    if y is None:
        raise ValueError("y is required: PretrainedImageClassifier is supervised.")
    if hasattr(y, "to_numpy") and getattr(y, "ndim", 1) == 2:
        y = y.to_numpy()
    if isinstance(y, np.ndarray) and y.ndim == 2:
        if y.shape[1] == 1:
            warnings.warn(
                "y was passed as a column vector; it is used as a 1-D array of labels.",
                UserWarning,
                stacklevel=4,
            )
            y = y.ravel()
        else:
            return _indicator_matrix(y, n_samples)
    if isinstance(y, np.ndarray) and y.ndim > 2:
        raise ValueError(f"y must be 1-D (one label per image); got shape {y.shape}.")
    labels = _as_label_list(y)
    _check_length(len(labels), n_samples)
    if labels and all(isinstance(v, _COLLECTIONS) for v in labels):
        return _label_collections(labels, allow_one_class)
    collection = [isinstance(v, _COLLECTIONS) for v in labels]
    if any(collection):
        odd = sum(collection) * 2 < len(collection)  # name one of the fewer kind
        i = collection.index(odd)
        raise ValueError(
            f"y mixes single labels and label collections (y[{i}] is a "
            f"{type(labels[i]).__name__}); give one label per image, or a "
            "collection of labels for every image (multi-label)."
        )
    classes, encoded = _single_labels(labels, allow_one_class)
    return False, classes, encoded


#: What a multi-label y holds per image (a tuple is one label).
_COLLECTIONS = (list, set, frozenset, np.ndarray)


def _check_hashable(labels) -> None:
    for i, v in enumerate(labels):
        try:
            hash(v)
        except TypeError:
            raise ValueError(
                f"y[{i}] is a {type(v).__name__}, which cannot be a label: labels "
                "must be hashable (str, int, tuple...)."
            ) from None


def _as_label_list(y) -> list:
    if isinstance(y, (str, bytes)) or np.isscalar(y):
        raise ValueError(f"y must be a sequence of labels; got {y!r}.")
    if hasattr(y, "to_numpy"):
        y = y.to_numpy()
    if isinstance(y, np.ndarray) and y.ndim == 1 and y.dtype != object:
        return [_plain(v) for v in y]
    try:
        return list(y)
    except TypeError:
        raise ValueError(
            f"y must be a sequence of labels; got {type(y).__name__}."
        ) from None


def _check_length(n_labels, n_samples):
    if n_labels != n_samples:
        raise ValueError(
            f"X and y have different lengths: {n_samples} images but {n_labels} labels."
        )


def _object_array(values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _single_labels(labels, allow_one_class):
    missing = [i for i, v in enumerate(labels) if _is_missing(v)]
    if missing:
        raise ValueError(
            f"y contains {len(missing)} missing labels (NaN or None), the first at "
            f"index {missing[0]}; drop those images or give them a label."
        )
    # only numbers can be continuous; other labels (tuples of any length
    # included) are hashable objects, never an array
    numbers = [v for v in labels if isinstance(v, Real)]
    if numbers and len(numbers) == len(labels):
        values = np.asarray(numbers, dtype=np.float64)
        if type_of_target(values) == "continuous":
            raise ValueError(
                "y holds continuous values; PretrainedImageClassifier needs class "
                "labels (strings, ints, or floats with integer values). For "
                "continuous targets use PretrainedImageRegressor."
            )
    _check_hashable(labels)
    try:
        unique = sorted(set(labels))
    except TypeError:
        kinds = sorted({type(v).__name__ for v in labels})
        raise ValueError(
            f"y mixes label types ({', '.join(kinds)}); use labels of one type."
        ) from None
    if len(unique) < 2 and not allow_one_class:
        label = unique[0] if unique else None
        raise ValueError(
            f"y has only one class ({label!r}); a classifier needs at least 2."
        )
    classes = _class_array(unique)
    index = {v: k for k, v in enumerate(unique)}
    encoded = np.array([index[v] for v in labels], dtype=np.int64)
    return classes, encoded


def _class_array(unique) -> np.ndarray:
    """Labels as an array of their natural dtype (strings, ints...), or an
    object array when they are not scalars (tuples) or do not round-trip."""
    if all(isinstance(v, (str, int, float, bool, np.generic)) for v in unique):
        arr = np.asarray(unique)
        if arr.ndim == 1 and [_plain(v) for v in arr] == list(unique):
            return arr
    return _object_array(unique)


def _same_labels(a, b) -> bool:
    return len(a) == len(b) and all(
        _plain(x) == _plain(y) for x, y in zip(a.tolist(), b.tolist())
    )


def _indicator_matrix(y, n_samples):
    _check_length(len(y), n_samples)
    values = np.asarray(y)
    if values.dtype.kind not in "biuf" or not np.isin(values, (0, 1)).all():
        raise ValueError(
            "a 2-D y must be a 0/1 indicator matrix (n_images, n_labels) for "
            f"multi-label classification; got values of dtype {values.dtype} "
            "outside {0, 1}."
        )
    if values.shape[1] < 2:
        raise ValueError("a multi-label y needs at least 2 label columns.")
    return True, np.arange(values.shape[1]), values.astype(np.int64)


def _label_collections(labels, allow_one_class=False):
    flat = [_plain(v) for row in labels for v in row]
    missing = [v for v in flat if _is_missing(v)]
    if missing:
        raise ValueError("y holds a missing label (NaN or None) inside a collection.")
    try:
        unique = sorted(set(flat))
    except TypeError:
        raise ValueError("y's label collections mix label types.") from None
    if len(unique) < 2 and not allow_one_class:
        raise ValueError(
            f"multi-label y names fewer than 2 labels ({unique}); a classifier "
            "needs at least 2."
        )
    index = {v: k for k, v in enumerate(unique)}
    encoded = np.zeros((len(labels), len(unique)), dtype=np.int64)
    for i, row in enumerate(labels):
        for v in row:
            encoded[i, index[_plain(v)]] = 1
    return True, _class_array(unique), encoded


def _is_missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(isinstance(v, (float, np.floating)) and np.isnan(v))
    except TypeError:
        return False
