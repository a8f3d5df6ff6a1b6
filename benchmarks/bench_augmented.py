"""The augmented head stage: cached augmented copies vs augmenting afresh.

For each photo set, the default classifier (mobilenet_v2, 8 head epochs on
cached plain features) is followed by ``--cycles`` augmented cycles of one
epoch, trained either on photos augmented afresh on every epoch
(``augmented_copies=0``: every photo goes through the frozen body again on
every epoch) or on the cached features of ``k`` fixed augmented copies of
each photo. Each variant is fitted twice with different seeds (as a second
fold or grid candidate would): the second fit shows what the cache saves.
The plain features are cached before timing, so the times are those of the
augmented stage and the head.

    .venv/bin/python benchmarks/bench_augmented.py [--data dogscats ...]

Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _common import WEIGHTS, machine, split
from sklearn.metrics import accuracy_score, log_loss

from sktransfer import PretrainedImageClassifier

WEIGHTS = str(WEIGHTS)


def run(name, cycles, variants):
    X_tr, X_te, y_tr, y_te = split(name)
    print(f"\n### {name}: {len(X_tr)} training photos, {len(X_te)} held out\n")
    print(
        "| augmented stage | first fit s | second fit s (seed 1) | accuracy "
        "| log loss |"
    )
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cache:
        params = dict(weights=WEIGHTS, cache=cache, precompute_epochs=8)
        base = PretrainedImageClassifier("mobilenet_v2", **params, random_state=0)
        base.fit(X_tr, y_tr)  # caches the plain features of every photo
        proba = base.predict_proba(X_te)
        _row("none (head on plain features only)", None, None, y_te, proba, base)
        for copies in variants:
            est = PretrainedImageClassifier(
                "mobilenet_v2", **params, augmented_cycles=cycles,
                augmented_copies=copies,
            )  # fmt: skip
            times = []
            for seed in (0, 1):
                est.set_params(random_state=seed)
                start = time.perf_counter()
                est.fit(X_tr, y_tr)
                times.append(time.perf_counter() - start)
                if seed == 0:
                    proba = est.predict_proba(X_te)
            label = (
                f"{cycles} epochs, augmented afresh"
                if copies == 0
                else f"{cycles} epochs on {min(copies, cycles)} cached copies"
            )
            _row(label, *times, y_te, proba, est)


def _row(label, first, second, y, proba, est):
    acc = accuracy_score(y, est.classes_[proba.argmax(1)])
    loss = log_loss(y, proba, labels=est.classes_)
    f = "-" if first is None else f"{first:.1f}"
    s = "-" if second is None else f"{second:.1f}"
    print(f"| {label} | {f} | {s} | {acc:.4f} | {loss:.4f} |", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data",
        nargs="+",
        default=["dogscats", "hymenoptera", "flowers"],
        choices=["dogscats", "hymenoptera", "flowers"],
    )
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--copies", type=int, nargs="+", default=[0, 1, 3])
    args = parser.parse_args()
    print(machine())
    for name in args.data:
        run(name, args.cycles, args.copies)


if __name__ == "__main__":
    main()
