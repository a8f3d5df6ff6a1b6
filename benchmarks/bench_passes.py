"""What a fit costs in extraction passes, and what it reaches on unseen photos.

    .venv/bin/python benchmarks/bench_passes.py
    .venv/bin/python benchmarks/bench_passes.py --variants probe probe+tta

The unit is one extraction pass: ``PretrainedFeatures(cache=None)``
transforming the training photos once (decoding included), timed in the same
run, per backbone, so the ratios hold on any machine. Each variant then fits
on the 1,600 training photos of dogs vs cats with a fresh, empty feature
cache (nothing reused from an earlier run) and predicts the 400 held-out
photos; its fit and its prediction are reported in passes of its backbone,
and the fit also stage by stage ("features": reading the photos and
computing their features through the cache; then each stage of the plan).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, log_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WEIGHTS, machine, split  # noqa: E402

from sktransfer import PretrainedFeatures, PretrainedImageClassifier  # noqa: E402

LITE0 = dict(
    backbone="timm:tf_efficientnet_lite0",
    weights=str(WEIGHTS.parent / "tf_efficientnet_lite0-imagenet.pth"),
)
MOBILENET = dict(backbone="mobilenet_v2", weights=str(WEIGHTS))

#: name -> (backbone, fit parameters, prediction parameters); the unit of
#: every variant is a pass of its backbone at the weights' size (224 px)
VARIANTS = {
    "probe": (MOBILENET, {}, {}),
    "probe+tta": (MOBILENET, {}, dict(tta=4)),
    "probe 288 px": (MOBILENET, dict(image_size=288), {}),
    "recipe": (MOBILENET, dict(unfrozen_cycles=3, cycle_mult=2), dict(tta=4)),
    "lite0 probe": (LITE0, {}, {}),
    "lite0 probe+tta": (LITE0, {}, dict(tta=4)),
}


def one_pass(backbone, X) -> float:
    start = time.perf_counter()
    PretrainedFeatures(**backbone, cache=None).fit().transform(X)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    X_tr, X_te, y_tr, y_te = split("dogscats")
    print(f"machine: {machine()}")
    units = {}
    print(
        "variant | accuracy | log loss | fit s | fit passes | predict s"
        " | predict passes | passes by stage"
    )
    for name in args.variants:
        backbone, fit_params, predict_params = VARIANTS[name]
        key = backbone["backbone"]
        if key not in units:
            units[key] = one_pass(backbone, X_tr)
            print(f"one pass of {key} over {len(X_tr)} photos: {units[key]:.1f} s")
        with tempfile.TemporaryDirectory() as cache:
            est = PretrainedImageClassifier(
                **backbone, cache=cache, random_state=0, **fit_params
            )
            start = time.perf_counter()
            est.fit(X_tr, y_tr)
            fit_s = time.perf_counter() - start
            est.set_params(**predict_params)
            start = time.perf_counter()
            proba = est.predict_proba(X_te)
            predict_s = time.perf_counter() - start
        accuracy = accuracy_score(y_te, est.classes_[np.argmax(proba, axis=1)])
        loss = log_loss(y_te, proba, labels=est.classes_)
        unit = units[key]
        print(
            f"{name} | {accuracy:.4f} | {loss:.4f} | {fit_s:.1f} | {fit_s / unit:.2f}"
            f" | {predict_s:.1f} | {predict_s / unit:.2f} | "
            + by_stage(est.history_, fit_s, unit),
            flush=True,
        )


def by_stage(history, fit_s, unit) -> str:
    """Each stage's seconds in passes, and the rest of the fit (reading the
    images, features through the cache, sweeps) as "features"."""
    seconds = {}
    for row in history:
        seconds[row["stage"]] = seconds.get(row["stage"], 0.0) + row["seconds"]
    rest = fit_s - sum(seconds.values())
    parts = [f"features {rest / unit:.2f}"]
    parts += [f"{stage} {s / unit:.2f}" for stage, s in seconds.items()]
    return ", ".join(parts)


if __name__ == "__main__":
    main()
