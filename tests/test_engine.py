"""The recipe as data (``make_plan``) and the engine that runs it.

The plan is a pure function of the parameters: these tests read it without
loading a network or an image. The engine is then observed through ``fit``:
``history_`` follows the plan, images go through the body only when a stage
needs their features, and ``verbose`` reports each stage.
"""

from __future__ import annotations

import dataclasses
import re
import warnings

import numpy as np
import pytest
from conftest import TINY, make_images

from sktransfer import (
    FeatureCache,
    PretrainedImageClassifier,
    PretrainedImageRegressor,
    Stage,
    make_plan,
)

#: The fastai plan: a random head trained by gradient steps from the first
#: stage on (the default starts with a linear probe: see test_probe.py).
FASTAI = dict(head_init="random", precompute_epochs=8)


def plan_of(**params):
    return make_plan(PretrainedImageClassifier(**{**FASTAI, **params}).get_params())


def rows_of(est, stage):
    return [row for row in est.history_ if row["stage"] == stage]


@pytest.fixture
def base(cache_dir):
    """TINY with batches of 6: two steps per epoch on 12 images; a random
    head trained by gradient steps (the fastai plan)."""
    return dict(TINY, cache=cache_dir, batch_size=6, random_state=0, head_init="random")


# --- the plan: which stages, on what, for how long --------------------------------


def test_default_plan_is_the_linear_probe_alone():
    (stage,) = make_plan(PretrainedImageClassifier().get_params())
    assert stage.name == "probe" and stage.input == "features"
    assert stage.epochs == 0 and not stage.trains_body


def test_fastai_plan_is_eight_head_epochs_on_cached_features():
    (stage,) = plan_of()
    assert isinstance(stage, Stage)
    assert stage.name == "precomputed"
    assert stage.input == "features"
    assert stage.trainable_from == 3 and not stage.trains_body
    assert stage.epochs == 8
    assert stage.lr == 1e-3
    # one cosine cycle over the 8 epochs
    assert (stage.cycle_len, stage.n_cycles) == (8, 1)
    assert stage.group_lrs(1e-3) == [1e-3] * 4
    assert stage.snapshot is False


@pytest.mark.parametrize("unfreeze_from", [0, 1, 2])
def test_three_stages_in_order_with_their_inputs_and_trainable_groups(unfreeze_from):
    plan = plan_of(
        precompute_epochs=2,
        augmented_cycles=1,
        unfrozen_cycles=1,
        unfreeze_from=unfreeze_from,
        augment="top_down",
    )
    assert [s.name for s in plan] == ["precomputed", "augmented", "unfrozen"]
    # the head trains on cached features of augmented copies by default
    assert [s.input for s in plan] == ["features", "copies", "images"]
    assert plan[1].copies == 1 and plan[1].on_features
    assert [s.trainable_from for s in plan] == [3, 3, unfreeze_from]
    assert [s.trains_body for s in plan] == [False, False, True]
    # augmentation applies to photos only
    assert [s.augment for s in plan] == [None, "top_down", "top_down"]


@pytest.mark.parametrize(
    "params, expected",
    [
        (dict(precompute_epochs=0, augmented_cycles=1), ["augmented"]),
        (dict(precompute_epochs=0, unfrozen_cycles=2), ["unfrozen"]),
        (dict(precompute_epochs=1, unfrozen_cycles=1), ["precomputed", "unfrozen"]),
        (dict(precompute_epochs=3, augmented_cycles=2), ["precomputed", "augmented"]),
    ],
)
def test_a_count_of_zero_leaves_its_stage_out(params, expected):
    assert [s.name for s in plan_of(**params)] == expected


@pytest.mark.parametrize(
    "cycle_len, cycle_mult, augmented_cycles, unfrozen_cycles, epochs",
    [
        (1, 1, 3, 3, (3, 3)),
        (0.5, 1, 2, 2, (1, 1)),
        (1.5, 1, 2, 2, (3, 3)),
        # cycle_mult stretches the unfrozen cycles only: 1 + 2 + 4 epochs
        (1, 2, 3, 3, (3, 7)),
        (2, 1.5, 1, 2, (2, 5)),
    ],
)
def test_stage_epochs_are_the_sum_of_their_cycles(
    cycle_len, cycle_mult, augmented_cycles, unfrozen_cycles, epochs
):
    _, augmented, unfrozen = plan_of(
        precompute_epochs=1,
        augmented_cycles=augmented_cycles,
        unfrozen_cycles=unfrozen_cycles,
        cycle_len=cycle_len,
        cycle_mult=cycle_mult,
    )
    assert (augmented.epochs, unfrozen.epochs) == epochs
    assert (augmented.n_cycles, unfrozen.n_cycles) == (
        augmented_cycles,
        unfrozen_cycles,
    )
    assert augmented.cycle_mult == 1 and unfrozen.cycle_mult == cycle_mult
    assert augmented.cycle_len == unfrozen.cycle_len == cycle_len


