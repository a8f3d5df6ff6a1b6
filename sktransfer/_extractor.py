"""Turning images into feature vectors with a frozen body: the
:class:`FeatureExtractor`, and :func:`build_extractor`, which makes one from
an estimator's parameters.

Cached vectors are read first; the rest are computed in batches decoded by a
pool of threads, and every finished batch is written to the cache at once.
Images that cannot be used are collected and reported together
(:mod:`._image_checks`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
from numbers import Integral

import numpy as np
import torch

from ._backbones import load_backbone
from ._cache import resolve_cache
from ._decoding import load_pixels
from ._devices import autocast_dtype, resolve_device, resolve_precision
from ._fingerprints import decoded_with_fingerprint, update_with_state
from ._image_checks import image_fingerprints, raise_bad_images
from ._images import as_image_list, describe
from ._threads import decode_plan, decoded_batches
from ._transforms import (
    PLAIN,
    AugmentedView,
    View,
    check_preprocessing,
    render,
    render_view,
    to_tensor,
)
from .exceptions import ImageLoadError, NonFiniteFeaturesError


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
            # fitted on a GPU, loaded where there is none: the CPU, at the
            # precision "auto" picks on it (fp16 autocast, the choice for
            # T4/V100 GPUs, is slow on most CPUs)
            device = torch.device("cpu")
            self.precision = resolve_precision("auto", device)
            self.model_key = self.backbone.fingerprint(
                self.preprocessing, self.precision
            )
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
        update_with_state(digest, self.backbone.body.state_dict())
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

    def view_key(self, view: View | AugmentedView) -> str | None:
        """The cache key of ``view``'s features; None for a view that is
        never cached (copies by the user's own augmentation)."""
        if view == PLAIN:
            return self.model_key
        return None if view.key is None else f"{self.model_key}:{view.key}"

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """uint8 ``(n, H, W, 3)`` -> float32 features ``(n, n_features)``."""
        x = to_tensor(batch, self.preprocessing, self.device)
        dtype = autocast_dtype(self.precision)
        with torch.inference_mode():
            with torch.autocast(
                self.device.type, dtype=dtype, enabled=dtype is not None
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
            cache = self.cache if key is not None else None
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
        if self.cache is None or key is None:
            return list(todo)
        where: dict[str, list[int]] = {}
        for i in todo:
            where.setdefault(fingerprints[i], []).append(i)
        for fp, vec in self.cache.iter_many(key, list(where)):
            if vec.shape[0] == out.shape[1] and fp in where:
                out[where.pop(fp)] = vec
        return sorted(i for rows in where.values() for i in rows)

    def _compute(self, out, sources, fps, todo, view, key, batch_size, verbose, bad):
        """Compute the features of the images ``todo`` into ``out`` and the
        cache; images that cannot be decoded go into ``bad``."""
        unique, copies = _first_of_each(todo, fps)  # duplicates computed once
        pre = self.preprocessing
        batches = [
            unique[s : s + batch_size] for s in range(0, len(unique), batch_size)
        ]

        def decode(i):
            try:
                img, fp = decoded_with_fingerprint(sources[i], pre.resize_size, i)
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
                kept, keys = self._compute_batch(out, sources, items, key)
                redo += _fill_copies(out, sources, fps, copies, kept, keys)
                if bar is not None:
                    bar.update(len(kept))
        finally:
            if decoded is not None:
                decoded.close()  # stop decoding now, not when collected
            if bar is not None:
                bar.close()
        _copy_errors(bad, sources, copies)
        if redo:
            self._compute(out, sources, fps, redo, view, key, batch_size, 0, bad)

    def _compute_batch(self, out, sources, items, key) -> tuple[tuple, tuple]:
        """Features of one decoded batch of ``(index, fingerprint, pixels)``
        into ``out`` and the cache; return the indices and fingerprints."""
        kept, keys, arrays = zip(*items)
        feats = self.forward(np.stack(arrays))
        finite = np.isfinite(feats).all(axis=1)
        out[list(kept)] = feats
        if self.cache is not None and key is not None:
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
        return kept, keys

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
        if self.precision != "fp32":
            causes.append(
                f"{self.precision} precision overflowed: try precision='fp32'"
            )
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


def _first_of_each(todo, fps) -> tuple[list, dict]:
    """The indices of ``todo`` whose fingerprint comes first, and for each
    of those the later indices with the same fingerprint."""
    first: dict[str, int] = {}
    copies: dict[int, list[int]] = {}
    unique = []
    for i in todo:
        j = first.setdefault(fps[i], i)
        if j == i:
            unique.append(i)
        else:
            copies.setdefault(j, []).append(i)
    return unique, copies


def _fill_copies(out, sources, fps, copies, kept, keys) -> list:
    """Give the copies of the images just computed their features; return
    the copies to compute on their own (their first image changed since it
    was fingerprinted)."""
    redo = []
    for k, i in enumerate(kept):
        for c in copies.get(i, ()):
            if keys[k] == fps[i] or sources[c] == sources[i]:
                out[c] = out[i]
            else:
                redo.append(c)
    return redo


def _copy_errors(bad: dict, sources, copies) -> None:
    """The error of an image that could not be used, for each of its copies."""
    for i, dups in copies.items():
        if i in bad:
            for c in dups:
                bad[c] = bad[i].replace(
                    describe(sources[i], i), describe(sources[c], c), 1
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
