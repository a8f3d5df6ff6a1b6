"""The staged fastai recipe of PretrainedImageClassifier, checked in numbers.

Stage 1 trains the head on precomputed features, stage 2 runs SGDR cycles of
the head on augmented images through the frozen body, stage 3 unfreezes the
late (or all) layer groups with differential learning rates. Every model is
the TINY backbone (random-init ResNet-18 at 32 px) on a dozen generated
40 px JPEGs, so a whole recipe fits in a second or two.
"""

from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import TINY, make_images
from PIL import Image
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, ParameterGrid
from torch import nn

import sktransfer._classifier as classifier_mod
import sktransfer._finetune as finetune_mod
from sktransfer import FeatureCache, PretrainedImageClassifier
from sktransfer._backbones import load_backbone
from sktransfer._finetune import (
    GroupedNet,
    ImageDataset,
    TransferNet,
    group_parameters,
)
from sktransfer._head import Head
from sktransfer._transforms import PLAIN, Preprocessing, random_augment, render

ROW_KEYS = {"stage", "epoch", "lrs", "train_loss", "valid_loss", "valid_acc", "seconds"}


# --- fixtures ----------------------------------------------------------------


@pytest.fixture
def base(cache_dir):
    """TINY with batches of 6: two steps per epoch on 12 images, and never a
    batch of one (which BatchNorm cannot train on)."""
    return dict(TINY, cache=cache_dir, batch_size=6, random_state=0)


@pytest.fixture(scope="module")
def tuned(images, cache_dir):
    """A model through all three stages, only the late group unfrozen.

    Shared by read-only tests; tests that change it work on a deep copy.
    """
    X, y = images
    clf = PretrainedImageClassifier(
        **TINY,
        cache=cache_dir,
        batch_size=6,
        random_state=0,
        epochs=1,
        n_cycles=1,
        unfreeze=2,
        unfrozen_cycles=1,
        finetune_lr=1e-3,
    )
    return clf.fit(X, y)


def stages(clf):
    return [row["stage"] for row in clf.history_]


def rows_of(clf, stage):
    return [row for row in clf.history_ if row["stage"] == stage]


def module_state(modules):
    """Parameters and buffers of a list of modules, as CPU tensor copies."""
    return [
        t.detach().cpu().clone()
        for m in modules
        for t in [*m.parameters(), *m.buffers()]
    ]


def same_tensors(a, b):
    return len(a) == len(b) and all(
        torch.equal(x, y) for x, y in zip(a, b, strict=True)
    )


def head_state(clf):
    return {
        k: v.detach().cpu().clone() for k, v in clf.net_.module_.state_dict().items()
    }


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def body_state(clf):
    sd = clf.extractor_.backbone.body.state_dict()
    return {k: v.detach().cpu().clone() for k, v in sd.items()}


# --- history_: stages and epochs --------------------------------------------


def test_history_has_one_row_per_epoch_of_each_stage(images, base):
    X, y = images
    clf = PretrainedImageClassifier(
        **base,
        epochs=2,
        n_cycles=2,
        cycle_len=1,
        unfreeze=True,
        unfrozen_cycles=2,
        cycle_mult=2,
    ).fit(X, y)
    # 2 precomputed epochs, 2 cycles of 1 epoch, then cycles of 1 + 2 epochs
    assert stages(clf) == ["precomputed"] * 2 + ["augmented"] * 2 + ["unfrozen"] * 3
    for stage, n in [("precomputed", 2), ("augmented", 2), ("unfrozen", 3)]:
        assert [r["epoch"] for r in rows_of(clf, stage)] == list(range(1, n + 1))
    for row in clf.history_:
        assert set(row) == ROW_KEYS
        assert np.isfinite(row["train_loss"]) and row["train_loss"] >= 0
        assert row["seconds"] >= 0
        # no validation split: nothing to report
        assert np.isnan(row["valid_loss"]) and np.isnan(row["valid_acc"])
    # the image stages train 4 parameter groups (early, middle, late, head)
    assert all(len(r["lrs"]) == 4 for r in clf.history_[2:])


