"""Speed where users run: busy cores, grid searches, fast bodies.

Side by side in one run, as ratios (shared machines are noisy, ratios
less so):

1. first ``fit`` (features computed) vs a cached refit of the default
   classifier on the 2,000 dogs-vs-cats photos, on idle cores and with one
   CPU-bound process running beside it;
2. ``GridSearchCV`` (4 candidates x 3 folds) on cached features with
   ``n_jobs=1`` vs ``n_jobs=2``;
3. end-to-end extraction (decode included, cache off) vs the bare forward
   of the same body at the precision ``"auto"`` picks, for mobilenet_v2,
   mobilenet_v3_large and resnet34.

    .venv/bin/python benchmarks/bench_speed.py [--only refit|grid|extract]
        [--precision auto|fp32|bf16]

Run it with nothing else on the machine: the "busy" rows add their own
known load (one process spinning on a core).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine
from sklearn.model_selection import GridSearchCV

from sktransfer import PretrainedFeatures, PretrainedImageClassifier
from sktransfer.datasets import load_image_folder

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = str(SHARED / "weights" / "mobilenet_v2-imagenet.pth")


def spin(stop):
    x = 0
    while not stop.is_set():
        for i in range(100_000):
            x += i * i


class Busy:
    """One CPU-bound process running for the duration of a ``with`` block."""

    def __enter__(self):
        self.stop = mp.Event()
        self.proc = mp.Process(target=spin, args=(self.stop,), daemon=True)
        self.proc.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.proc.join(5)


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_refit(X, y):
    print("\n## 1. First fit vs cached refit (default classifier, mobilenet_v2)\n")
    print("| cores | first fit s | cached refit s | ratio |")
    print("|---|---|---|---|")
    for label, busy in (("idle", False), ("one CPU-bound process beside", True)):
        with tempfile.TemporaryDirectory() as cache:
            clf = PretrainedImageClassifier(
                "mobilenet_v2", weights=WEIGHTS, cache=cache, random_state=0
            )
            ctx = Busy() if busy else _Nothing()
            with ctx:
                first = timed(lambda c=clf: c.fit(X, y))
                refit = min(timed(lambda c=clf: c.fit(X, y)) for _ in range(2))
            print(f"| {label} | {first:.1f} | {refit:.2f} | {first / refit:.1f}x |")


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def bench_grid(X, y):
    print("\n## 2. GridSearchCV on cached features, 4 candidates x 3 folds\n")
    print("| n_jobs | seconds |")
    print("|---|---|")
    with tempfile.TemporaryDirectory() as cache:
        clf = PretrainedImageClassifier(
            "mobilenet_v2", weights=WEIGHTS, cache=cache, random_state=0
        )
        clf.fit(X, y)  # fills the cache
        grid = {"lr": [1e-3, 3e-3], "dropout": [0.25, 0.5]}
        times = {}
        for n_jobs in (1, 2):
            search = GridSearchCV(clf, grid, cv=3, n_jobs=n_jobs)
            times[n_jobs] = timed(lambda s=search: s.fit(X, y))
            print(f"| {n_jobs} | {times[n_jobs]:.1f} |")
        print(f"\nn_jobs=2 takes {times[2] / times[1]:.2f} of the n_jobs=1 time")


def bare_forward(extractor, batch_size, n_batches):
    pre = extractor.preprocessing
    x = np.random.default_rng(0).integers(
        0, 255, (batch_size, pre.crop_size, pre.crop_size, 3), dtype=np.uint8
    )
    extractor.forward(x)
    start = time.perf_counter()
    for _ in range(n_batches):
        extractor.forward(x)
    return batch_size * n_batches / (time.perf_counter() - start)


def bench_extract(X, precision="auto", repeats=3):
    print(f"\n## 3. End-to-end extraction vs bare forward, precision={precision!r}\n")
    print(
        f"Bare forward and end to end alternate, {repeats} times each over the "
        "same number of images; the medians are compared.\n"
    )
    print("| backbone | precision | bare forward img/s | end-to-end img/s | ratio |")
    print("|---|---|---|---|---|")
    for name, weights, n in (
        ("mobilenet_v2", WEIGHTS, 800),
        ("mobilenet_v3_large", None, 800),
        ("resnet34", None, 384),
    ):
        tr = PretrainedFeatures(
            name, weights=weights, cache=None, precision=precision
        ).fit()
        ext = tr.extractor_
        bare, e2e = [], []
        for _ in range(repeats):
            bare.append(bare_forward(ext, 32, n // 32))
            e2e.append(n / timed(lambda tr=tr, n=n: tr.transform(X[:n])))
        bare, e2e = float(np.median(bare)), float(np.median(e2e))
        ratio = e2e / bare
        print(f"| {name} | {ext.precision} | {bare:.0f} | {e2e:.0f} | {ratio:.2f} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["refit", "grid", "extract"])
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="of the extraction rows ('fp32' stands in for a CPU without bf16)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="of each extraction measurement"
    )
    args = parser.parse_args()
    X, y = load_image_folder(SHARED / "data" / "dogscats" / "train")
    # the extraction rows run where device='auto' puts them: a GPU if any
    print(machine(torch.device("cuda" if torch.cuda.is_available() else "cpu")))
    if args.only in (None, "refit"):
        bench_refit(X, y)
    if args.only in (None, "grid"):
        bench_grid(X, y)
    if args.only in (None, "extract"):
        bench_extract(X, args.precision, args.repeats)


if __name__ == "__main__":
    main()
