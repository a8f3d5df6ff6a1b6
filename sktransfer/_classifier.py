"""PretrainedImageClassifier: the fastai transfer-learning recipe as a
scikit-learn classifier."""

from __future__ import annotations

import copy
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, check_random_state
from skorch.callbacks import EarlyStopping
from skorch.dataset import Dataset
from skorch.helper import predefined_split
from torch import nn

from ._features import (
    _COMMON_CONSTRAINTS,
    _check_not_empty,
    build_extractor,
    check_decodable,
    image_fingerprints,
    raise_bad_images,
)
from ._finetune import (
    GroupedNet,
    ImageDataset,
    TransferNet,
    adamw_options,
    group_parameters,
    set_trainable,
)
from ._head import Head
from ._images import as_image_list
from ._lr_finder import dataset_batches, feature_batches, lr_sweep, suggest_lrs
from ._transforms import AUGMENTATIONS, PLAIN, tta_views
from .callbacks import SGDR


class PretrainedImageClassifier(ClassifierMixin, BaseEstimator):
    """Image classifier built on a pretrained network, trained the fastai way.

    ``X`` is a sequence of images: file paths, PIL images, or a uint8 array
    ``(n, H, W, 3)``; ``y`` holds any hashable labels. The frozen body's
    pooled features are computed once per image (and cached on disk, shared
    by clones, folds and grid candidates); a new head of BatchNorm, Dropout
    and Linear layers is trained on them with Adam and cosine annealing.
    Optional further stages train the head on augmented photos, then
    fine-tune the unfrozen network with SGDR and differential learning
    rates (the fast.ai 2018 recipe); see :meth:`fit`.

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
        Run stage 1: train the head on cached features of the frozen body.
        With False the head starts on augmented images (stage 2).
    hidden_sizes : tuple of int, default=(512,)
        Sizes of the head's hidden layers; ``()`` for a linear head.
    dropout : float, default=0.5
        Dropout before the last Linear layer (half of it before the others).
    lr : float or "auto", default=1e-3
        Learning rate of the head (AdamW) in stages 1 and 2. ``"auto"`` runs
        the learning-rate finder on the training data inside ``fit``.
    epochs : int, default=8
        Stage 1: epochs on precomputed features, one cosine cycle.
    n_cycles : int, default=0
        Stage 2: SGDR cycles of ``cycle_len`` epochs training the head on
        augmented images through the frozen body.
    cycle_len : float, default=1
        Epochs of the first SGDR cycle of stages 2 and 3 (fractions allowed).
    cycle_mult : float, default=1
        Stage 3: each cycle is ``cycle_mult`` times longer than the last.
    unfreeze : bool or int, default=False
        Stage 3 trains the body too: True unfreezes every layer group, an
        int ``k`` only groups ``k`` and later (0 early, 1 middle, 2 late).
    unfrozen_cycles : int, default=0
        Stage 3: number of SGDR cycles with the body unfrozen.
    finetune_lr : float or "auto", default=1e-4
        Stage 3 learning rate of the late group and the head.
    lr_mult : float or tuple of 3 floats, default=10
        Ratio between neighbouring layer groups' rates (``10`` gives
        ``[lr/100, lr/10, lr]``), or explicit rates for the early, middle and
        late groups.
    augment : {"side_on", "top_down"} or None, default="side_on"
        Augmentation of training images in stages 2 and 3.
    max_zoom : float, default=1.1
        Largest random zoom of the augmentation.
    batch_size : int, default=64
        Mini-batch size of head training.
    weight_decay : float, default=1e-2
        Decoupled weight decay (AdamW).
    tta : int, default=0
        Number of augmented views (mirror, zoomed and shifted crops)
        averaged with the plain view in ``predict_proba``.
    validation_fraction : float, default=None
        Hold out this stratified fraction of the training data; its loss and
        accuracy are recorded per epoch in ``history_``.
    early_stopping : bool, default=False
        With a validation fraction, stop a stage after 3 epochs without
        improvement of the validation loss and keep its best weights.
    warm_start : bool, default=False
        A new ``fit`` continues from the current head and body weights.
    on_error : {"raise", "skip"}, default="raise"
        What ``fit`` does with images that cannot be read or decoded:
        ``"raise"`` lists them all in one error before training; ``"skip"``
        leaves them out, warns, and lists them in ``skipped_``.
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
        The trained head (on pooled features of ``extractor_``'s body).
    history_ : list of dict
        One record per epoch: stage (``"precomputed"``, ``"augmented"``,
        ``"unfrozen"``), epoch, lrs (per layer group), train_loss,
        valid_loss, valid_acc, seconds.
    lr_, finetune_lr_ : float or None
        The rates used (found by the finder when set to ``"auto"``).
    skipped_ : list
        Images left out with ``on_error="skip"``.

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
    >>> clf.fit(train_paths, train_labels)  # doctest: +SKIP
    >>> clf.score(test_paths, test_labels)  # doctest: +SKIP
    0.98...
    """

    _parameter_constraints = {
        **_COMMON_CONSTRAINTS,
        "precompute": ["boolean"],
        "hidden_sizes": [tuple, list],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "epochs": [Interval(Integral, 0, None, closed="left")],
        "n_cycles": [Interval(Integral, 0, None, closed="left")],
        "cycle_len": [Interval(Real, 0, None, closed="neither")],
        "cycle_mult": [Interval(Real, 1, None, closed="left")],
        "unfreeze": ["boolean", Interval(Integral, 0, None, closed="left")],
        "unfrozen_cycles": [Interval(Integral, 0, None, closed="left")],
        "finetune_lr": [
            Interval(Real, 0, None, closed="neither"),
            StrOptions({"auto"}),
        ],
        "lr_mult": [Interval(Real, 1, None, closed="left"), tuple, list],
        "augment": [StrOptions(set(AUGMENTATIONS)), None],
        "max_zoom": [Interval(Real, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "tta": [Interval(Integral, 0, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
        "early_stopping": ["boolean"],
        "warm_start": ["boolean"],
        "on_error": [StrOptions({"raise", "skip"})],
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
        n_cycles=0,
        cycle_len=1,
        cycle_mult=1,
        unfreeze=False,
        unfrozen_cycles=0,
        finetune_lr=1e-4,
        lr_mult=10,
        augment="side_on",
        max_zoom=1.1,
        batch_size=64,
        weight_decay=1e-2,
        tta=0,
        validation_fraction=None,
        early_stopping=False,
        warm_start=False,
        on_error="raise",
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
        self.n_cycles = n_cycles
        self.cycle_len = cycle_len
        self.cycle_mult = cycle_mult
        self.unfreeze = unfreeze
        self.unfrozen_cycles = unfrozen_cycles
        self.finetune_lr = finetune_lr
        self.lr_mult = lr_mult
        self.augment = augment
        self.max_zoom = max_zoom
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.tta = tta
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.warm_start = warm_start
        self.on_error = on_error
        self.precision = precision
        self.feature_batch_size = feature_batch_size
        self.device = device
        self.cache = cache
        self.random_state = random_state
        self.verbose = verbose

    # -- fit ----------------------------------------------------------------

    def fit(self, X, y):
        """Train the classifier on images ``X`` with labels ``y``.

        An error or a KeyboardInterrupt leaves the estimator as it was
        before the call (unfitted, or with its previous fit); the feature
        cache keeps every batch computed before it.

        The stages of the recipe run in order; a stage whose count is 0 is
        skipped:

        1. ``epochs`` epochs of the head on the body's precomputed (cached)
           features (when ``precompute=True``);
        2. ``n_cycles`` SGDR cycles of ``cycle_len`` epochs of the head on
           augmented images through the frozen body;
        3. with ``unfreeze`` set, ``unfrozen_cycles`` SGDR cycles (the first
           ``cycle_len`` epochs long, each next one ``cycle_mult`` times
           longer) of the unfrozen layer groups with differential rates.

        Every image is checked (and its features computed or read from the
        cache) before any training starts; all images that cannot be read
        are reported together in one error.
        """
        scratch = ("lr_", "finetune_lr_", "_seed")
        saved = {k: self.__dict__[k] for k in scratch if k in self.__dict__}
        try:
            return self._fit(X, y)
        except BaseException:
            for k in scratch:
                self.__dict__.pop(k, None)
            self.__dict__.update(saved)
            raise

    def _fit(self, X, y):
        self._validate_params()
        sources = as_image_list(X)
        classes, y_encoded = _encode_labels(y, len(sources))
        bad: dict = {}
        fingerprints = image_fingerprints(sources, bad)
        self._group_lrs(1.0)  # validates lr_mult before any work
        continuing = self.warm_start and hasattr(self, "net_")
        extractor = self._make_extractor(continuing)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(0, 2**31 - 1))
        self._seed = seed
        self.lr_ = None if self.lr == "auto" else float(self.lr)
        self.finetune_lr_ = (
            None if self.finetune_lr == "auto" else float(self.finetune_lr)
        )
        if (
            continuing
            and self.lr == "auto"
            and not (self.precompute and self.epochs > 0)
        ):
            self.lr_ = float(self.net_.group_lrs[-1])  # the rate found before
        features = None
        raising = self.on_error == "raise"
        if self.precompute and self.epochs > 0:
            features = extractor.transform(
                sources,
                views=[PLAIN],
                batch_size=self.feature_batch_size,
                verbose=self.verbose,
                fingerprints=fingerprints,
                bad=bad,
                raise_errors=raising,
            )[0]
        else:  # training reads the images later: check them all now
            check_decodable(
                sources, fingerprints, bad, extractor.preprocessing.resize_size
            )
        skipped = []
        if bad:
            if raising:
                raise_bad_images(bad, len(sources))
            skipped = [
                sources[i] if isinstance(sources[i], str) else i for i in sorted(bad)
            ]
            keep = [i for i in range(len(sources)) if i not in bad]
            warnings.warn(
                f"on_error='skip': {len(bad)} of {len(sources)} images could not "
                "be used and were left out of training (listed in skipped_):\n"
                + "\n".join(f"  {bad[i]}" for i in sorted(bad)[:20]),
                UserWarning,
                stacklevel=3,
            )
            sources = [sources[i] for i in keep]
            fingerprints = [fingerprints[i] for i in keep]
            if features is not None:
                features = features[keep]
            classes, y_encoded = _encode_labels(classes[y_encoded[keep]], len(keep))
        if continuing and not np.array_equal(classes, self.classes_):
            raise ValueError(
                "warm_start=True needs the same classes as the previous fit: "
                f"had {self.classes_.tolist()}, got {classes.tolist()}."
            )
        train_idx, valid_idx = self._split(y_encoded, seed)
        history = list(self.history_) if continuing else []
        with _seeded(seed):
            net = (
                copy.deepcopy(self.net_)
                if continuing
                else self._build_head(
                    extractor.n_features, len(classes), extractor.device
                )
            )
            if not continuing:
                net.initialize()
            if features is not None:
                self._fit_head_on_features(
                    net,
                    features,
                    y_encoded,
                    train_idx,
                    valid_idx,
                    history,
                    extractor.device,
                )
            image_stages = self.n_cycles > 0 or (
                self.unfreeze is not False and self.unfrozen_cycles > 0
            )
            if self.lr_ is None and image_stages:
                # lr="auto" with no precomputed stage: sweep the head on the
                # (cached) features of the training images all the same
                train_features = extractor.transform(
                    [sources[i] for i in train_idx],
                    batch_size=self.feature_batch_size,
                    verbose=self.verbose,
                    fingerprints=[fingerprints[i] for i in train_idx],
                )[0]
                self._find_head_lr(
                    net, train_features, y_encoded[train_idx], extractor.device
                )
            tuned = self._fit_on_images(
                net, extractor, sources, y_encoded, train_idx, valid_idx, seed, history
            )
        if tuned:
            extractor = extractor.with_tuned_body()
        self.classes_ = classes
        self.skipped_ = skipped
        self.n_features_ = extractor.n_features
        self.extractor_ = extractor
        self.net_ = net
        self.history_ = history
        return self

    def _make_extractor(self, continuing):
        if not continuing:
            return build_extractor(self)
        # Continue from the current (possibly fine-tuned) body; a new image
        # size or preprocessing gives new cache keys, never stale features.
        # Work on copies: an error or Ctrl-C mid-fit leaves the fitted model
        # as it was, and its cache key keeps matching its weights.
        old = self.extractor_
        if old.built_from and (self.backbone, repr(self.weights)) != old.built_from:
            raise ValueError(
                "warm_start=True continues training the fitted network, but "
                f"backbone/weights changed from {old.built_from[0]!r}/"
                f"{old.built_from[1]} to {self.backbone!r}/{self.weights!r}; "
                "set warm_start=False to start from the new ones."
            )
        return build_extractor(self, backbone=copy.deepcopy(old.backbone))

    def _split(self, y_encoded, seed):
        n = len(y_encoded)
        if self.validation_fraction is None:
            return np.arange(n), None
        from sklearn.model_selection import train_test_split

        try:
            train_idx, valid_idx = train_test_split(
                np.arange(n),
                test_size=self.validation_fraction,
                stratify=y_encoded,
                random_state=seed,
            )
        except ValueError as exc:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} cannot hold out a "
                f"stratified validation set from {n} images: {exc}"
            ) from None
        return np.sort(train_idx), np.sort(valid_idx)

    def _group_lrs(self, top_lr):
        mult = self.lr_mult
        if isinstance(mult, (tuple, list)):
            if len(mult) != 3 or not all(isinstance(v, Real) and v > 0 for v in mult):
                raise ValueError(
                    "The 'lr_mult' parameter of PretrainedImageClassifier must be a "
                    "number >= 1 or a tuple of 3 positive learning rates (early, "
                    f"middle, late + head). Got {mult!r} instead."
                )
            # explicit rates: scaled so that the last equals top_lr
            rates = [float(v) * top_lr / float(mult[-1]) for v in mult]
        else:
            rates = [top_lr / mult**2, top_lr / mult, top_lr]
        return [*rates, top_lr]  # the head trains at the late group's rate

    def _callbacks(self, sgdr, validating):
        callbacks = [("sgdr", sgdr)]
        if validating:
            if self.early_stopping:
                callbacks.append(
                    (
                        "early_stopping",
                        EarlyStopping(monitor="valid_loss", patience=3, load_best=True),
                    )
                )
        return callbacks

    def _fit_head_on_features(
        self, net, features, y, train_idx, valid_idx, history, device
    ):
        validating = valid_idx is not None
        train_split = (
            predefined_split(Dataset(features[valid_idx], y[valid_idx]))
            if validating
            else None
        )
        if self.lr == "auto":
            self._find_head_lr(net, features[train_idx], y[train_idx], device)
        net.set_params(max_epochs=self.epochs, train_split=train_split)
        _set_callbacks(net, self._callbacks(SGDR(cycle_len=self.epochs), validating))
        net.set_group_lrs([self.lr_])
        _drop_lone_last_batch(net, len(train_idx))
        done = len(net.history)
        net.partial_fit(features[train_idx], y[train_idx])
        history.extend(_epoch_rows(net, "precomputed", done))

    def _find_head_lr(self, net, features, y, device):
        batches = feature_batches(features, y, self.batch_size, self._seed)
        self.lr_ = self._find_lr(
            copy.deepcopy(net.module_), [(None, 1.0)], batches, device
        )

    def _fit_on_images(
        self, net, extractor, sources, y, train_idx, valid_idx, seed, history
    ):
        unfreezing = self.unfreeze is not False and self.unfrozen_cycles > 0
        if self.n_cycles == 0 and not unfreezing:
            return False
        pre = extractor.preprocessing
        backbone = extractor.backbone
        # The head's BatchNorm averaged all batches so far (right for fixed,
        # precomputed features). On images the features move with the
        # augmentation and, unfrozen, with the body: track recent batches.
        for module in net.module_.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.momentum = 0.1
        model = TransferNet(backbone.body, net.module_, pre.mean, pre.std)
        groups = group_parameters(model, backbone.groups)
        train_sources = [sources[i] for i in train_idx]
        train_set = ImageDataset(
            train_sources, y[train_idx], pre, self.augment, self.max_zoom, seed
        )
        validating = valid_idx is not None
        train_split = None
        if validating:
            valid_set = ImageDataset([sources[i] for i in valid_idx], y[valid_idx], pre)
            train_split = predefined_split(valid_set)
        image_net = GroupedNet(
            model,
            layer_groups=groups,
            group_lrs=self._group_lrs(self.lr_),
            criterion=nn.CrossEntropyLoss,
            optimizer=torch.optim.AdamW,
            optimizer__weight_decay=self.weight_decay,
            **{f"optimizer__{k}": v for k, v in adamw_options().items()},
            lr=self.lr_,
            batch_size=min(self.batch_size, 32),
            train_split=train_split,
            iterator_train__shuffle=True,
            classes=np.arange(len(net.classes)),
            device=str(extractor.device),
            verbose=int(self.verbose > 1),
        )
        image_net.initialize()
        stages = []
        if self.n_cycles > 0:
            epochs = _cycle_epochs(self.cycle_len, 1, self.n_cycles)
            stages.append(
                (
                    "augmented",
                    len(groups) - 1,
                    self._group_lrs(self.lr_),
                    SGDR(cycle_len=self.cycle_len, n_cycles=self.n_cycles),
                    epochs,
                )
            )
        if unfreezing:
            n_body = len(groups) - 1
            first = 0 if self.unfreeze is True else min(int(self.unfreeze), n_body - 1)
            epochs = _cycle_epochs(
                self.cycle_len, self.cycle_mult, self.unfrozen_cycles
            )
            stages.append(
                (
                    "unfrozen",
                    first,
                    None,
                    SGDR(
                        cycle_len=self.cycle_len,
                        cycle_mult=self.cycle_mult,
                        n_cycles=self.unfrozen_cycles,
                    ),
                    epochs,
                )
            )
        tuned = False
        try:
            for stage, first_trainable, lrs, sgdr, epochs in stages:
                set_trainable(groups, first_trainable)
                if lrs is None:
                    if self.finetune_lr == "auto":
                        ratios = self._group_lrs(1.0)
                        sweep_model = copy.deepcopy(model)
                        sweep_groups = group_parameters(
                            sweep_model,
                            _groups_of(sweep_model.body, model.body, backbone.groups),
                        )
                        self.finetune_lr_ = self._find_lr(
                            sweep_model,
                            list(zip(sweep_groups, ratios)),
                            dataset_batches(
                                train_set, image_net.batch_size, self._seed
                            ),
                            extractor.device,
                        )
                    else:
                        self.finetune_lr_ = float(self.finetune_lr)
                    lrs = self._group_lrs(self.finetune_lr_)
                tuned = tuned or first_trainable < len(groups) - 1
                image_net.set_params(max_epochs=epochs)
                _set_callbacks(image_net, self._callbacks(sgdr, validating))
                image_net.set_group_lrs(lrs)
                _drop_lone_last_batch(image_net, len(train_set))
                done = len(image_net.history)
                image_net.partial_fit(train_set, None)
                history.extend(_epoch_rows(image_net, stage, done))
        finally:
            set_trainable(
                groups, len(groups) - 1
            )  # the body frozen again, the head not
            model.eval()
        return tuned

    def _find_lr(self, model, param_groups, batches, device):
        """Run the LR finder's sweep on ``model`` (a copy) and return the
        default suggestion."""
        groups = [
            (model.parameters() if params is None else params, ratio)
            for params, ratio in param_groups
        ]
        lrs, _, smoothed = lr_sweep(
            model, groups, batches, weight_decay=self.weight_decay, device=device
        )
        return float(suggest_lrs(lrs, smoothed)["valley"])

    def _unfrozen_sweep_setup(self, X, y, seed):
        """Model copy, ratio groups and batches for an unfrozen LR sweep."""
        check_is_fitted(self, "net_")
        sources = as_image_list(X)
        y_enc = np.searchsorted(self.classes_, np.asarray(y))
        ext = self.extractor_
        model = TransferNet(
            copy.deepcopy(ext.backbone.body),
            copy.deepcopy(self.net_.module_),
            ext.preprocessing.mean,
            ext.preprocessing.std,
        ).to(ext.device)
        body_groups = _groups_of(model.body, ext.backbone.body, ext.backbone.groups)
        groups = group_parameters(model, body_groups)
        first = 0 if isinstance(self.unfreeze, bool) else int(self.unfreeze)
        set_trainable(groups, min(first, len(groups) - 2))
        dataset = ImageDataset(
            sources, y_enc, ext.preprocessing, self.augment, self.max_zoom, seed
        )
        ratios = self._group_lrs(1.0)
        return (
            model,
            list(zip(groups, ratios)),
            dataset_batches(dataset, min(self.batch_size, 32), seed),
            ext.device,
        )

    def _build_head(self, n_features, n_classes, device):
        hidden = tuple(self.hidden_sizes)
        if any(not isinstance(h, Integral) or h < 1 for h in hidden):
            raise ValueError(
                "The 'hidden_sizes' parameter of PretrainedImageClassifier must be a "
                f"tuple of positive ints. Got {self.hidden_sizes!r} instead."
            )
        head = Head(n_features, n_classes, hidden, self.dropout)
        lr = 1e-3 if self.lr == "auto" else self.lr
        return GroupedNet(
            head,
            layer_groups=None,
            group_lrs=[lr],
            criterion=nn.CrossEntropyLoss,
            optimizer=torch.optim.AdamW,
            optimizer__weight_decay=self.weight_decay,
            **{f"optimizer__{k}": v for k, v in adamw_options().items()},
            lr=lr,
            max_epochs=self.epochs,
            batch_size=self.batch_size,
            train_split=None,
            iterator_train__shuffle=True,
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
        # skorch's loader draws a seed from torch's global RNG: keep it as found
        with torch.random.fork_rng(devices=_cuda_devices()):
            probs = np.mean([self.net_.predict_proba(f) for f in feats], axis=0)
        probs = probs.astype(np.float64)
        return probs / probs.sum(axis=1, keepdims=True)  # exact in float64

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable class of each image."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy on ``(X, y)``; labels never seen in ``fit`` count as
        errors (and are named in a warning)."""
        check_is_fitted(self, "net_")
        y_arr = np.asarray(y, dtype=object)
        unseen = [
            v
            for v in dict.fromkeys(y_arr.tolist())
            if v not in set(self.classes_.tolist())
        ]
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
        raise ValueError(
            f"y must be 1-D (one label per image); got shape {y_arr.shape}."
        )
    if n_samples == 0:
        raise ValueError("X is empty: at least one image per class is required.")
    if len(y_arr) != n_samples:
        raise ValueError(
            f"X and y have different lengths: {n_samples} images but "
            f"{len(y_arr)} labels."
        )
    missing = [i for i, v in enumerate(y_arr.tolist()) if _is_missing(v)]
    if missing:
        raise ValueError(
            f"y contains {len(missing)} missing labels (NaN or None), the first at "
            f"index {missing[0]}; drop those images or give them a label."
        )
    values = y_arr
    if y_arr.dtype == object and all(
        isinstance(v, (float, np.floating)) for v in y_arr.tolist()
    ):
        values = y_arr.astype(np.float64)  # a list of floats
    try:
        target = type_of_target(values) if values.dtype.kind == "f" else None
    except (TypeError, ValueError):
        target = None
    if target == "continuous":
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


def _groups_of(new_root, old_root, old_groups):
    """The layer groups of ``old_root`` mapped onto its deep copy ``new_root``."""
    names = {id(m): n for n, m in old_root.named_modules()}
    lookup = dict(new_root.named_modules())
    return [[lookup[names[id(m)]] for m in group] for group in old_groups]


def _drop_lone_last_batch(net, n_train) -> None:
    """Drop a last mini-batch of one sample: BatchNorm cannot train on it."""
    # set as an attribute: skorch's set_params would re-initialise the net
    vars(net)["iterator_train__drop_last"] = n_train % net.batch_size == 1


def _set_callbacks(net, callbacks) -> None:
    """Replace a net's callbacks (skorch's set_params does not rebuild them)."""
    net.callbacks = callbacks
    net.initialize_callbacks()


def _cycle_epochs(cycle_len, cycle_mult, n_cycles) -> int:
    """Epochs of ``n_cycles`` SGDR cycles (at least one epoch)."""
    total = sum(cycle_len * cycle_mult**i for i in range(n_cycles))
    return max(1, int(np.ceil(total - 1e-9)))


def _epoch_rows(net, stage, done=0) -> list[dict]:
    """History rows of the epochs after the first ``done``, numbered from 1
    within the stage."""
    rows = []
    for row in net.history[done:]:
        batches = row.get("batches") or []
        first = batches[0] if batches else {}
        lrs = first.get("lrs") or ([first["lr"]] if "lr" in first else [])
        record = {
            "stage": stage,
            "epoch": len(rows) + 1,
            "lrs": [float(v) for v in lrs],
            "train_loss": float(row.get("train_loss", float("nan"))),
            "valid_loss": float(row.get("valid_loss", float("nan"))),
            "valid_acc": float(row.get("valid_acc", float("nan"))),
            "seconds": float(row.get("dur", float("nan"))),
        }
        rows.append(record)
    return rows


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
