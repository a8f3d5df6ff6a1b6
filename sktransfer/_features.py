"""Frozen-body features of images: the precompute step, as a transformer."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import os
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import (
    Interval,
    StrOptions,
    validate_parameter_constraints,
)
from sklearn.utils.validation import check_is_fitted

from ._backbones import load_backbone
from ._cache import FeatureCache, resolve_cache
from ._decoding import load_pixels
from ._fingerprints import fingerprint, read_image_file
from ._images import as_image_list, describe
from ._threads import decode_plan, decoded_batches
from ._transforms import (
    MAX_CROP_SIZE,
    PLAIN,
    AugmentedView,
    View,
    check_preprocessing,
    render,
    render_view,
    to_tensor,
    tta_views,
)
from .exceptions import ImageLoadError, NonFiniteFeaturesError


def available_devices() -> list[str]:
    """The values ``device`` accepts on this machine."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def resolve_device(device) -> torch.device:
    """The ``device`` parameter as a torch device that exists here.

    Raises a ``ValueError`` naming the parameter and the devices available
    for a name torch does not know, a device this machine lacks, or one that
    holds no data (``"meta"``).
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")  # Apple silicon
        return torch.device("cpu")
    dev = check_device_name(device)
    if dev.type == "cpu":
        return dev
    choices = ", ".join(repr(d) for d in available_devices())
    shown = repr(str(device)) if isinstance(device, str) else repr(device)
    module = getattr(torch, dev.type, None)
    if dev.type == "mps":
        module = getattr(torch.backends, "mps", None)
    is_available = getattr(module, "is_available", None)
    if is_available is None or not is_available():
        raise ValueError(
            f"device={shown}: this machine has no {dev.type.upper()} device "
            f"(or torch was built without it); available here: {choices}."
        )
    count = getattr(module, "device_count", None)
    if dev.index is not None and count is not None and dev.index >= count():
        raise ValueError(
            f"device={shown}: this machine has {count()} {dev.type.upper()} "
            f"device(s); available here: {choices}."
        )
    return dev


def check_device_name(device) -> torch.device:
    """``device`` as a torch device, without asking whether this machine has
    it: a ``ValueError`` for a name torch does not know or a device that
    holds no data (``"meta"``)."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cpu")
    shown = repr(str(device)) if isinstance(device, str) else repr(device)
    if isinstance(device, str):
        device = device.strip().lower()  # "CPU", "Cuda:0"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        choices = ", ".join(repr(d) for d in available_devices())
        raise ValueError(
            f"device={shown} is not a device name; available here: {choices}."
        ) from None
    if dev.type == "meta":
        choices = ", ".join(repr(d) for d in available_devices())
        raise ValueError(
            f"device={shown} holds no data and cannot compute features; "
            f"available here: {choices}."
        )
    return dev


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
    constraints = estimator._parameter_constraints
    params = estimator.get_params(deep=False)
    names = [name for name in USED_AFTER_FIT if name in constraints]
    validate_parameter_constraints(
        {name: constraints[name] for name in names},
        {name: params[name] for name in names},
        caller_name=type(estimator).__name__,
    )
    if "device" in names:
        check_device_name(params["device"])


def bf16_is_fast(device: torch.device) -> bool:
    """True where bf16 matrix work runs in hardware (AVX-512 BF16/AMX, or a GPU
    with bf16 tensor cores); elsewhere autocast to bf16 is several times
    slower than fp32."""
    if device.type == "cuda":
        # not emulated bf16: on GPUs without bf16 tensor cores (T4, V100)
        # torch reports bf16 as supported by emulation, several times
        # slower than fp32
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch before 2.3 has no including_emulation
            major, _ = torch.cuda.get_device_capability(device)
            return major >= 8
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(
            f"precision must be 'auto', 'fp32' or 'bf16'; got {precision!r}."
        )
    return precision


