"""Shared fixtures: tiny generated images, a tiny backbone, a private cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "weights"
DATA = SHARED / "data"
MOBILENET = WEIGHTS / "mobilenet_v2-imagenet.pth"

#: A backbone that runs in milliseconds: random-init ResNet-18 at 32 px.
TINY = dict(backbone="resnet18", weights=None, image_size=32)


class Shared(list):
    """A list that every deep copy of a callback shares: each stage's net
    gets a deep copy of the user's callbacks, and a test reads what all of
    them recorded."""

    def __deepcopy__(self, memo):
        return self


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models run faster on one thread than on two busy cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _ImagesComputed:
    """``counter["n"]``: images through the body of any extractor since the
    counter was made or ``counter["n"]`` was last set, read from the public
    ``FeatureExtractor.images_computed_in_process``."""

    def __init__(self):
        self._start = self._total()

    @staticmethod
    def _total() -> int:
        from sktransfer._extractor import FeatureExtractor

        return FeatureExtractor.images_computed_in_process

    def __getitem__(self, key):
        if key != "n":
            raise KeyError(key)
        return self._total() - self._start

    def __setitem__(self, key, value):
        if key != "n":
            raise KeyError(key)
        self._start = self._total() - value


@pytest.fixture
def forward_count():
    """Number of images that went through the body in this process (since the
    test started, or since ``forward_count["n"]`` was last set)."""
    return _ImagesComputed()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own default cache directory."""
    monkeypatch.setenv("SKTRANSFER_CACHE", str(tmp_path / "cache"))


def make_images(directory: Path, n_per_class=6, classes=("a", "b"), size=40, seed=0):
    """Write small JPEGs whose colour depends on the class; return (paths, labels).

    The classes differ in mean colour, so even a random-init body separates
    them well enough for tests that check learning.
    """
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    for k, cls in enumerate(classes):
        for i in range(n_per_class):
            base = np.zeros((size, size, 3))
            base[..., k % 3] = 200
            arr = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
            path = directory / f"{cls}_{i}.jpg"
            Image.fromarray(arr).save(path, quality=90)
            paths.append(str(path))
            labels.append(cls)
    return paths, np.array(labels)


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory, request):
    """A folder shared by the tests of one module."""
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def images(module_dir):
    """12 JPEG paths (6 of class 'a', 6 of class 'b') and their labels."""
    return make_images(module_dir / "images")


@pytest.fixture(scope="module")
def cache_dir(module_dir):
    """One feature cache per module: same images, same body, same vectors."""
    return str(module_dir / "cache")


@pytest.fixture
def image_set(tmp_path):
    return make_images(tmp_path / "images")


@pytest.fixture
def tiny_params(tmp_path):
    return dict(
        TINY, cache=str(tmp_path / "cache"), precompute_epochs=3, random_state=0
    )


def shared_available(*parts) -> bool:
    return SHARED.joinpath(*parts).exists()


requires_shared = pytest.mark.skipif(
    not (MOBILENET.exists() and DATA.exists()),
    reason="../shared weights and photos are not present",
)
