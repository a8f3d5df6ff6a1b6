"""SGDR: the schedule as a pure function, and as a skorch callback."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from skorch.dataset import ValidSplit
from torch import nn

from sktransfer.callbacks import SGDR, sgdr_factor, sgdr_schedule


def closed_form(step, spe, cycle_len, cycle_mult):
    """SGDR in closed form (cycle lengths that are whole numbers of batches).

    Cycle ``i`` starts at ``c * (m**i - 1) / (m - 1)`` batches (``c * i`` when
    ``m == 1``), where ``c = cycle_len * spe``.
    """
    c = cycle_len * spe
    if cycle_mult == 1:
        i = math.floor(step / c)
        start, length = i * c, c
    else:
        m = cycle_mult
        i = math.floor(math.log(step * (m - 1) / c + 1, m) + 1e-9)
        start, length = c * (m**i - 1) / (m - 1), c * m**i
    return 0.5 * (1 + math.cos(math.pi * (step - start) / length))


# -- the schedule --------------------------------------------------------------


@pytest.mark.parametrize(
    "cycle_len, cycle_mult, spe",
    [(1, 1, 4), (2, 1, 5), (1, 2, 4), (1, 2, 3), (0.5, 1, 4), (0.5, 2, 4), (2, 3, 2)],
)
def test_sgdr_factor_matches_closed_form_cosine_with_restarts(
    cycle_len, cycle_mult, spe
):
    n_steps = int(spe * 12)
    got = [
        sgdr_factor(s, steps_per_epoch=spe, cycle_len=cycle_len, cycle_mult=cycle_mult)
        for s in range(n_steps)
    ]
    expected = [closed_form(s, spe, cycle_len, cycle_mult) for s in range(n_steps)]
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_sgdr_with_cycle_mult_2_restarts_after_1_and_3_epochs():
    spe = 4

    def f(step):
        return sgdr_factor(step, steps_per_epoch=spe, cycle_len=1, cycle_mult=2)

    # cycles of 1, 2 and 4 epochs
    assert f(0) == f(spe * 1) == f(spe * 3) == f(spe * 7) == 1.0
    assert f(spe * 1 - 1) < f(spe * 1)  # a warm restart, not a plateau
    assert f(spe * 3 - 1) < f(spe * 3)
    # mid-cycle: half way down each cycle
    assert f(spe // 2) == pytest.approx(0.5)
    assert f(spe * 1 + spe) == pytest.approx(0.5)
    assert f(spe * 3 + 2 * spe) == pytest.approx(0.5)
    assert f(spe * 1 + spe // 2) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_sgdr_with_half_epoch_cycles_restarts_twice_per_epoch():
    spe = 10
    factors = [sgdr_factor(s, steps_per_epoch=spe, cycle_len=0.5) for s in range(30)]
    restarts = [s for s, f in enumerate(factors) if f == 1.0]
    assert restarts == [0, 5, 10, 15, 20, 25]
    assert factors[1] == pytest.approx(0.5 * (1 + math.cos(math.pi / 5)))


def test_sgdr_with_half_epoch_first_cycle_and_mult_2():
    spe = 4  # cycles of 0.5, 1, 2, 4 epochs = 2, 4, 8, 16 batches
    factors = [
        sgdr_factor(s, steps_per_epoch=spe, cycle_len=0.5, cycle_mult=2)
        for s in range(30)
    ]
    assert [s for s, f in enumerate(factors) if f == 1.0] == [0, 2, 6, 14]
    assert factors[6 + 4] == pytest.approx(0.5)


def test_sgdr_min_ratio_is_the_floor_of_every_cycle():
    spe = 8
    factors = np.array(
        [sgdr_factor(s, steps_per_epoch=spe, min_ratio=0.1) for s in range(3 * spe)]
    )
    plain = np.array([sgdr_factor(s, steps_per_epoch=spe) for s in range(3 * spe)])
    np.testing.assert_allclose(factors, 0.1 + 0.9 * plain)
    assert factors.min() > 0.1
    assert factors[spe // 2] == pytest.approx(0.55)


def test_sgdr_factor_docstring_values():
    got = [round(sgdr_factor(s, steps_per_epoch=4), 3) for s in range(6)]
    assert got == [1.0, 0.854, 0.5, 0.146, 1.0, 0.854]


def test_simulate_has_one_value_per_batch_scaled_by_base_lr():
    sgdr = SGDR(cycle_len=1, cycle_mult=2)
    lrs = sgdr.simulate(steps_per_epoch=2, n_epochs=3, base_lr=0.1)
    assert lrs.shape == (6,)
    np.testing.assert_allclose(
        lrs / 0.1, [1.0, 0.5, 1.0, 0.85355339, 0.5, 0.14644661], atol=1e-8
    )
    assert sgdr.simulate(steps_per_epoch=4, n_epochs=2.5).shape == (10,)
    expected = [sgdr_factor(s, steps_per_epoch=4, cycle_mult=2) for s in range(10)]
    np.testing.assert_allclose(sgdr.simulate(4, 2.5), expected)


def test_cycle_ends_are_the_batches_where_cycles_complete():
    assert SGDR(cycle_len=1, cycle_mult=2).cycle_ends(4, 28) == [4, 12, 28]
    assert SGDR(cycle_len=1, cycle_mult=2).cycle_ends(4, 27) == [4, 12]
    assert SGDR(cycle_len=1, cycle_mult=2).cycle_ends(4, 20) == [4, 12]
    assert SGDR(cycle_len=0.5).cycle_ends(4, 8) == [2, 4, 6, 8]
    assert SGDR(cycle_len=3).cycle_ends(2, 5) == []


@pytest.mark.parametrize(
    "params, words",
    [
        ({"cycle_len": 0}, "cycle_len"),
        ({"cycle_len": -1}, "cycle_len"),
        ({"cycle_len": float("nan")}, "cycle_len"),
        ({"cycle_mult": 0.5}, "cycle_mult"),
        ({"cycle_mult": 0}, "cycle_mult"),
        ({"min_ratio": 1.5}, "min_ratio"),
    ],
)
def test_invalid_sgdr_parameters_raise_ValueError(params, words):
    with pytest.raises(ValueError, match=words):
        SGDR(**params).simulate(steps_per_epoch=4, n_epochs=2)
    net = make_net(callbacks=[SGDR(**params)], max_epochs=1)
    with pytest.raises(ValueError, match=words):
        net.fit(*tiny_data())


@pytest.mark.parametrize(
    "params, words",
    [
        ({"cycle_len": 0}, "cycle_len"),
        ({"cycle_len": -1}, "cycle_len"),
        ({"cycle_mult": 0.5}, "cycle_mult"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
    ],
)
def test_sgdr_factor_rejects_invalid_parameters(params, words):
    kwargs = {"steps_per_epoch": 4, **params}
    with pytest.raises(ValueError, match=words):
        sgdr_factor(3, **kwargs)


# -- in a skorch net -----------------------------------------------------------


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        return self.out(torch.relu(self.body(x)))


class RecordLrs(Callback):
    """Every parameter group's rate at each training batch."""

    def initialize(self):
        self.lrs_ = []
        return self

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if training:
            self.lrs_.append([g["lr"] for g in net.optimizer_.param_groups])