class FeatureExtractor:
    """The loaded body plus everything needed to turn images into vectors.

    Built by ``fit`` of :class:`PretrainedFeatures` and of the classifier; it
    pickles with the body's weights and opens its cache lazily.

    Attributes
    ----------
    images_computed : int
        Images this extractor has passed through the body (each view of an
        image counts; vectors read from the cache do not). A fit's summary
        line reports it.
    images_computed_in_process : int
        Class attribute: the same count over every extractor of this
        process (copies and unpickled ones included), so that the work done
        by a call can be observed as the difference before and after it.
    """

    images_computed = 0
    images_computed_in_process = 0

    def __init__(self, backbone, preprocessing, precision, device, cache):
        self.backbone = backbone
        self.preprocessing = preprocessing
        self.precision = precision
        self.device = device
        self.cache = cache
        self.model_key = backbone.fingerprint(preprocessing, precision)
        self.built_from = None  # (backbone, repr(weights)) of the parameters
        self._prepare_body()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["device"] = str(self.device)
        if self.device.type != "cpu":
            # tensors pickled on a GPU need one to load: store a CPU copy
            backbone = copy.deepcopy(self.backbone)
            backbone.body.cpu()
            state["backbone"] = backbone
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        device = torch.device(state["device"])
        if device.type == "cuda" and not torch.cuda.is_available():
            device = torch.device("cpu")
        self.device = device
        self._prepare_body()

    def _prepare_body(self):
        body = self.backbone.body.to(self.device)
        if self.device.type == "cpu":
            body = body.to(memory_format=torch.channels_last)
        self.backbone.body = body.eval()

    def with_tuned_body(self) -> FeatureExtractor:
        """A new extractor for the body after fine-tuning.

        Its cache key hashes the tuned parameters, so features of the tuned
        body are cached under their own key and never mixed with those of
        the pretrained weights.
        """
        digest = hashlib.blake2b(digest_size=16)
        for name, tensor in self.backbone.body.state_dict().items():
            digest.update(name.encode())
            digest.update(
                tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()
            )
        backbone = dataclasses.replace(
            self.backbone, weights_id="tuned:" + digest.hexdigest()
        )
        tuned = FeatureExtractor(
            backbone, self.preprocessing, self.precision, self.device, self.cache
        )
        tuned.built_from = self.built_from
        return tuned

    @property
    def n_features(self) -> int:
        return self.backbone.n_features

    def view_key(self, view: View | AugmentedView) -> str:
        return self.model_key if view == PLAIN else f"{self.model_key}:{view.key}"

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """uint8 ``(n, H, W, 3)`` -> float32 features ``(n, n_features)``."""
        x = to_tensor(batch, self.preprocessing, self.device)
        with torch.inference_mode():
            with torch.autocast(
                self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
            ):
                out = self.backbone.body(x)
        self.images_computed += len(batch)
        FeatureExtractor.images_computed_in_process += len(batch)
        return out.float().cpu().numpy()

    def preprocess(self, X) -> np.ndarray:
        """The uint8 ``(n, crop, crop, 3)`` plain views of the images ``X``:
        the pixels ``forward`` turns into features."""
        pre = self.preprocessing
        sources = as_image_list(X)
        if not sources:
            raise ValueError("X is empty: at least one image is required.")
        out = np.empty((len(sources), pre.crop_size, pre.crop_size, 3), np.uint8)
        for i, source in enumerate(sources):
            img = load_pixels(source, draft_size=pre.resize_size, index=i)
            out[i] = render(img, pre, PLAIN)
        return out

    def transform(
        self,
        X,
        views=(PLAIN,),
        batch_size=32,
        verbose=0,
        fingerprints=None,
        bad=None,
        raise_errors=True,
    ):
        """Features of every image under each view: ``(n_views, n, n_features)``.

        Cached vectors are read; the rest are computed in batches decoded by
        a pool of threads (:func:`decode_plan`). Every finished batch is
        written to the cache at once, so an error or an interruption loses
        nothing already computed.
        Images that cannot be decoded are collected and reported together
        in one error, after every good image has been computed and cached;
        with ``raise_errors=False`` they are only recorded in ``bad`` (index
        -> message) and their rows are left undefined.
        """
        if not isinstance(batch_size, Integral) or batch_size < 1:
            # never an empty list of batches, hence rows never computed
            raise ValueError(
                f"extract_batch_size must be a whole number >= 1; got {batch_size!r}."
            )
        sources = as_image_list(X) if fingerprints is None else X
        bad = {} if bad is None else bad
        if fingerprints is None:
            fingerprints = image_fingerprints(sources, bad)
        out = np.empty((len(views), len(sources), self.n_features), dtype=np.float32)
        readable = [i for i, fp in enumerate(fingerprints) if fp is not None]
        for v, view in enumerate(views):
            key = self.view_key(view)
            todo = self._fill_from_cache(out[v], key, fingerprints, readable)
            if not todo:
                continue
            cache = self.cache
            lock = cache.lock(key) if cache is not None else contextlib.nullcontext()
            with lock:
                todo = self._fill_from_cache(out[v], key, fingerprints, todo)
                todo = [i for i in todo if i not in bad]
                self._compute(
                    out[v],
                    sources,
                    fingerprints,
                    todo,
                    view,
                    key,
                    batch_size,
                    verbose,
                    bad,
                )
        if raise_errors:
            cache = self.cache
            raise_bad_images(
                bad, len(sources), cached=cache is not None and cache.storing
            )
        return out

    def _fill_from_cache(self, out, key, fingerprints, todo=None):
        """Copy cached vectors into ``out``; return the indices still missing.

        Vectors stream from the database straight into ``out``, so reading a
        large cached set needs no second copy of the features in memory.
        """
        if todo is None:
            todo = range(len(fingerprints))
        if self.cache is None:
            return list(todo)
        where: dict[str, list[int]] = {}
        for i in todo:
            where.setdefault(fingerprints[i], []).append(i)
        for fp, vec in self.cache.iter_many(key, list(where)):
            if vec.shape[0] == out.shape[1] and fp in where:
                out[where.pop(fp)] = vec
        return sorted(i for rows in where.values() for i in rows)

    def _compute(self, out, sources, fps, todo, view, key, batch_size, verbose, bad):
        # Duplicate images (same fingerprint) are computed once.
        first: dict[str, int] = {}
        copies: dict[int, list[int]] = {}
        unique = []
        for i in todo:
            j = first.setdefault(fps[i], i)
            if j == i:
                unique.append(i)
            else:
                copies.setdefault(j, []).append(i)
        pre = self.preprocessing
        batches = [
            unique[s : s + batch_size] for s in range(0, len(unique), batch_size)
        ]

        def decode(i):
            try:
                img, fp = _snapshot(sources[i], pre.resize_size, i)
                return i, fp, render_view(img, pre, view, fp)
            except ImageLoadError as exc:
                bad[i] = str(exc)
            except ValueError as exc:
                bad[i] = f"{describe(sources[i], i)}: {exc}"
            return None

        bar = _progress(len(unique), verbose, _bar_title(view))
        redo = []  # copies of an image that changed since it was fingerprinted
        decoded = None
        try:
            decoded = decoded_batches(decode, batches, decode_plan(self.device))
            for items in decoded:
                items = [item for item in items if item is not None]
                if not items:
                    continue
                kept, keys, arrays = zip(*items)
                feats = self.forward(np.stack(arrays))
                finite = np.isfinite(feats).all(axis=1)
                out[list(kept)] = feats
                if self.cache is not None:
                    # Stored under the fingerprint of the bytes that were
                    # decoded: a file replaced since ``fps`` were taken gets
                    # its new content's key, never the old one.
                    self.cache.put_many(
                        key,
                        [(keys[k], feats[k]) for k in range(len(kept)) if finite[k]],
                    )
                if not finite.all():
                    raise self._non_finite_error(
                        [sources[i] for k, i in enumerate(kept) if not finite[k]],
                        [i for k, i in enumerate(kept) if not finite[k]],
                        len(kept),
                    )
                for k, i in enumerate(kept):
                    for c in copies.get(i, ()):
                        if keys[k] == fps[i] or sources[c] == sources[i]:
                            out[c] = out[i]
                        else:
                            redo.append(c)
                if bar is not None:
                    bar.update(len(kept))
        finally:
            if decoded is not None:
                decoded.close()  # stop decoding now, not when collected
            if bar is not None:
                bar.close()
        for i, dups in copies.items():
            if i in bad:
                for c in dups:
                    bad[c] = bad[i].replace(
                        describe(sources[i], i), describe(sources[c], c), 1
                    )
        if redo:
            self._compute(out, sources, fps, redo, view, key, batch_size, 0, bad)

    def _non_finite_error(self, examples, indices, n_batch) -> NonFiniteFeaturesError:
        """Name what most likely made the features NaN or inf."""
        bb, pre = self.backbone, self.preprocessing
        causes = []
        params = self.backbone.body.state_dict()
        if any(
            v.is_floating_point() and not bool(torch.isfinite(v).all())
            for v in params.values()
        ):
            if bb.weights_id.startswith("tuned:"):
                causes.append(
                    "the fine-tuned body's weights became NaN/inf: training "
                    "diverged, lower the fine-tuning learning rate"
                )
            else:
                source = bb.weights_file or bb.weights_id
                causes.append(f"the body's weights hold NaN/inf (from {source!r})")
        if min(pre.std) < 1e-3:
            causes.append(
                f"preprocessing std {pre.std} is tiny: pixels are divided by it"
            )
        if self.precision == "bf16":
            causes.append("bf16 precision overflowed: try precision='fp32'")
        if not causes:
            causes.append(
                f"the weights ({bb.weights_file or bb.weights_id!r}), the "
                f"preprocessing mean {pre.mean} / std {pre.std}, or precision "
                f"{self.precision!r}"
            )
        first = describe(examples[0], indices[0])
        return NonFiniteFeaturesError(
            f"backbone {bb.name!r} computed non-finite features (NaN or inf) for "
            f"{len(examples)} of {n_batch} images in a batch, such as {first}; "
            "none of them was cached. Likely cause: " + "; ".join(causes) + "."
        )


