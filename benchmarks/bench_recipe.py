"""The fastai recipe, stage by stage, on real photos.

For each data set: precompute-only vs + augmented head cycles vs +
unfrozen fine-tuning with differential learning rates vs + TTA, with
accuracy, log loss and wall time of each step. Each step continues from
the previous one (``warm_start=True``), so the times are incremental.

    .venv/bin/python benchmarks/bench_recipe.py --data dogscats
    .venv/bin/python benchmarks/bench_recipe.py --data hymenoptera
    .venv/bin/python benchmarks/bench_recipe.py --data flowers

dogscats and flowers use a fixed stratified 80/20 split (seed 0);
hymenoptera uses its own train/val folders.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split

from sktransfer import PretrainedImageClassifier
from sktransfer.datasets import load_image_folder

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "weights" / "mobilenet_v2-imagenet.pth"


def load(name, limit=None):
    data = SHARED / "data"
    if name == "hymenoptera":
        X_tr, y_tr = load_image_folder(data / "hymenoptera_data" / "train")
        X_te, y_te = load_image_folder(data / "hymenoptera_data" / "val")
        return X_tr, X_te, y_tr, y_te
    X, y = load_image_folder(data / ("dogscats/train" if name == "dogscats" else name))
    if limit:
        keep, _ = train_test_split(
            np.arange(len(X)), train_size=limit, stratify=y, random_state=0
        )
        X, y = X[keep], y[keep]
    return train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data", default="dogscats", choices=["dogscats", "hymenoptera", "flowers"]
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="use a stratified subset"
    )
    parser.add_argument("--cycles", type=int, default=2, help="augmented head cycles")
    parser.add_argument("--unfrozen-cycles", type=int, default=2)
    parser.add_argument("--cycle-mult", type=float, default=2)
    parser.add_argument("--unfrozen-lr", type=float, default=1e-4)
    parser.add_argument("--lr-mult", type=float, default=10)
    parser.add_argument("--tta", type=int, default=4)
    args = parser.parse_args()

    X_tr, X_te, y_tr, y_te = load(args.data, args.limit)
    print(
        f"{args.data}: {len(X_tr)} train / {len(X_te)} test photos, "
        f"{len(np.unique(y_tr))} classes, mobilenet_v2 ({WEIGHTS.name})\n"
    )
    with tempfile.TemporaryDirectory() as cache:
        clf = PretrainedImageClassifier(
            "mobilenet_v2",
            weights=str(WEIGHTS),
            cache=cache,
            random_state=0,
            warm_start=True,
            unfrozen_lr=args.unfrozen_lr,
            lr_mult=args.lr_mult,
            cycle_mult=args.cycle_mult,
        )
        steps = [
            ("precompute only (8 epochs on cached features)", {}, None),
            (
                f"+ augmented head, {args.cycles} cycles of 1 epoch",
                dict(precompute_epochs=0, augmented_cycles=args.cycles),
                None,
            ),
            (
                f"+ unfrozen, {args.unfrozen_cycles} cycles, "
                f"cycle_mult={args.cycle_mult:g}, "
                f"lrs {args.unfrozen_lr:g}/{args.lr_mult:g}^k",
                dict(
                    precompute_epochs=0,
                    augmented_cycles=0,
                    unfrozen_cycles=args.unfrozen_cycles,
                ),
                None,
            ),
            (f"+ TTA ({args.tta} augmented views)", None, args.tta),
        ]
        print("| step | accuracy | log loss | seconds (fit + predict) |")
        print("|---|---|---|---|")
        total = 0.0
        for label, params, tta in steps:
            start = time.perf_counter()
            if params is not None:
                clf.set_params(**params).fit(X_tr, y_tr)
            if tta is not None:
                clf.set_params(tta=tta)
            proba = clf.predict_proba(X_te)
            seconds = time.perf_counter() - start
            total += seconds
            pred = clf.classes_[proba.argmax(1)]
            print(
                f"| {label} | {accuracy_score(y_te, pred):.4f} | "
                f"{log_loss(y_te, proba, labels=clf.classes_):.4f} | {seconds:.0f} |",
                flush=True,
            )
        print(f"\ntotal {total:.0f} s")


if __name__ == "__main__":
    main()
