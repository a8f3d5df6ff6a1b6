"""
Quick start: dogs and cats with a pretrained network
====================================================

Train :class:`~sktransfer.PretrainedImageClassifier` on real photos of dogs
and cats, predict photos it has not seen, then cross-validate it against a
logistic regression on raw pixels, on the same folds, to see what transfer
learning buys.

This is the script behind ``make demo``. From the project folder::

    python examples/quickstart.py                  # the photos in ../shared
    python examples/quickstart.py --data photos --weights DEFAULT

``--data`` is any folder with one sub-folder of images per class;
``--weights DEFAULT`` downloads torchvision's weights once (internet needed).
"""

# %%
# The photos
# ----------
# :func:`~sktransfer.datasets.load_image_folder` turns a ``root/class/image``
# folder into paths and labels. The defaults below are the 2,000 photos of Kaggle's
# Dogs vs. Cats in ``../shared`` and an ImageNet ``mobilenet_v2`` weights
# file, so nothing is downloaded; the options apply when this runs as a
# script.

import argparse
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    StratifiedKFold,
    cross_val_score,
    train_test_split,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import PretrainedImageClassifier
from sktransfer.datasets import load_image_folder

SHARED = Path(sys.argv[0]).resolve().parents[2] / "shared"
default_weights = SHARED / "weights" / "mobilenet_v2-imagenet.pth"
parser = argparse.ArgumentParser(description="Quick start of sktransfer.")
parser.add_argument("--data", default=str(SHARED / "data" / "dogscats" / "train"))
parser.add_argument("--backbone", default="mobilenet_v2")
parser.add_argument(
    "--weights",
    default=str(default_weights) if default_weights.exists() else "DEFAULT",
    help="'DEFAULT' (downloaded once) or a local state_dict file",
)
parser.add_argument("--cv", type=int, default=5, help="cross-validation folds")
parser.add_argument("--tta", type=int, default=1, help="augmented views at predict")
parser.add_argument("--verbose", type=int, default=0, help="1: progress bars")
args = parser.parse_args()

if not Path(args.data).is_dir():
    sys.exit(
        f"no photos at {args.data!r}: pass --data with a folder of class "
        "sub-folders (e.g. Kaggle's Dogs vs. Cats train set split by class)."
    )
X, y = load_image_folder(args.data)
classes, counts = np.unique(y, return_counts=True)
print(f"{len(X)} photos:", ", ".join(f"{c} ({n})" for c, n in zip(classes, counts)))
print(f"backbone {args.backbone}, weights {Path(args.weights).name}")

# %%
# Fit, predict, score
# -------------------
# Hold out a fifth of the photos, as the lesson does. ``fit`` computes the
# frozen network's features of every training photo once (and caches them on
# disk), then trains a new head on them. ``tta=1`` averages each prediction
# over the photo and one augmented copy of it.

X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.2, stratify=y, random_state=0
)
clf = PretrainedImageClassifier(
    args.backbone,
    weights=args.weights,
    tta=args.tta,
    random_state=0,
    verbose=args.verbose,
)
start = time.perf_counter()
clf.fit(X_train, y_train)
print(f"fit on {len(X_train)} photos: {time.perf_counter() - start:.1f} s")
print(f"accuracy on {len(X_test)} held-out photos: {clf.score(X_test, y_test):.3f}")

# %%
# What it says about eight photos it has not seen, with its probability:

proba = clf.predict_proba(X_test[:8])
fig, axes = plt.subplots(2, 4, figsize=(10, 5.4))
for ax, path, p, truth in zip(axes.ravel(), X_test, proba, y_test):
    with Image.open(path) as image:
        ax.imshow(image.convert("RGB"))
    best = int(np.argmax(p))
    guess = clf.classes_[best]
    ax.set_title(f"{guess} ({p[best]:.2f})", color="black" if guess == truth else "red")
    ax.axis("off")
fig.suptitle("Predictions on held-out photos (red: wrong)")
fig.tight_layout()

# %%
# Against a classical baseline, cross-validated
# ---------------------------------------------
# Cross-validation refits the classifier once per fold; the cache means the
# network still runs once per photo. The baseline is a logistic regression
# on each photo shrunk to 32 x 32 pixels, on the same folds.


def raw_pixels(paths, size=32):
    """Each photo as a flat vector of ``size x size`` RGB values in [0, 1]."""
    out = np.empty((len(paths), size * size * 3), dtype=np.float32)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            small = image.convert("RGB").resize((size, size))
        out[i] = np.asarray(small).ravel() / 255.0
    return out


cv = StratifiedKFold(args.cv, shuffle=True, random_state=0)
start = time.perf_counter()
transfer = cross_val_score(clf, X, y, cv=cv)
t_transfer = time.perf_counter() - start

start = time.perf_counter()
baseline = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
classical = cross_val_score(baseline, raw_pixels(X), y, cv=cv)
t_classical = time.perf_counter() - start

print(f"{args.cv}-fold cross-validated accuracy")
print(f"{'model':<48} {'mean':>6} {'std':>6} {'seconds':>8}")
for name, scores, seconds in [
    (
        f"PretrainedImageClassifier({args.backbone}, tta={args.tta})",
        transfer,
        t_transfer,
    ),
    ("LogisticRegression on 32x32 raw pixels", classical, t_classical),
]:
    print(f"{name:<48} {scores.mean():>6.3f} {scores.std():>6.3f} {seconds:>8.1f}")

# %%
# Run it again and every feature comes from the cache
# (:meth:`sktransfer.FeatureCache.default_directory`): the whole script then
# takes seconds.
# :ref:`sphx_glr_auto_examples_plot_classical_models.py` compares more
# classical models, and HOG features, on the same photos.