# --- the plan: per-group rates ----------------------------------------------------


@pytest.mark.parametrize("lr_mult", [10, 3, 2.5])
def test_float_unfrozen_lr_divides_by_lr_mult_per_earlier_group(lr_mult):
    _, augmented, unfrozen = plan_of(
        lr=2e-3, unfrozen_lr=1e-4, lr_mult=lr_mult, augmented_cycles=1,
        unfrozen_cycles=1,
    )  # fmt: skip
    assert augmented.lr == 2e-3
    assert augmented.group_lrs(augmented.lr) == [2e-3] * 4
    assert unfrozen.lr == 1e-4
    expected = [1e-4 / lr_mult**2, 1e-4 / lr_mult, 1e-4, 1e-4]
    assert unfrozen.group_lrs(unfrozen.lr) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("lr_mult", [10, 3])
def test_tuple_unfrozen_lr_is_used_as_given_whatever_lr_mult(lr_mult):
    rates = (1e-6, 3e-5, 2e-4)
    *_, unfrozen = plan_of(unfrozen_cycles=1, unfrozen_lr=rates, lr_mult=lr_mult)
    assert unfrozen.lr == 2e-4
    # the head trains at the late group's rate
    got = unfrozen.group_lrs(unfrozen.lr)
    assert got == pytest.approx([1e-6, 3e-5, 2e-4, 2e-4], rel=1e-12)


def test_auto_rates_are_left_to_the_sweep_with_the_group_ratios():
    plan = plan_of(
        lr="auto", unfrozen_lr="auto", lr_mult=4, augmented_cycles=1, unfrozen_cycles=1
    )
    assert [s.lr for s in plan] == ["auto"] * 3
    assert plan[2].ratios == pytest.approx((1 / 16, 1 / 4, 1.0, 1.0))
    assert plan[2].group_lrs(1e-3) == pytest.approx([1e-3 / 16, 1e-3 / 4, 1e-3, 1e-3])


# --- the plan: nothing to train, snapshots, purity --------------------------------


def test_a_plan_without_any_stage_is_an_error():
    with pytest.raises(ValueError, match="Nothing to train") as err:
        plan_of(precompute_epochs=0, augmented_cycles=0, unfrozen_cycles=0)
    for name in ("precompute_epochs", "augmented_cycles", "unfrozen_cycles"):
        assert name in str(err.value)


@pytest.mark.parametrize("cls", [PretrainedImageClassifier, PretrainedImageRegressor])
def test_fit_with_nothing_to_train_raises_before_reading_an_image(
    cls, images, tmp_path, forward_count
):
    X, y = images
    X = [*X, str(tmp_path / "missing.jpg")]  # would be reported if read
    y = [*y, "a"] if cls is PretrainedImageClassifier else np.arange(13.0)
    est = cls(**TINY, cache=None, head_init="random")
    with pytest.raises(ValueError, match="Nothing to train"):
        est.fit(X, y)
    assert forward_count["n"] == 0
    assert not hasattr(est, "head_")


@pytest.mark.parametrize(
    "params, flags",
    [
        (dict(precompute_epochs=4), [True]),
        (dict(precompute_epochs=4, augmented_cycles=2), [False, True]),
        (dict(precompute_epochs=4, unfrozen_cycles=2), [False, True]),
        (dict(augmented_cycles=2, unfrozen_cycles=3), [False, False, True]),
    ],
)
def test_snapshot_ensemble_marks_the_last_stage_only(params, flags):
    plan = plan_of(snapshot_ensemble=True, **params)
    assert [s.snapshot for s in plan] == flags
    without = plan_of(snapshot_ensemble=False, **params)
    assert not any(s.snapshot for s in without)


