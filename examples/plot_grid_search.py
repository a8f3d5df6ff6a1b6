"""
Grid search over the recipe, with a shared feature cache
=========================================================

:class:`~sklearn.model_selection.GridSearchCV` refits an estimator once per
candidate and fold: here 8 candidates x 3 folds + 1 refit = 25 fits. Done
naively, each fit would run the network over its training photos again.
With the feature cache, the frozen network runs once per photo in total, in
every worker process of ``n_jobs=2`` alike; this example counts the forward
passes with :meth:`FeatureCache.stats() <sktransfer.FeatureCache.stats>`.

The photos are 500 flowers of five kinds (100 per kind, 128 pixels a side).
"""

# %%
# Photos, and an empty cache to count in
# --------------------------------------

import shutil
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.model_selection import GridSearchCV, train_test_split

from sktransfer import FeatureCache, PretrainedImageClassifier
from sktransfer.datasets import load_image_folder

SHARED = Path(sys.argv[0]).resolve().parents[2] / "shared"
WEIGHTS = str(SHARED / "weights" / "mobilenet_v2-imagenet.pth")

paths, labels = load_image_folder(SHARED / "data" / "flowers")
rng = np.random.default_rng(0)
chosen = np.concatenate(
    [
        rng.choice(np.flatnonzero(labels == c), 100, replace=False)
        for c in np.unique(labels)
    ]
)
X_train, X_test, y_train, y_test = train_test_split(
    paths[chosen],
    labels[chosen],
    test_size=0.25,
    stratify=labels[chosen],
    random_state=0,
)
print(f"{len(X_train)} training and {len(X_test)} test photos of {np.unique(labels)}")

# A fresh cache, so that every forward pass of this example is counted.
cache_dir = tempfile.mkdtemp(prefix="sktransfer-grid-")
cache = FeatureCache(cache_dir)
print(cache.stats())

# %%
# The search
# ----------
# Parameters of a head trained by gradient steps as fastai trains it (a
# random start and 8 epochs on the cached features, instead of the default
# linear probe): its hidden layer, dropout and learning rate. Every
# candidate uses the same body, weights and image size, so they all share
# the same cached features.

clf = PretrainedImageClassifier(
    "mobilenet_v2",
    weights=WEIGHTS,
    head_init="random",
    precompute_epochs=8,
    cache=cache_dir,
    random_state=0,
)
grid = {
    "hidden_sizes": [(), (512,)],
    "dropout": [0.25, 0.5],
    "lr": [1e-3, 1e-2],
}
search = GridSearchCV(clf, grid, cv=3, n_jobs=2)
start = time.perf_counter()
search.fit(X_train, y_train)
print(f"{len(search.cv_results_['params'])} candidates x 3 folds + 1 refit")
print(f"search: {time.perf_counter() - start:.0f} s")
print(f"forward passes: {cache.stats()['computed']} for {len(X_train)} photos")

# %%
# ``computed`` counts the feature vectors written to the cache, one per
# forward pass of a photo: 25 fits in two processes cost one pass per
# training photo. Scoring the refitted best model on the test photos adds
# one per test photo:

print(f"best {search.best_params_}: test accuracy {search.score(X_test, y_test):.3f}")
print(f"forward passes: {cache.stats()['computed']}")

results = pd.DataFrame(search.cv_results_)
columns = ["param_hidden_sizes", "param_dropout", "param_lr"]
table = results[columns + ["mean_test_score", "std_test_score", "mean_fit_time"]]
print(table.sort_values("mean_test_score", ascending=False).to_string(index=False))

# %%
# The default model (the linear probe: a penalised logistic regression on
# the same features, its penalty chosen by cross-validation inside ``fit``)
# on the same folds, for comparison; it reads the same cached features too:

from sklearn.model_selection import cross_val_score  # noqa: E402

probe = PretrainedImageClassifier(
    "mobilenet_v2", weights=WEIGHTS, cache=cache_dir, random_state=0
)
probe_scores = cross_val_score(probe, X_train, y_train, cv=3)
print(f"default (linear probe): {probe_scores.mean():.3f}")

# %%
# A second search, with a different grid, reads everything from the cache:

before = cache.stats()["computed"]
GridSearchCV(clf, {"weight_decay": [1e-4, 1e-2, 1e-1]}, cv=3).fit(X_train, y_train)
print(f"forward passes of the second search: {cache.stats()['computed'] - before}")

# %%
# Cross-validated accuracy of each candidate. With 75 training photos per
# class, the candidates lie within a few points of each other, about one
# standard deviation across folds: more photos would buy more than tuning
# the head. (The fit that computed the features shows in ``mean_fit_time``;
# every other fit takes a fraction of a second.)

fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
for ax, hidden in zip(axes, grid["hidden_sizes"]):
    cells = results[
        results["param_hidden_sizes"].map(lambda h, hidden=hidden: h == hidden)
    ]
    scores = cells.pivot_table(
        index="param_dropout", columns="param_lr", values="mean_test_score"
    )
    image = ax.imshow(scores.to_numpy(), vmin=results["mean_test_score"].min(), vmax=1)
    for (i, j), value in np.ndenumerate(scores.to_numpy()):
        ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white")
    ax.set_xticks(range(len(scores.columns)), [f"{v:g}" for v in scores.columns])
    ax.set_yticks(range(len(scores.index)), [f"{v:g}" for v in scores.index])
    ax.set_xlabel("lr")
    ax.set_title(f"hidden_sizes={hidden}")
axes[0].set_ylabel("dropout")
fig.colorbar(image, ax=axes, label="3-fold accuracy")
fig.suptitle("Grid search over the head, 1 forward pass per photo")

# The temporary cache is not needed any more.
cache.close()
shutil.rmtree(cache_dir, ignore_errors=True)
