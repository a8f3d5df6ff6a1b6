"""Features of a large photo collection as a Dask computation, and the checks
that keep a feature cache safe when workers run on several machines.

:func:`dask_features` turns a collection of image paths into a lazy
``dask.array`` of features: one task per partition, each computed on a
worker by a body that the worker loads once and keeps, reading and writing
the feature cache of the machine it runs on.

The module imports only the standard library at the top; dask, numpy and
torch are imported when used (``import dask`` here is the dask package: the
imports are absolute, so this module's name does not shadow it).
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

from ._mounts import warn_if_network_filesystem

__all__ = ["dask_features"]

_FEATURES_PREFIX = "sktransfer-features"


# --- features as a dask array ------------------------------------------------


def dask_features(
    features,
    paths,
    *,
    npartitions=None,
    partition_size=256,
    progress=False,
):
    """Features of a collection of images as a lazy ``dask.array``.

    Each partition of ``paths`` becomes one task. A worker loads the body
    the first time it runs such a task and keeps it for the next ones (one
    load per worker process, not per partition), reads cached features
    from, and writes new ones to, the cache of the machine it runs on, and
    returns the partition's ``(n, n_features)`` float32 block. Only the
    estimator's parameters travel to the workers, never weights: the
    ``weights`` file (or the registry weights in torch's cache) and the
    images must be readable under the same paths on every worker.

    Parameters
    ----------
    features : PretrainedFeatures or dict
        The transformer whose ``transform`` to compute (fitted or not: only
        its parameters are used), or a dict of its parameters.
    paths : list, ndarray, pandas.Series, dask Array, dask Series or dask Bag
        Image paths, one per row. A dask collection keeps its partitions.
    npartitions : int, default=None
        For plain (non-dask) ``paths``: the number of partitions. None
        splits them into partitions of ``partition_size`` images.
    partition_size : int, default=256
        Images per partition of plain ``paths`` when ``npartitions`` is None.
        Each partition is one task: a few seconds of work on a CPU.
    progress : bool, default=False
        If True, start the computation at once on the current
        ``distributed.Client`` (``persist``) and show distributed's progress
        display (a bar in a terminal, a widget in a notebook); the returned
        array then holds the workers' results. If False, return a lazy
        array.

    Returns
    -------
    features : dask.array.Array of shape (n_images, n_features), float32
        One chunk per partition of ``paths``, in the order of ``paths``.

    Notes
    -----
    With ``cache="auto"`` each worker uses its own machine's cache folder
    (``$SKTRANSFER_CACHE`` there, or the per-user cache folder). Workers on
    one machine share that cache, so a photo goes through the body once per
    machine. Do not point the cache of several machines at one network
    folder: the cache is a SQLite database, which needs a local disk. A
    :class:`~sktransfer.exceptions.CacheWarning` says so when the cache folder, as this
    machine sees it, is on NFS, SMB/CIFS, sshfs or another network file
    system (see :func:`network_filesystem`).

    Images that cannot be decoded fail their partition's task with the
    :class:`~sktransfer.exceptions.ImageLoadError` that lists them; the features of the
    partition's other images are cached already, so computing again after
    removing them only runs the body on what is missing.

    Examples
    --------
    Six small photos, two partitions, dask's local scheduler (a tiny
    random-weights network keeps the example fast):

    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from sktransfer import PretrainedFeatures
    >>> from sktransfer.dask import dask_features
    >>> folder = Path(tempfile.mkdtemp())
    >>> paths = [str(folder / f"{i}.png") for i in range(6)]
    >>> for i, path in enumerate(paths):
    ...     Image.new("RGB", (40, 40), (40 * i, 0, 0)).save(path)
    >>> features = PretrainedFeatures(
    ...     "resnet18", weights=None, image_size=32, cache=None
    ... )
    >>> lazy = dask_features(features, paths, npartitions=2)
    >>> lazy  # doctest: +ELLIPSIS
    dask.array<sktransfer-features, shape=(6, 512), dtype=float32, ...>
    >>> lazy.compute().shape
    (6, 512)

    On a cluster, connect a client first; the same call then runs one task
    per partition on its workers (the weights file and the photos must be
    readable there under the same paths):

    >>> from distributed import Client  # doctest: +SKIP
    >>> client = Client("scheduler-host:8786")  # doctest: +SKIP
    >>> features = PretrainedFeatures(
    ...     "mobilenet_v2", weights="/data/mobilenet_v2.pth"
    ... )  # doctest: +SKIP
    >>> X = dask_features(features, paths, progress=True).compute()  # doctest: +SKIP
    """
    import numpy as np
    from dask.base import tokenize

    spec = _features_spec(features)
    _check_cache_folder(spec.get("cache", "auto"))
    n_features = _n_features(features, spec)
    paths = _as_dask_paths(paths, npartitions, partition_size)
    token = tokenize(spec, paths)
    out = paths.map_blocks(
        _partition_features,
        spec,
        tokenize(spec),
        n_features,
        dtype=np.float32,
        chunks=(paths.chunks[0], (n_features,)),
        new_axis=1,
        name=f"{_FEATURES_PREFIX}-{token}",
        meta=np.empty((0, 0), dtype=np.float32),
    )
    if progress:
        out = _persist_with_progress(out)
    return out


def _features_spec(features) -> dict:
    """The parameters the workers build their transformer from, validated
    here so that a bad parameter fails before any task runs."""
    from ._features import PretrainedFeatures
    from ._params import validate

    if isinstance(features, PretrainedFeatures):
        params = features.get_params(deep=False)
    elif isinstance(features, dict):
        params = dict(features)
    else:
        raise TypeError(
            "features must be a PretrainedFeatures transformer or a dict of its "
            f"parameters; got {type(features).__name__}. For example: "
            "dask_features(PretrainedFeatures('mobilenet_v2'), paths)."
        )
    unknown = sorted(set(params) - set(PretrainedFeatures().get_params()))
    if unknown:
        raise TypeError(
            f"features has parameter(s) {unknown} that PretrainedFeatures does not "
            f"take; valid ones: {sorted(PretrainedFeatures().get_params())}."
        )
    validate(PretrainedFeatures(**params))
    weights = params.get("weights", "DEFAULT")
    if isinstance(weights, os.PathLike):
        params["weights"] = os.fspath(weights)
    cache = params.get("cache", "auto")
    if isinstance(cache, os.PathLike):
        params["cache"] = os.fspath(cache)
    params["verbose"] = 0  # a progress bar per task helps nobody
    return params


def _check_cache_folder(cache) -> None:
    """Warn when the cache folder, as this machine sees it, is on a network
    file system (workers sharing it from several machines could corrupt
    it). Each worker resolves ``"auto"`` on its own machine; a shared home
    folder is the usual way to end up on NFS, and this catches it."""
    from ._cache import FeatureCache

    if cache is None or cache is False:
        return
    if isinstance(cache, FeatureCache):
        directory = cache.directory
    elif cache == "auto":
        directory = FeatureCache.default_directory()
    else:
        directory = Path(cache).expanduser()
    warn_if_network_filesystem(directory)


def _n_features(features, spec) -> int:
    fitted = getattr(features, "n_features_out_", None)
    if isinstance(fitted, int):
        return fitted
    from ._catalog import describe_backbone

    return int(describe_backbone(spec.get("backbone", "resnet34"))["feature_size"])


def _as_dask_paths(paths, npartitions, partition_size):
    """``paths`` as a 1-D dask array of ``str`` objects with known chunks."""
    import dask.array as da
    import numpy as np
    from dask.base import is_dask_collection

    if is_dask_collection(paths):
        if npartitions is not None:
            raise ValueError(
                "npartitions is for plain lists of paths; a dask collection keeps "
                "its own partitions (repartition it first, e.g. "
                "bag.repartition(npartitions=...) or array.rechunk(...))."
            )
        return _dask_collection_paths(paths)
    from ._images import as_image_list

    items = as_image_list(paths)
    if not all(isinstance(p, str) for p in items):
        raise ValueError(
            "dask_features needs image paths (str or pathlib.Path): images "
            "travel to the workers as file names, so each worker must be able "
            "to read them. Save in-memory images to files first."
        )
    if not items:
        raise ValueError("paths is empty: at least one image is required.")
    if npartitions is not None:
        if not isinstance(npartitions, int) or npartitions < 1:
            raise ValueError(
                f"npartitions must be a positive int or None; got {npartitions!r}."
            )
        size = math.ceil(len(items) / min(npartitions, len(items)))
    else:
        if not isinstance(partition_size, int) or partition_size < 1:
            raise ValueError(
                f"partition_size must be a positive int; got {partition_size!r}."
            )
        size = partition_size
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return da.from_array(array, chunks=size)


def _dask_collection_paths(paths):
    import dask.array as da
    import dask.bag as db
    from dask import delayed

    if isinstance(paths, da.Array):
        if paths.ndim != 1:
            raise ValueError(
                f"a dask array of paths must be 1-D; got shape {paths.shape}."
            )
        if any(math.isnan(c) for c in paths.chunks[0]):
            paths = paths.compute_chunk_sizes()
        return paths
    if isinstance(paths, db.Bag):
        parts = paths.to_delayed()
        lengths = paths.map_partitions(_partition_length).compute()
        blocks = [
            da.from_delayed(delayed(_as_object_array)(part), (n,), dtype=object)
            for part, n in zip(parts, lengths)
        ]
        if not blocks:
            raise ValueError("paths is an empty dask Bag: it has no partitions.")
        return da.concatenate(blocks)
    if hasattr(paths, "to_dask_array") and getattr(paths, "ndim", 1) == 1:
        return paths.astype(object).to_dask_array(lengths=True)
    if hasattr(paths, "to_dask_array"):
        raise ValueError(
            "paths must be 1-D (one image per row); got a dask DataFrame. Select "
            "the column of paths, e.g. ddf['path']."
        )
    raise TypeError(
        "paths must be a list, array or Series of paths, a dask Array, a dask "
        f"Series or a dask Bag; got {type(paths).__name__}."
    ) from None


def _partition_length(partition) -> list[int]:
    return [sum(1 for _ in partition)]


def _as_object_array(partition):
    import numpy as np

    items = list(partition)
    array = np.empty(len(items), dtype=object)
    array[:] = [os.fspath(p) for p in items]
    return array


def _persist_with_progress(array):
    try:
        from distributed import default_client, progress
    except ImportError:
        raise ImportError(
            "dask_features(progress=True) needs distributed: "
            "pip install 'sktransfer[dask]'"
        ) from None
    try:
        client = default_client()
    except ValueError:
        raise ValueError(
            "dask_features(progress=True) shows distributed's progress display, "
            "which needs a running distributed.Client: create one first, e.g. "
            "client = distributed.Client(), or pass progress=False and compute "
            "the lazy array."
        ) from None
    array = client.persist(array)
    progress(array)
    return array


# --- on the workers ----------------------------------------------------------

#: Transformers built in this process, by parameters' token (one body each);
#: the least recently used goes when a new one would make more than this many.
_MAX_LOADED = 2
_LOADED: dict = {}
_LOADED_LOCK = threading.Lock()
_STATS = {"bodies_loaded": 0, "partitions": 0}


def _partition_features(paths, spec, token, n_features):
    import numpy as np

    paths = [os.fspath(p) for p in np.asarray(paths, dtype=object).ravel()]
    if not paths:
        return np.empty((0, n_features), dtype=np.float32)
    transformer = _loaded_transformer(spec, token)
    with _LOADED_LOCK:
        _STATS["partitions"] += 1
    out = transformer.transform(paths)
    if out.shape[1] != n_features:
        raise RuntimeError(
            f"backbone {spec.get('backbone')!r} returned {out.shape[1]} features "
            f"per image on this worker, not the {n_features} expected."
        )
    return np.ascontiguousarray(out, dtype=np.float32)


def _loaded_transformer(spec, token):
    with _LOADED_LOCK:
        transformer = _LOADED.pop(token, None)
        if transformer is None:
            from ._features import PretrainedFeatures

            transformer = PretrainedFeatures(**spec).fit()
            _STATS["bodies_loaded"] += 1
            while len(_LOADED) >= _MAX_LOADED:
                _LOADED.pop(next(iter(_LOADED)))
        _LOADED[token] = transformer  # most recently used last
        return transformer


def worker_stats() -> dict:
    """What this process did for :func:`dask_features`: ``bodies_loaded``
    and ``partitions`` computed (run it on the workers with
    ``client.run(worker_stats)``)."""
    with _LOADED_LOCK:
        return dict(_STATS)
