"""
What does the model get wrong?
==============================

After the score, the lesson looks at the mistakes: which classes are
confused with which, and the photos the model is most wrong about. Those are
often mislabelled, cut off, or not what the class says, and they show what
more data or a different augmentation should fix.

scikit-learn draws the confusion matrix
(:class:`~sklearn.metrics.ConfusionMatrixDisplay`);
:func:`~sktransfer.inspection.most_confused` lists the confused pairs and
:func:`~sktransfer.inspection.plot_top_losses` shows the photos with the highest
loss.
The photos are 1,000 flowers of five kinds.
"""

# %%
# Fit and predict
# ---------------

import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay, classification_report
from sklearn.model_selection import train_test_split

from sktransfer import PretrainedImageClassifier
from sktransfer.datasets import load_image_folder
from sktransfer.inspection import most_confused, plot_top_losses

SHARED = Path(sys.argv[0]).resolve().parents[2] / "shared"
WEIGHTS = str(SHARED / "weights" / "mobilenet_v2-imagenet.pth")

paths, labels = load_image_folder(SHARED / "data" / "flowers")
rng = np.random.default_rng(1)
chosen = np.concatenate(
    [
        rng.choice(np.flatnonzero(labels == c), 200, replace=False)
        for c in np.unique(labels)
    ]
)
X_train, X_test, y_train, y_test = train_test_split(
    paths[chosen],
    labels[chosen],
    test_size=0.3,
    stratify=labels[chosen],
    random_state=0,
)
clf = PretrainedImageClassifier("mobilenet_v2", weights=WEIGHTS, random_state=0)
clf.fit(X_train, y_train)
y_pred = clf.predict(X_test)
print(classification_report(y_test, y_pred, digits=3))

# %%
# The confusion matrix
# --------------------
# Rows are the true classes, columns the predicted ones; the diagonal is
# right.

ConfusionMatrixDisplay.from_predictions(y_test, y_pred, cmap="Blues")

# %%
# The most confused pairs
# -----------------------
# The off-diagonal cells of the matrix as a list, largest first:

for true, predicted, count in most_confused(y_test, y_pred, min_count=2):
    print(f"{count:3d} {true} taken for {predicted}")

# %%
# The highest losses
# ------------------
# The loss of a photo is minus the log of the probability the model gave
# its true class: a confident mistake costs most. Each title reads
# predicted / true / loss / probability of the true class.

plot_top_losses(clf, X_test, y_test, k=9)

# %%
# The flowers set was scraped from the web at 128 pixels: among the worst
# photos there are usually a few that show more than one kind of flower, or
# a bouquet, or a flower the label does not match. Cleaning such labels, or
# predicting several labels per photo (see
# :ref:`sphx_glr_auto_examples_plot_multilabel.py`), helps more than
# training longer.
