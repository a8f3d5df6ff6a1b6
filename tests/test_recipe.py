"""The staged fastai recipe, checked in numbers through ``fit``.

Stage 1 trains the head on precomputed features, stage 2 runs SGDR cycles of
the head on augmented images through the frozen body, stage 3 unfreezes the
layer groups from ``unfreeze_from`` on with differential learning rates.
Every model is the TINY backbone (random-init ResNet-18 at 32 px) on a dozen
generated 40 px JPEGs, so a whole recipe fits in a second or two. What the
recipe does is read from ``history_``, the predictions and the fitted
weights, never from inside the training loop.
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

from sktransfer import FeatureCache, PretrainedFeatures, PretrainedImageClassifier
from sktransfer._backbones import load_backbone
from sktransfer._finetune import ImageDataset, TransferNet, group_parameters
from sktransfer._head import Head
from sktransfer._transforms import PLAIN, Preprocessing, random_augment, render

ROW_KEYS = {
    "fit",
    "stage",
    "epoch",
    "image_size",
    "lrs",
    "train_loss",
    "valid_loss",
    "valid_acc",
    "seconds",
    "discarded",
}


# --- fixtures and helpers ---------------------------------------------------------


@pytest.fixture
def base(cache_dir):
    """TINY with batches of 6: two steps per epoch on 12 images, and never a
    batch of one (which BatchNorm cannot train on)."""
    return dict(TINY, cache=cache_dir, batch_size=6, random_state=0, head_init="random")


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
        precompute_epochs=1,
        augmented_cycles=1,
        unfrozen_cycles=1,
        unfreeze_from=2,
        unfrozen_lr=1e-3,
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


def state_of(module):
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def head_state(clf):
    return state_of(clf.head_)


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def body_state(clf):
    return state_of(clf.extractor_.backbone.body)


def head_parameters(clf):
    """The head's learned parameters (not the BatchNorm statistics)."""
    return [p.detach().cpu().clone() for p in clf.head_.parameters()]


# --- history_: stages and epochs --------------------------------------------------


def test_history_has_one_row_per_epoch_of_each_stage(images, base):
    X, y = images
    clf = PretrainedImageClassifier(
        **base,
        precompute_epochs=2,
        augmented_cycles=2,
        cycle_len=1,
        unfrozen_cycles=2,
        cycle_mult=2,
    ).fit(X, y)
    # 2 precomputed epochs, 2 cycles of 1 epoch, then cycles of 1 + 2 epochs
    assert stages(clf) == ["precomputed"] * 2 + ["augmented"] * 2 + ["unfrozen"] * 3
    for stage, n in [("precomputed", 2), ("augmented", 2), ("unfrozen", 3)]:
        assert [r["epoch"] for r in rows_of(clf, stage)] == list(range(1, n + 1))
    for row in clf.history_:
        assert set(row) == ROW_KEYS
        assert row["fit"] == 1 and row["image_size"] == 32
        assert np.isfinite(row["train_loss"]) and row["train_loss"] >= 0
        assert row["seconds"] >= 0
        # no validation split: nothing to report
        assert np.isnan(row["valid_loss"]) and np.isnan(row["valid_acc"])
    # the head alone trains on features and on augmented copies' features;
    # the unfrozen stage lists the rates of 4 parameter groups (early,
    # middle, late, head)
    assert all(len(r["lrs"]) == 1 for r in clf.history_[:4])
    assert all(len(r["lrs"]) == 4 for r in clf.history_[4:])


@pytest.mark.parametrize(
    "cycle_len, n_cycles, expected",
    [(0.5, 2, 1), (1, 3, 3), (1.5, 2, 3)],
)
def test_augmented_epochs_are_cycles_times_cycle_len(
    images, base, cycle_len, n_cycles, expected
):
    X, y = images
    clf = PretrainedImageClassifier(
        **base, precompute_epochs=0, augmented_cycles=n_cycles, cycle_len=cycle_len
    ).fit(X, y)
    assert stages(clf) == ["augmented"] * expected


