"""A fit that stops half way leaves the estimator as it was.

Ctrl-C in any stage (the head on cached features, on augmented photos, the
unfrozen network, the learning-rate sweeps of ``lr="auto"`` and
``unfrozen_lr="auto"``) must raise ``KeyboardInterrupt`` out of ``fit`` and
keep the previous model, or none; so must an error while reading a photo
and a training run that diverges.

The interrupt is a real SIGINT, sent from a public seam: either the n-th
optimizer step of the fit (``torch.optim.AdamW``, whichever stage or sweep
takes it), or a user's PIL image whose rotation (which only augmentation
asks for) sends it.
"""

from __future__ import annotations

import copy
import signal
import time

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from sktransfer import PretrainedImageClassifier, PretrainedImageRegressor
from sktransfer.exceptions import DivergedError


@pytest.fixture(autouse=True)
def _default_sigint_handler():
    """SIGINT raises KeyboardInterrupt, as in a terminal."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def ctrl_c():
    signal.raise_signal(signal.SIGINT)


class Steps:
    """Counts the optimizer steps of a fit; at step ``at`` it records the
    rate of every parameter group and sends SIGINT."""

    def __init__(self):
        self.count, self.at, self.rates = 0, None, None

    def arm(self, at):
        self.count, self.at, self.rates = 0, at, None


@pytest.fixture
def steps(monkeypatch):
    state = Steps()

    class CountingAdamW(torch.optim.AdamW):
        def step(self, *args, **kwargs):
            state.count += 1
            if state.count == state.at:
                state.rates = [g["lr"] for g in self.param_groups]
                ctrl_c()
            return super().step(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", CountingAdamW)
    return state


@pytest.fixture
def base(cache_dir):
    """12 images in batches of 4: three steps per epoch; a random head
    trained by gradient steps (no linear probe), so that every stage has
    steps to interrupt."""
    return dict(TINY, cache=cache_dir, batch_size=4, random_state=0, head_init="random")


def snapshot(est, X):
    """What a fit must not change when it stops."""
    return dict(
        proba=est.predict_proba(X),
        history=copy.deepcopy(est.history_),
        head={k: v.clone() for k, v in est.head_.state_dict().items()},
        body={
            k: v.clone() for k, v in est.extractor_.backbone.body.state_dict().items()
        },
        model_key=est.extractor_.model_key,
        lr_=est.lr_,
        unfrozen_lr_=est.unfrozen_lr_,
    )


def assert_unchanged(est, X, before):
    after = snapshot(est, X)
    np.testing.assert_array_equal(after["proba"], before["proba"])
    assert after["history"] == before["history"]
    for part in ("head", "body"):
        assert after[part].keys() == before[part].keys()
        for k, v in before[part].items():
            assert torch.equal(after[part][k], v), (part, k)
    for key in ("model_key", "lr_", "unfrozen_lr_"):
        assert after[key] == before[key], key


# --- Ctrl-C in every stage --------------------------------------------------------

#: (the fit, the part of it that runs before the stage, the step of the stage
#: at which Ctrl-C comes, what the interrupted optimizer looks like)
STAGES = {
    "precomputed": (
        dict(precompute_epochs=3, augmented_cycles=1),
        None,
        4,  # the first step of the second epoch
        lambda rates: len(rates) == 1 and rates[0] < 1e-3,
    ),
    "augmented": (  # the head on augmented copies' features
        dict(precompute_epochs=1, augmented_cycles=2, unfrozen_cycles=1),
        dict(precompute_epochs=1),
        4,
        lambda rates: len(rates) == 1,
    ),
    "augmented-afresh": (  # the head on photos augmented on every epoch
        dict(
            precompute_epochs=1,
            augmented_cycles=2,
            augmented_copies=0,
            unfrozen_cycles=1,
        ),
        dict(precompute_epochs=1),
        4,
        lambda rates: len(rates) == 4,
    ),
    "unfrozen": (
        dict(precompute_epochs=1, augmented_cycles=1, unfrozen_cycles=2),
        dict(precompute_epochs=1, augmented_cycles=1),
        4,
        lambda rates: rates[1] / rates[0] == pytest.approx(10) and len(rates) == 4,
    ),
    "lr-sweep": (
        dict(lr="auto", precompute_epochs=2),
        None,
        5,  # the sweep starts at 1e-7 and has not gone far
        lambda rates: len(rates) == 1 and rates[0] < 1e-5,
    ),
    "unfrozen-lr-sweep": (
        dict(precompute_epochs=1, unfrozen_cycles=1, unfrozen_lr="auto"),
        dict(precompute_epochs=1),
        5,
        lambda rates: len(rates) == 4 and rates[-1] < 1e-5,
    ),
}


def steps_before(steps, base, X, y, prefix):
    if prefix is None:
        return 0
    steps.arm(None)
    PretrainedImageClassifier(**base, **prefix).fit(X, y)
    return steps.count


@pytest.mark.parametrize("stage", list(STAGES))
def test_ctrl_c_in_a_stage_of_a_first_fit_leaves_it_unfitted(
    images, base, steps, stage
):
    X, y = images
    params, prefix, k, looks_right = STAGES[stage]
    at = steps_before(steps, base, X, y, prefix) + k
    clf = PretrainedImageClassifier(**base, **params)
    steps.arm(at)
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y)
    assert steps.count == at  # nothing trained after Ctrl-C
    assert looks_right(steps.rates), steps.rates
    for name in ("head_", "ensemble_", "history_", "classes_", "extractor_"):
        assert not hasattr(clf, name), name
    with pytest.raises(NotFittedError):
        check_is_fitted(clf)
    with pytest.raises(NotFittedError):
        clf.predict(X)


@pytest.mark.parametrize("stage", list(STAGES))
def test_ctrl_c_in_a_stage_of_a_warm_fit_keeps_the_previous_model(
    images, base, steps, stage
):
    X, y = images
    params, prefix, k, looks_right = STAGES[stage]
    at = steps_before(steps, base, X, y, prefix) + k
    steps.arm(None)
    clf = PretrainedImageClassifier(**base, precompute_epochs=2).fit(X, y)
    before = snapshot(clf, X)
    clf.set_params(warm_start=True, **params)
    steps.arm(at)
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y)
    assert steps.count == at
    assert looks_right(steps.rates), steps.rates
    steps.arm(None)
    assert_unchanged(clf, X, before)


def test_ctrl_c_in_a_refit_keeps_the_previous_model(images, base, steps):
    X, y = images
    clf = PretrainedImageClassifier(**base, precompute_epochs=2).fit(X, y)
    before = snapshot(clf, X)
    clf.set_params(precompute_epochs=1, augmented_cycles=1, unfrozen_cycles=1)
    steps.arm(3 + 3 + 2)  # in the unfrozen stage
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y)
    steps.arm(None)
    assert_unchanged(clf, X, before)
    # the next fit trains from scratch as if nothing had happened
    again = clf.fit(X, y)
    assert [r["stage"] for r in again.history_] == [
        "precomputed",
        "augmented",
        "unfrozen",
    ]


# --- from the user's own photos ---------------------------------------------------


def photos(paths, calls, monkeypatch):
    """The user's RGB photos. The ``k``-th rotated view rendered from any of
    them, counted in ``calls``, raises: plain views never rotate, and
    augmentation renders every training photo turned by a small angle in
    one affine pass of PIL's, once per epoch."""
    transform = Image.Image.transform

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == calls["at"]:
            calls["raise"]()
        return transform(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "transform", counted)
    return [Image.open(path).convert("RGB") for path in paths]


