"""bf16 autocast vs fp32 in training, on this machine's CPU (or GPU).

The classifier (mobilenet_v2) trains its head on cached features, then one
epoch with the whole body unfrozen, once with ``precision="fp32"`` and once
with ``"bf16"``; the table gives the unfrozen epoch's speed (from
``history_``), the feature extraction's speed and the held-out accuracy
and log loss. ``precision="auto"`` picks bf16 only where the hardware runs
it natively (AVX-512 BF16 / AMX, or a GPU with bf16 tensor cores).

    .venv/bin/python benchmarks/bench_precision.py [--n-train 800]

Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from _common import SHARED, WEIGHTS, machine
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split

from sktransfer import PretrainedImageClassifier
from sktransfer.datasets import load_image_folder

WEIGHTS = str(WEIGHTS)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-train", type=int, default=800)
    parser.add_argument("--n-test", type=int, default=400)
    args = parser.parse_args()
    X, y = load_image_folder(SHARED / "data" / "dogscats" / "train")
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, train_size=args.n_train, test_size=args.n_test, stratify=y,
        random_state=0,
    )  # fmt: skip
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(machine(device))
    print(f"\ndogs vs cats, {len(X_tr)} training photos, {len(X_te)} held out\n")
    print(
        "| precision | extraction img/s | unfrozen epoch img/s | accuracy | log loss |"
    )
    print("|---|---|---|---|---|")
    for precision in ("fp32", "bf16"):
        with tempfile.TemporaryDirectory() as cache:
            clf = PretrainedImageClassifier(
                "mobilenet_v2", weights=WEIGHTS, cache=cache, precision=precision,
                unfrozen_cycles=1, random_state=0,
            )  # fmt: skip
            clf.fit(X_tr, y_tr)
            start = time.perf_counter()
            proba = clf.predict_proba(X_te)  # features of unseen photos
            extract = len(X_te) / (time.perf_counter() - start)
        (row,) = [r for r in clf.history_ if r["stage"] == "unfrozen"]
        train = len(X_tr) / row["seconds"]
        acc = accuracy_score(y_te, clf.classes_[proba.argmax(1)])
        loss = log_loss(y_te, proba, labels=clf.classes_)
        print(
            f"| {precision} | {extract:.0f} | {train:.1f} | {acc:.4f} | {loss:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