@pytest.mark.parametrize(
    "params, expected",
    [
        (dict(precompute_epochs=0, augmented_cycles=1), {"augmented": 1}),
        (
            dict(precompute_epochs=1, unfreeze_from=2, unfrozen_cycles=1),
            {"precomputed": 1, "unfrozen": 1},
        ),
        (
            dict(precompute_epochs=1, augmented_cycles=1),
            {"precomputed": 1, "augmented": 1},
        ),
    ],
    ids=["no-precomputed", "no-augmented", "no-unfrozen"],
)
def test_a_count_of_zero_skips_its_stage(images, base, params, expected):
    X, y = images
    clf = PretrainedImageClassifier(**base, **params).fit(X, y)
    assert Counter(stages(clf)) == expected
    proba = clf.predict_proba(X)
    assert proba.shape == (12, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


# --- differential learning rates --------------------------------------------------


@pytest.mark.parametrize("mult", [10, 3])
def test_group_rates_keep_their_ratios_through_restarts(images, base, mult):
    X, y = images
    lr, ft = 1e-2, 1e-3
    clf = PretrainedImageClassifier(
        **base,
        precompute_epochs=0,
        lr=lr,
        augmented_cycles=2,
        cycle_len=1,
        unfrozen_cycles=2,
        cycle_mult=2,
        unfrozen_lr=ft,
        lr_mult=mult,
    ).fit(X, y)
    augmented = rows_of(clf, "augmented")
    unfrozen = rows_of(clf, "unfrozen")
    assert len(augmented) == 2 and len(unfrozen) == 3
    for row in augmented:  # each epoch starts a cycle: the head at lr
        assert row["lrs"] == pytest.approx([lr], rel=1e-9)
    for row in unfrozen:
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


@pytest.mark.parametrize("lr_mult", [10, 2])
def test_explicit_rate_tuple_is_used_as_given(images, base, lr_mult):
    """Neither a power of ``lr_mult`` apart nor ending at the default rate:
    rescaling the tuple in any way would show."""
    X, y = images
    rates = (2e-6, 7e-5, 3e-4)
    clf = PretrainedImageClassifier(
        **base,
        precompute_epochs=0,
        unfrozen_cycles=1,
        unfrozen_lr=rates,
        lr_mult=lr_mult,
    ).fit(X, y)
    (row,) = rows_of(clf, "unfrozen")
    assert row["lrs"] == pytest.approx([2e-6, 7e-5, 3e-4, 3e-4], rel=1e-9)


# --- freezing ---------------------------------------------------------------------


@pytest.mark.parametrize("unfreeze_from", [0, 1, 2])
def test_groups_before_unfreeze_from_stay_bitwise_unchanged(
    images, base, unfreeze_from
):
    X, y = images
    clf = PretrainedImageClassifier(
        **base,
        precompute_epochs=0,
        augmented_cycles=1,
        unfrozen_cycles=1,
        unfreeze_from=unfreeze_from,
        unfrozen_lr=1e-2,
    ).fit(X, y)
    fresh = load_backbone("resnet18", None)
    groups = clf.extractor_.backbone.groups
    assert len(groups) == len(fresh.groups) == 3
    for g in range(3):
        params = [p.detach().cpu() for m in groups[g] for p in m.parameters()]
        before = [p.detach() for m in fresh.groups[g] for p in m.parameters()]
        changed = [not torch.equal(a, b) for a, b in zip(params, before, strict=True)]
        if g < unfreeze_from:
            assert not any(changed), f"frozen group {g} changed"
        else:
            assert any(changed), f"unfrozen group {g} did not learn"
    # the body always runs in inference mode: BatchNorm statistics are kept
    buffers = [b.detach().cpu() for b in clf.extractor_.backbone.body.buffers()]
    assert same_tensors(buffers, list(fresh.body.buffers()))
    # after fit the whole body is frozen again
    assert not any(p.requires_grad for p in clf.extractor_.backbone.body.parameters())


def test_frozen_groups_are_bitwise_unchanged_and_the_late_group_learns(tuned):
    fresh = load_backbone("resnet18", None)
    groups = tuned.extractor_.backbone.groups
    for g in (0, 1):  # early and middle: never trainable with unfreeze_from=2
        assert same_tensors(module_state(groups[g]), module_state(fresh.groups[g]))
    late = [p.detach().cpu() for m in groups[2] for p in m.parameters()]
    late_fresh = [p.detach() for m in fresh.groups[2] for p in m.parameters()]
    assert len(late) == len(late_fresh)
    assert any(not torch.equal(a, b) for a, b in zip(late, late_fresh, strict=True))
    assert not any(p.requires_grad for p in tuned.extractor_.backbone.body.parameters())


def test_tuned_body_gets_a_new_cache_key(tuned):
    ext = tuned.extractor_
    assert ext.backbone.weights_id.startswith("tuned:")
    fresh = load_backbone("resnet18", None)
    assert fresh.weights_id == "random-init"
    assert ext.model_key != fresh.fingerprint(ext.preprocessing, ext.precision)


def test_head_only_stages_leave_the_body_untouched(images, base):
    X, y = images
    clf = PretrainedImageClassifier(
        **base, precompute_epochs=1, augmented_cycles=2
    ).fit(X, y)
    fresh = load_backbone("resnet18", None)
    assert same_state(body_state(clf), fresh.body.state_dict())
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


# --- reproducibility, clone, grid search ------------------------------------------


def test_same_random_state_same_probabilities_after_the_full_recipe(images, base):
    X, y = images
    params = dict(
        base,
        precompute_epochs=1,
        augmented_cycles=1,
        unfrozen_cycles=1,
        tta=2,
        unfrozen_lr=1e-3,
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
    for name in ("head_", "ensemble_", "extractor_", "history_", "classes_"):
        assert not hasattr(twin, name), name


def test_grid_search_over_the_recipe(images, base):
    X, y = images
    est = PretrainedImageClassifier(
        **base, precompute_epochs=1, augmented_cycles=1, unfreeze_from=2
    )
    grid = {"cycle_len": [0.5, 1], "cycle_mult": [1, 2], "unfrozen_cycles": [0, 1]}
    search = GridSearchCV(est, grid, cv=2, n_jobs=1, error_score="raise").fit(X, y)
    assert search.best_params_ in list(ParameterGrid(grid))
    assert len(search.cv_results_["params"]) == 8
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    best = search.best_estimator_
    assert {k: best.get_params()[k] for k in grid} == search.best_params_
    assert ("unfrozen" in stages(best)) == (best.unfrozen_cycles > 0)
    assert search.predict(X).shape == (12,)


# --- warm start -------------------------------------------------------------------


def test_warm_start_continues_from_the_previous_weights(images, base):
    X, y = images
    clf = PretrainedImageClassifier(**base, precompute_epochs=2).fit(X, y)
    old_rows = copy.deepcopy(clf.history_)
    old_params = head_parameters(clf)
    # a rate too small to move any weight: the warm fit must end where the
    # previous one did (a fresh head would be a new random initialisation)
    frozen_in_place = dict(
        warm_start=True, precompute_epochs=0, augmented_cycles=1, lr=1e-30
    )
    clf.set_params(**frozen_in_place).fit(X, y)
    assert same_tensors(head_parameters(clf), old_params)
    fresh = PretrainedImageClassifier(
        **{**base, **frozen_in_place, "warm_start": False}
    )
    fresh.fit(X, y)
    assert not same_tensors(head_parameters(fresh), old_params)
    assert clf.history_[:2] == old_rows
    assert stages(clf) == ["precomputed", "precomputed", "augmented"]
    assert [r["fit"] for r in clf.history_] == [1, 1, 2]
    # at a real rate the warm fit moves on from there
    clf.set_params(lr=1e-2).fit(X, y)
    assert not same_tensors(head_parameters(clf), old_params)
    assert [r["fit"] for r in clf.history_] == [1, 1, 2, 3]


def test_warm_start_with_nothing_to_train_keeps_the_model(images, base):
    X, y = images
    clf = PretrainedImageClassifier(
        **base, precompute_epochs=2, augmented_cycles=1
    ).fit(X, y)
    before = clf.predict_proba(X)
    rows = copy.deepcopy(clf.history_)
    clf.set_params(warm_start=True, precompute_epochs=0, augmented_cycles=0)
    with pytest.raises(ValueError, match="Nothing to train"):
        clf.fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), before)
    assert clf.history_ == rows


