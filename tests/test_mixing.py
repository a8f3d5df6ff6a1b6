"""Mixup and CutMix (``mixup``, ``cutmix``), checked through ``fit`` by what
the network was given and the loss it reported for every batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY, Shared
from skorch.callbacks import Callback

from sktransfer import PretrainedImageClassifier
from sktransfer.exceptions import InvalidParameterError


@pytest.fixture
def base(cache_dir):
    """TINY with batches of 6: two steps per epoch on 12 images."""
    return dict(TINY, cache=cache_dir, batch_size=6, random_state=0, head_init="random")


class _Batches(Callback):
    """Appends to ``store``, for every batch: whether it trained, the batch
    as the loader served it, what the network was given, the loss the net
    reported and the network's raw outputs."""

    def __init__(self, store):
        self.store = store

    def on_train_begin(self, net, **kwargs):
        self._given = None
        self._hook = net.module_.register_forward_pre_hook(self._grab)

    def _grab(self, module, args):
        self._given = args[0].detach().clone()

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        x, (target, weight) = batch
        self.store.append(
            dict(
                training=training,
                x=x.clone(),
                given=self._given,
                target=target,
                weight=weight.float(),
                loss=kwargs["loss"].item(),
                raw=kwargs["y_pred"].detach().float(),
            )
        )

    def on_train_end(self, net, **kwargs):
        self._hook.remove()


def _mixup_pairs(x, given, tol=1e-3):
    """Each row of ``given`` as ``lam * x[i] + (1 - lam) * x[j]`` (up to
    ``tol``, relative): the partner ``j`` of every row and the one ``lam``
    of the batch (None when every row kept itself)."""
    x, given = x.double().flatten(1), given.double().flatten(1)
    partners, lams = [], []
    for i in range(len(x)):
        if torch.allclose(given[i], x[i], atol=1e-5):
            partners.append(i)  # paired with itself
            continue
        best = None
        for j in range(len(x)):
            d = x[i] - x[j]
            if j == i or d.norm() == 0:
                continue
            lam = float((given[i] - x[j]) @ d / (d @ d))
            residual = float((given[i] - x[j] - lam * d).norm() / given[i].norm())
            if best is None or residual < best[0]:
                best = (residual, j, lam)
        assert best[0] < tol, "a row is not a blend of two rows of the batch"
        partners.append(best[1])
        lams.append(best[2])
    if lams:
        assert max(lams) - min(lams) < 10 * tol  # one ratio for the batch
    return partners, (float(np.mean(lams)) if lams else None)


def _expected_loss(raw, target, weight, partners, lam):
    """The documented loss of a mixed batch: each sample's two
    cross-entropies, weighted by the ratio and their samples' weights."""
    ce = torch.nn.functional.cross_entropy(raw, target, reduction="none")
    ce_partner = torch.nn.functional.cross_entropy(
        raw, target[partners], reduction="none"
    )
    a, b = lam * weight, (1 - lam) * weight[partners]
    return float((a * ce + b * ce_partner).sum() / (a + b).sum())


def test_mixup_blends_cached_features_and_targets_alike(images, base):
    X, y = images
    weights = np.linspace(0.5, 2.0, len(y))  # the mix stays exact with weights
    store = Shared()
    PretrainedImageClassifier(
        **base,
        precompute_epochs=4,
        mixup=0.4,
        validation_fraction=0.5,
        callbacks=[_Batches(store)],
    ).fit(X, y, sample_weight=weights)
    trained = [b for b in store if b["training"]]
    assert len(trained) == 4 and trained[0]["x"].dim() == 2  # features
    mixed = 0
    for b in trained:
        partners, lam = _mixup_pairs(b["x"], b["given"])
        if lam is None:
            continue
        mixed += 1
        want = _expected_loss(b["raw"], b["target"], b["weight"], partners, lam)
        assert b["loss"] == pytest.approx(want, rel=1e-4)
    assert mixed >= 3
    for b in store:  # validation sees the photos as they are
        if not b["training"]:
            assert torch.equal(b["given"], b["x"])


def _cut_box(x, given):
    """The one box in which CutMix changed the batch's images, and each
    image's partner there; None where the change is no such box."""
    changed = (given != x).any(dim=1).any(dim=0)  # (H, W) over the batch
    rows, cols = torch.nonzero(changed, as_tuple=True)
    top, bottom = int(rows.min()), int(rows.max()) + 1
    left, right = int(cols.min()), int(cols.max()) + 1
    outside = torch.ones_like(changed)
    outside[top:bottom, left:right] = False
    if changed[outside].any():  # something changed outside one box
        return None
    partners = []
    for i in range(len(x)):
        inside = given[i][..., top:bottom, left:right]
        match = [
            j
            for j in range(len(x))
            if torch.equal(inside, x[j][..., top:bottom, left:right])
        ]
        if not match:  # the box holds no other image of the batch
            return None
        partners.append(i if i in match else match[0])
    kept = 1 - (bottom - top) * (right - left) / (x.shape[-1] * x.shape[-2])
    return partners, kept