def test_ctrl_c_while_a_photo_is_augmented(images, base, monkeypatch):
    paths, y = images
    calls = {"n": 0, "at": 5, "raise": ctrl_c}
    X = photos(paths, calls, monkeypatch)
    clf = PretrainedImageClassifier(
        **base,
        precompute_epochs=1,
        augmented_cycles=2,
        augmented_copies=0,  # photos augmented on every epoch
        unfrozen_cycles=1,
    )
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y)
    # decoding runs a few photos ahead of training; it stops with the fit,
    # before one epoch of the 12 photos is through
    assert 5 <= calls["n"] < len(X)
    seen = calls["n"]
    time.sleep(0.3)
    assert calls["n"] == seen
    assert not hasattr(clf, "head_")


def test_an_error_inside_a_warm_fit_leaves_the_fitted_model_as_it_was(
    images, base, monkeypatch
):
    paths, y = images

    def disk_gone():
        raise RuntimeError("disk gone")

    calls = {"n": 0, "at": None, "raise": disk_gone}
    X = photos(paths, calls, monkeypatch)
    clf = PretrainedImageClassifier(
        **base, precompute_epochs=1, augmented_cycles=1, augmented_copies=0
    ).fit(X, y)
    before = snapshot(clf, X)
    # 12 augmented photos, then two batches of 4 of the unfrozen stage: fail
    # while the (copied) body is being trained
    calls.update(n=0, at=12 + 8 + 2)
    clf.set_params(
        warm_start=True,
        precompute_epochs=0,
        augmented_cycles=1,
        unfrozen_cycles=1,
        unfrozen_lr=1e-2,
    )
    with pytest.raises(RuntimeError, match="disk gone"):
        clf.fit(X, y)
    # the failing photo's batch of 4 is decoded in parallel: its other
    # photos may be read too, never a photo of a later batch
    assert 12 + 8 + 2 <= calls["n"] <= 12 + 8 + 4
    calls["at"] = None
    assert_unchanged(clf, X, before)
    assert clf.extractor_.backbone.weights_id == "random-init"


