"""Feature-extraction speed, precision and cache benchmarks on real photos.

Prints, on ``../shared/data/dogscats`` (2,000 photos):

1. bare backbone forward img/s (random input, same model, batch, precision)
   vs ``PretrainedFeatures`` end-to-end img/s (decode + preprocessing
   included, cache off), for mobilenet_v2 and resnet34;
2. fp32 vs bf16: speed, feature agreement and 5-fold accuracy of a
   logistic regression on the features (on a subset where bf16 is slow);
3. first ``fit`` (features computed) vs a second ``fit`` (cache hit);
4. backbone passes (images through the body) in a 5-fold
   ``cross_val_score`` and in a 4-candidate ``GridSearchCV``.

Run alone on an idle machine: ``.venv/bin/python benchmarks/bench_features.py``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score

from sktransfer import FeatureCache, PretrainedFeatures, PretrainedImageClassifier
from sktransfer._devices import bf16_is_fast
from sktransfer.datasets import load_image_folder

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "weights" / "mobilenet_v2-imagenet.pth"


def bare_forward(extractor, batch_size, n_batches):
    """img/s of the body alone on a random channels_last batch."""
    pre = extractor.preprocessing
    x = np.random.default_rng(0).integers(
        0, 255, (batch_size, pre.crop_size, pre.crop_size, 3), dtype=np.uint8
    )
    extractor.forward(x)  # warm-up
    start = time.perf_counter()
    for _ in range(n_batches):
        extractor.forward(x)
    return batch_size * n_batches / (time.perf_counter() - start)


def end_to_end(transformer, paths):
    start = time.perf_counter()
    transformer.transform(paths)
    return len(paths) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bf16-images", type=int, default=300)
    args = parser.parse_args()

    X, y = load_image_folder(SHARED / "data" / "dogscats" / "train")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))[: args.n_images]
    X, y = X[order], y[order]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"bf16 native on this CPU: {bf16_is_fast(torch.device('cpu'))}"
    )

    print(
        "\n## 1. Bare forward vs end-to-end (fp32, cache off, "
        f"batch {args.batch_size}, {len(X)} photos)\n"
    )
    print("| backbone | bare forward img/s | end-to-end img/s | ratio |")
    print("|---|---|---|---|")
    for name, weights in (("mobilenet_v2", str(WEIGHTS)), ("resnet34", None)):
        tr = PretrainedFeatures(
            name,
            weights=weights,
            precision="fp32",
            extract_batch_size=args.batch_size,
            cache=None,
        ).fit()
        n = len(X) if name == "mobilenet_v2" else min(len(X), 600)
        bare = bare_forward(
            tr.extractor_, args.batch_size, max(3, n // args.batch_size // 2)
        )
        e2e = end_to_end(tr, X[:n])
        print(f"| {name} | {bare:.1f} | {e2e:.1f} | {e2e / bare:.2f} |", flush=True)

    print(f"\n## 2. fp32 vs bf16 (mobilenet_v2, {args.bf16_images} photos)\n")
    sub_X, sub_y = X[: args.bf16_images], y[: args.bf16_images]
    feats, speed = {}, {}
    for precision in ("fp32", "bf16"):
        tr = PretrainedFeatures(
            "mobilenet_v2",
            weights=str(WEIGHTS),
            precision=precision,
            extract_batch_size=args.batch_size,
            cache=None,
        ).fit()
        start = time.perf_counter()
        feats[precision] = tr.transform(sub_X)
        speed[precision] = len(sub_X) / (time.perf_counter() - start)
    a, b = feats["fp32"], feats["bf16"]
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    print("| precision | img/s | 5-fold LogisticRegression accuracy |")
    print("|---|---|---|")
    for precision in ("fp32", "bf16"):
        acc = cross_val_score(
            LogisticRegression(C=0.1, max_iter=3000), feats[precision], sub_y, cv=cv
        ).mean()
        print(f"| {precision} | {speed[precision]:.1f} | {acc:.4f} |")
    print(
        f"\nbf16 vs fp32 features: mean cosine similarity {cos.mean():.5f}, "
        f"min {cos.min():.5f}"
    )

    print(f"\n## 3. First fit vs second fit on the same {len(X)} photos\n")
    with tempfile.TemporaryDirectory() as tmp:
        clf = PretrainedImageClassifier(
            "mobilenet_v2", weights=str(WEIGHTS), cache=tmp, random_state=0
        )
        start = time.perf_counter()
        clf.fit(X, y)
        first = time.perf_counter() - start
        start = time.perf_counter()
        clf.fit(X, y)
        second = time.perf_counter() - start
        print("| fit | seconds |\n|---|---|")
        print(f"| first (features computed) | {first:.1f} |")
        print(f"| second (cache hit) | {second:.2f} |")
        print(f"\nspeed-up: {first / second:.0f}x")

    print("\n## 4. Backbone passes (images through the body)\n")
    print("| run | distinct images | images through the body |\n|---|---|---|")
    for label, run in (
        ("5-fold cross_val_score", lambda clf: cross_val_score(clf, X, y, cv=5)),
        (
            "GridSearchCV, 4 candidates x 3 folds, n_jobs=2",
            lambda clf: GridSearchCV(
                clf, {"lr": [1e-3, 3e-3], "dropout": [0.25, 0.5]}, cv=3, n_jobs=2
            ).fit(X, y),
        ),
    ):
        with tempfile.TemporaryDirectory() as tmp:
            clf = PretrainedImageClassifier(
                "mobilenet_v2", weights=str(WEIGHTS), cache=tmp, random_state=0
            )
            run(clf)
            computed = FeatureCache(tmp).stats()["computed"]
            print(f"| {label} | {len(set(X))} | {computed} |", flush=True)


if __name__ == "__main__":
    main()
