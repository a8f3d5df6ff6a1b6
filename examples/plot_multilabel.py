"""
Several labels per photo
========================

Some photos hold more than one thing to name: the lesson's satellite images
were "clear", "primary forest" and "road" at once. Give
:class:`~sktransfer.PretrainedImageClassifier` one collection of labels per
image (here as a Kaggle-style ``labels.csv`` with space-separated tags, read
with ``load_image_csv(..., label_sep=" ")``) and it becomes multi-label: one
sigmoid output per label, ``predict`` returns a 0/1 matrix, and
``threshold`` decides when a label is on.

Real multi-label photos are not in ``../shared``, so this example makes
them: each picture is a 2 x 2 mosaic of flower photos, drawn from one or two
kinds of flower, and its labels are the kinds it shows.
"""

# sphinx_gallery_thumbnail_number = 2

# %%
# Mosaics and their ``labels.csv``
# --------------------------------

import csv
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image
from sklearn.metrics import classification_report, f1_score, hamming_loss
from sklearn.model_selection import train_test_split

from sktransfer import PretrainedImageClassifier
from sktransfer.datasets import load_image_csv, load_image_folder
from sktransfer.inspection import plot_top_losses

SHARED = Path(sys.argv[0]).resolve().parents[2] / "shared"
WEIGHTS = str(SHARED / "weights" / "mobilenet_v2-imagenet.pth")

paths, kinds = load_image_folder(SHARED / "data" / "flowers")
names = np.unique(kinds)
rng = np.random.default_rng(0)
workdir = Path(tempfile.mkdtemp(prefix="sktransfer-multilabel-"))
with open(workdir / "labels.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["image_name", "tags"])
    for i in range(500):
        shown = rng.choice(names, size=rng.choice([1, 2]), replace=False)
        tiles = list(shown) + list(rng.choice(shown, size=4 - len(shown)))
        mosaic = Image.new("RGB", (256, 256))
        for position, kind in zip(rng.permutation(4), tiles):
            with Image.open(rng.choice(paths[kinds == kind])) as tile:
                corner = (128 * (position % 2), 128 * (position // 2))
                mosaic.paste(tile.convert("RGB").resize((128, 128)), corner)
        mosaic.save(workdir / f"mosaic_{i:04d}.jpg", quality=90)
        writer.writerow([f"mosaic_{i:04d}", " ".join(sorted(shown))])

print("\n".join((workdir / "labels.csv").read_text().splitlines()[:4]))
X, Y = load_image_csv(workdir / "labels.csv", workdir, suffix=".jpg", label_sep=" ")
print(Y[:3])

# %%
# Fit
# ---
# Nothing else changes: the same estimator sees label collections and
# trains one binary output per kind of flower.

X_train, X_test, Y_train, Y_test = train_test_split(X, Y, test_size=0.3, random_state=0)
clf = PretrainedImageClassifier("mobilenet_v2", weights=WEIGHTS, random_state=0)
clf.fit(X_train, Y_train)
print(f"multi-label: {clf.multilabel_}; labels: {', '.join(clf.classes_)}")

predicted = clf.predict(X_test)  # one 0/1 column per label, in classes_ order
truth = np.array([[name in labels for name in clf.classes_] for labels in Y_test])
print(predicted[:3])

# %%
# Scores
# ------
# ``score`` is the subset accuracy (every label of a photo right), a strict
# measure; per-label F1 and the Hamming loss (the fraction of wrong labels)
# say more.

print(f"subset accuracy {clf.score(X_test, Y_test):.3f}")
print(f"Hamming loss    {hamming_loss(truth, predicted):.3f}")
print(f"F1 (samples)    {f1_score(truth, predicted, average='samples'):.3f}")
print(classification_report(truth, predicted, target_names=clf.classes_, digits=3))

# %%
# The threshold
# -------------
# A label is predicted when its probability reaches ``threshold`` (0.5). Lower
# thresholds find more labels and make more false alarms; the F1 score tells
# which balance suits the data. ``threshold`` only acts in ``predict``, so
# trying values costs no training.

proba = clf.predict_proba(X_test)
thresholds = np.linspace(0.05, 0.95, 19)
scores = [f1_score(truth, proba >= t, average="samples") for t in thresholds]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(thresholds, scores, marker="o")
ax.axvline(clf.threshold, color="0.6", linestyle=":", label="threshold=0.5")
ax.set_xlabel("threshold")
ax.set_ylabel("F1 (samples)")
ax.set_title("Choosing the threshold")
ax.legend()
best = thresholds[int(np.argmax(scores))]
print(f"best threshold on these photos: {best:.2f}")

# %%
# The pictures it is most wrong about
# -----------------------------------
# For multi-label models the loss of a picture is the mean binary log loss
# over the labels; the titles read predicted / true / loss / mean probability
# given to the right answer of each label.

plot_top_losses(clf, X_test, Y_test, k=6)

# %%
# Choosing the threshold on the test photos, as above, flatters the result:
# choose it by cross-validation on the training photos instead, e.g. with
# :class:`~sklearn.model_selection.GridSearchCV` over ``threshold`` and
# ``scoring="f1_samples"`` (the features are cached, so each candidate costs
# only the head's training).