# --- training that diverges -------------------------------------------------------


@pytest.mark.parametrize(
    "params, name, value, stage",
    [
        (dict(lr=1e30, precompute_epochs=8), "lr", "1e+30", "precomputed"),
        (
            dict(lr=1e30, precompute_epochs=0, augmented_cycles=1),
            "lr",
            "1e+30",
            "augmented",
        ),
        (
            dict(precompute_epochs=1, unfrozen_cycles=1, unfrozen_lr=1e6),
            "unfrozen_lr",
            "1e+06",
            "unfrozen",
        ),
    ],
    ids=["head", "augmented-head", "unfrozen"],
)
def test_a_diverging_fit_names_the_rate_and_keeps_the_previous_model(
    images, base, params, name, value, stage
):
    X, y = images
    fresh = PretrainedImageClassifier(**base, **params)
    with pytest.raises(DivergedError) as err:
        fresh.fit(X, y)
    message = str(err.value)
    assert isinstance(err.value, ValueError)  # what callers without sktransfer catch
    assert f"lower {name}" in message and value in message
    assert repr(stage) in message
    assert not hasattr(fresh, "head_")

    clf = PretrainedImageClassifier(**base, precompute_epochs=2).fit(X, y)
    before = snapshot(clf, X)
    clf.set_params(warm_start=True, **params)
    with pytest.raises(ValueError, match=f"lower {name}"):
        clf.fit(X, y)
    assert_unchanged(clf, X, before)
    assert np.all(np.isfinite(clf.predict_proba(X)))


def test_a_diverging_regressor_fit_names_the_rate(images, base):
    X, _ = images
    y = np.linspace(0.0, 1.0, len(X))
    reg = PretrainedImageRegressor(**base, lr=1e30, precompute_epochs=8)
    with pytest.raises(ValueError, match=r"lower lr.*") as err:
        reg.fit(X, y)
    assert "1e+30" in str(err.value)
    assert not hasattr(reg, "head_")
