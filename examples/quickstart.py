"""Quick start: a pretrained CNN against a classical baseline, cross-validated.

Trains ``PretrainedImageClassifier`` on real photos (dogs vs cats) and prints
its 5-fold cross-validated accuracy next to ``LogisticRegression`` on raw
pixels, so you see what transfer learning buys.

Offline (the default here): photos and weights come from ``../shared`` beside
the project. With internet, any ``class/image`` folder and the registry
weights work too::

    python examples/quickstart.py --data path/to/photos --weights DEFAULT
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from sktransfer import PretrainedImageClassifier
from sktransfer.datasets import load_image_folder

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def raw_pixels(paths, size=32):
    """Each photo as a flat vector of ``size x size`` RGB pixels."""
    out = np.empty((len(paths), size * size * 3), dtype=np.float32)
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            out[i] = np.asarray(img.convert("RGB").resize((size, size))).ravel() / 255.0
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=str(SHARED / "data" / "dogscats" / "train"),
        help="a folder of class sub-folders of images",
    )
    default_weights = SHARED / "weights" / "mobilenet_v2-imagenet.pth"
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument(
        "--weights",
        default=str(default_weights) if default_weights.exists() else "DEFAULT",
        help="'DEFAULT' (download once) or a local state_dict file",
    )
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--tta", type=int, default=1)
    args = parser.parse_args(argv)

    if not Path(args.data).is_dir():
        sys.exit(
            f"no photos at {args.data!r}: pass --data with a folder of class "
            "sub-folders (e.g. Kaggle's Dogs vs. Cats train set split by class)."
        )
    X, y = load_image_folder(args.data)
    classes, counts = np.unique(y, return_counts=True)
    print(
        f"{len(X)} photos, classes: "
        + ", ".join(f"{c} ({n})" for c, n in zip(classes, counts))
    )
    print(f"backbone {args.backbone}, weights {args.weights}\n")
    cv = StratifiedKFold(args.cv, shuffle=True, random_state=0)

    clf = PretrainedImageClassifier(
        args.backbone, weights=args.weights, tta=args.tta, random_state=0, verbose=1
    )
    start = time.perf_counter()
    transfer = cross_val_score(clf, X, y, cv=cv)
    t_transfer = time.perf_counter() - start

    start = time.perf_counter()
    pixels = raw_pixels(X)
    baseline = make_pipeline(
        FunctionTransformer(),
        StandardScaler(),
        LogisticRegression(C=0.01, max_iter=2000),
    )
    classical = cross_val_score(baseline, pixels, y, cv=cv)
    t_classical = time.perf_counter() - start

    print(f"\n{args.cv}-fold cross-validated accuracy")
    print(f"{'model':<48} {'mean':>6} {'std':>6} {'seconds':>8}")
    rows = [
        (
            f"PretrainedImageClassifier({args.backbone}, tta={args.tta})",
            transfer,
            t_transfer,
        ),
        ("LogisticRegression on 32x32 raw pixels", classical, t_classical),
    ]
    for name, scores, seconds in rows:
        print(f"{name:<48} {scores.mean():>6.3f} {scores.std():>6.3f} {seconds:>8.1f}")
    print(
        "\nA second run reads every feature from the cache "
        "(see sktransfer.default_cache_dir()) and takes seconds."
    )


if __name__ == "__main__":
    main()