def test_warm_start_precomputed_epochs_append_only_the_new_rows(images, base):
    X, y = images
    clf = PretrainedImageClassifier(**base, precompute_epochs=2).fit(X, y)
    rows = copy.deepcopy(clf.history_)
    clf.set_params(warm_start=True, precompute_epochs=3).fit(X, y)
    assert clf.history_[:2] == rows
    assert stages(clf) == ["precomputed"] * 5
    assert [r["epoch"] for r in clf.history_] == [1, 2, 1, 2, 3]
    assert [r["fit"] for r in clf.history_] == [1, 1, 2, 2, 2]


def test_warm_start_head_epochs_after_an_image_stage(images, base):
    """After a stage on images the head must still be trainable."""
    X, y = images
    clf = PretrainedImageClassifier(
        **base, precompute_epochs=1, augmented_cycles=1
    ).fit(X, y)
    before = clf.predict_proba(X)
    clf.set_params(warm_start=True, precompute_epochs=1, augmented_cycles=0).fit(X, y)
    assert stages(clf) == ["precomputed", "augmented", "precomputed"]
    assert np.abs(clf.predict_proba(X) - before).max() > 0


def test_warm_start_with_other_classes_raises(images, base):
    X, y = images
    clf = PretrainedImageClassifier(**base, precompute_epochs=1).fit(X, y)
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
        **TINY, cache=cache, batch_size=6, random_state=0, precompute_epochs=1
    ).fit(X, y)
    assert FeatureCache(cache).stats()["models"] == 1
    # same size: the same cache entry is reused
    clf.set_params(warm_start=True).fit(X, y)
    assert FeatureCache(cache).stats()["models"] == 1
    clf.set_params(image_size=48).fit(X, y)
    assert clf.extractor_.preprocessing.crop_size == 48
    assert FeatureCache(cache).stats()["models"] == 2
    assert [r["image_size"] for r in clf.history_] == [32, 32, 32, 48]  # probe
    assert clf.predict_proba(X).shape == (12, 2)


