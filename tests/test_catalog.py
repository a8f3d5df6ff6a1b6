"""available_backbones: the plain list, and the table to choose a body by."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

import sktransfer
from sktransfer import available_backbones
from sktransfer._backbones import load_backbone
from sktransfer._catalog import COLUMNS


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("available_backbones tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def test_plain_list_is_the_sorted_torchvision_names():
    import torchvision.models as tvm

    names = available_backbones()
    assert names == sorted(tvm.list_models(module=tvm))
    assert "resnet34" in names and "mobilenet_v2" in names
    assert sktransfer.available_backbones is available_backbones


def test_mobilenet_v2_row_holds_the_registry_numbers(no_network):
    (row,) = available_backbones(details=True, names=["mobilenet_v2"])
    assert tuple(row) == COLUMNS
    assert row == {
        "name": "mobilenet_v2",
        "weights": "IMAGENET1K_V2",
        "parameters": 3_504_872,
        "gflops": 0.301,
        "imagenet_top1": 72.154,
        "feature_size": 1280,
        "image_size": 224,
        "cached": False,
    }


@pytest.mark.parametrize(
    "name", ["resnet18", "squeezenet1_1", "regnet_x_400mf", "googlenet"]
)
def test_feature_size_is_what_the_loaded_body_returns(name, no_network):
    (row,) = available_backbones(details=True, names=[name])
    body = load_backbone(name, None)
    assert row["feature_size"] == body.n_features
    with torch.inference_mode():
        out = body.body(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, row["feature_size"])


def test_every_torchvision_model_is_described_without_touching_global_rng(
    no_network,
):
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    table = available_backbones(details=True)
    assert torch.equal(torch.rand(3), expected_draw)
    assert [row["name"] for row in table] == available_backbones()
    for row in table:
        assert row["feature_size"] > 0 and row["parameters"] > 100_000
        assert 50.0 < row["imagenet_top1"] < 100.0
        assert row["gflops"] > 0.0
        assert row["image_size"] >= 224
    by_name = {row["name"]: row for row in table}
    assert by_name["resnet50"]["feature_size"] == 2048
    assert by_name["inception_v3"]["image_size"] == 299
    assert by_name["convnext_tiny"]["imagenet_top1"] > 82.0


def test_cached_column_follows_torch_hub_folder(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert torch.hub.get_dir() == str(tmp_path / "hub")
    (row,) = available_backbones(details=True, names=["resnet18"])
    assert row["cached"] is False
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "resnet18-f37072fd.pth").write_bytes(b"weights")
    (row,) = available_backbones(details=True, names=["resnet18"])
    assert row["cached"] is True
    other = available_backbones(details=True, names=["resnet34"])[0]
    assert other["cached"] is False


def test_as_frame_returns_a_dataframe_with_the_columns():
    pd = pytest.importorskip("pandas")
    frame = available_backbones(
        details=True, names=["resnet34", "mobilenet_v2"], as_frame=True
    )
    assert isinstance(frame, pd.DataFrame)
    assert tuple(frame.columns) == COLUMNS
    assert list(frame["name"]) == ["mobilenet_v2", "resnet34"]
    assert frame["feature_size"].tolist() == [1280, 512]


def test_timm_rows_are_built_without_weights(no_network):
    pytest.importorskip("timm")
    (row,) = available_backbones(details=True, names=["timm:tf_efficientnet_lite0"])
    body = load_backbone("timm:tf_efficientnet_lite0", None)
    assert row["feature_size"] == body.n_features == 1280
    assert row["parameters"] > sum(p.numel() for p in body.body.parameters())
    assert row["imagenet_top1"] is None and row["gflops"] is None
    assert row["image_size"] == 224


def test_bad_names_get_errors_that_name_them():
    with pytest.raises(ValueError, match="unknown backbone 'resnet35'.*resnet34"):
        available_backbones(details=True, names=["resnet35"])
    with pytest.raises(ValueError, match=r"names=\['resnet34'\]"):
        available_backbones(details=True, names="resnet34")
    with pytest.raises(ValueError, match="details=True"):
        available_backbones(names=["resnet34"])


def test_rows_are_copies_not_the_cached_description():
    (row,) = available_backbones(details=True, names=["resnet18"])
    row["feature_size"] = -1
    (again,) = available_backbones(details=True, names=["resnet18"])
    assert again["feature_size"] == 512
    assert np.isfinite(again["gflops"])