def tiny_data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    return X, y


def make_net(callbacks, max_epochs, **kwargs):
    params = dict(
        module=TwoLayers,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD,
        lr=0.1,
        max_epochs=max_epochs,
        batch_size=8,
        train_split=None,
        callbacks=callbacks,
        verbose=0,
    )
    params.update(kwargs)
    return NeuralNetClassifier(**params)


def test_sgdr_in_skorch_keeps_param_group_ratio_through_restarts():
    sgdr = SGDR(cycle_len=1, cycle_mult=2)
    record = RecordLrs()
    net = make_net(
        [("sgdr", sgdr), ("record", record)],
        max_epochs=3,
        optimizer__param_groups=[("body.*", {"lr": 0.01})],
    )

    net.fit(*tiny_data())

    lrs = np.array(record.lrs_)  # (batches, groups)
    spe = 4  # 32 samples / batch_size 8
    assert lrs.shape == (3 * spe, 2)
    assert sgdr.steps_per_epoch_ == spe
    factors = sgdr.simulate(steps_per_epoch=spe, n_epochs=3)
    np.testing.assert_allclose(lrs[:, 0], 0.01 * factors)
    np.testing.assert_allclose(lrs[:, 1], 0.1 * factors)
    np.testing.assert_allclose(lrs[:, 0] / lrs[:, 1], 0.1)
    # restarts at epochs 1 and 3 (cycles of 1 and 2 epochs)
    np.testing.assert_allclose(lrs[[0, spe], :], [[0.01, 0.1], [0.01, 0.1]])
    assert np.all(lrs[spe - 1] < lrs[spe])
    # skorch's history has the rate of each batch, and the base rates are back
    history = [
        lr for epoch in net.history[:, "batches"] for lr in [b["lr"] for b in epoch]
    ]
    np.testing.assert_allclose(history, lrs[:, 1])
    assert [g["lr"] for g in net.optimizer_.param_groups] == [0.01, 0.1]


