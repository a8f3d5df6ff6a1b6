"""timm models named by their Hugging Face hub repository
(``timm:hf-hub:ORG/NAME``), with the hub offline: a repository in the local
hub cache loads; anything else is a clear error naming the backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sktransfer import PretrainedFeatures
from sktransfer.exceptions import WeightsUnavailableError

timm = pytest.importorskip("timm")
constants = pytest.importorskip("huggingface_hub.constants")
safetensors_torch = pytest.importorskip("safetensors.torch")

REPO = "someone/tiny-effnet"
ARCH = "test_efficientnet"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty hub cache, and no network for the hub."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def cache_repo(cache, repo, files: dict) -> None:
    """Files of ``repo`` as the hub's cache lays them out (one snapshot that
    ``main`` points to)."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    revision = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def tiny_repo(cache, tmp_path, seed=0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(ARCH, pretrained=False)
    weights = tmp_path / "model.safetensors"
    safetensors_torch.save_file(model.state_dict(), str(weights))
    config = {
        "architecture": ARCH,
        "num_classes": 1000,
        "pretrained_cfg": {
            "input_size": [3, 64, 64],
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "num_classes": 1000,
        },
    }
    cache_repo(
        cache,
        REPO,
        {
            "config.json": json.dumps(config).encode(),
            "model.safetensors": weights.read_bytes(),
        },
    )
    return model


def test_a_cached_hub_repository_loads_offline(hub, tmp_path):
    model = tiny_repo(hub, tmp_path)
    features = PretrainedFeatures(f"timm:hf-hub:{REPO}", cache=None).fit()
    pre = features.preprocessing_
    # the preprocessing is the repository's config, not a registry default
    assert (pre.crop_size, pre.resize_size) == (64, 64)
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.25, 0.25, 0.25)
    # the weights are the repository's
    body = features.extractor_.backbone.body
    for name, tensor in model.state_dict().items():
        if not name.startswith("classifier"):
            torch.testing.assert_close(body.state_dict()[name], tensor)
    X = np.random.default_rng(0).integers(0, 255, size=(3, 80, 80, 3), dtype=np.uint8)
    assert features.transform(X).shape == (3, features.n_features_out_)
    assert REPO in features.extractor_.backbone.weights_id


def test_other_weights_of_the_same_repository_get_another_cache_key(hub, tmp_path):
    tiny_repo(hub, tmp_path)
    hub_id = PretrainedFeatures(f"timm:hf-hub:{REPO}", cache=None).fit()
    other = timm.create_model(ARCH, pretrained=False)
    torch.save(other.state_dict(), tmp_path / "other.pth")
    local = PretrainedFeatures(
        f"timm:hf-hub:{REPO}", weights=str(tmp_path / "other.pth"), cache=None
    ).fit()
    assert local.extractor_.backbone.weights_id.startswith("file:")
    assert local.extractor_.backbone.weights_id != hub_id.extractor_.backbone.weights_id


def test_a_repository_not_in_the_cache_is_a_clear_error(hub):
    with pytest.raises(WeightsUnavailableError) as info:
        PretrainedFeatures("timm:hf-hub:someone/not-cached", cache=None).fit()
    message = str(info.value)
    assert "'timm:hf-hub:someone/not-cached'" in message
    assert "Hugging Face cache" in message
    assert "path of a local state_dict file" in message


@pytest.mark.parametrize(
    "backbone, weights, match",
    [
        ("timm:hf-hub:no-slash", "DEFAULT", "timm:hf-hub:ORG/NAME"),
        ("timm:hf-hub:a/b/c", "DEFAULT", "timm:hf-hub:ORG/NAME"),
        (f"timm:hf-hub:{REPO}", "in1k", "weights='DEFAULT'"),
    ],
)
def test_bad_hub_names_and_weights_name_the_culprit(hub, backbone, weights, match):
    with pytest.raises(ValueError, match=match):
        PretrainedFeatures(backbone, weights=weights, cache=None).fit()
