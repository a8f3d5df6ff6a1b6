"""sktransfer against fastai: same photos, same weights, same split.

fastai (2.8.x; ``pip install fastai==2.8.12`` into the benchmark's
environment: it is never a dependency of sktransfer) runs its standard
transfer-learning loop as its documentation describes it: the pretrained
body (loaded from the same file) frozen, ``lr_find`` on the frozen network,
one frozen and two unfrozen epochs at the suggested rate
(``fine_tune(2, freeze_epochs=1)``) with its default augmentation, then
``tta()``. sktransfer runs two models: the fast one (the default linear
probe on cached features, ``tta=4``) and the accurate recipe (the probe,
unfrozen cycles of 1 + 2 + 4 epochs with differential rates, ``tta=4``).
All start from the same offline ``mobilenet_v2`` ImageNet weights and are
scored on the same held-out photos.

Each model runs in its own process (wall time, peak memory):

    .venv/bin/python benchmarks/bench_vs_fastai.py --data dogscats
    .venv/bin/python benchmarks/bench_vs_fastai.py --data hymenoptera

Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import WEIGHTS, split

#: sktransfer's models: name -> parameters beyond the body and weights
SKTRANSFER = {
    "sktransfer (probe + TTA)": dict(tta=4),
    "sktransfer (recipe)": dict(unfrozen_cycles=3, cycle_mult=2, tta=4),
}


def run_sktransfer(name, cache, params):
    from sktransfer import PretrainedImageClassifier

    X_tr, X_te, y_tr, y_te = split(name)
    clf = PretrainedImageClassifier(
        "mobilenet_v2", weights=str(WEIGHTS), cache=cache, random_state=0, **params
    )
    clf.fit(X_tr, y_tr)
    stages: dict = {}
    for record in clf.history_:
        stages[record["stage"]] = stages.get(record["stage"], 0.0) + record["seconds"]
    print(
        "sktransfer epochs by stage: "
        + ", ".join(f"{stage} {sec:.0f} s" for stage, sec in stages.items()),
        flush=True,
    )
    proba = clf.predict_proba(X_te)
    return proba, list(clf.classes_), list(y_te)


def run_fastai(name, _cache):
    import torch
    import torchvision
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        ImageBlock,
        IndexSplitter,
        Normalize,
        Resize,
        aug_transforms,
        default_split,
        imagenet_stats,
        model_meta,
        vision_learner,
    )

    X_tr, X_te, y_tr, y_te = split(name)
    items = [*map(str, X_tr), *map(str, X_te)]
    labels = dict(zip(items, [*y_tr, *y_te]))
    valid = list(range(len(X_tr), len(items)))
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_y=lambda p: labels[p],
        splitter=IndexSplitter(valid),
        item_tfms=Resize(256),
        batch_tfms=[*aug_transforms(size=224), Normalize.from_stats(*imagenet_stats)],
    )
    dls = block.dataloaders(items, bs=64)  # fastai's default loader workers

    def arch(*args, **kwargs):
        model = torchvision.models.mobilenet_v2(weights=None)
        model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
        return model

    # fastai knows no cut for this body under a custom function: the
    # classifier is the last child, as for its own mobilenet entries
    model_meta[arch] = {"cut": -1, "split": default_split, "stats": imagenet_stats}
    learn = vision_learner(dls, arch, pretrained=False, normalize=False)
    # pretrained=False (the weights come from the file above) also means
    # vision_learner leaves the body trainable: freeze it as it would
    learn.freeze()
    lr = learn.lr_find(show_plot=False).valley
    learn.fine_tune(2, base_lr=lr, freeze_epochs=1)
    proba, _ = learn.tta()
    return proba.numpy(), list(dls.vocab), list(y_te)


def child(framework, name, out):
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        if framework == "fastai":
            proba, classes, y_te = run_fastai(name, cache)
        else:
            proba, classes, y_te = run_sktransfer(name, cache, SKTRANSFER[framework])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(out + ".npy", np.asarray(proba, dtype=np.float64))
    Path(out + ".json").write_text(
        json.dumps(
            {"seconds": seconds, "peak_mib": peak, "classes": classes, "y": y_te}
        )
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data", default="dogscats", choices=["dogscats", "hymenoptera"]
    )
    parser.add_argument("--child", nargs=3, metavar=("FRAMEWORK", "DATA", "OUT"))
    parser.add_argument("--only", nargs="+", choices=[*SKTRANSFER, "fastai"])
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from sklearn.metrics import accuracy_score, log_loss

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for framework in (*SKTRANSFER, "fastai"):
            if args.only and framework not in args.only:
                continue
            out = str(Path(tmp) / framework)
            subprocess.run(
                [sys.executable, __file__, "--child", framework, args.data, out],
                check=True,
            )
            info = json.loads(Path(out + ".json").read_text())
            proba = np.load(out + ".npy")
            classes = np.asarray(info["classes"])
            y = np.asarray(info["y"])
            rows[framework] = (
                info["seconds"],
                info["peak_mib"],
                accuracy_score(y, classes[proba.argmax(1)]),
                log_loss(y, proba, labels=classes),
            )
    print(f"\n{args.data}: fit + TTA prediction, mobilenet_v2 offline weights\n")
    print("| framework | wall s | peak MiB | accuracy | log loss |")
    print("|---|---|---|---|---|")
    for framework, (s, mib, acc, ll) in rows.items():
        print(f"| {framework} | {s:.0f} | {mib:.0f} | {acc:.4f} | {ll:.4f} |")
    if "fastai" in rows:
        for framework in SKTRANSFER:
            if framework in rows:
                ratio = rows[framework][0] / rows["fastai"][0]
                print(f"{framework} wall time / fastai wall time: {ratio:.3f}")


if __name__ == "__main__":
    main()