@pytest.mark.parametrize(
    "cycle_len, n_cycles, expected",
    [(0.5, 2, 1), (1, 3, 3), (1.5, 2, 3)],
)
def test_augmented_epochs_are_cycles_times_cycle_len(
    images, base, cycle_len, n_cycles, expected
):
    X, y = images
    clf = PretrainedImageClassifier(
        **base, epochs=0, n_cycles=n_cycles, cycle_len=cycle_len
    ).fit(X, y)
    assert stages(clf) == ["augmented"] * expected


@pytest.mark.parametrize(
    "params, expected",
    [
        (dict(epochs=0, n_cycles=1), {"augmented": 1}),
        (
            dict(epochs=1, n_cycles=0, unfreeze=2, unfrozen_cycles=1),
            {"precomputed": 1, "unfrozen": 1},
        ),
        (
            dict(epochs=1, n_cycles=1, unfreeze=True, unfrozen_cycles=0),
            {"precomputed": 1, "augmented": 1},
        ),
        (
            dict(epochs=1, n_cycles=1, unfreeze=False, unfrozen_cycles=2),
            {"precomputed": 1, "augmented": 1},
        ),
        (dict(epochs=0, n_cycles=0), {}),
    ],
    ids=["no-epochs", "no-cycles", "no-unfrozen-cycles", "unfreeze-false", "nothing"],
)
def test_a_count_of_zero_skips_its_stage(images, base, params, expected):
    X, y = images
    clf = PretrainedImageClassifier(**base, **params).fit(X, y)
    assert Counter(stages(clf)) == expected
    proba = clf.predict_proba(X)
    assert proba.shape == (12, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


def test_precompute_false_skips_stage_one(images, tmp_path):
    X, y = images
    cache = str(tmp_path / "own-cache")
    clf = PretrainedImageClassifier(
        **TINY,
        cache=cache,
        batch_size=6,
        random_state=0,
        precompute=False,
        epochs=3,
        n_cycles=1,
    ).fit(X, y)
    assert stages(clf) == ["augmented"]
    # no feature was precomputed (nor cached) for training
    assert FeatureCache(cache).stats()["entries"] == 0


# --- differential learning rates ---------------------------------------------


@pytest.mark.parametrize("mult", [10, 3])
def test_group_rates_keep_their_ratios_through_restarts(images, base, mult):
    X, y = images
    lr, ft = 1e-2, 1e-3
    clf = PretrainedImageClassifier(
        **base,
        epochs=0,
        lr=lr,
        n_cycles=2,
        cycle_len=1,
        unfreeze=True,
        unfrozen_cycles=2,
        cycle_mult=2,
        finetune_lr=ft,
        lr_mult=mult,
    ).fit(X, y)
    augmented = rows_of(clf, "augmented")
    unfrozen = rows_of(clf, "unfrozen")
    assert len(augmented) == 2 and len(unfrozen) == 3
    for row in augmented:  # each epoch starts a cycle: the head at its full rate
        assert len(row["lrs"]) == 4
        assert row["lrs"][-1] == pytest.approx(lr, rel=1e-9)
    for row in augmented + unfrozen:
        early, middle, late, head = row["lrs"]
        assert middle / early == pytest.approx(mult, rel=1e-9)
        assert late / middle == pytest.approx(mult, rel=1e-9)
        assert head == pytest.approx(late, rel=1e-9)
    expected = [ft / mult**2, ft / mult, ft, ft]
    # cycle 1 = epoch 1; cycle 2 = epochs 2-3 and restarts at the full rates
    assert unfrozen[0]["lrs"] == pytest.approx(expected, rel=1e-9)
    assert unfrozen[1]["lrs"] == pytest.approx(expected, rel=1e-9)
    # half way down the 2-epoch cosine cycle
    assert unfrozen[2]["lrs"] == pytest.approx([v / 2 for v in expected], rel=1e-9)


def test_explicit_rate_tuple_is_used_as_given(images, base):
    X, y = images
    rates = (1e-6, 1e-5, 1e-4)
    clf = PretrainedImageClassifier(
        **base,
        epochs=0,
        n_cycles=0,
        unfreeze=True,
        unfrozen_cycles=1,
        finetune_lr=1e-4,
        lr_mult=rates,
    ).fit(X, y)
    (row,) = rows_of(clf, "unfrozen")
    assert row["lrs"] == pytest.approx([1e-6, 1e-5, 1e-4, 1e-4], rel=1e-9)
    assert clf.finetune_lr_ == pytest.approx(1e-4)


# --- freezing ----------------------------------------------------------------


@pytest.mark.parametrize(
    "unfreeze, trainable",
    [
        (True, [True, True, True, True]),
        (1, [False, True, True, True]),
        (2, [False, False, True, True]),
    ],
)
def test_unfreezing_flips_requires_grad_never_the_optimizer_groups(
    images, base, monkeypatch, unfreeze, trainable
):
    X, y = images
    calls = []
    real_partial_fit = GroupedNet.partial_fit

    def spy_partial_fit(self, *args, **kwargs):
        if isinstance(self.module_, TransferNet):
            groups = self.optimizer_.param_groups
            calls.append(
                dict(
                    optimizer=id(self.optimizer_),
                    members=[[id(p) for p in g["params"]] for g in groups],
                    any_grad=[
                        any(p.requires_grad for p in g["params"]) for g in groups
                    ],
                    all_grad=[
                        all(p.requires_grad for p in g["params"]) for g in groups
                    ],
                    module_params=[id(p) for p in self.module_.parameters()],
                )
            )
        return real_partial_fit(self, *args, **kwargs)

    switches = []
    real_set_trainable = classifier_mod.set_trainable

    def spy_set_trainable(groups, first_trainable):
        switches.append((len(groups), first_trainable))
        return real_set_trainable(groups, first_trainable)

    monkeypatch.setattr(GroupedNet, "partial_fit", spy_partial_fit)
    monkeypatch.setattr(classifier_mod, "set_trainable", spy_set_trainable)
    clf = PretrainedImageClassifier(
        **base, epochs=0, n_cycles=1, unfreeze=unfreeze, unfrozen_cycles=1
    ).fit(X, y)

    assert len(calls) == 2  # the augmented stage, then the unfrozen one
    augmented, unfrozen = calls
    for call in calls:
        assert len(call["members"]) == 4
        # every parameter of body + head is in exactly one group
        flat = [i for g in call["members"] for i in g]
        assert sorted(flat) == sorted(call["module_params"])
        assert len(set(flat)) == len(flat)
    # same optimizer, same groups, same members: only requires_grad changes
    assert unfrozen["optimizer"] == augmented["optimizer"]
    assert unfrozen["members"] == augmented["members"]
    assert augmented["any_grad"] == [False, False, False, True]
    assert augmented["all_grad"] == [False, False, False, True]
    assert unfrozen["any_grad"] == trainable
    assert unfrozen["all_grad"] == trainable
    # every switch acts on the same 4 groups; the last one freezes the body
    assert all(n == 4 for n, _ in switches)
    assert switches[-1][1] >= 3
    body = clf.extractor_.backbone.body
    assert not any(p.requires_grad for p in body.parameters())


def test_frozen_groups_are_bitwise_unchanged_and_the_late_group_learns(tuned):
    fresh = load_backbone("resnet18", None)
    groups = tuned.extractor_.backbone.groups
    assert len(groups) == len(fresh.groups) == 3
    for g in (0, 1):  # early and middle: never trainable with unfreeze=2
        assert same_tensors(module_state(groups[g]), module_state(fresh.groups[g]))
    late = [p.detach().cpu() for m in groups[2] for p in m.parameters()]
    late_fresh = [p.detach() for m in fresh.groups[2] for p in m.parameters()]
    assert len(late) == len(late_fresh)
    assert any(not torch.equal(a, b) for a, b in zip(late, late_fresh, strict=True))
    # the body always runs in inference mode: BatchNorm statistics are kept
    buffers = [b.detach().cpu() for b in tuned.extractor_.backbone.body.buffers()]
    assert same_tensors(buffers, list(fresh.body.buffers()))
    assert not any(p.requires_grad for p in tuned.extractor_.backbone.body.parameters())


def test_tuned_body_gets_a_new_cache_key(tuned):
    ext = tuned.extractor_
    assert ext.backbone.weights_id.startswith("tuned:")
    fresh = load_backbone("resnet18", None)
    assert fresh.weights_id == "random-init"
    assert ext.model_key != fresh.fingerprint(ext.preprocessing, ext.precision)


def test_head_only_stages_leave_the_body_untouched(images, base):
    X, y = images
    clf = PretrainedImageClassifier(**base, epochs=1, n_cycles=2).fit(X, y)
    fresh = load_backbone("resnet18", None)
    sd, ref = body_state(clf), fresh.body.state_dict()
    assert same_state(sd, ref)
    ext = clf.extractor_
    assert ext.backbone.weights_id == "random-init"
    assert ext.model_key == fresh.fingerprint(ext.preprocessing, ext.precision)


def test_group_parameters_covers_the_body_once_head_last():
    for name in ("resnet18", "mobilenet_v2"):
        bb = load_backbone(name, None)
        head = Head(bb.n_features, 3)
        model = TransferNet(bb.body, head, (0.5,) * 3, (0.25,) * 3)
        groups = group_parameters(model, bb.groups)
        assert len(groups) == 4
        assert all(len(g) > 0 for g in groups), name
        body_ids = [id(p) for g in groups[:-1] for p in g]
        assert len(body_ids) == len(set(body_ids)), name
        assert sorted(body_ids) == sorted(id(p) for p in bb.body.parameters()), name
        assert [id(p) for p in groups[-1]] == [id(p) for p in head.parameters()]
        # the groups follow the order of the layers: early, middle, late
        order = {id(p): i for i, p in enumerate(bb.body.parameters())}
        positions = [[order[id(p)] for p in g] for g in groups[:-1]]
        assert max(positions[0]) < min(positions[1])
        assert max(positions[1]) < min(positions[2])


def test_group_parameters_places_parameters_outside_every_group():
    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.norm = nn.LayerNorm(4)  # in no group
            self.c = nn.Linear(4, 4)

        def forward(self, x):
            return self.c(self.norm(self.b(self.a(x))))

    body = Body()
    model = TransferNet(body, nn.Linear(4, 2), (0.5,) * 3, (0.25,) * 3)
    groups = group_parameters(model, [[body.a], [body.b], [body.c]])
    ids = [[id(p) for p in g] for g in groups]
    flat = [i for g in ids[:-1] for i in g]
    assert sorted(flat) == sorted(id(p) for p in body.parameters())
    assert len(flat) == len(set(flat))
    # registered after b: joins the middle group
    assert {id(p) for p in body.norm.parameters()} <= set(ids[1])
    assert ids[-1] == [id(p) for p in model.head.parameters()]


# --- reproducibility, clone, grid search -------------------------------------


def test_same_random_state_same_probabilities_after_the_full_recipe(images, base):
    X, y = images
    params = dict(
        base,
        epochs=1,
        n_cycles=1,
        unfreeze=True,
        unfrozen_cycles=1,
        tta=2,
        finetune_lr=1e-3,
    )
    a = PretrainedImageClassifier(**params).fit(X, y)
    b = clone(a).fit(X, y)
    c = PretrainedImageClassifier(**{**params, "random_state": 1}).fit(X, y)
    pa, pb, pc = a.predict_proba(X), b.predict_proba(X), c.predict_proba(X)
    np.testing.assert_array_equal(pa, pb)
    assert [r["train_loss"] for r in a.history_] == [
        r["train_loss"] for r in b.history_
    ]
    assert a.extractor_.model_key == b.extractor_.model_key
    assert np.abs(pa - pc).max() > 1e-6
    assert a.extractor_.model_key != c.extractor_.model_key


def test_clone_keeps_the_recipe_and_drops_the_fit(tuned):
    twin = clone(tuned)
    assert twin.get_params() == tuned.get_params()
    assert not hasattr(twin, "net_") and not hasattr(twin, "history_")


def test_grid_search_over_the_recipe(images, base):
    X, y = images
    est = PretrainedImageClassifier(**base, epochs=1, n_cycles=1, unfrozen_cycles=1)
    grid = {"cycle_len": [0.5, 1], "cycle_mult": [1, 2], "unfreeze": [False, 2]}
    search = GridSearchCV(est, grid, cv=2, n_jobs=1, error_score="raise").fit(X, y)
    assert search.best_params_ in list(ParameterGrid(grid))
    assert len(search.cv_results_["params"]) == 8
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    best = search.best_estimator_
    assert {k: best.get_params()[k] for k in grid} == search.best_params_
    if best.unfreeze is False:
        assert "unfrozen" not in stages(best)
    else:
        assert "unfrozen" in stages(best)
    assert search.predict(X).shape == (12,)


# --- warm start ----------------------------------------------------------------


def test_warm_start_continues_from_the_previous_weights(images, base, monkeypatch):
    X, y = images
    clf = PretrainedImageClassifier(**base, epochs=2).fit(X, y)
    old_rows = copy.deepcopy(clf.history_)
    old_head = head_state(clf)

    heads_at_start = []
    real_partial_fit = GroupedNet.partial_fit

    def spy(self, *args, **kwargs):
        if isinstance(self.module_, TransferNet):
            heads_at_start.append(
                {
                    k: v.detach().cpu().clone()
                    for k, v in self.module_.head.state_dict().items()
                }
            )
        return real_partial_fit(self, *args, **kwargs)

    monkeypatch.setattr(GroupedNet, "partial_fit", spy)
    clf.set_params(warm_start=True, epochs=0, n_cycles=1).fit(X, y)
    assert len(heads_at_start) == 1
    # stage 2 starts from the head the first fit ended with
    assert same_state(heads_at_start[0], old_head)
    assert clf.history_[:2] == old_rows
    assert stages(clf) == ["precomputed", "precomputed", "augmented"]
    assert not same_state(head_state(clf), old_head)


def test_warm_start_with_nothing_to_train_keeps_the_model(images, base):
    X, y = images
    clf = PretrainedImageClassifier(**base, epochs=2, n_cycles=1).fit(X, y)
    before = clf.predict_proba(X)
    rows = copy.deepcopy(clf.history_)
    clf.set_params(warm_start=True, epochs=0, n_cycles=0).fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), before)
    assert clf.history_ == rows