def test_warm_start_at_a_new_image_size_forgets_the_old_batchnorm_statistics(
    images, base
):
    """The head's input BatchNorm ends with the mean of the new-size features
    alone (its statistics average whole epochs on features)."""
    X, y = images
    clf = PretrainedImageClassifier(
        **base, precompute_epochs=2, hidden_sizes=(), dropout=0.0
    ).fit(X, y)
    norm = clf.head_.layers[0]
    assert isinstance(norm, nn.BatchNorm1d)
    small = PretrainedFeatures(**TINY, cache=base["cache"]).fit().transform(X)
    np.testing.assert_allclose(
        norm.running_mean.numpy(), small.mean(axis=0), rtol=1e-4, atol=1e-5
    )
    clf.set_params(warm_start=True, image_size=64).fit(X, y)
    large = PretrainedFeatures(**{**TINY, "image_size": 64}, cache=base["cache"])
    large = large.fit().transform(X)
    assert np.abs(large.mean(axis=0) - small.mean(axis=0)).max() > 1e-2
    norm = clf.head_.layers[0]
    np.testing.assert_allclose(
        norm.running_mean.numpy(), large.mean(axis=0), rtol=1e-4, atol=1e-5
    )


def test_warm_start_refuses_another_backbone(tmp_path):
    X, y = make_images(tmp_path / "img", n_per_class=3)
    clf = PretrainedImageClassifier(
        **TINY, cache=str(tmp_path / "c"), precompute_epochs=1, warm_start=True
    ).fit(X, y)
    with pytest.raises(ValueError, match="warm_start"):
        clf.set_params(backbone="resnet34").fit(X, y)


# --- snapshot ensembles -----------------------------------------------------------


def members_proba(clf, X):
    """Each ensemble member's probabilities, as the estimator computes them
    for a one-member ensemble."""
    out = []
    for j in range(len(clf.model_.heads)):
        alone = copy.deepcopy(clf)
        alone.model_ = alone.model_.member(j)
        out.append(alone.predict_proba(X))
    return np.stack(out)


