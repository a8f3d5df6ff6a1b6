"""The linear probe's own seconds, on features already cached.

    .venv/bin/python benchmarks/bench_probe.py
    .venv/bin/python benchmarks/bench_probe.py --busy     # one core kept busy

For each set, the default classifier is fitted on the training images of
the first fold of ``bench_vs_linear.py`` with ``random_state`` 0 .. N-1 (the
probe's folds change with it), after one fit that fills the feature cache;
the table prints the median and the range of ``history_[0]["seconds"]``:
the penalty's cross-validation and the final fit, not the features.

``--busy`` runs a busy loop in another process for the whole measurement,
as a second job on a 2-core machine would (the probe runs torch with one
thread).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402
from bench_vs_linear import BASE, splits  # noqa: E402

from sktransfer import PretrainedImageClassifier  # noqa: E402

SETS = ("hymenoptera", "multilabel", "dogscats")


def probe_seconds(X, y, seeds):
    PretrainedImageClassifier(**BASE).fit(X, y)  # the features, cached
    return [
        PretrainedImageClassifier(**BASE, random_state=seed)
        .fit(X, y)
        .history_[0]["seconds"]
        for seed in range(seeds)
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--busy", action="store_true", help="keep one core busy meanwhile"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    print(f"machine: {machine()}" + (", one core kept busy" if args.busy else ""))
    busy = None
    if args.busy:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        print("set | training images | probe seconds: median (range)")
        for name in args.sets:
            for label, X, y, folds, task in splits(name):
                train = folds[0][0]
                target = list(y[train]) if task == "multi" else y[train]
                seconds = probe_seconds(X[train], target, args.seeds)
                print(
                    f"{label} | {len(train)} | {np.median(seconds):.2f} "
                    f"({min(seconds):.2f}-{max(seconds):.2f})",
                    flush=True,
                )
    finally:
        if busy is not None:
            busy.kill()


if __name__ == "__main__":
    main()