def test_warm_start_precomputed_epochs_append_only_the_new_rows(images, base):
    X, y = images
    clf = PretrainedImageClassifier(**base, epochs=2).fit(X, y)
    rows = copy.deepcopy(clf.history_)
    clf.set_params(warm_start=True, epochs=3).fit(X, y)
    assert clf.history_[:2] == rows
    assert stages(clf) == ["precomputed"] * 5


def test_warm_start_head_epochs_after_an_image_stage(images, base):
    """After a stage on images the head must still be trainable."""
    X, y = images
    clf = PretrainedImageClassifier(**base, epochs=1, n_cycles=1).fit(X, y)
    before = clf.predict_proba(X)
    clf.set_params(warm_start=True, epochs=1, n_cycles=0).fit(X, y)
    assert stages(clf) == ["precomputed", "augmented", "precomputed"]
    assert np.abs(clf.predict_proba(X) - before).max() > 0


def test_warm_start_with_other_classes_raises(images, base):
    X, y = images
    clf = PretrainedImageClassifier(**base, epochs=1).fit(X, y)
    rows = copy.deepcopy(clf.history_)
    other = np.where(y == "b", "c", y)
    clf.set_params(warm_start=True)
    with pytest.raises(ValueError, match="same classes"):
        clf.fit(X, other)
    assert clf.classes_.tolist() == ["a", "b"]
    assert clf.history_ == rows