def test_cutmix_pastes_one_box_and_mixes_targets_by_its_area(images, base):
    X, y = images
    store = Shared()
    PretrainedImageClassifier(
        **base,
        unfrozen_cycles=2,
        cutmix=1.0,
        augment=None,
        callbacks=[_Batches(store)],
    ).fit(X, y)
    trained = [b for b in store if b["training"]]
    assert trained and trained[0]["x"].dtype == torch.uint8  # images
    cut = 0
    for b in trained:
        if torch.equal(b["given"], b["x"]):
            continue
        cut += 1
        partners, kept = _cut_box(b["x"], b["given"])  # not None
        want = _expected_loss(b["raw"], b["target"], b["weight"], partners, kept)
        assert b["loss"] == pytest.approx(want, rel=1e-4)
    assert cut >= len(trained) - 1


def test_mixup_and_cutmix_take_turns_and_cutmix_spares_features(images, base):
    X, y = images
    store = Shared()
    PretrainedImageClassifier(
        **base,
        precompute_epochs=3,
        unfrozen_cycles=3,
        cycle_len=2,
        augment=None,
        mixup=0.4,
        cutmix=1.0,
        callbacks=[_Batches(store)],
    ).fit(X, y)
    kinds = set()
    for b in store:
        if not b["training"] or torch.equal(b["given"], b["x"]):
            continue
        on_images = b["x"].dim() == 4
        if on_images and _cut_box(b["x"], b["given"]) is not None:
            kinds.add(("cutmix", b["x"].dim()))
        else:  # a blend: of uint8 pixels, rounded
            _mixup_pairs(b["x"], b["given"], tol=1e-2 if on_images else 1e-3)
            kinds.add(("mixup", b["x"].dim()))
    assert kinds == {("mixup", 2), ("mixup", 4), ("cutmix", 4)}


def test_mixup_works_for_multilabel_targets(images, base):
    X, y = images
    y = [[label] if i % 3 else [label, "extra"] for i, label in enumerate(y)]
    store = Shared()
    clf = PretrainedImageClassifier(
        **base, precompute_epochs=3, mixup=0.4, callbacks=[_Batches(store)]
    ).fit(X, y)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    mixed = 0
    for b in store:
        partners, lam = _mixup_pairs(b["x"], b["given"])
        if lam is None:
            continue
        mixed += 1
        soft = lam * b["target"] + (1 - lam) * b["target"][partners]
        want = bce(b["raw"], soft, reduction="none").mean(1).mean().item()
        assert b["loss"] == pytest.approx(want, rel=1e-4)
    assert mixed >= 4  # of 6 batches
    assert clf.predict(X).shape == (12, 3)


def test_mixup_is_seeded_and_changes_the_fit(images, base):
    X, y = images
    params = dict(base, precompute_epochs=4, lr=3e-2)
    plain = PretrainedImageClassifier(**params).fit(X, y).predict_log_proba(X)
    mixed = [
        PretrainedImageClassifier(**params, mixup=0.4).fit(X, y).predict_log_proba(X)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(mixed[0], mixed[1])
    assert not np.allclose(mixed[0], plain, rtol=0.01)


def test_the_probe_and_the_sweeps_see_unmixed_photos(images, base, cache_dir):
    """The probe is the linear model on the plain features; a sweep reads
    the loss of the plain batches (mixing would blur the curve it reads)."""
    X, y = images
    params = dict(TINY, cache=cache_dir, random_state=0)
    plain = PretrainedImageClassifier(**params).fit(X, y)
    mixed = PretrainedImageClassifier(**params, mixup=0.4, cutmix=1.0).fit(X, y)
    np.testing.assert_array_equal(plain.predict_proba(X), mixed.predict_proba(X))
    swept = [
        PretrainedImageClassifier(**base, precompute_epochs=1, lr="auto", **extra)
        .fit(X, y)
        .lr_sweeps_["lr"]
        for extra in ({}, {"mixup": 0.4})
    ]
    assert len(swept[0]["losses"]) > 10
    np.testing.assert_array_equal(swept[0]["losses"], swept[1]["losses"])


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
@pytest.mark.parametrize("bad", [-0.1, "0.2", None, float("inf"), float("nan")])
def test_bad_mixing_parameters_are_named(images, base, name, bad):
    X, y = images
    clf = PretrainedImageClassifier(**base, precompute_epochs=1, **{name: bad})
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter"):
        clf.fit(X, y)