@pytest.mark.parametrize(
    "params, n_members",
    [
        (dict(precompute_epochs=3, cycle_len=1), 3),
        (dict(precompute_epochs=6, cycle_len=1, cycle_mult=2), 2),
        (dict(precompute_epochs=1, augmented_cycles=3), 3),
        (dict(precompute_epochs=1, unfrozen_cycles=2, unfreeze_from=2), 2),
    ],
    ids=["precomputed", "precomputed-mult", "augmented", "unfrozen"],
)
def test_snapshot_ensemble_averages_one_model_per_cycle_of_the_last_stage(
    images, base, forward_count, params, n_members
):
    X, y = images
    clf = PretrainedImageClassifier(
        **{**base, "cache": None}, snapshot_ensemble=True, unfrozen_lr=1e-3, **params
    ).fit(X, y)
    assert len(clf.ensemble_) == n_members
    forward_count["n"] = 0
    proba = clf.predict_proba(X)
    tuned = "unfrozen_cycles" in params
    # snapshots of head-only cycles share the body: one feature pass for all
    assert forward_count["n"] == len(X) * (n_members if tuned else 1)
    each = members_proba(clf, X)
    # equal up to float rounding (bf16 autocast where the CPU has it): a
    # member's features computed alone or in the ensemble's pass may round
    # differently, by ~1e-9
    np.testing.assert_allclose(proba, each.mean(axis=0), rtol=0, atol=1e-7)
    # the members are different models, the last one is the final model
    assert min(np.abs(proba - e).max() for e in each) > 1e-6
    last_head = clf.ensemble_[-1][1]
    assert same_state(state_of(last_head), head_state(clf))
    if tuned:  # every snapshot has its own tuned body
        bodies = [state_of(ext.backbone.body) for ext, _ in clf.ensemble_]
        assert not same_state(bodies[0], bodies[1])
        assert same_state(bodies[-1], body_state(clf))


def test_snapshot_ensemble_has_one_member_per_cycle_whatever_the_rounding(
    tmp_path,
):
    """4 cycles of 0.3 epochs fill 2 epochs of 7 batches: 3.5 batches per
    cycle, which cannot all be rounded up."""
    X, y = make_images(tmp_path / "img", n_per_class=7, size=32)
    clf = PretrainedImageClassifier(
        **TINY,
        cache=None,
        random_state=0,
        batch_size=2,
        head_init="random",
        augmented_cycles=4,
        cycle_len=0.3,
        snapshot_ensemble=True,
    ).fit(X, y)
    assert len(clf.history_) == 2
    assert len(clf.ensemble_) == 4


def test_without_snapshot_ensemble_the_final_model_predicts_alone(images, base):
    X, y = images
    clf = PretrainedImageClassifier(
        **base, precompute_epochs=1, augmented_cycles=3
    ).fit(X, y)
    assert len(clf.ensemble_) == 1
    assert clf.ensemble_[0][1] is clf.head_


# --- validation split, early stopping ---------------------------------------------


def test_validation_fraction_reports_every_epoch(images, base):
    X, y = images
    clf = PretrainedImageClassifier(
        **base,
        validation_fraction=0.25,
        precompute_epochs=2,
        augmented_cycles=1,
        unfreeze_from=2,
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
        precompute_epochs=8,
        augmented_cycles=1,
    ).fit(X, y)
    assert 1 <= len(rows_of(clf, "precomputed")) <= 8
    assert len(rows_of(clf, "augmented")) == 1
    assert all(np.isfinite(r["valid_loss"]) for r in clf.history_)
    assert clf.predict(X).shape == (12,)


def test_early_stopping_ends_the_stage_and_the_fit_goes_on(images, base):
    """skorch stops by raising KeyboardInterrupt: it must end the stage,
    never leave ``fit`` as if the user had pressed Ctrl-C."""
    X, y = images
    clf = PretrainedImageClassifier(
        **base,
        validation_fraction=0.25,
        early_stopping=True,
        precompute_epochs=40,
        lr=0.05,
        augmented_cycles=1,
    ).fit(X, y)
    rows = rows_of(clf, "precomputed")
    assert len(rows) < 40  # stopped early
    losses = [r["valid_loss"] for r in rows]
    best = int(np.argmin(losses))
    assert len(rows) == best + 1 + 3  # three epochs without improvement
    # the weights of the best epoch are kept: the epochs after it are not
    assert [r["discarded"] for r in rows] == [i > best for i in range(len(rows))]
    augmented = rows_of(clf, "augmented")
    assert len(augmented) == 1  # the next stage still ran
    # ... and stays only if it beat the best precomputed epoch
    worse = not augmented[0]["valid_loss"] < losses[best] - clf.tol
    assert augmented[0]["discarded"] == worse
    assert clf.predict(X).shape == (12,)


