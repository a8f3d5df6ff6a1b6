"""Device and precision choice, tested without the hardware: torch's own
queries are replaced, never the package's functions. The fp16 path that
GPUs without native bf16 take (autocast and a gradient scaler) runs on the
CPU here, through ``fit``."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import TINY
from skorch.callbacks import Callback

from sktransfer import (
    PretrainedFeatures,
    PretrainedImageClassifier,
    load,
    save,
)
from sktransfer._devices import resolve_device, resolve_precision
from sktransfer.exceptions import DivergedError


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
    "native, capability, expected",
    [(True, (8, 0), "bf16"), (False, (7, 5), "fp16"), (False, (6, 1), "fp32")],
    ids=["ampere", "t4", "pascal"],
)
def test_auto_precision_on_cuda_asks_for_native_bf16_then_fp16_tensor_cores(
    monkeypatch, native, capability, expected
):
    asked = {}

    def is_bf16_supported(including_emulation=True):
        asked["including_emulation"] = including_emulation
        return native or including_emulation  # emulation is always "supported"

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)
    assert resolve_precision("auto", torch.device("cuda")) == expected
    assert asked == {"including_emulation": False}
    for asked_for in ("fp32", "bf16", "fp16"):
        assert resolve_precision(asked_for, torch.device("cuda")) == asked_for


def test_auto_precision_on_a_cpu_is_never_fp16(monkeypatch):
    for native in (True, False):
        monkeypatch.setattr(
            torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda n=native: n
        )
        expected = "bf16" if native else "fp32"
        assert resolve_precision("auto", torch.device("cpu")) == expected


def test_auto_precision_on_mps_is_fp32():
    assert resolve_precision("auto", torch.device("mps")) == "fp32"


def test_an_estimator_names_mps_when_the_machine_has_none(no_cuda, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='mps'.*no MPS device"):
        PretrainedFeatures("resnet18", weights=None, device="mps").fit()


# --- fp16 training (the path GPUs without native bf16 take), run on the CPU ---


class _GradNorms(Callback):
    """Records in each epoch's history row the median norm of the gradients
    the optimizer steps with, as callbacks see them (``on_grad_computed``)."""

    def on_epoch_begin(self, net, **kwargs):
        self.norms_ = []

    def on_grad_computed(self, net, named_parameters, training=False, **kwargs):
        grads = [p.grad for _, p in named_parameters if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
        if torch.isfinite(norm):  # a step fp16 overflowed is skipped
            self.norms_.append(norm.item())

    def on_epoch_end(self, net, **kwargs):
        net.history.record("grad_norm", float(np.median(self.norms_ or [np.nan])))


def _fit(images, cache_dir, precision, **params):
    X, y = images
    return PretrainedImageClassifier(
        **TINY,
        cache=cache_dir,
        batch_size=6,
        random_state=0,
        head_init="random",
        precompute_epochs=2,
        augmented_cycles=1,
        unfrozen_cycles=1,
        unfreeze_from=1,
        unfrozen_lr=1e-4,  # 1e-3 leaves this random-init body at chance in eval
        precision=precision,
        callbacks=[("grad_norms", _GradNorms())],
        **params,
    ).fit(X, y)


@pytest.fixture(scope="module")
def fits(images, cache_dir):
    return {p: _fit(images, cache_dir, p) for p in ("fp32", "fp16")}


def test_fp16_trains_every_stage_with_gradients_unscaled_for_callbacks(fits):
    fp32, fp16 = fits["fp32"].history_, fits["fp16"].history_
    assert [r["stage"] for r in fp16] == [r["stage"] for r in fp32]
    assert {r["stage"] for r in fp16} == {"precomputed", "augmented", "unfrozen"}
    for a, b in zip(fp32, fp16, strict=True):
        assert np.isfinite(b["train_loss"])
        # the loss is scaled by 2**10 before backward; callbacks and the
        # optimizer get the gradients back at their true size
        assert 0.5 < b["grad_norm"] / a["grad_norm"] < 2, (a, b)
    # and the body learned in fp16 as in fp32 (its loss moved the same way)
    assert fp16[-1]["train_loss"] < 2 * fp32[-1]["train_loss"] + 0.1


def test_fp16_predictions_follow_fp32_and_survive_save_and_load(
    fits, images, cache_dir, tmp_path
):
    X, _ = images
    p32 = fits["fp32"].predict_proba(X)
    p16 = fits["fp16"].predict_proba(X)
    assert p16.dtype == p32.dtype and np.isfinite(p16).all()
    np.testing.assert_allclose(p16.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(p16.argmax(1), p32.argmax(1))
    assert np.abs(p16 - p32).max() < 0.05  # fp16 rounding, not another model
    fitted = copy.deepcopy(fits["fp16"]).set_params(callbacks=None)
    loaded = load(save(fitted, tmp_path / "fp16"), cache=cache_dir)
    np.testing.assert_allclose(loaded.predict_proba(X), p16, atol=1e-6)


def test_fp16_features_are_close_to_fp32_and_cached_apart(images, forward_count):
    X, _ = images
    f32 = PretrainedFeatures(**TINY, precision="fp32").fit().transform(X)
    forward_count["n"] = 0
    f16 = PretrainedFeatures(**TINY, precision="fp16").fit().transform(X)
    assert forward_count["n"] == len(X)  # not served fp32's cached vectors
    assert not np.array_equal(f16, f32)
    np.testing.assert_allclose(f16, f32, rtol=0.02, atol=0.02 * np.abs(f32).max())


class _OverflowOnce(Callback):
    """Makes the first training step of every stage overflow: its output
    gradients become inf, as fp16 gradients do when the loss scale is too
    high for them."""

    def on_train_begin(self, net, **kwargs):
        self.done_ = False

        def hook(module, inputs, output):
            if module.training and not self.done_:
                self.done_ = True
                output.register_hook(lambda g: g * float("inf"))

        self.handle_ = net.module_.register_forward_hook(hook)

    def on_train_end(self, net, **kwargs):
        self.handle_.remove()


def test_an_overflowing_fp16_step_is_skipped_not_applied(images, cache_dir):
    X, y = images
    params = dict(
        TINY,
        cache=cache_dir,
        batch_size=6,
        random_state=0,
        head_init="random",
        precompute_epochs=2,
        callbacks=[("overflow", _OverflowOnce())],
    )
    clf = PretrainedImageClassifier(**params, precision="fp16").fit(X, y)
    assert all(np.isfinite(r["train_loss"]) for r in clf.history_)
    assert np.isfinite(clf.predict_proba(X)).all() and clf.score(X, y) == 1
    # without the gradient scaler (fp32) the same step is applied and wrecks
    # the head
    with pytest.raises(DivergedError):
        PretrainedImageClassifier(**params, precision="fp32").fit(X, y)


@pytest.mark.parametrize("asked, expected", [("auto", "fp32"), ("bf16", "bf16")])
def test_a_loaded_model_picks_its_auto_precision_on_the_machine_that_loads_it(
    images, cache_dir, tmp_path, monkeypatch, asked, expected
):
    X, y = images
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    clf = PretrainedImageClassifier(**TINY, cache=cache_dir, precision=asked)
    clf.fit(X, y)
    assert clf.extractor_.precision == "bf16"  # where it was fitted
    folder = save(clf, tmp_path / "model")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    loaded = load(folder, cache=cache_dir)
    # "auto" means what is fast here; a precision asked for is kept
    assert loaded.extractor_.precision == expected
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), atol=0.05)
