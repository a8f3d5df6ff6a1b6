"""What every recipe estimator shares: parameters, the checks that need no
image, reading the images once, and handing them to the engine.

A front (:class:`~sktransfer.PretrainedImageClassifier`,
:class:`~sktransfer.PretrainedImageRegressor`) adds only what its task
needs: how ``y`` becomes targets, and what ``predict*`` and ``score``
return. ``fit`` keeps every intermediate result in locals and sets the
fitted attributes at the very end, so an error or a KeyboardInterrupt
anywhere leaves the estimator as it was (unfitted, or its previous fit).
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from numbers import Real

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, check_random_state

from . import _engine as engine
from ._cache import resolve_cache
from ._checkpoint import FitCheckpoint, fit_key
from ._features import (
    _check_not_empty,
    build_extractor,
    check_parameters_in_use,
)
from ._finish import set_fitted_attributes
from ._fit_args import (
    Inputs,
    Prepared,
    Read,
    check_sample_weight,
    check_validation_args,
    check_validation_kept,
    check_validation_length,
    named_callbacks,
)
from ._image_checks import check_decodable, image_fingerprints, raise_bad_images
from ._images import as_image_list
from ._model import body_extractor
from ._params import (
    validate,
)
from ._plan import make_plan
from ._predict import predict_outputs
from ._recipe_rules import RECIPE_CHECKS, RECIPE_RULES
from ._split import (
    Dropped,
    check_split,
    kept_rows,
    split_rows,
    validation_fraction,
)
from ._transforms import PLAIN, tta_views


class RecipeEstimator(BaseEstimator):
    """Base class of the recipe estimators (not public)."""

    _parameter_rules = RECIPE_RULES
    _parameter_checks = RECIPE_CHECKS

    # -- what a front defines ---------------------------------------------------

    def _encode_targets(self, y, n_samples):
        """``(encoded, info)``: ``y`` checked and encoded once, one row per
        image (rows are later selected by index, never encoded again);
        ``info`` becomes fitted attributes (e.g. ``classes_``)."""
        raise NotImplementedError

    def _check_validation_use(self, info, validated) -> None:
        """Errors of settings that need validation images, when ``validated``
        says whether there will be any (before any image is read). None
        here; a front adds its own."""

    def _fit_task(self, encoded, info, dropped):
        """``(task, more_info)`` for the rows that train (``encoded`` holds
        only those). ``dropped`` says why rows were left out (None when none
        were), for the errors that only the kept rows cause."""
        raise NotImplementedError

    def _class_weights(self, encoded, info, rows=None):
        """Per-sample weight factors the front adds (1 by default), learned
        from the training rows ``encoded``, for ``rows`` (the encoded targets
        of other rows, such as the validation set's; default ``encoded``)."""
        return 1.0

    def _encode_validation(self, y_val, n_val, info):
        """``y_val`` encoded as ``y`` was (``info`` holds what ``y`` taught:
        the classes, the number of targets); a target ``y`` does not have is
        an error naming it."""
        raise NotImplementedError

    def _same_targets(self, info) -> str | None:
        """Why a warm start cannot continue with these targets, or None."""
        return None

    # -- fit ------------------------------------------------------------------------

    def fit(
        self,
        X,
        y,
        sample_weight=None,
        *,
        X_val=None,
        y_val=None,
        sample_weight_val=None,
    ):
        """Train on images ``X`` with targets ``y``.

        The stages of the recipe run in order (see the class docstring);
        every image is read, checked and (for precomputed stages) turned
        into features before any training starts, and all images that
        cannot be used are reported together in one error.

        An error or a KeyboardInterrupt leaves the estimator as it was
        before the call (unfitted, or with its previous fit); the feature
        cache keeps every batch computed before it.

        Parameters
        ----------
        X : sequence of images
            File paths, PIL images, or a uint8 array ``(n, H, W, 3)``.
        y : array-like
            The targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the images in the loss of every stage and of the
            learning-rate sweeps. Images of weight 0 are left out (a
            classifier keeps their classes in ``classes_``).
        X_val : sequence of images, default=None
            Validation images, used instead of a ``validation_fraction`` of
            ``X`` (giving both is an error): their loss and score are
            recorded in ``history_`` for every stage, and ``early_stopping``
            watches their loss. They never train. They are read and checked
            with ``X`` (``on_error`` applies to them too).
        y_val : array-like, default=None
            The targets of ``X_val`` (required with it), encoded with what
            ``y`` taught: a classifier's labels must be in ``classes_``, a
            regressor's targets are standardised as ``y`` is.
        sample_weight_val : array-like of shape (n_val,), default=None
            Weights of the validation images in the validation loss (the
            score is unweighted, as in ``history_`` without ``X_val``).

        Returns
        -------
        self
        """
        start = time.perf_counter()
        prepared = self._prepare(
            X,
            y,
            sample_weight,
            X_val=X_val,
            y_val=y_val,
            sample_weight_val=sample_weight_val,
        )
        result = engine.train(
            prepared.plan,
            prepared.data,
            prepared.head,
            prepared.task,
            prepared.settings,
            prepared.seed,
        )
        self._finish(prepared, result, time.perf_counter() - start)
        if prepared.settings.checkpoint is not None:
            prepared.settings.checkpoint.remove()  # the fit is done
        return self

    def _prepare(
        self,
        X,
        y,
        sample_weight=None,
        *,
        X_val=None,
        y_val=None,
        sample_weight_val=None,
    ) -> Prepared:
        """Check everything that needs no image, then read the images once
        (those of ``X_val`` with those of ``X``)."""
        validate(self)
        plan = make_plan(self.get_params())
        given = check_validation_args(X_val, y_val, sample_weight_val, self)
        inputs = self._check_inputs(X, y, sample_weight)
        if given:
            inputs.add_validation(
                *self._check_validation(X_val, y_val, sample_weight_val, inputs.info)
            )
        continuing = self.warm_start and hasattr(self, "head_")
        if continuing:
            plan = self._continued_plan(plan, inputs.info)
        # what the weights alone decide is checked before any image is read
        n, info = inputs.n, inputs.info
        weighted = np.flatnonzero(inputs.weights > 0)
        dropped = Dropped(n - len(weighted))
        task, more = self._fit_task(inputs.encoded[weighted], info, dropped)
        self._class_weights(inputs.encoded[weighted], info)
        if not given:
            check_split(self, inputs.encoded[weighted], task, info, dropped)
        validated = given or validation_fraction(self)[0] is not None
        self._check_validation_use(info, validated)
        extractor = self._make_extractor(continuing)
        swept = not isinstance(self.lr, Real)  # "auto" or an LRSweep
        # the plain features, where a stage reads them, in the same pass
        # that reads and checks the images
        needs_features = engine.needs_plain_features(plan, swept)
        read = self._read_and_drop(extractor, inputs, needs_features)
        encoded = inputs.encoded[read.keep]
        if len(read.keep) < len(weighted):  # unreadable images left out as well
            dropped = Dropped(n - len(weighted), len(weighted) - len(read.keep))
            if len(read.keep) == 0:
                raise ValueError(
                    f"no image is left to train on ({dropped}); see the warning "
                    "above for why each image could not be used."
                )
            task, more = self._fit_task(encoded, info, dropped)
            if not given:
                check_split(self, encoded, task, info, dropped)
        info = {**info, **more}
        checkpoint = self._checkpoint(extractor, inputs, read, continuing)
        resume = None if checkpoint is None else checkpoint.load()
        if resume is not None:  # the seed the interrupted fit drew
            seed = resume["seed"]
            if self.verbose:
                print(
                    f"{type(self).__name__}: {checkpoint.describe(resume, plan)}",
                    file=sys.stderr,
                )
        else:
            seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        data = self._training_set(extractor, inputs, read, task, info, seed)
        settings = self._settings()
        settings.checkpoint, settings.resume = checkpoint, resume
        settings.refit = not given and not self._reads_validation_after_fit(info)
        # every view the stages read as features, through the cache, before
        # training: the engine never calls the extractor
        data.compute_views(plan, settings, sweeps_head=swept)
        history = list(self.history_) if continuing else []
        return Prepared(
            plan,
            data,
            self._start_head(continuing, extractor, task, seed),
            task,
            settings,
            seed,
            info,
            read.skipped,
            history,
            read.counts,
        )

    def _check_inputs(self, X, y, sample_weight) -> Inputs:
        """``X``, ``y`` and ``sample_weight`` checked (no image read yet)."""
        sources = as_image_list(X)
        n = len(sources)
        if n == 0:
            raise ValueError("X is empty: at least one image is required.")
        encoded, info = self._encode_targets(y, n)
        return Inputs(sources, encoded, info, check_sample_weight(sample_weight, n))

    def _check_validation(self, X_val, y_val, sample_weight_val, info) -> tuple:
        """``(sources, encoded targets, weights)`` of the validation images."""
        val_sources = as_image_list(X_val)
        n_val = len(val_sources)
        if n_val == 0:
            raise ValueError("X_val is empty: give validation images, or None.")
        check_validation_length(y_val, n_val)
        try:
            val_encoded = self._encode_validation(y_val, n_val, info)
        except ValueError as exc:
            if str(exc).startswith("y_val"):
                raise
            raise ValueError(f"y_val: {exc}") from None
        val_weights = check_sample_weight(sample_weight_val, n_val, "sample_weight_val")
        return val_sources, val_encoded, val_weights

    def _reads_validation_after_fit(self, info) -> bool:
        """Whether the fitted model is tuned on the validation images after
        training (so they must stay out of its training images)."""
        return False

    def _continued_plan(self, plan, info) -> list:
        """The plan of a warm start: the fitted head goes on training, so the
        probe (which would replace it) does not run."""
        problem = self._same_targets(info)
        if problem:
            raise ValueError(f"warm_start=True {problem}")
        plan = [stage for stage in plan if stage.name != "probe"]
        if not plan:
            raise ValueError(
                "warm_start=True continues training the fitted model, but "
                "precompute_epochs, augmented_cycles and unfrozen_cycles are "
                "all 0 (the linear probe starts a new head, so it does not "
                "run on a warm start). Set one of them above 0."
            )
        return plan

    def _start_head(self, continuing, extractor, task, seed):
        """A copy of the fitted head for a warm start, else a new one."""
        if continuing:
            return copy.deepcopy(self.head_)
        return engine.new_head(
            extractor.n_features, task.n_outputs, self.hidden_sizes, self.dropout, seed
        )

    def _read_and_drop(self, extractor, inputs, needs_features) -> Read:
        """Read every image once (fingerprints, and plain features when a
        stage needs them), warn about those left out, and keep the rows
        that train or validate."""
        n, every = inputs.n, inputs.sources + inputs.val_sources
        features, fps, bad, counts = self._read_images(
            extractor, every, needs_features, n_train=n
        )
        skipped = self._skip_bad(every, bad, n_train=n)
        keep = kept_rows(n, bad, inputs.weights)
        val_keep = np.array(
            [j for j in range(len(inputs.val_sources)) if j + n not in bad], dtype=int
        )
        if inputs.val_sources:
            check_validation_kept(val_keep, inputs.val_weights, len(inputs.val_sources))
        rows = np.concatenate([keep, n + val_keep]).astype(int)
        if len(rows) < len(every):
            every = [every[i] for i in rows]
            fps = [fps[i] for i in rows]
            features = None if features is None else features[rows]
        return Read(every, fps, features, keep, val_keep, skipped, counts)

    def _checkpoint(self, extractor, inputs, read, continuing):
        """The fit's :class:`~._checkpoint.FitCheckpoint` in
        ``checkpoint_dir`` (None without one): named by the parameters, the
        body, the images read, their targets and weights, and the head a
        warm start continues."""
        if self.checkpoint_dir is None:
            return None
        arrays = [inputs.encoded[read.keep], inputs.weights[read.keep]]
        if inputs.val_sources:
            arrays += [
                inputs.val_encoded[read.val_keep],
                inputs.val_weights[read.val_keep],
            ]
        start = self.head_.state_dict() if continuing else None
        key = fit_key(self, extractor.model_key, read.fingerprints, arrays, start)
        return FitCheckpoint(self.checkpoint_dir, key)

    def _training_set(self, extractor, inputs, read, task, info, seed):
        """The engine's :class:`TrainingSet`: targets and weights (class
        weights applied) of the kept rows, and the train / validation rows."""
        encoded = inputs.encoded[read.keep]
        weights = inputs.weights[read.keep] * self._class_weights(encoded, info)
        targets = encoded
        if inputs.val_sources:
            val_encoded = inputs.val_encoded[read.val_keep]
            val_weights = inputs.val_weights[read.val_keep] * self._class_weights(
                encoded, info, rows=val_encoded
            )
            weights = np.concatenate([weights, val_weights])
            targets = np.concatenate([encoded, val_encoded])
            train_idx = np.arange(len(encoded))
            valid_idx = len(encoded) + np.arange(len(val_encoded))
        else:
            train_idx, valid_idx = split_rows(self, encoded, task, seed)
        return engine.TrainingSet(
            extractor=extractor,
            sources=read.sources,
            fingerprints=read.fingerprints,
            targets=task.target_tensor(targets),
            weights=torch.as_tensor(weights, dtype=torch.float32),
            train=train_idx,
            valid=valid_idx,
            extract_batch_size=self.extract_batch_size,
            verbose=self.verbose,
            features=read.features,
        )

    def _settings(self) -> engine.Settings:
        return engine.Settings(
            batch_size=self.batch_size,
            weight_decay=self.weight_decay,
            max_zoom=self.max_zoom,
            early_stopping=self.early_stopping,
            n_iter_no_change=self.n_iter_no_change,
            tol=self.tol,
            ema_decay=self.ema_decay,
            callbacks=named_callbacks(self.callbacks, type(self).__name__),
            verbose=self.verbose,
        )

    def _make_extractor(self, continuing):
        if not continuing:
            return build_extractor(self)
        # Continue from the current (possibly fine-tuned) body, on a copy: an
        # error mid-fit leaves the fitted model as it was. A new image size or
        # preprocessing gives new cache keys, never stale features.
        old = self.extractor_
        if old.built_from and (self.backbone, repr(self.weights)) != old.built_from:
            raise ValueError(
                "warm_start=True continues training the fitted network, but "
                f"backbone/weights changed from {old.built_from[0]!r}/"
                f"{old.built_from[1]} to {self.backbone!r}/{self.weights!r}; "
                "set warm_start=False to start from the new ones."
            )
        return build_extractor(self, backbone=copy.deepcopy(old.backbone))

    def _read_images(self, extractor, sources, needs_features, n_train=None):
        """Fingerprints, plain features (when a stage needs them), the
        images that could not be used (index -> message) and the numbers of
        images computed and read from the cache (None without features).
        Images from ``n_train`` on are ``X_val``'s, and named so."""
        bad: dict = {}
        fps = image_fingerprints(sources, bad)
        features = None
        before = extractor.images_computed
        if needs_features:
            features = extractor.transform(
                sources,
                views=[PLAIN],
                batch_size=self.extract_batch_size,
                verbose=self.verbose,
                fingerprints=fps,
                bad=bad,
                raise_errors=False,
            )[0]
        else:  # training reads the images later: check them all now
            check_decodable(sources, fps, bad, extractor.preprocessing.resize_size)
        n_train = len(sources) if n_train is None else n_train
        for i in [i for i in bad if i >= n_train]:  # in-memory ones by index
            bad[i] = bad[i].replace(f"X[{i}]", f"X_val[{i - n_train}]", 1)
        if bad and self.on_error == "raise":
            cache = extractor.cache
            raise_bad_images(
                bad, len(sources), cached=cache is not None and cache.storing
            )
        counts = None
        if needs_features:
            computed = extractor.images_computed - before
            counts = (computed, len(sources) - len(bad) - computed)
        return features, fps, bad, counts

    def _skip_bad(self, sources, bad, n_train=None) -> list:
        """Warn about the images left out; their paths, or their indices in
        ``X`` (``"X_val[j]"`` for those of ``X_val``, from ``n_train`` on)."""
        if not bad:
            return []
        n_train = len(sources) if n_train is None else n_train
        warnings.warn(
            f"on_error='skip': {len(bad)} of {len(sources)} images could not be "
            "used and were left out of training (listed in skipped_):\n"
            + "\n".join(f"  {bad[i]}" for i in sorted(bad)[:20]),
            UserWarning,
            stacklevel=4,
        )
        return [
            sources[i]
            if isinstance(sources[i], str)
            else (i if i < n_train else f"X_val[{i - n_train}]")
            for i in sorted(bad)
        ]

    def _finish(self, prepared, result, seconds):
        """Set the fitted attributes, all at once, from the fit's locals."""
        set_fitted_attributes(self, prepared, result, seconds)

    # -- the fitted model's parts -------------------------------------------------

    @property
    def head_(self) -> torch.nn.Module:
        """The head of the final model (the last member of ``model_``)."""
        return self.model_.heads[-1]

    @property
    def ensemble_(self) -> list:
        """``(extractor, head)`` of each member of ``model_``: the models
        averaged at prediction time (one unless ``snapshot_ensemble``)."""
        extractors = self._extractors()
        return [
            (extractors[b], head)
            for head, b in zip(self.model_.heads, self.model_.member_body)
        ]

    def _extractors(self) -> list:
        """One extractor per body of ``model_``, each running that very body
        (the last one is ``extractor_``): what reads and writes the feature
        cache."""
        model = self.model_
        return [
            body_extractor(self.extractor_, body, body_id)
            for body, body_id in zip(model.bodies, model.body_ids)
        ]

    # -- predict ------------------------------------------------------------------

    def _outputs(self, X):
        """Task outputs averaged over TTA views and ensemble members."""
        check_is_fitted(self, "model_")
        check_parameters_in_use(self)
        _check_not_empty(X)
        views = tta_views(self.tta, augment=self.augment) if self.tta else [PLAIN]
        return predict_outputs(
            self.model_,
            self._extractors(),
            X,
            views,
            self.extract_batch_size,
            self.verbose,
        )

    # -- export -------------------------------------------------------------------

    def preprocess(self, X):
        """The uint8 network inputs of ``X``, as the model sees them.

        Each image is decoded, rotated by its EXIF orientation, converted to
        RGB, resized and centre-cropped with the estimator's preprocessing
        (its weights' preset, ``image_size`` and ``preprocessing``): the
        plain view, exactly the pixels ``predict`` uses. This is the input
        of the module of :func:`sktransfer.export.to_torch` and of the
        exported files.

        Parameters
        ----------
        X : sequence of paths, PIL images, or uint8 array ``(n, H, W[, 3])``

        Returns
        -------
        batch : ndarray of shape (n, crop_size, crop_size, 3), uint8
        """
        check_is_fitted(self, "extractor_")
        return self.extractor_.preprocess(X)

    def __setstate__(self, state):
        super().__setstate__(state)
        if "model_" not in self.__dict__:
            return
        # an extractor pickled from a GPU holds a CPU copy of its body: it
        # runs the model's own body again
        self.extractor_.backbone.body = self.model_.bodies[-1]
        if self.__dict__.get("cache") == "auto":
            # "auto" means the cache of whoever uses the model: a model
            # loaded elsewhere reads and writes that user's cache, never the
            # folder that was resolved where it was fitted
            self.extractor_.cache = resolve_cache("auto")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.non_deterministic = False
        return tags