@pytest.mark.parametrize(
    "epochs, cycle_len, cycle_mult, n_cycles",
    [(6, 2, 1, 3), (7, 1, 2, 3), (6, 1, 2, 2), (3, 5, 1, 1), (5, 2, 1, 2)],
)
def test_snapshots_of_a_precomputed_last_stage_split_its_epochs_into_cycles(
    epochs, cycle_len, cycle_mult, n_cycles
):
    (stage,) = plan_of(
        precompute_epochs=epochs,
        cycle_len=cycle_len,
        cycle_mult=cycle_mult,
        snapshot_ensemble=True,
    )
    assert stage.snapshot and stage.epochs == epochs
    assert stage.n_cycles == n_cycles
    assert stage.cycle_len == min(cycle_len, epochs)
    # without snapshots the stage is one cosine cycle over all its epochs
    (plain,) = plan_of(
        precompute_epochs=epochs, cycle_len=cycle_len, cycle_mult=cycle_mult
    )
    assert (plain.n_cycles, plain.cycle_len) == (1, epochs)


def test_make_plan_is_pure():
    params = PretrainedImageClassifier(
        **FASTAI, augmented_cycles=2, unfrozen_cycles=1, unfrozen_lr=(1e-6, 1e-5, 1e-4)
    ).get_params()
    copy = dict(params)
    first, second = make_plan(params), make_plan(params)
    assert first == second
    assert params == copy
    with pytest.raises(dataclasses.FrozenInstanceError):
        first[0].epochs = 3


def test_regressor_and_classifier_share_the_plan():
    params = dict(precompute_epochs=2, augmented_cycles=1, unfrozen_cycles=2)
    reg = make_plan(PretrainedImageRegressor(**{**FASTAI, **params}).get_params())
    assert reg == plan_of(**params)


# --- the engine follows the plan --------------------------------------------------


def test_history_follows_the_plan_stage_by_stage(images, base):
    X, y = images
    clf = PretrainedImageClassifier(
        **base,
        precompute_epochs=2,
        augmented_cycles=2,
        unfrozen_cycles=2,
        cycle_mult=2,
        unfreeze_from=1,
        lr=2e-3,
        unfrozen_lr=(1e-6, 1e-5, 1e-4),
    ).fit(X, y)
    plan = make_plan(clf.get_params())
    assert [r["stage"] for r in clf.history_] == [
        s.name for s in plan for _ in range(s.epochs)
    ]
    for stage in plan:
        rows = rows_of(clf, stage.name)
        assert [r["epoch"] for r in rows] == list(range(1, stage.epochs + 1))
        # every stage starts at its planned rates: the head alone on
        # features, all four layer groups on images
        lrs = stage.group_lrs(stage.lr)
        expected = lrs[-1:] if stage.on_features else lrs
        assert rows[0]["lrs"] == pytest.approx(expected, rel=1e-9)
        assert all(r["fit"] == 1 and r["image_size"] == 32 for r in rows)


def test_image_stages_alone_compute_and_cache_no_features(
    images, tmp_path, forward_count
):
    X, y = images
    cache = tmp_path / "own-cache"
    clf = PretrainedImageClassifier(
        **TINY,
        cache=str(cache),
        batch_size=6,
        random_state=0,
        head_init="random",
        augmented_cycles=1,
        augmented_copies=0,
    ).fit(X, y)
    assert [r["stage"] for r in clf.history_] == ["augmented"]
    assert forward_count["n"] == 0
    assert FeatureCache(cache).stats()["entries"] == 0


def test_lr_auto_without_a_precomputed_stage_computes_features_once(
    images, tmp_path, forward_count
):
    X, y = images
    with pytest.warns(UserWarning, match="sweep"):
        clf = PretrainedImageClassifier(
            **TINY, cache=None, random_state=0, lr="auto", head_init="random",
            augmented_cycles=1, augmented_copies=0,
        ).fit(X, y)  # fmt: skip
    assert forward_count["n"] == len(X)
    (row,) = clf.history_
    assert row["lrs"][-1] == pytest.approx(clf.lr_)


def test_the_whole_recipe_reads_each_image_through_the_frozen_body_once(
    images, forward_count
):
    """Stage 1 and the sweep of lr='auto' share one feature pass (whether
    the sweep on 12 images can be read or falls back to the default rate)."""
    X, y = images
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        PretrainedImageClassifier(
            **TINY, cache=None, random_state=0, batch_size=6, lr="auto",
            precompute_epochs=1, augmented_cycles=1, unfrozen_cycles=1,
            augmented_copies=0,
        ).fit(X, y)  # fmt: skip
    assert forward_count["n"] == len(X)


