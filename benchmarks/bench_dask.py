"""Dask on one machine: feature extraction and grid search on a LocalCluster.

Prints, on photos of ``../shared/data/dogscats`` with the offline
``mobilenet_v2`` weights:

1. extraction img/s of the same photos (decode + preprocessing + body, cache
   off) in this process (torch with 1 and with all threads) and with
   :func:`sktransfer.dask.dask_features` on a ``LocalCluster`` of 2 worker
   processes of 1 thread each; the bodies are loaded before timing (once per
   worker), and all runs' features are compared;
2. a 2-candidate, 3-fold ``GridSearchCV`` of ``PretrainedFeatures`` +
   ``LogisticRegression`` under ``joblib.parallel_backend("dask")``: images
   through the body (the shared cache's counter) against the images the
   search asks features for.

Run alone on an idle machine:
``.venv/bin/python benchmarks/bench_dask.py`` (``--n-images``,
``--grid-images`` and ``--partitions`` change the sizes).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "weights" / "mobilenet_v2-imagenet.pth"
PHOTOS = SHARED / "data" / "dogscats" / "train"


def photos(n):
    """``n`` photos, half cats and half dogs, in a fixed order."""
    per_class = []
    for cls in ("cats", "dogs"):
        files = sorted(p for p in (PHOTOS / cls).iterdir() if p.is_file())
        per_class.append([str(p) for p in files[: n // 2]])
    paths = [p for pair in zip(*per_class) for p in pair]
    labels = np.array(["cat", "dog"] * (len(paths) // 2))
    return paths, labels


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if "model name" in ln),
        "unknown CPU",
    )
    bf16 = "avx512_bf16" in text
    return f"{name}, {os.cpu_count()} cores, avx512_bf16 {'yes' if bf16 else 'no'}"


def single_process(params, paths, threads):
    from sktransfer import PretrainedFeatures

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        transformer = PretrainedFeatures(**params).fit()
        transformer.transform(paths[:8])  # warm-up: first-call allocations
        start = time.perf_counter()
        features = transformer.transform(paths)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    return features, seconds


def on_cluster(client, params, paths, partitions):
    from sktransfer import PretrainedFeatures
    from sktransfer.dask import dask_features, worker_stats

    transformer = PretrainedFeatures(**params)
    # load the body on every worker before timing (once per worker)
    n_workers = len(client.scheduler_info()["workers"])
    dask_features(transformer, paths[: 2 * n_workers], npartitions=n_workers).compute(
        scheduler=client
    )
    start = time.perf_counter()
    features = dask_features(transformer, paths, npartitions=partitions).compute(
        scheduler=client
    )
    seconds = time.perf_counter() - start
    # a fresh cluster: every load counted, warm-up included
    loads = sum(stats["bodies_loaded"] for stats in client.run(worker_stats).values())
    return features, seconds, loads


def grid_search(client, params, paths, labels, cache):
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    from sktransfer import FeatureCache, PretrainedFeatures

    pipe = make_pipeline(
        PretrainedFeatures(**dict(params, cache=cache)),
        LogisticRegression(max_iter=2000),
    )
    grid = GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0]}, cv=3)
    start = time.perf_counter()
    with joblib.parallel_backend("dask", client=client):
        grid.fit(paths, labels)
    seconds = time.perf_counter() - start
    computed = FeatureCache(cache).stats()["computed"]
    # each of 2 x 3 fits transforms its train and test fold, the refit all
    asked = 2 * 3 * len(paths) + len(paths)
    return computed, asked, seconds, grid.best_score_


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=400)
    parser.add_argument("--grid-images", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    if not (WEIGHTS.exists() and PHOTOS.exists()):
        raise SystemExit(f"needs {WEIGHTS} and {PHOTOS}")
    from distributed import Client, LocalCluster

    params = dict(
        backbone="mobilenet_v2",
        weights=str(WEIGHTS),
        precision=args.precision,
        cache=None,
    )
    paths, _ = photos(args.n_images)
    rows = []
    cores = os.cpu_count() or 1
    ref, seconds = single_process(params, paths, threads=1)
    rows.append(("this process, torch 1 thread", seconds, 1))
    feats, seconds = single_process(params, paths, threads=cores)
    rows.append((f"this process, torch {cores} threads", seconds, 1))
    agreement = [float(np.abs(feats - ref).max())]

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster, set_as_default=False)
    try:
        feats, seconds, loads = on_cluster(client, params, paths, args.partitions)
        rows.append(
            (f"LocalCluster 2 workers x 1 thread, {args.partitions} partitions",
             seconds, loads)
        )  # fmt: skip
        agreement.append(float(np.abs(feats - ref).max()))
        grid_paths, grid_labels = photos(args.grid_images)
        with tempfile.TemporaryDirectory() as tmp:
            grid = grid_search(client, params, grid_paths, grid_labels, tmp)
    finally:
        client.close()
        cluster.close()

    print(f"machine: {cpu_name()}; torch {torch.__version__}")
    print(
        f"{len(paths)} dogscats photos, mobilenet_v2 (offline weights), "
        f"precision={args.precision!r}, cache off, bodies loaded before timing "
        "(body loads: in the whole run, warm-up included)\n"
    )
    print("| extraction | seconds | img/s | body loads |")
    print("|---|---:|---:|---:|")
    for name, secs, n_loads in rows:
        print(f"| {name} | {secs:.1f} | {len(paths) / secs:.1f} | {n_loads} |")
    print(f"\nlargest feature difference between runs: {max(agreement):.2e}")
    computed, asked, seconds, score = grid
    print(
        f"\nGridSearchCV (2 candidates x 3 folds + refit) over {args.grid_images} "
        f"photos under joblib.parallel_backend('dask'), shared cache:\n"
        f"  images through the body: {computed} (features asked for: {asked}); "
        f"{seconds:.1f} s; best accuracy {score:.3f}"
    )


if __name__ == "__main__":
    main()