def test_sgdr_infers_steps_per_epoch_from_the_training_split():
    sgdr = SGDR(cycle_len=1)
    record = RecordLrs()
    net = make_net(
        [("sgdr", sgdr), ("record", record)], max_epochs=2, train_split=ValidSplit(5)
    )
    X, y = tiny_data(n=40)  # 32 training samples, 8 validation samples

    net.fit(X, y)

    assert sgdr.steps_per_epoch_ == 4
    lrs = np.array(record.lrs_)[:, 0]
    assert lrs.shape == (8,)  # validation batches do not advance the schedule
    np.testing.assert_allclose(lrs, 0.1 * sgdr.simulate(4, 2))


def test_snapshot_keeps_one_state_dict_per_completed_cycle():
    sgdr = SGDR(cycle_len=1, cycle_mult=2, snapshot=True)
    net = make_net([("sgdr", sgdr)], max_epochs=4)  # cycles end after 1 and 3

    net.fit(*tiny_data())

    assert len(sgdr.snapshots_) == 2
    final = net.module_.state_dict()
    for snap in sgdr.snapshots_:
        assert snap.keys() == final.keys()
    first, second = sgdr.snapshots_
    assert not torch.equal(first["body.weight"], second["body.weight"])
    assert not torch.equal(second["body.weight"], final["body.weight"])
    # copies, not views of the live parameters
    assert first["body.weight"].data_ptr() != final["body.weight"].data_ptr()


def test_snapshot_at_the_end_of_training_equals_final_weights():
    sgdr = SGDR(cycle_len=1, snapshot=True)
    net = make_net([("sgdr", sgdr)], max_epochs=3)

    net.fit(*tiny_data())

    assert len(sgdr.snapshots_) == 3
    final = net.module_.state_dict()
    for key, value in final.items():
        assert torch.equal(sgdr.snapshots_[-1][key], value)


def test_snapshots_are_not_kept_without_snapshot():
    sgdr = SGDR(cycle_len=1)
    make_net([("sgdr", sgdr)], max_epochs=2).fit(*tiny_data())
    assert sgdr.snapshots_ == []


# -- plotting ------------------------------------------------------------------


def test_plot_schedule_returns_axes_with_the_simulated_curve():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes

    sgdr = SGDR(cycle_len=1, cycle_mult=2)
    ax = sgdr.plot_schedule(steps_per_epoch=4, n_epochs=3)
    try:
        assert isinstance(ax, Axes)
        curve, *restarts = ax.get_lines()
        np.testing.assert_allclose(curve.get_ydata(), sgdr.simulate(4, 3))
        np.testing.assert_allclose(curve.get_xdata(), np.arange(12) / 4)
        assert ax.get_xlabel() == "epoch"
        # cycles of 1 and 2 epochs: one restart, marked after the first epoch
        assert [line.get_xdata()[0] for line in restarts] == [1.0]
    finally:
        plt.close(ax.figure)

    fig, given = plt.subplots()
    try:
        assert sgdr.plot_schedule(4, 1, ax=given) is given
    finally:
        plt.close(fig)


def test_importing_sktransfer_does_not_import_matplotlib():
    code = "import sktransfer, sys; assert 'matplotlib' not in sys.modules"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr


def test_sgdr_with_n_cycles_ends_its_last_cycle_on_the_last_batch():
    from skorch import NeuralNetClassifier

    X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    # 2 cycles of 1.5 epochs planned = 3 epochs, but 4 epochs are run:
    # the cycles are stretched so that the second one ends with training
    sgdr = SGDR(cycle_len=1.5, cycle_mult=1, n_cycles=2)
    net = NeuralNetClassifier(
        torch.nn.Linear(4, 2),
        criterion=torch.nn.CrossEntropyLoss,
        lr=0.1,
        max_epochs=4,
        batch_size=10,
        train_split=None,
        callbacks=[("sgdr", sgdr)],
        verbose=0,
    ).fit(X, y)
    lrs = [b["lr"] for row in net.history for b in row["batches"]]
    assert len(lrs) == 16
    assert lrs[0] == pytest.approx(0.1) and lrs[8] == pytest.approx(0.1)  # restart
    assert lrs[-1] < 0.01  # the last batch sits near the floor
    assert max(lrs[9:]) < 0.1  # no third restart


