"""Options of the gradient stages' training: the schedule (SGDR or one
cycle) and label smoothing, through ``fit`` and what it records."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY
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
