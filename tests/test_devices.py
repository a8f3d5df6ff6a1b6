"""Device and precision choice, tested without the hardware: torch's own
queries are replaced, never the package's functions."""

from __future__ import annotations

import pytest
import torch

from sktransfer import PretrainedFeatures
from sktransfer._devices import resolve_device, resolve_precision


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_the_cpu_without_an_accelerator(no_cuda, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_picks_cuda_first(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_auto_picks_apple_mps_without_cuda(no_cuda, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    assert resolve_device(None) == torch.device("mps")


@pytest.mark.parametrize(
    "native, expected", [(True, "bf16"), (False, "fp32")], ids=["ampere", "t4"]
)
def test_auto_precision_on_cuda_asks_for_native_bf16(monkeypatch, native, expected):
    asked = {}

    def is_bf16_supported(including_emulation=True):
        asked["including_emulation"] = including_emulation
        return native or including_emulation  # emulation is always "supported"

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert resolve_precision("auto", torch.device("cuda")) == expected
    assert asked == {"including_emulation": False}
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"
    assert resolve_precision("bf16", torch.device("cuda")) == "bf16"


def test_auto_precision_on_mps_is_fp32():
    assert resolve_precision("auto", torch.device("mps")) == "fp32"


def test_an_estimator_names_mps_when_the_machine_has_none(no_cuda, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='mps'.*no MPS device"):
        PretrainedFeatures("resnet18", weights=None, device="mps").fit()
