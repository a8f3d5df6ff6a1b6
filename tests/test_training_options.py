"""Options of the gradient stages' training: the schedule (SGDR or one
cycle) and label smoothing, through ``fit`` and what it records."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY, Shared
from sklearn.base import clone
from skorch.callbacks import Callback

from sktransfer import PretrainedImageClassifier, make_plan
from sktransfer.exceptions import InvalidParameterError


@pytest.fixture
def base(cache_dir):
    """TINY with batches of 6: two steps per epoch on 12 images."""
    return dict(TINY, cache=cache_dir, batch_size=6, random_state=0, head_init="random")


def rows_of(clf, stage):
    return [row for row in clf.history_ if row["stage"] == stage]


# --- schedule -------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule, factors",
    [
        # two cycles of 2 epochs: each restarts at the top, half way down
        # at its second epoch
        ("sgdr", [1.0, 0.5, 1.0, 0.5]),
        # one cycle of 4 epochs (8 steps): up from 1/25 over the first
        # quarter, then half a cosine down over the rest
        ("one_cycle", [0.04, 1.0, 0.75, 0.25]),
    ],
)
def test_schedule_sets_every_epochs_rates(images, base, schedule, factors):
    X, y = images
    lr = 1e-3
    clf = PretrainedImageClassifier(
        **base,
        unfrozen_cycles=2,
        cycle_len=2,
        unfrozen_lr=lr,
        lr_mult=10,
        schedule=schedule,
    ).fit(X, y)
    rows = rows_of(clf, "unfrozen")
    assert len(rows) == 4  # the same epochs either way
    groups = np.array([1e-2, 1e-1, 1.0, 1.0]) * lr  # early, middle, late, head
    for row, factor in zip(rows, factors, strict=True):
        assert row["lrs"] == pytest.approx(list(groups * factor), rel=1e-9)


def test_one_cycle_warms_up_every_gradient_stage(images, base):
    X, y = images
    clf = PretrainedImageClassifier(
        **base,
        precompute_epochs=4,
        augmented_cycles=4,
        augmented_copies=1,
        unfrozen_cycles=4,
        cycle_len=1,
        lr=1e-2,
        unfrozen_lr=1e-3,
        schedule="one_cycle",
    ).fit(X, y)
    for stage, top in [("precomputed", 1e-2), ("augmented", 1e-2), ("unfrozen", 1e-3)]:
        first = [row["lrs"][-1] for row in rows_of(clf, stage)]
        assert first == pytest.approx([0.04 * top, top, 0.75 * top, 0.25 * top])


def test_one_cycle_plan_keeps_the_epochs_and_makes_one_cycle_a_stage():
    params = dict(augmented_cycles=3, unfrozen_cycles=3, cycle_len=1, cycle_mult=2)
    sgdr = make_plan(PretrainedImageClassifier(**params).get_params())
    one_cycle = PretrainedImageClassifier(**params, schedule="one_cycle")
    one = make_plan(one_cycle.get_params())
    assert [s.epochs for s in one] == [s.epochs for s in sgdr] == [0, 3, 7]
    assert [s.n_cycles for s in sgdr[1:]] == [3, 3]
    assert [(s.n_cycles, s.warmup) for s in one[1:]] == [(1, 0.25), (1, 0.25)]


def test_one_cycle_cannot_make_a_snapshot_ensemble(images, base):
    X, y = images
    clf = PretrainedImageClassifier(
        **base, unfrozen_cycles=2, snapshot_ensemble=True, schedule="one_cycle"
    )
    with pytest.raises(InvalidParameterError, match="schedule='sgdr'"):
        clf.fit(X, y)
    assert not hasattr(clf, "model_")


@pytest.mark.parametrize("bad", ["cosine", None, 1])
def test_unknown_schedule_is_named(images, base, bad):
    X, y = images
    with pytest.raises(InvalidParameterError, match="'schedule' parameter"):
        PretrainedImageClassifier(**base, unfrozen_cycles=1, schedule=bad).fit(X, y)


# --- label smoothing ------------------------------------------------------------


class _LossGaps(Callback):
    """Records, for each epoch, how far the net's loss of every batch is
    from the smoothed and from the plain cross-entropy of the same outputs
    and targets (training and validation batches apart)."""

    def __init__(self, eps, multilabel=False):
        self.eps = eps
        self.multilabel = multilabel

    def on_epoch_begin(self, net, **kwargs):
        self.gaps_ = {"train_smoothed": [], "train_plain": [], "valid_plain": []}

    def _losses(self, raw, target):
        raw = raw.float()
        if self.multilabel:
            bce = torch.nn.functional.binary_cross_entropy_with_logits
            soft = target * (1 - self.eps) + self.eps / 2
            return bce(raw, soft).item(), bce(raw, target).item()
        ce = torch.nn.functional.cross_entropy
        return ce(raw, target, label_smoothing=self.eps).item(), ce(raw, target).item()

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        loss, y_pred = kwargs["loss"], kwargs["y_pred"]
        target, weight = batch[1]
        assert torch.all(weight == 1)
        smoothed, plain = self._losses(y_pred, target)
        if training:
            self.gaps_["train_smoothed"].append(abs(loss.item() - smoothed))
            self.gaps_["train_plain"].append(abs(loss.item() - plain))
        else:
            self.gaps_["valid_plain"].append(abs(loss.item() - plain))

    def on_epoch_end(self, net, **kwargs):
        for key, gaps in self.gaps_.items():
            net.history.record(f"gap_{key}", max(gaps))


@pytest.mark.parametrize("multilabel", [False, True])
def test_label_smoothing_trains_on_smoothed_targets_and_validates_plain(
    images, base, multilabel
):
    X, y = images
    eps = 0.2
    if multilabel:
        y = [[label] if i % 3 else [label, "extra"] for i, label in enumerate(y)]
    clf = PretrainedImageClassifier(
        **base,
        precompute_epochs=2,
        unfrozen_cycles=1,
        label_smoothing=eps,
        validation_fraction=0.5 if not multilabel else None,
        callbacks=[_LossGaps(eps, multilabel)],
    )
    if multilabel:
        clf.fit(X[:8], y[:8], X_val=X[8:], y_val=y[8:])
    else:
        clf.fit(X, y)
    rows = [row for row in clf.history_ if row["stage"] != "probe"]
    assert len(rows) == 3
    for row in rows:
        assert row["gap_train_smoothed"] < 1e-5  # trained on smoothed targets
        assert row["gap_train_plain"] > 1e-3  # which is not the plain loss
        assert row["gap_valid_plain"] < 1e-5  # validated on the plain one


def test_label_smoothing_leaves_the_linear_probe_alone(images, cache_dir):
    """The probe is the linear model: smoothing applies to gradient stages."""
    X, y = images
    params = dict(TINY, cache=cache_dir, random_state=0)
    plain = PretrainedImageClassifier(**params).fit(X, y)
    smoothed = clone(plain).set_params(label_smoothing=0.3).fit(X, y)
    np.testing.assert_array_equal(plain.predict_proba(X), smoothed.predict_proba(X))


def test_label_smoothing_makes_the_head_less_confident(images, base):
    X, y = images
    probas = {}
    for eps in (0.0, 0.4):
        clf = PretrainedImageClassifier(
            **base, precompute_epochs=30, lr=3e-2, dropout=0.0, label_smoothing=eps
        ).fit(X, y)
        probas[eps] = clf.predict_proba(X).max(axis=1).mean()
    # with eps=0.4 on 2 classes the optimum of the training loss is 0.8
    assert probas[0.4] < probas[0.0]
    assert probas[0.4] < 0.9


@pytest.mark.parametrize("bad", [1.0, -0.1, "0.1", True])
def test_bad_label_smoothing_is_named(images, base, bad):
    X, y = images
    with pytest.raises(InvalidParameterError, match="'label_smoothing' parameter"):
        PretrainedImageClassifier(**base, precompute_epochs=1, label_smoothing=bad).fit(
            X, y
        )


# --- a moving average of the weights --------------------------------------------


class _Trajectory(Callback):
    """Appends to ``store`` the head's parameters at the start, after every
    training step (the trained weights), and at every epoch's end (what
    validation and the callbacks see)."""

    def __init__(self, store):
        self.store = store

    def _record(self, net, when):
        params = [p.detach().clone() for p in net.module_.parameters()]
        self.store.append((when, params))

    def on_train_begin(self, net, **kwargs):
        self._record(net, "start")

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if training:
            self._record(net, "step")

    def on_epoch_end(self, net, **kwargs):
        self._record(net, "epoch_end")


def _averaged(store, decay):
    """The moving average of the recorded trained weights, at every epoch's
    end, by the documented rule."""
    average, n, at_ends = None, 0, []
    for when, params in store:
        if when == "start":
            average = [p.clone() for p in params]
        elif when == "step":
            weight = 1 - min(decay, (1 + n) / (10 + n))
            average = [a + weight * (p - a) for a, p in zip(average, params)]
            n += 1
        else:
            at_ends.append(average)
    return at_ends


def test_ema_averages_the_trained_weights_and_trains_on_unaveraged(images, base):
    X, y = images
    fits = {}
    for decay in (None, 0.6):
        store = Shared()
        clf = PretrainedImageClassifier(
            **base,
            precompute_epochs=4,
            lr=3e-2,
            validation_fraction=0.5,
            ema_decay=decay,
            callbacks=[_Trajectory(store)],
        ).fit(X, y)
        fits[decay] = clf, store
    plain, plain_store = fits[None]
    ema, ema_store = fits[0.6]
    steps = [params for when, params in ema_store if when == "step"]
    plain_steps = [params for when, params in plain_store if when == "step"]
    assert len(steps) == 4  # one step an epoch: 6 training images
    # the same training run: each epoch continues from the trained weights
    for a, b in zip(steps, plain_steps, strict=True):
        assert all(torch.allclose(x, y) for x, y in zip(a, b))
    # every epoch's end holds the average of the steps so far ...
    ends = [params for when, params in ema_store if when == "epoch_end"]
    for got, want in zip(ends, _averaged(ema_store, 0.6), strict=True):
        assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(got, want))
    # ... which is not the trained weights, and is what was validated
    assert not torch.allclose(ends[-1][-1], steps[-1][-1])
    assert [r["valid_loss"] for r in ema.history_] != [
        r["valid_loss"] for r in plain.history_
    ]
    # and the fitted model is the last average
    final = [p.detach() for p in ema.head_.parameters()]
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(final, ends[-1]))


def test_ema_in_an_unfrozen_stage_averages_the_body_too(images, base):
    X, y = images
    before = None
    for decay in (None, 0.9):
        clf = PretrainedImageClassifier(
            **base, unfrozen_cycles=1, unfrozen_lr=1e-2, ema_decay=decay
        ).fit(X, y)
        body = [p.detach().clone() for p in clf.extractor_.backbone.body.parameters()]
        if before is None:
            before = body
    # the averaged body lags the trained one: it differs from it
    assert any(not torch.equal(a, b) for a, b in zip(before, body))
    assert np.isfinite(clf.predict_proba(X)).all()


def test_ema_and_a_snapshot_ensemble_are_one_or_the_other(images, base):
    X, y = images
    clf = PretrainedImageClassifier(
        **base, unfrozen_cycles=2, snapshot_ensemble=True, ema_decay=0.9
    )
    with pytest.raises(InvalidParameterError, match="ema_decay=None"):
        clf.fit(X, y)


@pytest.mark.parametrize("bad", [1.0, 0.0, -0.5, "0.9", True])
def test_bad_ema_decay_is_named(images, base, bad):
    X, y = images
    with pytest.raises(InvalidParameterError, match="'ema_decay' parameter"):
        PretrainedImageClassifier(**base, precompute_epochs=1, ema_decay=bad).fit(X, y)


# --- TrivialAugment -------------------------------------------------------------


def test_trivial_augment_goes_far_beyond_the_side_on_lighting(tmp_path):
    from conftest import make_images

    from sktransfer.datasets import augmented_copies

    X, _ = make_images(tmp_path / "img", n_per_class=1, size=64)
    plain = augmented_copies(X[0], 1, augment=None, image_size=32)[0]
    shifts = {}
    for kind in ("side_on", "trivial"):
        copies = augmented_copies(X[0], 40, augment=kind, image_size=32)
        again = augmented_copies(X[0], 40, augment=kind, image_size=32)
        np.testing.assert_array_equal(copies, again)  # seeded
        assert copies.shape == (40, 32, 32, 3) and copies.dtype == np.uint8
        shifts[kind] = np.abs(copies.reshape(40, -1).mean(axis=1) - plain.mean()).max()
    # side_on moves brightness by at most 5% of 255; one trivial operation
    # (brightness, solarize, posterize, equalize, ...) moves it much further
    assert shifts["side_on"] < 20
    assert shifts["trivial"] > 40


def test_trivial_copies_are_cached_apart_from_side_on_ones(
    images, base, tmp_path, forward_count
):
    X, y = images
    params = dict(
        base, cache=str(tmp_path / "cache"), augmented_cycles=1, augmented_copies=1
    )
    PretrainedImageClassifier(**params).fit(X, y)
    forward_count["n"] = 0
    trivial = PretrainedImageClassifier(**params, augment="trivial").fit(X, y)
    assert forward_count["n"] == len(X)  # new copies: computed
    forward_count["n"] = 0
    clone(trivial).fit(X, y)
    assert forward_count["n"] == 0  # the same copies: read from the cache
    assert np.isfinite(trivial.predict_proba(X)).all()