def test_warm_start_with_a_new_image_size(images, tmp_path):
    X, y = images
    cache = str(tmp_path / "own-cache")
    clf = PretrainedImageClassifier(
        **TINY, cache=cache, batch_size=6, random_state=0, epochs=1
    ).fit(X, y)
    assert FeatureCache(cache).stats()["models"] == 1
    # same size: the same cache entry is reused
    clf.set_params(warm_start=True).fit(X, y)
    assert FeatureCache(cache).stats()["models"] == 1
    clf.set_params(image_size=48).fit(X, y)
    assert clf.extractor_.preprocessing.crop_size == 48
    assert FeatureCache(cache).stats()["models"] == 2
    assert clf.predict_proba(X).shape == (12, 2)


def test_an_error_inside_a_warm_fit_leaves_the_fitted_model_as_it_was(
    images, base, monkeypatch
):
    X, y = images
    clf = PretrainedImageClassifier(**base, epochs=1, n_cycles=1).fit(X, y)
    before = clf.predict_proba(X)
    rows = copy.deepcopy(clf.history_)
    head, body = head_state(clf), body_state(clf)
    key = clf.extractor_.model_key

    real_getitem = ImageDataset.__getitem__
    calls = [0]

    def failing_getitem(self, i):
        calls[0] += 1
        # 12 augmented images, then one batch of 6 of the unfrozen stage:
        # fail while the (copied) body is being trained
        if calls[0] > 12 + 6 + 3:
            raise RuntimeError("disk gone")
        return real_getitem(self, i)

    monkeypatch.setattr(finetune_mod.ImageDataset, "__getitem__", failing_getitem)
    clf.set_params(
        warm_start=True,
        epochs=0,
        n_cycles=1,
        unfreeze=True,
        unfrozen_cycles=1,
        finetune_lr=1e-2,
    )
    with pytest.raises(RuntimeError, match="disk gone"):
        clf.fit(X, y)
    monkeypatch.undo()
    assert calls[0] > 12 + 6
    np.testing.assert_array_equal(clf.predict_proba(X), before)
    assert clf.history_ == rows
    assert same_state(head_state(clf), head)
    assert same_state(body_state(clf), body)
    assert clf.extractor_.model_key == key
    assert clf.extractor_.backbone.weights_id == "random-init"