def _snapshot(source, draft_size: int, index: int):
    """Decode ``source`` and fingerprint exactly what was decoded.

    A file is read once: its pixels and its fingerprint come from the same
    bytes. An array or PIL image is copied first, so that a caller changing
    it in place meanwhile cannot split the two either.
    """
    if isinstance(source, str):
        data, now = read_image_file(source)
        return load_pixels(source, draft_size=draft_size, index=index, data=data), now
    source = source.copy()  # an array or a PIL image
    now = fingerprint(source)
    return load_pixels(source, draft_size=draft_size, index=index), now


def image_fingerprints(sources, bad: dict) -> list:
    """Fingerprint every image. Unreadable ones get None and their error
    message goes into ``bad`` (index -> message), to be reported together
    with every other bad image."""
    fps = []
    for i, s in enumerate(sources):
        try:
            fps.append(fingerprint(s))
        except ImageLoadError as exc:
            fps.append(None)
            bad[i] = str(exc).replace(describe(s), describe(s, i), 1)
        except (ValueError, OSError) as exc:  # e.g. a closed PIL image
            fps.append(None)
            bad[i] = f"{describe(s, i)} could not be read ({type(exc).__name__}: {exc})"
    return fps


def check_decodable(sources, fingerprints, bad: dict, draft_size=None) -> None:
    """Decode every readable image once, collecting failures in ``bad``."""
    for i, fp in enumerate(fingerprints):
        if fp is None:
            continue
        try:
            load_pixels(sources[i], draft_size=draft_size, index=i)
        except ImageLoadError as exc:
            bad[i] = str(exc)


