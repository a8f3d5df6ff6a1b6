"""What the benchmark scripts share: the photo sets' splits and the line
that names the machine a table was measured on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "weights" / "mobilenet_v2-imagenet.pth"


def machine(device: torch.device | None = None) -> str:
    """CPU model, threads, torch version and whether bf16 is native."""
    from sktransfer._devices import bf16_is_fast, resolve_precision

    device = device or torch.device("cpu")
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
         if line.startswith("model name")),
        "?",
    )  # fmt: skip
    return (
        f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"device {device}, native bf16: {bf16_is_fast(device)}, "
        f"'auto' picks {resolve_precision('auto', device)}"
    )


def split(name: str):
    """``X_train, X_test, y_train, y_test`` of a photo set: ants vs bees
    train -> val (without the placeholder GIF, which is not a photo); dogs
    vs cats 1,600 / 400 and flowers 1,500 / 400, stratified, seed 0."""
    from sklearn.model_selection import train_test_split

    from sktransfer.datasets import load_image_folder

    data = SHARED / "data"
    if name == "hymenoptera":
        X_tr, y_tr = load_image_folder(data / "hymenoptera_data" / "train")
        X_te, y_te = load_image_folder(data / "hymenoptera_data" / "val")
        ok = np.array(["imageNotFound" not in p for p in X_tr])
        return X_tr[ok], X_te, y_tr[ok], y_te
    folder = data / ("dogscats/train" if name == "dogscats" else "flowers")
    X, y = load_image_folder(folder)
    train = 1600 if name == "dogscats" else 1500
    return train_test_split(
        X, y, train_size=train, test_size=400, stratify=y, random_state=0
    )