def test_sgdr_with_n_cycles_trains_exactly_what_simulate_shows():
    X, y = tiny_data(n=40)
    sgdr = SGDR(cycle_len=1.5, n_cycles=2)
    record = RecordLrs()
    make_net([("sgdr", sgdr), ("record", record)], max_epochs=4, batch_size=10).fit(
        X, y
    )
    trained = np.array(record.lrs_)[:, 0]
    np.testing.assert_allclose(trained, 0.1 * sgdr.simulate(4, 4), rtol=1e-12)
    assert sgdr.cycle_ends(4, 16) == [8, 16]


def test_simulate_honours_n_cycles():
    lrs = SGDR(cycle_len=1, n_cycles=2).simulate(steps_per_epoch=2, n_epochs=3)
    np.testing.assert_allclose(lrs, [1.0, 0.75, 0.25, 1.0, 0.75, 0.25])
    # without n_cycles the third epoch is a third cycle
    plain = SGDR(cycle_len=1).simulate(steps_per_epoch=2, n_epochs=3)
    np.testing.assert_allclose(plain, [1.0, 0.5] * 3)


# -- the schedule of a whole run -------------------------------------------------


@pytest.mark.parametrize(
    "cycle_len, cycle_mult, spe", [(1, 1, 4), (0.5, 2, 4), (2, 1, 3), (1, 2, 5)]
)
def test_sgdr_schedule_without_n_cycles_is_sgdr_factor_at_every_step(
    cycle_len, cycle_mult, spe
):
    n = spe * 7
    factors, ends = sgdr_schedule(
        n, steps_per_epoch=spe, cycle_len=cycle_len, cycle_mult=cycle_mult
    )
    expected = [
        sgdr_factor(s, steps_per_epoch=spe, cycle_len=cycle_len, cycle_mult=cycle_mult)
        for s in range(n)
    ]
    np.testing.assert_allclose(factors, expected, rtol=1e-12)
    # a cycle ends just before each restart
    restarts = [s for s in range(1, n) if factors[s] == 1.0]
    assert ends[: len(restarts)] == restarts


@pytest.mark.parametrize(
    "n_steps, spe, cycle_len, cycle_mult, n_cycles",
    [
        (24, 4, 1, 1, 3),
        (28, 4, 1, 2, 3),
        (10, 2, 1, 2, 2),
        # 7.5 and 2.5 batches per cycle: rounding each cycle on its own
        # loses the last cycle, or ends it before the run does
        (30, 3, 1.5, 1, 4),
        (10, 5, 0.3, 1, 4),
    ],
)
def test_sgdr_schedule_stretches_n_cycles_to_end_with_the_run(
    n_steps, spe, cycle_len, cycle_mult, n_cycles
):
    factors, ends = sgdr_schedule(
        n_steps,
        steps_per_epoch=spe,
        cycle_len=cycle_len,
        cycle_mult=cycle_mult,
        n_cycles=n_cycles,
    )
    assert factors.shape == (n_steps,)
    assert len(ends) == n_cycles and ends[-1] == n_steps
    starts = [0, *ends[:-1]]
    assert [factors[s] for s in starts] == [1.0] * n_cycles
    for start, end in zip(starts, ends, strict=True):
        cycle = factors[start:end]
        assert np.all(np.diff(cycle) < 0)  # each cycle only falls
    # the cycles keep their proportions (up to whole batches)
    lengths = np.diff([0, *ends])
    planned = [cycle_len * cycle_mult**i for i in range(n_cycles)]
    np.testing.assert_allclose(
        lengths / lengths.sum(), np.divide(planned, sum(planned)), atol=1.5 / n_steps
    )


def test_sgdr_schedule_is_pure():
    a = sgdr_schedule(12, steps_per_epoch=4, cycle_len=1, n_cycles=2)
    b = sgdr_schedule(12, steps_per_epoch=4, cycle_len=1, n_cycles=2)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1] == [6, 12]


# -- scikit-learn composition -----------------------------------------------------


def test_a_fitted_net_with_sgdr_clones_and_cross_validates():
    X, y = tiny_data(n=48)
    sgdr = SGDR(cycle_len=1, cycle_mult=2, snapshot=True, n_cycles=2)
    net = make_net([("sgdr", sgdr)], max_epochs=3).fit(X, y)
    assert len(sgdr.snapshots_) == 2  # fitted state on the callback
    twin = clone(net)
    ((name, copy),) = twin.callbacks
    assert name == "sgdr" and copy is not sgdr
    assert copy.get_params() == sgdr.get_params()
    assert not hasattr(copy, "snapshots_")
    scores = cross_val_score(net, X, y, cv=3)
    assert scores.shape == (3,)
    assert np.all((scores >= 0) & (scores <= 1))
    # the net passed in keeps its own fit
    assert len(sgdr.snapshots_) == 2