def test_early_stopping_undoes_a_stage_worse_than_the_probe(images, base):
    """Never worse than the linear probe on the validation images: an
    unfrozen stage at a rate that wrecks the network is undone, and the
    probe is fitted again with the images held out to judge the stage:
    the fitted model is the default model (the probe alone, on all the
    training images), to the last digit."""
    X, y = images
    default = PretrainedImageClassifier(**dict(base, head_init="auto")).fit(X, y)
    common = dict(base, head_init="auto", validation_fraction=0.25, early_stopping=True)
    wrecking = dict(unfrozen_cycles=1, unfrozen_lr=0.3, lr_mult=1, cycle_len=2)
    guarded = PretrainedImageClassifier(**common, **wrecking).fit(X, y)

    assert stages(guarded)[0] == "probe" and not guarded.history_[0]["discarded"]
    unfrozen = rows_of(guarded, "unfrozen")
    assert unfrozen and all(row["discarded"] for row in unfrozen)
    probe_loss = guarded.history_[0]["valid_loss"]
    assert min(row["valid_loss"] for row in unfrozen) > probe_loss
    (refit,) = rows_of(guarded, "refit")
    assert stages(guarded)[-1] == "refit" and np.isnan(refit["valid_loss"])
    assert refit["penalty"] == default.history_[0]["penalty"]
    assert guarded.n_samples_fit_ == default.n_samples_fit_ == len(X)
    np.testing.assert_array_equal(guarded.class_count_, default.class_count_)
    np.testing.assert_array_equal(guarded.predict_proba(X), default.predict_proba(X))
    # the same with nothing after the probe to judge
    probe = PretrainedImageClassifier(**common).fit(X, y)
    assert stages(probe) == ["probe", "refit"]
    np.testing.assert_array_equal(probe.predict_proba(X), default.predict_proba(X))

    # without early stopping the wrecked stage is the fitted model
    unguarded = clone(guarded).set_params(early_stopping=False).fit(X, y)
    assert not any(row["discarded"] for row in unguarded.history_)
    assert not np.allclose(
        unguarded.predict_proba(X), probe.predict_proba(X), atol=1e-3
    )


@pytest.mark.parametrize("fraction", [0.9, 0.05])
def test_validation_fraction_that_cannot_be_stratified_raises(images, base, fraction):
    X, y = images
    clf = PretrainedImageClassifier(
        **base, validation_fraction=fraction, precompute_epochs=1
    )
    with pytest.raises(ValueError, match="validation_fraction"):
        clf.fit(X, y)


@pytest.mark.parametrize(
    "params",
    [
        dict(precompute_epochs=1),
        dict(precompute_epochs=0, augmented_cycles=1),
        dict(precompute_epochs=0, unfrozen_cycles=1),
    ],
    ids=["precomputed", "augmented", "unfrozen"],
)
def test_a_last_batch_of_one_image_trains(images, base, params):
    """9 training images in batches of 4 leave a last batch of 1, which the
    head's BatchNorm cannot train on: it must be dropped or merged, not crash."""
    X, y = images
    clf = PretrainedImageClassifier(
        **{**base, "batch_size": 4}, validation_fraction=0.25, **params
    ).fit(X, y)
    assert len(clf.history_) == 1
    assert np.isfinite(clf.history_[0]["train_loss"])


# --- augmentation -----------------------------------------------------------------


@pytest.fixture
def picture():
    """An asymmetric 50 x 40 picture (flips and rotations change it)."""
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    arr[:10, :20] = (255, 0, 0)
    return Image.fromarray(arr)


PRE = Preprocessing(resize_size=37, crop_size=32)


@pytest.mark.parametrize("kind", ["side_on", "top_down", "trivial"])
def test_random_augment_presets(picture, kind):
    out = random_augment(picture, PRE, np.random.default_rng(7), kind, max_zoom=1.2)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    again = random_augment(picture, PRE, np.random.default_rng(7), kind, max_zoom=1.2)
    np.testing.assert_array_equal(out, again)
    rng = np.random.default_rng(7)
    draws = [random_augment(picture, PRE, rng, kind, max_zoom=1.2) for _ in range(4)]
    assert all(not np.array_equal(draws[0], d) for d in draws[1:])
    assert not np.array_equal(out, render(picture, PRE, PLAIN))


