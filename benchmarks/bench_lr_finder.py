"""How good are the LR finder's suggestions?

For each data set (fixed stratified 80/20 split, seed 0, mobilenet_v2 with
the offline weights): the accuracy reached by training with each
suggestion rule vs the best rate of a grid from 1e-5 to 1, and the
run-to-run spread of each suggestion over 5 seeds.

* head: 8 epochs on precomputed features (the default first stage);
* unfrozen: the head as above, then ``--unfrozen-epochs`` unfrozen epochs
  with ``lr_mult=10`` (on a ``--unfrozen-limit`` subset: every epoch runs the
  network forwards and backwards on every photo, which is slow on a CPU).

    .venv/bin/python benchmarks/bench_lr_finder.py --data dogscats
    .venv/bin/python benchmarks/bench_lr_finder.py --data flowers
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import train_test_split

from sktransfer import LRFinder, PretrainedImageClassifier
from sktransfer.datasets import load_image_folder

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "weights" / "mobilenet_v2-imagenet.pth"
GRID = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
RULES = ("valley", "minimum", "steepest")


def split(name, limit=None):
    X, y = load_image_folder(
        SHARED / "data" / ("dogscats/train" if name == "dogscats" else name)
    )
    if limit:
        keep, _ = train_test_split(
            np.arange(len(X)), train_size=limit, stratify=y, random_state=0
        )
        X, y = X[keep], y[keep]
    return train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)


def study(base, stage, rate_param, X_tr, X_te, y_tr, y_te, seeds):
    grid = {}
    for lr in GRID:
        clf = clone(base).set_params(**{rate_param: lr}).fit(X_tr, y_tr)
        grid[lr] = clf.score(X_te, y_te)
    best_lr = max(grid, key=grid.get)
    suggestions = {rule: [] for rule in RULES}
    start = time.perf_counter()
    for seed in seeds:
        finder = LRFinder(base, stage=stage, random_state=seed).fit(X_tr, y_tr)
        for rule in RULES:
            suggestions[rule].append(finder.suggestions_[rule])
    finder_seconds = (time.perf_counter() - start) / len(seeds)
    print("| rate | accuracy |\n|---|---|")
    for lr, acc in grid.items():
        print(f"| grid {lr:g} | {acc:.4f} |")
    print(
        f"\nbest grid rate {best_lr:g}: accuracy {grid[best_lr]:.4f}; "
        f"one sweep takes {finder_seconds:.1f} s\n"
    )
    print(
        "| rule | suggestion (seed 0) | spread over seeds (max/min) | accuracy | "
        "gap to grid best |"
    )
    print("|---|---|---|---|---|")
    for rule in RULES:
        values = np.asarray(suggestions[rule])
        clf = clone(base).set_params(**{rate_param: float(values[0])}).fit(X_tr, y_tr)
        acc = clf.score(X_te, y_te)
        print(
            f"| {rule} | {values[0]:.3g} | {values.max() / values.min():.2f}x | "
            f"{acc:.4f} | {acc - grid[best_lr]:+.4f} |",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="dogscats", choices=["dogscats", "flowers"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--unfrozen-limit", type=int, default=300)
    parser.add_argument("--unfrozen-epochs", type=int, default=1)
    parser.add_argument("--skip-unfrozen", action="store_true")
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory() as cache:
        base = PretrainedImageClassifier(
            "mobilenet_v2", weights=str(WEIGHTS), cache=cache, random_state=0
        )
        X_tr, X_te, y_tr, y_te = split(args.data)
        print(
            f"## {args.data}: head on precomputed features "
            f"({len(X_tr)} train / {len(X_te)} test)\n"
        )
        study(base, "precomputed", "lr", X_tr, X_te, y_tr, y_te, seeds)
        if args.skip_unfrozen:
            return
        X_tr, X_te, y_tr, y_te = split(args.data, args.unfrozen_limit)
        print(
            f"\n## {args.data}: unfrozen, {args.unfrozen_epochs} epoch(s) "
            f"({len(X_tr)} train / {len(X_te)} test)\n"
        )
        tuned = clone(base).set_params(unfrozen_cycles=args.unfrozen_epochs)
        study(tuned, "unfrozen", "unfrozen_lr", X_tr, X_te, y_tr, y_te, seeds[:3])


if __name__ == "__main__":
    main()
