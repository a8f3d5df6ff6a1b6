"""The default against a linear model on small tasks nobody chose.

    .venv/bin/python benchmarks/bench_random_tasks.py
    .venv/bin/python benchmarks/bench_random_tasks.py --tasks 300 --seed 1

``bench_vs_linear.py`` measures a dozen sets picked by hand. This one
draws many small tasks at random from the three photo sets in
``../shared/data``: a set (in turn), for flowers 2 to 5 of its classes, a
number of training photos a class (the same for every class, from
``--per-class``), and 300 test photos from the rest of those classes. On
each task it fits ``PretrainedFeatures`` + ``LogisticRegression()`` (the
linear model with scikit-learn's defaults) and the default
``PretrainedImageClassifier`` (the linear probe) on the same training
photos and scores both on the same test photos.

The table groups the tasks by their number of training photos: mean
accuracy and log loss of each model, and on how many tasks the default's
log loss is above the linear model's (at all, and by more than 0.05) and
its accuracy more than one point below or above. Features are cached, so after the
first run (one extraction pass over the 6,700 photos) a run takes a few
minutes.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, WEIGHTS, machine, split  # noqa: E402

from sktransfer import PretrainedFeatures, PretrainedImageClassifier  # noqa: E402
from sktransfer.datasets import load_image_folder  # noqa: E402

BASE = dict(backbone="mobilenet_v2", weights=str(WEIGHTS))
#: Rows of the table: tasks with ``lo <= training photos < hi``.
BUCKETS = ((2, 10), (10, 20), (20, 40), (40, 100), (100, 10**6))


def photo_sets():
    data = SHARED / "data"
    ants_train, ants_val, ants_y, ants_val_y = split("hymenoptera")
    return {
        "flowers": load_image_folder(data / "flowers"),
        "dogscats": load_image_folder(data / "dogscats" / "train"),
        "hymenoptera": (
            np.concatenate([ants_train, ants_val]),
            np.concatenate([ants_y, ants_val_y]),
        ),
    }


def draw_task(rng, name, y, per_class):
    """``(train, test)`` indices of one random task of set ``name``."""
    classes = np.unique(y)
    if name == "flowers":
        classes = rng.choice(classes, rng.integers(2, len(classes) + 1), replace=False)
    k = int(rng.choice(per_class))
    train = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), k, replace=False) for c in classes]
    )
    rest = np.setdiff1d(np.flatnonzero(np.isin(y, classes)), train)
    return train, rng.choice(rest, min(300, len(rest)), replace=False)


def scores(truth, proba, classes):
    pred = np.asarray(classes)[np.argmax(proba, axis=1)]
    return accuracy_score(truth, pred), log_loss(truth, proba, labels=classes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=180)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--per-class", type=int, nargs="+",
        default=[1, 2, 3, 4, 6, 8, 12, 16, 20, 30, 50],
        help="training photos a class, one drawn per task",
    )  # fmt: skip
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    print(machine())
    sets = photo_sets()
    features = {
        name: PretrainedFeatures(**BASE).fit_transform(X)
        for name, (X, _) in sets.items()
    }
    rows, start = [], time.perf_counter()
    names = list(sets)
    for t in range(args.tasks):
        rng = np.random.default_rng([args.seed, t])
        name = names[t % len(names)]
        X, y = sets[name]
        train, test = draw_task(rng, name, y, args.per_class)
        F = features[name]
        linear = LogisticRegression(max_iter=5000).fit(F[train], y[train])
        default = PretrainedImageClassifier(**BASE, random_state=t)
        default.fit(X[train], y[train])
        rows.append(
            (len(train),)
            + scores(y[test], linear.predict_proba(F[test]), linear.classes_)
            + scores(y[test], default.predict_proba(X[test]), default.classes_)
        )
    rows = np.array(rows)
    print(
        f"{args.tasks} tasks in {time.perf_counter() - start:.0f} s "
        f"(features cached); accuracy / log loss, mean over the tasks\n"
    )
    print(
        "| training photos | tasks | linear model | default | default's log loss "
        "higher | by > 0.05 | accuracy > 1 point lower | higher |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for lo, hi in BUCKETS + ((0, 10**6),):
        part = rows[(rows[:, 0] >= lo) & (rows[:, 0] < hi)]
        if not len(part):
            continue
        n, lin_acc, lin_loss, acc, loss = part.T
        label = "all" if (lo, hi) == (0, 10**6) else (
            f"{lo}+" if hi == 10**6 else f"{lo}-{hi - 1}"
        )  # fmt: skip
        print(
            f"| {label} | {len(part)} | {lin_acc.mean():.4f} / {lin_loss.mean():.4f} "
            f"| {acc.mean():.4f} / {loss.mean():.4f} | {(loss > lin_loss).sum()} "
            f"| {(loss > lin_loss + 0.05).sum()} | {(acc < lin_acc - 0.01).sum()} "
            f"| {(acc > lin_acc + 0.01).sum()} |"
        )


if __name__ == "__main__":
    main()