# --- validation split, early stopping ------------------------------------------


def test_validation_fraction_reports_every_epoch(images, base):
    X, y = images
    clf = PretrainedImageClassifier(
        **base,
        validation_fraction=0.25,
        epochs=2,
        n_cycles=1,
        unfreeze=2,
        unfrozen_cycles=1,
    ).fit(X, y)
    assert Counter(stages(clf)) == {"precomputed": 2, "augmented": 1, "unfrozen": 1}
    for row in clf.history_:
        assert np.isfinite(row["valid_loss"]) and row["valid_loss"] >= 0
        assert np.isfinite(row["valid_acc"]) and 0 <= row["valid_acc"] <= 1
        # 3 held-out images of 12
        assert row["valid_acc"] * 3 == pytest.approx(round(row["valid_acc"] * 3))


def test_early_stopping_runs(images, base):
    X, y = images
    clf = PretrainedImageClassifier(
        **base,
        validation_fraction=0.25,
        early_stopping=True,
        epochs=8,
        n_cycles=1,
    ).fit(X, y)
    assert 1 <= len(rows_of(clf, "precomputed")) <= 8
    assert len(rows_of(clf, "augmented")) == 1
    assert all(np.isfinite(r["valid_loss"]) for r in clf.history_)
    assert clf.predict(X).shape == (12,)


