"""The estimator family on real photos: multi-label, regression, class
weights and snapshot ensembles, each against the obvious baseline.

    .venv/bin/python benchmarks/bench_family.py multilabel
    .venv/bin/python benchmarks/bench_family.py zoom
    .venv/bin/python benchmarks/bench_family.py angle
    .venv/bin/python benchmarks/bench_family.py class-weight
    .venv/bin/python benchmarks/bench_family.py snapshot

The derived photo sets (side-by-side pairs, zoomed or rotated copies) are
written once to a temporary folder from the photos in ``../shared/data``;
every run uses ``mobilenet_v2`` with the offline weights in
``../shared/weights`` and a feature cache in that temporary folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance
from sklearn.linear_model import RidgeCV
from sklearn.metrics import balanced_accuracy_score, f1_score, log_loss, r2_score
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import (
    PretrainedFeatures,
    PretrainedImageClassifier,
    PretrainedImageRegressor,
)
from sktransfer.datasets import load_image_folder

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = str(SHARED / "weights" / "mobilenet_v2-imagenet.pth")
WORK = Path(
    os.environ.get("BENCH_DIR", Path(tempfile.gettempdir()) / "sktransfer-bench")
)
CACHE = str(WORK / "cache")
BASE = dict(backbone="mobilenet_v2", weights=WEIGHTS, cache=CACHE)


def features(paths, **params):
    return PretrainedFeatures(**BASE, **params).fit().transform(paths)


def table(rows, header):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))


# -- multi-label: two flowers of different classes side by side --------------


def pairs(n=600, seed=0):
    """Pictures made of two photos of different classes side by side (cats,
    dogs, ants, bees; each cropped to a square, 128 x 128, on a 256 x 128
    canvas), labelled with both classes. A centre crop of such a picture
    keeps only half of each photo; "squish" and "pad" keep both."""
    out = WORK / "animal_pairs"
    data = SHARED / "data"
    sets = [
        load_image_folder(data / "dogscats" / "train"),
        load_image_folder(data / "hymenoptera_data" / "train"),
        load_image_folder(data / "hymenoptera_data" / "val"),
    ]
    paths = np.concatenate([p for p, _ in sets])
    labels = np.concatenate([y for _, y in sets])
    ok = np.array(["imageNotFound" not in p for p in paths])
    paths, labels = paths[ok], labels[ok]
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    classes = sorted(by_class)
    rng = np.random.default_rng(seed)
    X, Y = [], []
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a, b = rng.choice(classes, size=2, replace=False)
        left, right = (paths[rng.choice(by_class[c])] for c in (a, b))
        path = out / f"pair_{i:04d}.jpg"
        if not path.exists():
            canvas = Image.new("RGB", (256, 128))
            for k, photo in enumerate((left, right)):
                img = Image.open(photo).convert("RGB")
                side = min(img.size)
                box = ((img.width - side) // 2, (img.height - side) // 2)
                img = img.crop((*box, box[0] + side, box[1] + side))
                canvas.paste(img.resize((128, 128)), (128 * k, 0))
            canvas.save(path, quality=92)
        X.append(str(path))
        Y.append(sorted({str(a), str(b)}))
    return np.array(X), Y


def bench_multilabel(args):
    X, Y = pairs(args.n)
    X_tr, X_te, Y_tr, Y_te = train_test_split(X, Y, test_size=0.25, random_state=0)
    rows = []
    for mode in ("crop", "squish", "pad"):
        pre = None if mode == "crop" else {"resize_mode": mode}
        start = time.perf_counter()
        clf = PretrainedImageClassifier(
            **BASE, preprocessing=pre, random_state=0, tta=args.tta
        ).fit(X_tr, Y_tr)
        truth = clf._indicator(Y_te, len(X_te))
        pred = clf.predict(X_te)
        rows.append(
            (
                f"classifier, resize_mode={mode}",
                f"{f1_score(truth, pred, average='samples'):.4f}",
                f"{np.mean(np.all(truth == pred, axis=1)):.4f}",
                f"{time.perf_counter() - start:.0f}",
            )
        )
    print(f"multi-label photo pairs: {len(X_tr)} train / {len(X_te)} test")
    table(rows, ("model", "samples-F1", "subset acc", "seconds"))


# -- regression: zoom fraction and signed rotation angle ---------------------


def derived(kind, n, seed=0):
    """Photos of dogs and cats, each transformed by a random amount: the
    amount is the target (``kind``: "zoom", "angle" or "brightness")."""
    out = WORK / f"{kind}-{n}-{seed}"  # the targets depend on n and seed
    out.mkdir(parents=True, exist_ok=True)
    paths, _ = load_image_folder(SHARED / "data" / "dogscats" / "train")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(paths), size=n, replace=False)
    X, y = [], []
    for i, j in enumerate(chosen):
        img = Image.open(paths[j]).convert("RGB")
        w, h = img.size
        side = min(w, h)
        if kind == "zoom":
            target = float(rng.uniform(0.35, 1.0))
            s = side * target
            box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
            make = lambda img=img, box=box: img.resize((256, 256), box=box)  # noqa: E731
        elif kind == "brightness":  # a target the features see well
            target = float(rng.uniform(0.4, 1.4))
            make = lambda img=img, t=target: ImageEnhance.Brightness(  # noqa: E731
                img.resize((256, 256))
            ).enhance(t)
        else:
            target = float(rng.uniform(-30, 30))
            # rotate, then keep the centre square that has no empty corners
            inner = side / (
                abs(np.cos(np.radians(target))) + abs(np.sin(np.radians(target)))
            )
            box = ((w - inner) / 2, (h - inner) / 2, (w + inner) / 2, (h + inner) / 2)
            make = lambda img=img, t=target, box=box: img.rotate(  # noqa: E731
                t, resample=Image.Resampling.BILINEAR
            ).resize((256, 256), box=box)
        path = out / f"{kind}_{i:04d}.jpg"
        if not path.exists():
            make().save(path, quality=92)
        X.append(str(path))
        y.append(target)
    return np.array(X), np.array(y)


def bench_regression(args):
    """RidgeCV on the frozen features, the default regressor (the ridge probe)
    and the fine-tuning recipe of the options, on the same folds."""
    X, y = derived(args.command, args.n)
    folds = KFold(args.folds, shuffle=True, random_state=0)
    feats = features(X)
    scores = {"ridge": [], "default": [], "recipe": []}
    seconds = {"default": 0.0, "recipe": 0.0}
    params = dict(BASE, augment=None, dropout=0.1, random_state=args.seed, tta=args.tta)
    if args.unfrozen_cycles:
        params.update(
            schedule=args.schedule,
            unfrozen_cycles=args.unfrozen_cycles,
            unfreeze_from=args.unfreeze_from,
            cycle_len=args.cycle_len,
            cycle_mult=args.cycle_mult,
            unfrozen_lr=args.unfrozen_lr,
            lr_mult=args.lr_mult,
            early_stopping=args.early_stopping,
        )
        if args.early_stopping:
            params["n_iter_no_change"] = args.n_iter_no_change
    for train, test in list(folds.split(X))[: args.max_folds]:
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
        model.fit(feats[train], y[train])
        scores["ridge"].append(r2_score(y[test], model.predict(feats[test])))
        for name, kw in (("default", dict(BASE, random_state=0)), ("recipe", params)):
            start = time.perf_counter()
            reg = PretrainedImageRegressor(**kw).fit(X[train], y[train])
            seconds[name] += time.perf_counter() - start
            scores[name].append(r2_score(y[test], reg.predict(X[test])))
    n_run = len(scores["ridge"])
    print(
        f"regression target '{args.command}': {len(X)} photos, {args.folds}-fold "
        f"R^2 ({n_run} folds run)"
    )
    names = {
        "ridge": "frozen features + RidgeCV",
        "default": "PretrainedImageRegressor() (the ridge probe)",
        "recipe": "PretrainedImageRegressor(" + _describe(params) + ")",
    }
    table(
        [
            (
                names[k],
                f"{np.mean(v):.3f} +/- {np.std(v):.3f}",
                " ".join(f"{s:.3f}" for s in v),
                f"{seconds[k] / n_run:.0f}" if k in seconds else "",
            )
            for k, v in scores.items()
        ],
        ("model", "R^2", "per fold", "fit s / fold"),
    )


def _describe(params):
    keys = (
        "augment",
        "dropout",
        "unfrozen_cycles",
        "unfreeze_from",
        "cycle_len",
        "cycle_mult",
        "unfrozen_lr",
        "lr_mult",
        "schedule",
        "random_state",
        "tta",
        "early_stopping",
        "n_iter_no_change",
    )
    return ", ".join(f"{k}={params[k]}" for k in keys if k in params)


# -- class weights on an imbalanced subset -----------------------------------


def bench_class_weight(args):
    """Flowers with one class (roses) cut to a tenth of the smallest other
    class: 10:1 imbalance."""
    X, y = load_image_folder(SHARED / "data" / "flowers")
    rng = np.random.default_rng(0)
    minority = "rose"
    others = [c for c in np.unique(y) if c != minority]
    n_min = min((y == c).sum() for c in others) // 10
    rare = rng.choice(np.flatnonzero(y == minority), size=n_min, replace=False)
    keep = np.concatenate([np.flatnonzero(y != minority), rare])
    X_im, y_im = X[keep], y[keep]
    X_tr, X_te, y_tr, y_te = train_test_split(
        X_im, y_im, test_size=0.3, stratify=y_im, random_state=0
    )
    rows = []
    for weight in (None, "balanced"):
        scores, recall = [], []
        for seed in range(3):
            clf = PretrainedImageClassifier(
                **BASE, class_weight=weight, random_state=seed
            ).fit(X_tr, y_tr)
            pred = clf.predict(X_te)
            scores.append(balanced_accuracy_score(y_te, pred))
            recall.append(np.mean(pred[y_te == minority] == minority))
        rows.append(
            (
                f"class_weight={weight}",
                f"{np.mean(scores):.4f}",
                f"{np.mean(recall):.4f}",
                str([round(s, 4) for s in scores]),
            )
        )
    counts = {str(c): int((y_tr == c).sum()) for c in np.unique(y_tr)}
    print(f"flowers, '{minority}' at 1:10: train {counts}, test {len(X_te)}")
    table(rows, ("model", "balanced acc", f"{minority} recall", "per seed"))


# -- snapshot ensembles ------------------------------------------------------


def bench_snapshot(args):
    X, y = load_image_folder(SHARED / "data" / "dogscats" / "train")
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=0)
    results = {False: [], True: []}
    accs = {False: [], True: []}
    for train, test in folds.split(X, y):
        for snap in (False, True):
            clf = PretrainedImageClassifier(
                **BASE, snapshot_ensemble=snap, cycle_len=1, random_state=0
            ).fit(X[train], y[train])
            proba = clf.predict_proba(X[test])
            results[snap].append(log_loss(y[test], proba, labels=clf.classes_))
            accs[snap].append(np.mean(clf.classes_[proba.argmax(1)] == y[test]))
    print(
        f"dogs vs cats, {args.folds}-fold, precompute_epochs=8 "
        "(cycle_len=1 for the snapshots)"
    )
    table(
        [
            (
                "last model" if not s else "snapshot ensemble (8 heads)",
                f"{np.mean(results[s]):.4f} +/- {np.std(results[s]):.4f}",
                f"{np.mean(accs[s]):.4f}",
            )
            for s in (False, True)
        ],
        ("model", "log loss", "accuracy"),
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "command", choices=["multilabel", "zoom", "angle", "class-weight", "snapshot"]
    )
    parser.add_argument("--n", type=int, default=600, help="derived photos")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--max-folds", type=int, default=None, help="run only the first folds"
    )
    parser.add_argument("--tta", type=int, default=0)
    # the recipe for a target the frozen features cannot see (docs/guide.md):
    # the whole body at one rate, one long cosine cycle, no augmentation
    parser.add_argument("--unfrozen-cycles", type=int, default=1)
    parser.add_argument("--unfreeze-from", type=int, default=0)
    parser.add_argument("--cycle-len", type=float, default=12)
    parser.add_argument("--cycle-mult", type=float, default=1)
    parser.add_argument("--unfrozen-lr", type=float, default=1e-3)
    parser.add_argument("--lr-mult", type=float, default=1)
    parser.add_argument("--schedule", choices=["sgdr", "one_cycle"], default="sgdr")
    parser.add_argument("--seed", type=int, default=0, help="the recipe's random_state")
    parser.add_argument("--early-stopping", action="store_true")
    # patience of a whole cycle: mid-cycle, at a high rate, the validation
    # loss may rise before the annealing brings it down
    parser.add_argument("--n-iter-no-change", type=int, default=12)
    args = parser.parse_args()
    run = {
        "multilabel": bench_multilabel,
        "zoom": bench_regression,
        "angle": bench_regression,
        "class-weight": bench_class_weight,
        "snapshot": bench_snapshot,
    }[args.command]
    run(args)


if __name__ == "__main__":
    main()
