"""The default against a linear model on small tasks nobody chose.

    .venv/bin/python benchmarks/bench_random_tasks.py
    .venv/bin/python benchmarks/bench_random_tasks.py --tasks 300 --seed 1
    .venv/bin/python benchmarks/bench_random_tasks.py --regression
    .venv/bin/python benchmarks/bench_random_tasks.py --multilabel --tasks 60
    .venv/bin/python benchmarks/bench_random_tasks.py --unbalanced
    .venv/bin/python benchmarks/bench_random_tasks.py --unbalanced \
        --class-weight balanced

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

With ``--regression`` the tasks are regressions instead: 3-150 photos of
dogs and cats zoomed, rotated or brightened by a random amount (the
target; written once by ``bench_family.derived``), 300 test photos of the
same kind, and ``StandardScaler`` + ``RidgeCV`` over alphas 1e-2..1e4
(as in ``bench_family.py``) against the default
``PretrainedImageRegressor`` (the ridge probe), in R².

With ``--multilabel`` they are multi-label tasks: 6-120 of the two-photo
collages of ``bench_family.pairs`` (4 labels: cats, dogs, ants, bees; read
with ``resize_mode="squish"``), 200 test collages, and one-vs-rest
``LogisticRegression()`` on the features against the default classifier,
in samples-F1 and the mean over the labels of each label's log loss.

With ``--unbalanced`` the tasks mix the three sets: 3 to 9 of their nine
classes (dogs, cats, ants, bees, five flowers), each class with a number
of training photos drawn on its own (1 to 150), and 300 test photos in the
same shares. With ``--class-weight balanced`` as well, both models get
``class_weight="balanced"`` and are scored by what those weights stand
for: balanced accuracy, and the log loss with each test photo weighted
inversely to its class's share.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    r2_score,
)
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MultiLabelBinarizer, StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, WEIGHTS, machine, split  # noqa: E402
from bench_family import derived, pairs  # noqa: E402

from sktransfer import (  # noqa: E402
    PretrainedFeatures,
    PretrainedImageClassifier,
    PretrainedImageRegressor,
)
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


def scores(truth, proba, classes, balanced=False):
    """Accuracy and log loss of ``proba``; ``balanced``: balanced accuracy and
    the log loss with each photo weighted inversely to its class's share."""
    pred = np.asarray(classes)[np.argmax(proba, axis=1)]
    if not balanced:
        return accuracy_score(truth, pred), log_loss(truth, proba, labels=classes)
    weight = compute_sample_weight("balanced", truth)
    return balanced_accuracy_score(truth, pred), log_loss(
        truth, proba, labels=classes, sample_weight=weight
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=180)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--per-class", type=int, nargs="+",
        default=[1, 2, 3, 4, 6, 8, 12, 16, 20, 30, 50],
        help="training photos a class, one drawn per task",
    )  # fmt: skip
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--regression", action="store_true")
    kind.add_argument("--multilabel", action="store_true")
    kind.add_argument("--unbalanced", action="store_true")
    parser.add_argument(
        "--class-weight", choices=["balanced"], default=None,
        help="with --unbalanced: both models' class_weight, and balanced scores",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.class_weight and not args.unbalanced:
        parser.error("--class-weight goes with --unbalanced")
    warnings.simplefilter("ignore")
    print(machine())
    if args.regression:
        return regression_tasks(args)
    if args.multilabel:
        return multilabel_tasks(args)
    if args.unbalanced:
        return unbalanced_tasks(args)
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
    print_against_linear(rows, BUCKETS, margin=0.01)


def by_size(rows, buckets):
    """``(label, rows)`` of each bucket ``lo <= training images < hi``
    (column 0 of ``rows``) that has tasks, then of all tasks."""
    for lo, hi in buckets + ((0, 10**6),):
        part = rows[(rows[:, 0] >= lo) & (rows[:, 0] < hi)]
        if len(part):
            label = "all" if (lo, hi) == (0, 10**6) else (
                f"{lo}+" if hi == 10**6 else f"{lo}-{hi - 1}"
            )  # fmt: skip
            yield label, part


def print_against_linear(rows, buckets, margin):
    """The table's lines of tasks whose columns are the training images and
    the linear model's and the default's score and log loss: the means, and
    on how many tasks the default's log loss is higher (at all, by more
    than 0.05) and its score lower or higher by more than ``margin``."""
    for label, part in by_size(rows, buckets):
        _, lin_score, lin_loss, score, loss = part.T
        print(
            f"| {label} | {len(part)} | {lin_score.mean():.4f} / {lin_loss.mean():.4f} "
            f"| {score.mean():.4f} / {loss.mean():.4f} | {(loss > lin_loss).sum()} "
            f"| {(loss > lin_loss + 0.05).sum()} "
            f"| {(score < lin_score - margin).sum()} "
            f"| {(score > lin_score + margin).sum()} |"
        )


#: Training photos of a regression task, one drawn per task.
REGRESSION_SIZES = (3, 5, 8, 10, 15, 20, 30, 40, 60, 80, 100, 150)
REGRESSION_BUCKETS = ((3, 10), (10, 20), (20, 40), (40, 100), (100, 10**6))


def regression_tasks(args):
    kinds = ("zoom", "angle", "brightness")
    sets = {kind: derived(kind, 600) for kind in kinds}
    features = {
        k: PretrainedFeatures(**BASE).fit_transform(X) for k, (X, _) in sets.items()
    }
    rows, start = [], time.perf_counter()
    for t in range(args.tasks):
        rng = np.random.default_rng([args.seed, t])
        kind = kinds[t % len(kinds)]
        X, y = sets[kind]
        n = int(rng.choice(REGRESSION_SIZES))
        order = rng.permutation(len(X))
        train, test = order[:n], order[n : n + 300]
        F = features[kind]
        ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
        ridge.fit(F[train], y[train])
        default = PretrainedImageRegressor(**BASE, random_state=t)
        default.fit(X[train], y[train])
        rows.append(
            (n, kinds.index(kind))
            + (r2_score(y[test], ridge.predict(F[test])),)
            + (r2_score(y[test], default.predict(X[test])),)
        )
    rows = np.array(rows)
    print(
        f"{args.tasks} regression tasks in {time.perf_counter() - start:.0f} s "
        "(features cached); R², mean over the tasks (the median in brackets)\n"
    )
    print(
        "| target | training photos | tasks | RidgeCV | default | default's R² "
        "lower | by > 0.02 | higher by > 0.02 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for k, kind in list(enumerate(kinds)) + [(None, "all")]:
        of_kind = rows if k is None else rows[rows[:, 1] == k]
        for label, part in by_size(of_kind, REGRESSION_BUCKETS):
            ridge, ours = part[:, 2], part[:, 3]
            print(
                f"| {kind} | {label} | {len(part)} | {ridge.mean():.4f} "
                f"({np.median(ridge):.4f}) | {ours.mean():.4f} ({np.median(ours):.4f}) "
                f"| {(ours < ridge).sum()} | {(ours < ridge - 0.02).sum()} "
                f"| {(ours > ridge + 0.02).sum()} |"
            )


#: Training collages of a multi-label task, one drawn per task.
MULTILABEL_SIZES = (6, 8, 12, 16, 24, 36, 50, 80, 120)
MULTILABEL_BUCKETS = ((6, 20), (20, 50), (50, 10**6))


def label_log_loss(truth, proba) -> float:
    """The mean over the labels of each label's binary log loss."""
    proba = np.clip(proba, 1e-15, 1 - 1e-15)
    each = -(truth * np.log(proba) + (1 - truth) * np.log(1 - proba)).mean(0)
    return float(each.mean())


def multilabel_tasks(args):
    X, labels = pairs(600)
    Y = MultiLabelBinarizer().fit_transform(labels)
    squish = dict(BASE, preprocessing={"resize_mode": "squish"})
    F = PretrainedFeatures(**squish).fit_transform(X)
    rows, start = [], time.perf_counter()
    for t in range(args.tasks):
        rng = np.random.default_rng([args.seed, t])
        n = int(rng.choice(MULTILABEL_SIZES))
        order = rng.permutation(len(X))
        train, test = order[:n], order[n : n + 200]
        if Y[train].sum(0).min() == 0 or Y[train].sum(0).max() == n:
            continue  # a label never (or always) seen: nothing to compare
        linear = OneVsRestClassifier(LogisticRegression(max_iter=5000))
        linear.fit(F[train], Y[train])
        default = PretrainedImageClassifier(**squish, random_state=t)
        default.fit(X[train], Y[train])
        results = [n]
        for proba, pred in (
            (linear.predict_proba(F[test]), linear.predict(F[test])),
            (default.predict_proba(X[test]), default.predict(X[test])),
        ):
            f1 = f1_score(Y[test], pred, average="samples", zero_division=0)
            results += [f1, label_log_loss(Y[test], proba)]
        rows.append(results)
    rows = np.array(rows)
    print(
        f"{len(rows)} multi-label tasks in {time.perf_counter() - start:.0f} s "
        "(features cached); samples-F1 / mean per-label log loss\n"
    )
    print(
        "| training collages | tasks | one-vs-rest linear model | default "
        "| default's log loss higher | by > 0.05 | F1 > 0.02 lower | higher |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print_against_linear(rows, MULTILABEL_BUCKETS, margin=0.02)


#: Training photos of each class of an unbalanced task, one drawn per class.
UNBALANCED_SIZES = (1, 2, 3, 5, 8, 12, 20, 40, 80, 150)
UNBALANCED_BUCKETS = ((3, 40), (40, 100), (100, 300), (300, 10**6))


def draw_unbalanced(rng, y):
    """``(train, test)`` indices: 3 to 9 classes of ``y``, each with its own
    number of training photos, and 300 test photos in the same shares."""
    classes = np.unique(y)
    chosen = rng.choice(classes, rng.integers(3, len(classes) + 1), replace=False)
    counts = {c: int(rng.choice(UNBALANCED_SIZES)) for c in chosen}
    total = sum(counts.values())
    train, test = [], []
    for c in chosen:
        rows = rng.permutation(np.flatnonzero(y == c))
        k = counts[c]
        train.append(rows[:k])
        test.append(rows[k : k + max(1, round(300 * k / total))])
    return np.concatenate(train), np.concatenate(test)


def unbalanced_tasks(args):
    X, y, F = [], [], []
    for name, (X_set, y_set) in photo_sets().items():
        X.append(X_set)
        y.append(np.array([f"{name}: {label}" for label in y_set]))
        F.append(PretrainedFeatures(**BASE).fit_transform(X_set))
    X, y, F = np.concatenate(X), np.concatenate(y), np.concatenate(F)
    balanced = args.class_weight == "balanced"
    rows, start = [], time.perf_counter()
    for t in range(args.tasks):
        rng = np.random.default_rng([args.seed, t])
        train, test = draw_unbalanced(rng, y)
        linear = LogisticRegression(max_iter=5000, class_weight=args.class_weight)
        linear.fit(F[train], y[train])
        default = PretrainedImageClassifier(
            **BASE, class_weight=args.class_weight, random_state=t
        ).fit(X[train], y[train])
        rows.append(
            (len(train),)
            + scores(y[test], linear.predict_proba(F[test]), linear.classes_, balanced)
            + scores(
                y[test], default.predict_proba(X[test]), default.classes_, balanced
            )
        )
    rows = np.array(rows)
    measures = "balanced accuracy / class-weighted log loss" if balanced else (
        "accuracy / log loss"
    )  # fmt: skip
    print(
        f"{args.tasks} unbalanced tasks in {time.perf_counter() - start:.0f} s "
        f"(features cached), class_weight={args.class_weight!r}; {measures}, "
        "mean over the tasks\n"
    )
    print(
        "| training photos | tasks | linear model | default | default's log loss "
        "higher | by > 0.05 | score > 1 point lower | higher |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print_against_linear(rows, UNBALANCED_BUCKETS, margin=0.01)


if __name__ == "__main__":
    main()
