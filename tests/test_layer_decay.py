"""Layer-wise rate decay (``layer_decay``): a rate per body block in the
unfrozen stage, checked through ``fit`` by the optimizer's groups and the
rates ``history_`` records."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY, Shared
from skorch.callbacks import Callback

from sktransfer import PretrainedImageClassifier, PretrainedImageRegressor
from sktransfer.exceptions import InvalidParameterError

#: the layer groups are runs of whole blocks, at least 3 a group
MIN_BLOCKS = 9


@pytest.fixture
def base(cache_dir):
    return dict(TINY, cache=cache_dir, batch_size=6, random_state=0, head_init="random")


class _Groups(Callback):
    """Appends each stage's optimizer groups to ``store``: the number of
    parameters of each, and how many of the module's it covers."""

    def __init__(self, store):
        self.store = store

    def on_train_begin(self, net, **kwargs):
        groups = net.optimizer_.param_groups
        ids = [id(p) for g in groups for p in g["params"]]
        self.store.append(
            dict(
                sizes=[len(g["params"]) for g in groups],
                distinct=len(set(ids)) == len(ids),
                covered=set(ids) == {id(p) for p in net.module_.parameters()},
            )
        )


def test_every_block_gets_its_own_rate(images, base):
    X, y = images
    store = Shared()
    lr, decay = 1e-3, 0.5
    clf = PretrainedImageClassifier(
        **base,
        unfrozen_cycles=1,
        unfrozen_lr=lr,
        layer_decay=decay,
        callbacks=[_Groups(store)],
    ).fit(X, y)
    (row,) = [r for r in clf.history_ if r["stage"] == "unfrozen"]
    n = len(row["lrs"]) - 1
    assert n >= MIN_BLOCKS
    want = [lr * decay ** (n - 1 - k) for k in range(n)] + [lr]
    assert row["lrs"] == pytest.approx(want, rel=1e-9)
    # one optimizer group a block, then the head; every parameter once
    (groups,) = store
    assert len(groups["sizes"]) == n + 1
    assert all(groups["sizes"]) and groups["distinct"] and groups["covered"]


def test_a_decay_of_one_is_one_rate_for_all_like_lr_mult_one(images, base):
    X, y = images
    fits = [
        PretrainedImageClassifier(
            **base, unfrozen_cycles=1, unfrozen_lr=1e-2, **extra
        ).fit(X, y)
        for extra in (dict(lr_mult=1), dict(layer_decay=1.0))
    ]
    np.testing.assert_allclose(
        fits[0].predict_proba(X), fits[1].predict_proba(X), rtol=1e-5, atol=1e-6
    )


def test_frozen_groups_stay_frozen_with_rates_per_block(images, base):
    X, y = images
    before = PretrainedImageClassifier(**dict(base, head_init="auto")).fit(X, y)
    tuned = PretrainedImageClassifier(
        **base, unfrozen_cycles=1, unfrozen_lr=1e-2, unfreeze_from=2, layer_decay=0.8
    ).fit(X, y)
    body0 = dict(before.extractor_.backbone.body.named_parameters())
    body1 = dict(tuned.extractor_.backbone.body.named_parameters())
    # resnet18's groups: conv1 ... layer1 | layer2 ... layer4.1.conv1 | the rest
    early = [n for n in body0 if n.startswith(("conv1", "layer1", "layer3"))]
    late = [n for n in body0 if n.startswith(("layer4.1.bn1", "layer4.1.conv2"))]
    assert early and late
    assert all(torch.equal(body0[n], body1[n]) for n in early)
    assert any(not torch.equal(body0[n], body1[n]) for n in late)


def test_a_swept_rate_keeps_the_block_ratios(images, base):
    X, y = images
    clf = PretrainedImageClassifier(
        **base, unfrozen_cycles=1, unfrozen_lr="auto", layer_decay=0.5
    ).fit(X, y)
    (row,) = [r for r in clf.history_ if r["stage"] == "unfrozen"]
    lrs = np.array(row["lrs"])
    n = len(lrs) - 1
    assert n >= MIN_BLOCKS and "unfrozen_lr" in clf.lr_sweeps_
    np.testing.assert_allclose(lrs[1:n] / lrs[: n - 1], 2.0)
    assert lrs[-1] == lrs[-2]  # the head at the last block's rate


def test_the_regressor_takes_layer_decay_too(images, base):
    X, _ = images
    y = np.linspace(0, 1, len(X))
    reg = PretrainedImageRegressor(
        **base, unfrozen_cycles=1, unfrozen_lr=1e-3, layer_decay=0.7
    ).fit(X, y)
    (row,) = [r for r in reg.history_ if r["stage"] == "unfrozen"]
    lrs = np.array(row["lrs"])
    assert len(lrs) > MIN_BLOCKS
    np.testing.assert_allclose(lrs[1:-1] / lrs[:-2], 1 / 0.7)


def test_rates_per_group_and_per_block_are_one_or_the_other(images, base):
    X, y = images
    clf = PretrainedImageClassifier(
        **base, unfrozen_cycles=1, unfrozen_lr=(1e-5, 1e-4, 1e-3), layer_decay=0.8
    )
    with pytest.raises(InvalidParameterError, match="layer_decay=None"):
        clf.fit(X, y)


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.2, "0.8", True])
def test_bad_layer_decay_is_named(images, base, bad):
    X, y = images
    clf = PretrainedImageClassifier(**base, unfrozen_cycles=1, layer_decay=bad)
    with pytest.raises(InvalidParameterError, match="'layer_decay' parameter"):
        clf.fit(X, y)