@pytest.mark.parametrize("fraction", [0.9, 0.05])
def test_validation_fraction_that_cannot_be_stratified_raises(images, base, fraction):
    X, y = images
    clf = PretrainedImageClassifier(**base, validation_fraction=fraction, epochs=1)
    with pytest.raises(ValueError, match="validation_fraction"):
        clf.fit(X, y)


@pytest.mark.parametrize(
    "params",
    [dict(epochs=1), dict(epochs=0, n_cycles=1)],
    ids=["precomputed", "augmented"],
)
def test_a_last_batch_of_one_image_trains(images, base, params):
    """9 training images in batches of 4 leave a last batch of 1, which the
    head's BatchNorm cannot train on: it must be dropped or merged, not crash."""
    X, y = images
    clf = PretrainedImageClassifier(
        **{**base, "batch_size": 4}, validation_fraction=0.25, **params
    ).fit(X, y)
    assert len(clf.history_) == 1


# --- augmentation ----------------------------------------------------------------


@pytest.fixture
def picture():
    """An asymmetric 50 x 40 picture (flips and rotations change it)."""
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    arr[:10, :20] = (255, 0, 0)
    return Image.fromarray(arr)


PRE = Preprocessing(resize_size=37, crop_size=32)


@pytest.mark.parametrize("kind", ["side_on", "top_down"])
def test_random_augment_presets(picture, kind):
    out = random_augment(picture, PRE, np.random.default_rng(7), kind, max_zoom=1.2)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    again = random_augment(picture, PRE, np.random.default_rng(7), kind, max_zoom=1.2)
    np.testing.assert_array_equal(out, again)
    rng = np.random.default_rng(7)
    draws = [random_augment(picture, PRE, rng, kind, max_zoom=1.2) for _ in range(4)]
    assert all(not np.array_equal(draws[0], d) for d in draws[1:])
    assert not np.array_equal(out, render(picture, PRE, PLAIN))