# --- augmented copies: cached features of fixed augmentations ---------------------


@pytest.mark.parametrize(
    "cycles, copies, planned",
    [(3, 4, 3), (3, 2, 2), (5, 1, 1), (2, 0, 0)],
)
def test_the_plan_computes_only_the_copies_its_epochs_use(cycles, copies, planned):
    (stage,) = plan_of(
        precompute_epochs=0, augmented_cycles=cycles, augmented_copies=copies
    )
    assert stage.epochs == cycles
    assert stage.copies == planned
    assert stage.input == ("copies" if copies else "images")


def test_augmented_copies_go_through_the_body_once_and_are_then_cached(
    images, tmp_path, forward_count
):
    X, y = images
    params = dict(
        TINY, cache=str(tmp_path / "c"), batch_size=6, precompute_epochs=1,
        augmented_cycles=3, augmented_copies=2,
    )  # fmt: skip
    first = PretrainedImageClassifier(**params, random_state=0).fit(X, y)
    # the plain view once, and two copies for three epochs
    assert forward_count["n"] == 3 * len(X)
    assert [r["stage"] for r in first.history_][-3:] == ["augmented"] * 3
    # another seed (a grid candidate, a fold) reads all of them from the cache
    forward_count["n"] = 0
    other = PretrainedImageClassifier(**params, random_state=1).fit(X, y)
    assert forward_count["n"] == 0
    assert not np.allclose(first.predict_proba(X), other.predict_proba(X))
    # a third copy is the only thing computed when the epochs need it
    PretrainedImageClassifier(**{**params, "augmented_copies": 3}).fit(X, y)
    assert forward_count["n"] == len(X)


def test_every_view_goes_through_the_body_before_the_first_stage_trains(
    images, forward_count
):
    """fit computes the plain view and the augmented copies up front; no
    stage calls the body on cached-feature input while it trains."""
    from skorch.callbacks import Callback

    X, y = images
    seen = []

    class AtEveryStageStart(Callback):
        def on_train_begin(self, net, **kwargs):
            seen.append(forward_count["n"])

    PretrainedImageClassifier(
        **TINY, cache=None, batch_size=6, random_state=0, precompute_epochs=1,
        augmented_cycles=2, augmented_copies=2, callbacks=[AtEveryStageStart()],
    ).fit(X, y)  # fmt: skip
    assert len(seen) == 2  # the precomputed and the augmented stage
    assert seen == [3 * len(X)] * 2 == [forward_count["n"]] * 2


def test_copies_differ_between_photos_and_epochs_but_not_between_runs(tmp_path):
    from sktransfer import PretrainedFeatures
    from sktransfer._transforms import AugmentedView

    paths, _ = make_images(tmp_path / "img", n_per_class=2, size=48)
    features = PretrainedFeatures(**TINY, cache=None).fit()
    views = [AugmentedView(0), AugmentedView(1)]
    a = features.extractor_.transform(paths, views=views)
    b = features.extractor_.transform(paths, views=views)
    plain = features.transform(paths)
    np.testing.assert_array_equal(a, b)  # fixed: a pure function of the photo
    assert not np.allclose(a[0], a[1])  # two copies of each photo differ
    assert not np.allclose(a[0], plain[None])
    # every photo gets its own draw, not one shared set of parameters: the
    # same pixels under two names are the same photo, under one fingerprint
    assert AugmentedView(0).rng("x").random() != AugmentedView(0).rng("y").random()


def test_augmented_copies_and_augmenting_afresh_learn_alike(images, base):
    X, y = images
    params = dict(base, precompute_epochs=2, augmented_cycles=2)
    cached = PretrainedImageClassifier(**params).fit(X, y)
    afresh = PretrainedImageClassifier(**params, augmented_copies=0).fit(X, y)
    for est in (cached, afresh):
        assert est.score(X, y) >= 0.9
        assert all(np.isfinite(r["train_loss"]) for r in est.history_)


