"""The public face of the package: a short top level, public submodules whose
``__all__`` imports, and every exception in ``sktransfer.exceptions``, raised
by real public calls."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import sktransfer
from sktransfer import PretrainedFeatures, PretrainedImageClassifier, load
from sktransfer.exceptions import (
    CacheWarning,
    DivergedError,
    ImageLoadError,
    ModelFormatError,
    NonFiniteFeaturesError,
    WeightsUnavailableError,
)

TOP_LEVEL = [
    "FeatureCache",
    "LRFinder",
    "PretrainedFeatures",
    "PretrainedImageClassifier",
    "PretrainedImageRegressor",
    "SGDR",
    "Stage",
    "available_backbones",
    "load",
    "make_plan",
    "save",
]

PUBLIC_MODULES = sorted(
    info.name
    for info in pkgutil.iter_modules(sktransfer.__path__, "sktransfer.")
    if not info.name.rpartition(".")[2].startswith("_")
)

#: Where the names that left the top level live now.
MOVED = {
    "image_size_summary": "datasets",
    "load_image_csv": "datasets",
    "load_image_folder": "datasets",
    "augmented_copies": "datasets",
    "plot_augmentations": "plotting",
    "plot_history": "plotting",
    "plot_image_sizes": "plotting",
    "most_confused": "inspection",
    "plot_top_losses": "inspection",
    "top_losses": "inspection",
    "export_onnx": "export",
    "export_torchscript": "export",
    "to_torch": "export",
    "dask_features": "dask",
    "CacheWarning": "exceptions",
    "ImageLoadError": "exceptions",
    "ModelFormatError": "exceptions",
    "WeightsUnavailableError": "exceptions",
}

TINY = dict(backbone="resnet18", weights=None, image_size=32, cache=None)


# --- the top level and the public modules ------------------------------------


def test_the_top_level_exports_exactly_the_estimators_recipe_cache_and_saving():
    assert sorted(sktransfer.__all__) == sorted(TOP_LEVEL)
    for name in TOP_LEVEL:
        assert getattr(sktransfer, name) is not None
    assert isinstance(sktransfer.__version__, str)


@pytest.mark.parametrize("name", sorted(MOVED))
def test_a_moved_name_lives_only_in_its_module(name):
    module = importlib.import_module(f"sktransfer.{MOVED[name]}")
    assert name in module.__all__
    assert not hasattr(sktransfer, name), f"sktransfer.{name} is still there"


def test_removed_functions_and_methods_are_gone():
    assert not hasattr(sktransfer, "preprocess")
    assert not hasattr(sktransfer, "default_cache_dir")
    for estimator in (PretrainedImageClassifier, sktransfer.PretrainedImageRegressor):
        assert not hasattr(estimator, "to_torch")
        assert not hasattr(estimator, "export_onnx")
        assert callable(estimator.preprocess)
    assert callable(PretrainedFeatures.preprocess)
    assert callable(sktransfer.FeatureCache.default_directory)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_name_of_a_public_module_all_is_importable(module_name):
    module = importlib.import_module(module_name)
    assert module.__all__, f"{module_name} has no __all__"
    assert len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        namespace = {}
        exec(f"from {module_name} import {name}", namespace)
        assert namespace[name] is getattr(module, name)


def test_the_dask_module_does_not_shadow_the_dask_package():
    dask = pytest.importorskip("dask")
    import sktransfer.dask

    importlib.import_module("dask.array")  # a submodule of the package, not ours

    assert sys.modules["dask"] is dask
    assert Path(dask.__file__).parent.name == "dask"
    assert Path(dask.__file__).parent != Path(sktransfer.__file__).parent
    assert sktransfer.dask.__name__ == "sktransfer.dask"


# --- exceptions ---------------------------------------------------------------


def test_every_public_exception_class_of_the_package_is_in_sktransfer_exceptions():
    import sktransfer.exceptions

    elsewhere = []
    for info in pkgutil.iter_modules(sktransfer.__path__, "sktransfer."):
        if info.name == "sktransfer.exceptions":
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
                and not name.startswith("_")
            ):
                elsewhere.append(f"{info.name}.{name}")
    # the command line's usage error never reaches a caller of the API
    assert elsewhere == ["sktransfer.cli.UsageError"]
    for name in sktransfer.exceptions.__all__:
        obj = getattr(sktransfer.exceptions, name)
        assert issubclass(obj, Exception)
        assert obj.__module__ == "sktransfer.exceptions"


def test_exceptions_keep_their_built_in_bases():
    assert issubclass(ImageLoadError, ValueError)
    assert issubclass(ModelFormatError, ValueError)
    assert issubclass(NonFiniteFeaturesError, ValueError)
    assert issubclass(DivergedError, ValueError)
    assert issubclass(DivergedError, FloatingPointError)
    assert issubclass(WeightsUnavailableError, RuntimeError)
    assert issubclass(CacheWarning, UserWarning)


@pytest.fixture(scope="module")
def features():
    return PretrainedFeatures(**TINY).fit()


def test_a_missing_photo_raises_ImageLoadError(features, tmp_path):
    with pytest.raises(ImageLoadError) as info:
        features.transform([str(tmp_path / "missing.jpg")])
    assert "missing.jpg" in str(info.value)


def test_a_folder_without_a_model_raises_ModelFormatError(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(ModelFormatError, match="model.json is missing"):
        load(tmp_path / "model")


def test_an_unusable_cache_folder_warns_with_CacheWarning(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    model = PretrainedFeatures(**dict(TINY, cache=str(blocker)))
    with pytest.warns(CacheWarning):
        out = model.fit_transform(np.zeros((2, 32, 32, 3), np.uint8))
    assert out.shape == (2, 512)


def test_a_diverging_fit_raises_DivergedError():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 255, size=(8, 32, 32, 3), dtype=np.uint8)
    y = ["cat"] * 4 + ["dog"] * 4
    clf = PretrainedImageClassifier(
        **TINY, random_state=0, lr=1e30, precompute_epochs=8
    )
    with pytest.raises(DivergedError, match="lower lr"):
        clf.fit(X, y)


def test_overflowing_weights_raise_NonFiniteFeaturesError(tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = torchvision.models.resnet18().state_dict()
    state["layer4.0.bn2.bias"].fill_(3e38)  # finite, but the next conv overflows
    weights = tmp_path / "overflowing.pth"
    torch.save(state, weights)
    model = PretrainedFeatures(**dict(TINY, weights=str(weights))).fit()
    with pytest.raises(NonFiniteFeaturesError, match="non-finite features"):
        model.transform(np.zeros((2, 32, 32, 3), np.uint8))


def test_a_damaged_download_in_the_hub_cache_raises_WeightsUnavailableError(
    tmp_path, monkeypatch
):
    hub = tmp_path / "torch-home" / "hub"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # restored afterwards
    torch.hub.set_dir(str(hub))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    (hub / "checkpoints").mkdir(parents=True)
    damaged = hub / "checkpoints" / os.path.basename(url)
    damaged.write_bytes(b"not the published file")

    with pytest.raises(WeightsUnavailableError) as info:
        PretrainedFeatures("resnet18", weights="DEFAULT", cache=None).fit()
    assert str(damaged) in str(info.value)