def test_random_augment_none_is_the_plain_view(picture):
    out = random_augment(picture, PRE, np.random.default_rng(0), None)
    np.testing.assert_array_equal(out, render(picture, PRE, PLAIN))


def test_unknown_augment_preset_raises(picture, images, base):
    with pytest.raises(ValueError, match="augment"):
        random_augment(picture, PRE, np.random.default_rng(0), "sideways")
    X, y = images
    with pytest.raises(ValueError, match="augment"):
        PretrainedImageClassifier(**base, augment="sideways").fit(X, y)


@pytest.mark.parametrize("augment", ["top_down", None])
def test_estimator_passes_augment_to_training_images_only(
    images, base, monkeypatch, augment
):
    X, y = images
    seen = []
    real = finetune_mod.random_augment

    def spy(img, pre, rng, kind="side_on", max_zoom=1.1, **kwargs):
        seen.append((kind, max_zoom, pre.crop_size))
        return real(img, pre, rng, kind, max_zoom, **kwargs)

    monkeypatch.setattr(finetune_mod, "random_augment", spy)
    PretrainedImageClassifier(
        **base,
        augment=augment,
        max_zoom=1.3,
        validation_fraction=0.25,
        epochs=0,
        n_cycles=2,
    ).fit(X, y)
    if augment is None:
        assert seen == []
    else:
        # 9 training images, 2 epochs; the 3 validation images are never augmented
        assert seen == [("top_down", 1.3, 32)] * 18


def test_image_dataset_plain_view_is_fixed_augmented_varies(images):
    X, y = images
    pre = PRE
    plain = ImageDataset(X, np.zeros(len(X)), pre, None)
    np.testing.assert_array_equal(plain[0][0].numpy(), plain[0][0].numpy())
    aug = ImageDataset(X, np.zeros(len(X)), pre, "side_on", 1.2, seed=3)
    assert not torch.equal(aug[0][0], aug[0][0])
    assert aug[0][0].shape == (3, 32, 32) and aug[0][0].dtype == torch.uint8


# --- TTA on a fine-tuned model ------------------------------------------------------


def test_tta_on_a_fine_tuned_model(tuned, images):
    X, _ = images
    clf = copy.deepcopy(tuned)
    p0 = clf.predict_proba(X)
    clf.set_params(tta=2)
    p2 = clf.predict_proba(X)
    assert p2.shape == p0.shape == (12, 2)
    np.testing.assert_allclose(p2.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(p0.sum(axis=1), 1.0, rtol=1e-6)
    assert np.abs(p2 - p0).max() > 1e-6
    clf.set_params(tta=0)
    np.testing.assert_array_equal(clf.predict_proba(X), p0)


def test_augmented_copies_are_seeded_and_plottable(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from sktransfer import augmented_copies, plot_augmentations

    X, _ = make_images(tmp_path / "img", n_per_class=1, size=64)
    a = augmented_copies(X[0], 5, image_size=32, random_state=3)
    b = augmented_copies(X[0], 5, image_size=32, random_state=3)
    assert a.shape == (5, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert len({c.tobytes() for c in a}) == 5  # the copies differ
    axes = plot_augmentations(X[0], 6, image_size=32, ncols=3)
    assert axes.shape == (2, 3)
    assert sum(len(ax.images) for ax in axes.ravel()) == 6
    with pytest.raises(ValueError, match="n must be"):
        augmented_copies(X[0], 0)


def test_warm_start_refuses_another_backbone(tmp_path):
    X, y = make_images(tmp_path / "img", n_per_class=3)
    clf = PretrainedImageClassifier(
        **TINY, cache=str(tmp_path / "c"), epochs=1, warm_start=True
    ).fit(X, y)
    with pytest.raises(ValueError, match="warm_start"):
        clf.set_params(backbone="resnet34").fit(X, y)