def raise_bad_images(bad: dict, n_images: int, cached: bool = False) -> None:
    """One error listing every image that could not be used."""
    if not bad:
        return
    messages = [bad[i] for i in sorted(bad)]
    lines = "\n".join(f"  {msg}" for msg in messages[:50])
    more = f"\n  ... and {len(messages) - 50} more" if len(messages) > 50 else ""
    others = n_images - len(messages)
    kept = ""
    if cached and others > 0:
        kept = (
            " (the features of the other one are cached)"
            if others == 1
            else f" (the features of the other {others} are cached)"
        )
    raise ImageLoadError(
        f"{len(messages)} of {n_images} images could not be used{kept}:\n{lines}{more}"
    )


def _bar_title(view) -> str:
    if view == PLAIN:
        return "features"
    return "augmented copy" if isinstance(view, AugmentedView) else "TTA view"


def _progress(total, verbose, desc):
    if not verbose or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=False)


def build_extractor(estimator, backbone=None) -> FeatureExtractor:
    """The extractor an estimator's parameters describe (``backbone``,
    ``weights``, ``image_size``, ``preprocessing``, ``precision``, ``device``,
    ``cache``).

    ``backbone``, when given, is a loaded body to use instead of loading one
    (a warm start continues from its current weights); its weights' preset
    gets the estimator's preprocessing overrides and image size all the same.
    """
    # Everything that can be wrong with the parameters is found before the
    # backbone is loaded (which may download).
    check_preprocessing(estimator.preprocessing)
    dev = resolve_device(estimator.device)
    precision = resolve_precision(estimator.precision, dev)
    cache = resolve_cache(estimator.cache)
    if backbone is None:
        bb = load_backbone(
            estimator.backbone, estimator.weights, estimator.preprocessing
        )
    else:
        bb = backbone
        bb.body.to(dev)
    pre = (bb.base_preprocessing or bb.preprocessing).with_overrides(
        estimator.preprocessing
    )
    pre = pre.with_image_size(estimator.image_size)
    extractor = FeatureExtractor(bb, pre, precision, dev, cache)
    # what the body was built from, for warm starts to check against
    extractor.built_from = (estimator.backbone, repr(estimator.weights))
    return extractor


_COMMON_CONSTRAINTS = {
    "backbone": [str],
    "weights": [str, os.PathLike, None],
    "image_size": [Interval(Integral, 16, MAX_CROP_SIZE, closed="both"), None],
    "preprocessing": [dict, None],
    "precision": [StrOptions({"auto", "fp32", "bf16"})],
    "device": [str, None],
    "cache": [str, os.PathLike, FeatureCache, None],
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
    precision : {"auto", "fp32", "bf16"}, default="auto"
        ``"auto"`` uses bf16 autocast where the hardware runs it natively.
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

    _parameter_constraints = {
        **_COMMON_CONSTRAINTS,
        "extract_batch_size": [Interval(Integral, 1, None, closed="left")],
        "tta": [Interval(Integral, 0, None, closed="left")],
        "verbose": ["verbose"],
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
        self._validate_params()
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