@pytest.mark.parametrize("mode", ["crop", "squish", "pad"])
def test_a_rotated_view_is_the_view_of_the_rotated_photo(mode):
    """The one-pass affine render matches rotating the photo, then cutting
    and resizing the view (up to interpolation)."""
    from sktransfer._transforms import View, render_rotated

    yy, xx = np.mgrid[0:200, 0:300]
    smooth = np.stack([xx * 255 // 299, yy * 255 // 199, (xx + yy) % 256], -1)
    photo = Image.fromarray(smooth.astype(np.uint8))
    pre = Preprocessing(resize_size=40, crop_size=32, resize_mode=mode)
    view = View(flip=True, zoom=1.1, dx=0.4, dy=-0.5)
    fill = None if mode == "crop" else tuple(round(m * 255) for m in pre.mean)
    for angle in (7.0, -12.0):
        turned = photo.rotate(angle, Image.Resampling.BILINEAR, fillcolor=fill)
        expected = render(turned, pre, view).astype(int)
        got = render_rotated(photo, pre, view, angle).astype(int)
        assert got.shape == expected.shape == (32, 32, 3)
        assert np.abs(got - expected)[2:-2, 2:-2].mean() < 6


def test_random_augment_none_is_the_plain_view(picture):
    out = random_augment(picture, PRE, np.random.default_rng(0), None)
    np.testing.assert_array_equal(out, render(picture, PRE, PLAIN))


def test_unknown_augment_preset_raises(picture, images, base):
    with pytest.raises(ValueError, match="augment"):
        random_augment(picture, PRE, np.random.default_rng(0), "sideways")
    X, y = images
    with pytest.raises(ValueError, match="augment"):
        PretrainedImageClassifier(**base, augment="sideways").fit(X, y)


def counting_rotations(monkeypatch, paths):
    """Count, per photo, the affine passes PIL makes over its pixels: a
    rotated training view is one such pass, the plain view none. Returns
    the counts, filled in as training runs.

    A pass may read only the part of the photo it needs (with mirrored
    margins), so the photo is recognised by a run of 6 pixels from the
    middle of what the pass reads: the photos are noise, so every run of
    them is one photo's.
    """
    runs = {}
    for p in paths:
        pixels = np.asarray(Image.open(p).convert("RGB"))
        for row in pixels:
            for x in range(len(row) - 5):
                runs[row[x : x + 6].tobytes()] = p
    counts = dict.fromkeys(paths, 0)
    transform = Image.Image.transform

    def counted(self, *args, **kwargs):
        pixels = np.asarray(self)
        middle = pixels[len(pixels) // 2]
        x = len(middle) // 2 - 3
        photo = runs.get(middle[x : x + 6].tobytes())
        if photo is not None:
            counts[photo] += 1
        return transform(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "transform", counted)
    return counts


@pytest.mark.parametrize("augment", ["side_on", "top_down", None])
def test_only_training_photos_are_augmented_once_per_epoch(
    images, base, augment, monkeypatch
):
    paths, y = images
    counts = counting_rotations(monkeypatch, paths)
    PretrainedImageClassifier(
        **base,
        augment=augment,
        validation_fraction=0.25,
        precompute_epochs=0,
        augmented_cycles=2,
        augmented_copies=0,  # augmented afresh on every epoch
    ).fit(paths, y)
    counts = sorted(counts.values())
    if augment is None:
        assert counts == [0] * 12
    else:
        # 9 training photos, 2 epochs; the 3 validation photos stay plain
        assert counts == [0] * 3 + [2] * 9


def test_image_dataset_plain_view_is_fixed_augmented_varies(images):
    X, _ = images
    targets = torch.zeros(len(X), dtype=torch.int64)
    plain = ImageDataset(X, targets, PRE, None)
    x0, (target, weight) = plain[0]
    np.testing.assert_array_equal(x0.numpy(), plain[0][0].numpy())
    assert int(target) == 0 and float(weight) == 1.0
    aug = ImageDataset(X, targets, PRE, "side_on", 1.2, seed=3)
    aug.new_pass()  # what the loader does before every pass
    first = [aug[i][0] for i in (2, 0, 1)]
    # within a pass an item is the same whatever the order it is drawn in
    assert torch.equal(aug[0][0], first[1]) and torch.equal(aug[2][0], first[0])
    aug.new_pass()
    assert not torch.equal(aug[0][0], first[1])  # a new pass, new draws
    again = ImageDataset(X, targets, PRE, "side_on", 1.2, seed=3)
    assert torch.equal(again[1][0], first[2])  # and the same in every run
    assert aug[0][0].shape == (3, 32, 32) and aug[0][0].dtype == torch.uint8


# --- TTA on a fine-tuned model ----------------------------------------------------


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
    from sktransfer.datasets import augmented_copies
    from sktransfer.plotting import plot_augmentations

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
