"""The estimators against a linear model on the same frozen features.

    .venv/bin/python benchmarks/bench_vs_linear.py                 # every set
    .venv/bin/python benchmarks/bench_vs_linear.py --sets dogscats tiny
    .venv/bin/python benchmarks/bench_vs_linear.py --models default linear-head
    .venv/bin/python benchmarks/bench_vs_linear.py --sets dogscats --image-size 288
    .venv/bin/python benchmarks/bench_vs_linear.py --models default --seeds 5
    .venv/bin/python benchmarks/bench_vs_linear.py --sets dogscats hymenoptera \
        --tuned-linear      # also LogisticRegressionCV tuned for log loss
    .venv/bin/python benchmarks/bench_vs_linear.py --recipe dogscats flowers \
        --image-size 224 128      # the accurate recipe, stage by stage

For every photo set the same folds (or train/test split) serve every row:

- ``features + LogisticRegression``: ``PretrainedFeatures`` (the same
  ``mobilenet_v2`` body and offline weights) and scikit-learn's
  ``LogisticRegression()`` with its defaults (``max_iter`` raised so that it
  converges); one-vs-rest for multi-label; ``StandardScaler`` + ``RidgeCV``
  over 13 penalties for regression;
- with ``--tuned-linear``, for single-label sets, also
  ``LogisticRegressionCV`` on the same features, its ``C`` chosen among 13
  values (1e-3..1e3) by 5-fold log loss (``solver="newton-cholesky"``;
  slow on flowers' five classes);
- the estimator rows: ``PretrainedImageClassifier`` /
  ``PretrainedImageRegressor`` with the parameters named in ``MODELS``.

Sets: dogs vs cats and flowers (5-fold over 2,000 photos), ants vs bees
(5-fold over its 397 train and val photos), tiny sets (4, 8 and 20 photos
a class of dogs vs cats and flowers, 5 draws each, tested on 400 other
photos), a zoom-fraction
regression target (600 photos, 5-fold) and two-photo collages with both
labels (600 pictures, 5-fold). Features are cached, so only the first run
of a set computes them.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, RidgeCV
from sklearn.metrics import accuracy_score, f1_score, log_loss, r2_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MultiLabelBinarizer, StandardScaler

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
#: ``--backbone``: the bodies with offline weights in ``../shared``
BACKBONES = {
    "mobilenet_v2": BASE,
    "lite0": dict(
        backbone="timm:tf_efficientnet_lite0",
        weights=str(WEIGHTS.parent / "tf_efficientnet_lite0-imagenet.pth"),
    ),
}

#: The accurate recipe with its guard: the probe, then the whole body for
#: 1 + 2 + 4 epochs, kept only if it beats the probe on 10% held out.
GUARDED = dict(unfrozen_cycles=3, cycle_mult=2, early_stopping=True)

#: The estimator rows: name -> parameters on top of BASE.
MODELS = {
    "default": {},
    "probe + 8 head epochs": dict(precompute_epochs=8),
    "probe + TTA (4 views)": dict(tta=4),
    "recipe, early_stopping=True": GUARDED,
    # the remedies of the training options, each on top of the guarded recipe
    "recipe, early_stopping=True, ema_decay=0.98": dict(GUARDED, ema_decay=0.98),
    "recipe, early_stopping=True, schedule='one_cycle'": dict(
        GUARDED, schedule="one_cycle"
    ),
    "recipe, early_stopping=True, label_smoothing=0.1": dict(
        GUARDED, label_smoothing=0.1
    ),
    "recipe, early_stopping=True, augment='trivial'": dict(GUARDED, augment="trivial"),
    "recipe, early_stopping=True, schedule='one_cycle', ema_decay=0.98": dict(
        GUARDED, schedule="one_cycle", ema_decay=0.98
    ),
    "recipe, early_stopping=True, one_cycle, ema_decay=0.98, trivial": dict(
        GUARDED, schedule="one_cycle", ema_decay=0.98, augment="trivial"
    ),
    "recipe, early_stopping=True, schedule='one_cycle', tta=4": dict(
        GUARDED, schedule="one_cycle", tta=4
    ),
    "recipe, early_stopping=True, mixup=0.2": dict(GUARDED, mixup=0.2),
    "recipe, early_stopping=True, cutmix=1.0": dict(GUARDED, cutmix=1.0),
    "recipe, early_stopping=True, layer_decay=0.8": dict(GUARDED, layer_decay=0.8),
    "recipe, early_stopping=True, schedule='one_cycle', layer_decay=0.8": dict(
        GUARDED, schedule="one_cycle", layer_decay=0.8
    ),
    # mixup of the cached features, where it costs next to nothing
    "probe + 8 head epochs, mixup=0.2": dict(precompute_epochs=8, mixup=0.2),
    # multi-label: each label's threshold chosen on a fifth held out
    "threshold='tuned', validation_fraction=0.2": dict(
        threshold="tuned", validation_fraction=0.2
    ),
    "before: MLP head, 8 epochs": dict(
        hidden_sizes=(512,), head_init="random", precompute_epochs=8
    ),
}


def photo_set(name):
    data = SHARED / "data"
    if name == "flowers":
        X, y = load_image_folder(data / "flowers")
        keep = np.random.default_rng(0).permutation(len(X))[:2000]
        return X[keep], y[keep]
    return load_image_folder(data / "dogscats" / "train")


def splits(name):
    """``(label, X, y, [(train, test), ...], task)`` for a set name."""
    if name in ("dogscats", "flowers"):
        X, y = photo_set(name)
        folds = StratifiedKFold(5, shuffle=True, random_state=0).split(X, y)
        yield name, X, y, list(folds), "single"
    elif name == "hymenoptera":
        data = SHARED / "data" / "hymenoptera_data"
        X_tr, y_tr = load_image_folder(data / "train")
        X_te, y_te = load_image_folder(data / "val")
        ok = np.array(["imageNotFound" not in p for p in X_tr])
        X = np.concatenate([X_tr[ok], X_te])
        y = np.concatenate([y_tr[ok], y_te])
        # the set's own split leaves 153 test photos (0.65 points each):
        # 5 folds over all 397 photos say more
        folds = StratifiedKFold(5, shuffle=True, random_state=0).split(X, y)
        yield name, X, y, list(folds), "single"
    elif name == "tiny":
        for source in ("dogscats", "flowers"):
            X, y = photo_set(source)
            classes = np.unique(y)
            for k in (4, 8, 20):
                folds = []
                for draw in range(5):
                    rng = np.random.default_rng(draw)
                    train = np.concatenate(
                        [rng.choice(np.flatnonzero(y == c), k, replace=False)
                         for c in classes]
                    )  # fmt: skip
                    rest = np.setdiff1d(np.arange(len(X)), train)
                    folds.append((train, rng.choice(rest, 400, replace=False)))
                yield f"{source} {k}/class", X, y, folds, "single"
    elif name == "zoom":
        X, y = derived("zoom", 600)
        folds = KFold(5, shuffle=True, random_state=0).split(X)
        yield "zoom fraction", X, y, list(folds), "regression"
    elif name == "multilabel":
        X, Y = pairs(600)
        Y = np.array(Y, dtype=object)
        folds = KFold(5, shuffle=True, random_state=0).split(X)
        yield "collage pairs", X, Y, list(folds), "multi"


def tuned_logistic():
    """``LogisticRegressionCV``, ``C`` among 13 values chosen by log loss."""
    return LogisticRegressionCV(
        Cs=np.logspace(-3, 3, 13), scoring="neg_log_loss",
        solver="newton-cholesky", max_iter=2000,
    )  # fmt: skip


def linear_row(F, y, folds, task, classifier=None):
    """Scores of the linear model on the frozen features, per fold: for a
    single-label set ``classifier()`` (``LogisticRegression()`` unless
    given)."""
    scores = []
    for train, test in folds:
        if task == "regression":
            model = make_pipeline(StandardScaler(), RidgeCV(np.logspace(-2, 4, 13)))
            scores.append(
                (r2_score(y[test], model.fit(F[train], y[train]).predict(F[test])),)
            )
            continue
        if task == "multi":
            mlb = MultiLabelBinarizer().fit(y)
            model = OneVsRestClassifier(LogisticRegression(max_iter=5000))
            model.fit(F[train], mlb.transform(y[train]))
            truth = mlb.transform(y[test])
            scores.append((f1_score(truth, model.predict(F[test]), average="samples"),))
            continue
        model = classifier() if classifier else LogisticRegression(max_iter=5000)
        model.fit(F[train], y[train])
        proba = model.predict_proba(F[test])
        scores.append(_classification(y[test], proba, model.classes_))
    return scores


def estimator_row(params, X, y, folds, task):
    scores = []
    for train, test in folds:
        if task == "regression":
            est = PretrainedImageRegressor(**BASE, augment=None, **params)
            est.fit(X[train], y[train])
            scores.append((r2_score(y[test], est.predict(X[test])),))
            continue
        est = PretrainedImageClassifier(**BASE, **params)
        est.fit(X[train], list(y[train]) if task == "multi" else y[train])
        if task == "multi":
            mlb = MultiLabelBinarizer(classes=list(est.classes_)).fit(y)
            truth = mlb.transform(y[test])
            scores.append((f1_score(truth, est.predict(X[test]), average="samples"),))
            continue
        proba = est.predict_proba(X[test])
        scores.append(_classification(y[test], proba, est.classes_))
    return scores


def _classification(truth, proba, classes):
    pred = np.asarray(classes)[np.argmax(proba, axis=1)]
    return accuracy_score(truth, pred), log_loss(truth, proba, labels=classes)


#: The accurate recipe, stage by stage: each row continues the model of the
#: row before (``warm_start``), so its seconds are what the stage adds.
RECIPE = [
    ("linear probe (the default)", {}),
    (
        "+ unfrozen body, cycles of 1 + 2 + 4 epochs",
        dict(unfrozen_cycles=3, cycle_mult=2),
    ),
    ("+ TTA (4 augmented views)", dict(tta=4)),
]


def recipe(name, random_state, image_size=None, guarded=None, **params):
    """Each stage of the accurate recipe on a train/test split, what it adds
    and what it costs, beside the linear model on the same features (at the
    default image size and at the recipe's, where they differ)."""
    X_tr, X_te, y_tr, y_te = split(name)
    X = np.concatenate([X_tr, X_te])
    folds = [(np.arange(len(X_tr)), np.arange(len(X_tr), len(X)))]
    label = f"{name} {len(X_tr)}/{len(X_te)}"
    for size in dict.fromkeys([None, image_size]):
        F = PretrainedFeatures(**BASE, image_size=size).fit().transform(X)
        start = time.perf_counter()
        linear = linear_row(F, np.concatenate([y_tr, y_te]), folds, "single")
        at = f" at {size} px" if size else ""
        _print(label, f"features{at} + linear model", linear, start)
    est = PretrainedImageClassifier(
        **BASE, image_size=image_size, random_state=random_state, **params
    )
    for stage, changes in RECIPE if guarded != "only" else []:
        est.set_params(**changes)
        start = time.perf_counter()
        if "tta" not in changes:
            est.fit(X_tr, y_tr)
            est.set_params(warm_start=True)
        proba = est.predict_proba(X_te)
        _print(label, stage, [_classification(y_te, proba, est.classes_)], start)
    if not guarded:
        return
    # the same recipe with its guard: 10% of the training photos held out,
    # and a stage that does not lower their loss below the probe's undone
    est = PretrainedImageClassifier(
        **BASE,
        image_size=image_size,
        random_state=random_state,
        early_stopping=True,
        **RECIPE[1][1],
        **params,
    )
    start = time.perf_counter()
    est.fit(X_tr, y_tr)
    undone = all(r["discarded"] for r in est.history_ if r["stage"] == "unfrozen")
    stage = "recipe, early_stopping=True" + (" (stage undone)" if undone else "")
    proba = est.predict_proba(X_te)
    _print(label, stage, [_classification(y_te, proba, est.classes_)], start)
    start = time.perf_counter()
    proba = est.set_params(tta=4).predict_proba(X_te)
    _print(label, "+ TTA", [_classification(y_te, proba, est.classes_)], start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sets = ["dogscats", "flowers", "hymenoptera", "tiny", "zoom", "multilabel"]
    parser.add_argument("--sets", nargs="+", default=sets, choices=sets)
    parser.add_argument(
        "--models", nargs="+", default=list(MODELS)[:3], choices=MODELS,
        help="the estimator rows (default: the first three; the TTA and "
        "recipe rows cost more)",
    )  # fmt: skip
    parser.add_argument(
        "--recipe", nargs="*", choices=["dogscats", "flowers", "hymenoptera"],
        help="instead: the accurate recipe stage by stage on these sets",
    )  # fmt: skip
    parser.add_argument(
        "--guarded", nargs="?", const="also", choices=["also", "only"],
        help="with --recipe: also (or only) the recipe with early_stopping=True",
    )  # fmt: skip
    parser.add_argument("--unfrozen-lr", type=float, default=1e-4)
    parser.add_argument("--lr-mult", type=float, default=10)
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument(
        "--seeds", type=int, default=1,
        help="fit every estimator row with random_state 0 .. N-1 (the probe's "
        "folds, the training draws) and print the mean with its range",
    )  # fmt: skip
    parser.add_argument(
        "--per-fold", action="store_true",
        help="also print each fold's first score (for paired comparisons of "
        "rows run on the same folds)",
    )  # fmt: skip
    parser.add_argument(
        "--backbone", choices=BACKBONES, default="mobilenet_v2",
        help="the body of every row (offline weights)",
    )  # fmt: skip
    parser.add_argument(
        "--image-size", type=int, nargs="*", default=[],
        help="the image size of every row (one value), or with --recipe one "
        "per set (default: the weights' preset, 224)",
    )  # fmt: skip
    parser.add_argument(
        "--tuned-linear", action="store_true",
        help="also LogisticRegressionCV, C chosen by log loss (single-label sets)",
    )  # fmt: skip
    args = parser.parse_args()
    BASE.update(BACKBONES[args.backbone])
    warnings.filterwarnings("ignore", category=UserWarning)
    print(f"machine: {machine()}")
    if args.recipe is not None:
        print("set | stage | accuracy | log loss | seconds of the stage")
        names = args.recipe or ["dogscats", "flowers", "hymenoptera"]
        sizes = args.image_size + [None] * (len(names) - len(args.image_size))
        for name, size in zip(names, sizes):
            recipe(
                name, args.random_state, image_size=size,
                unfrozen_lr=args.unfrozen_lr, lr_mult=args.lr_mult,
                guarded=args.guarded,
            )  # fmt: skip
        return
    header = ("set", "model", "accuracy / R^2 / samples-F1", "log loss", "seconds")
    print(" | ".join(header))
    for name in args.sets:
        for label, X, y, folds, task in splits(name):
            size = args.image_size[0] if args.image_size else None
            F = PretrainedFeatures(**BASE, image_size=size).fit().transform(X)
            start = time.perf_counter()
            _print(
                label, "features + linear model", linear_row(F, y, folds, task), start,
                args.per_fold,
            )  # fmt: skip
            if args.tuned_linear and task == "single":
                start = time.perf_counter()
                _print(
                    label, "features + LogisticRegressionCV (log loss)",
                    linear_row(F, y, folds, task, tuned_logistic), start,
                    args.per_fold,
                )  # fmt: skip
            for model in args.models:
                if args.seeds > 1:
                    _seeds(label, model, args.seeds, size, X, y, folds, task)
                    continue
                params = dict(
                    MODELS[model], image_size=size, random_state=args.random_state
                )
                start = time.perf_counter()
                scores = estimator_row(params, X, y, folds, task)
                _print(label, model, scores, start, args.per_fold)


def _seeds(label, model, n, size, X, y, folds, task):
    """An estimator row fitted with ``random_state`` 0 .. n-1: the mean of
    the folds' mean scores, and their lowest and highest."""
    start = time.perf_counter()
    means = np.array(
        [
            np.mean(
                estimator_row(
                    dict(MODELS[model], image_size=size, random_state=seed),
                    X, y, folds, task,
                ),
                axis=0,
            )
            for seed in range(n)
        ]
    )  # fmt: skip
    cells = [
        f"{means[:, j].mean():.4f} ({means[:, j].min():.4f}-{means[:, j].max():.4f})"
        for j in range(means.shape[1])
    ]
    seconds = (time.perf_counter() - start) / (n * len(folds))
    cells += [""] * (2 - len(cells))
    print(f"{label} | {model}, {n} seeds | {' | '.join(cells)} | {seconds:.1f}")


def _print(label, model, scores, start, per_fold=False):
    scores = np.asarray(scores)
    mean = scores.mean(axis=0)
    first = f"{mean[0]:.4f} +/- {scores[:, 0].std():.4f}"
    second = f"{mean[1]:.4f}" if scores.shape[1] > 1 else ""
    seconds = (time.perf_counter() - start) / len(scores)
    print(f"{label} | {model} | {first} | {second} | {seconds:.1f}", flush=True)
    if per_fold:
        print("  per fold: " + " ".join(f"{v:.4f}" for v in scores[:, 0]), flush=True)


if __name__ == "__main__":
    main()