def test_augmented_copies_with_augment_none_train_on_the_plain_view(
    images, base, forward_count
):
    X, y = images
    PretrainedImageClassifier(
        **{**base, "cache": None}, augment=None, precompute_epochs=1,
        augmented_cycles=2,
    ).fit(X, y)  # fmt: skip
    assert forward_count["n"] == len(X)  # no copy: the plain view is all there is


def test_a_bad_augmented_copies_value_is_named(images, base, forward_count):
    X, y = images
    with pytest.raises(ValueError, match="augmented_copies"):
        PretrainedImageClassifier(**base, augmented_copies=-1).fit(X, y)
    assert forward_count["n"] == 0


# --- progress ---------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[")


def bar_totals(text):
    """``{stage: (done, total)}`` of the last state of each stage's bar."""
    found = {}
    for name, done, total in re.findall(
        r"(precomputed|augmented|unfrozen):\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)", text
    ):
        found[name] = (int(done), int(total))
    return found


def recipe(base, **changes):
    return PretrainedImageClassifier(
        **{
            **base,
            "precompute_epochs": 2,
            "augmented_cycles": 1,
            "unfrozen_cycles": 1,
            **changes,
        }
    )


def test_verbose_0_prints_nothing(images, base, capfd):
    X, y = images
    recipe(base, verbose=0).fit(X, y)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_verbose_1_shows_a_full_bar_per_stage_and_one_summary_line(images, base, capfd):
    X, y = images
    clf = recipe(base, verbose=1).fit(X, y)
    out, err = capfd.readouterr()
    text = out + err
    # 12 images in batches of 6: 2 batches per epoch; the bars are kept
    assert bar_totals(text) == {
        "precomputed": (4, 4),
        "augmented": (2, 2),
        "unfrozen": (2, 2),
    }
    summary = [line for line in text.splitlines() if "fit took" in line]
    assert len(summary) == 1
    for stage, n in [("precomputed", 2), ("augmented", 1), ("unfrozen", 1)]:
        assert re.search(rf"{stage} {n} epochs \d+\.\ds", summary[0]), summary[0]
    assert "12 images" in summary[0]
    assert len(clf.history_) == 4
    assert not ANSI.search(text)


def test_verbose_summary_says_how_many_images_were_computed_and_cached(
    images, tmp_path, capfd
):
    X, y = images
    params = dict(TINY, cache=str(tmp_path / "c"), random_state=0, verbose=1)
    PretrainedImageClassifier(**params, precompute_epochs=1).fit(X, y)
    first = [ln for ln in capfd.readouterr().err.splitlines() if "fit took" in ln]
    PretrainedImageClassifier(**params, precompute_epochs=1).fit(X, y)
    second = [ln for ln in capfd.readouterr().err.splitlines() if "fit took" in ln]
    assert re.search(r"\b12 computed\b", first[0]), first[0]
    assert re.search(r"\b12 cached\b", second[0]), second[0]


def test_verbose_2_adds_one_plain_line_per_epoch_named_by_stage(images, base, capfd):
    X, y = images
    clf = recipe(base, verbose=2, validation_fraction=0.25).fit(X, y)
    _, err = capfd.readouterr()
    assert not ANSI.search(err)
    lines = re.findall(r"^.*\b(\w+) epoch (\d+)/(\d+)\s+lrs (\S+)\s+(.*)$", err, re.M)
    assert [(stage, int(e)) for stage, e, *_ in lines] == [
        (r["stage"], r["epoch"]) for r in clf.history_
    ]
    for (stage, _, total, lrs, rest), row in zip(lines, clf.history_, strict=True):
        assert int(total) == len(rows_of(clf, stage))
        rates = [float(v) for v in lrs.split(",")]
        assert rates == pytest.approx(row["lrs"], rel=0.05)
        assert f"train_loss {row['train_loss']:.4f}" in rest
        assert f"valid_acc {row['valid_acc']:.4f}" in rest


def test_image_stages_train_in_batches_of_batch_size_above_32(tmp_path, capfd):
    """No silent cap: 40 images in batches of 40 are one step per epoch."""
    X, y = make_images(tmp_path / "img", n_per_class=20, size=32)
    PretrainedImageClassifier(
        **TINY, cache=None, random_state=0, batch_size=40, verbose=1,
        precompute_epochs=1, augmented_cycles=1,
    ).fit(X, y)  # fmt: skip
    _, err = capfd.readouterr()
    assert bar_totals(err) == {"precomputed": (1, 1), "augmented": (1, 1)}
