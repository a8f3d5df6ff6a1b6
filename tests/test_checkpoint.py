"""Checkpoints of a fit in progress (``checkpoint_dir``): a fit interrupted
inside a stage goes on from its last epoch when ``fit`` is called again, and
ends with the model an uninterrupted fit ends with."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import TINY
from skorch.callbacks import Callback

from sktransfer import PretrainedImageClassifier, PretrainedImageRegressor
from sktransfer.exceptions import InvalidParameterError


@pytest.fixture
def base(cache_dir):
    return dict(TINY, cache=cache_dir, batch_size=6, random_state=0)


#: every stage trained by gradient steps, with what carries state from
#: epoch to epoch: a schedule over cycles, augmented photos, validation
RECIPE = dict(
    precompute_epochs=2,
    augmented_cycles=1,
    augmented_copies=2,
    unfrozen_cycles=2,
    cycle_mult=2,
    validation_fraction=0.25,
)
#: early stopping and the guard: their best epochs and weights carry over
GUARDED = dict(early_stopping=True, n_iter_no_change=2)


_LISTS = {}


class Kept(list):
    """A list that stays itself when deep-copied (each stage gets copies of
    the callbacks) and when pickled into a checkpoint and read back (a
    resumed stage gets the callbacks as they were saved)."""

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        _LISTS[id(self)] = self
        return _kept, (id(self),)


def _kept(key):
    return _LISTS[key]


class _Interrupt(Callback):
    """Ctrl-C at the end of epoch ``at`` of stage number ``stage`` (counting
    the nets of one fit), once: the ``fired`` list is shared by the deep
    copies each stage gets."""

    def __init__(self, stage, at, fired, nets):
        self.stage, self.at, self.fired, self.nets = stage, at, fired, nets

    def on_train_begin(self, net, **kwargs):
        self.nets.append(1)

    def on_epoch_end(self, net, **kwargs):
        here = len(self.nets) == self.stage and len(net.history) == self.at
        if here and not self.fired:
            self.fired.append(1)
            raise KeyboardInterrupt


class _Epochs(Callback):
    """Counts the epochs trained (in ``store``, shared by the copies)."""

    def __init__(self, store):
        self.store = store

    def on_epoch_end(self, net, **kwargs):
        self.store.append(1)


def _interrupted(X, y, params, stage=3, at=1):
    """A fit with ``params`` stopped by Ctrl-C at the end of epoch ``at`` of
    stage number ``stage``."""
    stop = ("stop", _Interrupt(stage, at, Kept(), Kept()))
    with pytest.raises(KeyboardInterrupt):
        PretrainedImageClassifier(**params, callbacks=[stop]).fit(X, y)


def _same_fit(a, b):
    assert len(a.history_) == len(b.history_)
    for row_a, row_b in zip(a.history_, b.history_):
        for key in ("stage", "epoch", "lrs", "train_loss", "valid_loss", "discarded"):
            assert row_a.get(key) == pytest.approx(row_b.get(key), nan_ok=True), key
    for (k, va), (_, vb) in zip(
        a.model_.state_dict().items(), b.model_.state_dict().items()
    ):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize(
    "stage, at, options",
    [
        (3, 1, {}),
        (3, 2, {}),
        (2, 1, {}),
        (3, 2, GUARDED),
        # a moving average, mixing and one cycle carry state across epochs
        (3, 2, dict(ema_decay=0.9, mixup=0.4, schedule="one_cycle")),
        (1, 1, dict(ema_decay=0.9, layer_decay=0.5)),
        # the snapshots kept at the cycle ends before the interruption
        (3, 2, dict(snapshot_ensemble=True)),
    ],
)
def test_a_fit_interrupted_inside_a_stage_goes_on_to_the_same_model(
    images, base, tmp_path, stage, at, options
):
    X, y = images
    base = dict(base, **options)
    whole = PretrainedImageClassifier(**base, **RECIPE).fit(X, y)
    fired, nets, epochs = Kept(), Kept(), Kept()
    folder = tmp_path / "checkpoints"
    interrupted = PretrainedImageClassifier(
        **base,
        **RECIPE,
        checkpoint_dir=folder,
        callbacks=[("stop", _Interrupt(stage, at, fired, nets)), _Epochs(epochs)],
    )
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(X, y)
    assert fired and not hasattr(interrupted, "model_")
    assert len(list(folder.glob("fit-*.ckpt"))) == 1
    interrupted.fit(X, y)
    _same_fit(whole, interrupted)
    assert len(interrupted.ensemble_) == len(whole.ensemble_)
    if options.get("snapshot_ensemble"):
        assert len(whole.ensemble_) == 2  # a member per unfrozen cycle
    np.testing.assert_array_equal(whole.predict_proba(X), interrupted.predict_proba(X))
    # the interrupted epoch never reached the counter (the Ctrl-C came
    # first) nor the checkpoint: over both calls, every epoch of the fit
    # was counted once, so the second call went on after the last one
    # written and trained none twice
    trained = sum(1 for r in whole.history_ if r["stage"] != "probe")
    assert len(epochs) == trained
    assert not list(folder.iterdir())  # removed once the fit succeeded


def test_another_fit_does_not_read_the_checkpoint(images, base, tmp_path):
    X, y = images
    folder = tmp_path / "checkpoints"
    epochs = Kept()
    params = dict(base, **RECIPE, checkpoint_dir=folder)
    _interrupted(X, y, params)
    (saved,) = folder.glob("fit-*.ckpt")
    # other targets, other images, other parameters: a fit of its own
    other = PretrainedImageClassifier(**params, callbacks=[_Epochs(epochs)])
    other.fit(X, y[::-1])
    other.set_params(unfrozen_lr=3e-4).fit(X, y)
    other.fit(X[1:], y[1:])
    every = sum(1 for r in other.history_ if r["stage"] != "probe")
    assert len(epochs) == 3 * every
    assert saved.exists()  # the interrupted fit's is left for it
    PretrainedImageClassifier(**params).fit(X, y)
    assert not saved.exists()


def test_verbose_and_callbacks_do_not_name_the_fit(images, base, tmp_path, capsys):
    X, y = images
    folder = tmp_path / "checkpoints"
    epochs = Kept()
    params = dict(base, **RECIPE, checkpoint_dir=folder)
    _interrupted(X, y, params, stage=3, at=2)  # one unfrozen epoch written
    (saved,) = folder.glob("fit-*.ckpt")
    capsys.readouterr()
    again = PretrainedImageClassifier(**params, verbose=1, callbacks=[_Epochs(epochs)])
    again.fit(X, y)
    trained = sum(1 for r in again.history_ if r["stage"] != "probe")
    assert 0 < len(epochs) < trained  # it went on from the checkpoint
    # and says so, naming the file and where in the plan it goes on
    said = capsys.readouterr().err
    assert (
        f"PretrainedImageClassifier: going on from the checkpoint {saved}: "
        "3 of 4 stages done, and part of the 'unfrozen' stage"
    ) in said
    # a fit with no checkpoint to read says nothing of one
    again.fit(X, y)
    assert "checkpoint" not in capsys.readouterr().err


def test_a_seed_drawn_by_the_interrupted_fit_is_used_again(images, base, tmp_path):
    X, y = images
    params = dict(base, **RECIPE, random_state=None)
    np.random.seed(5)  # random_state=None draws the fit's seed from here
    whole = PretrainedImageClassifier(**params).fit(X, y)
    params["checkpoint_dir"] = tmp_path / "checkpoints"
    np.random.seed(5)
    _interrupted(X, y, params, stage=3, at=2)
    np.random.seed(6)  # a fit that drew its own seed would differ
    resumed = PretrainedImageClassifier(**params).fit(X, y)
    _same_fit(whole, resumed)


def test_a_regressor_resumes_too(images, base, tmp_path):
    X, _ = images
    target = np.linspace(0.0, 1.0, len(X))
    params = dict(base, unfrozen_cycles=2, augment=None)
    whole = PretrainedImageRegressor(**params).fit(X, target)
    fired, nets = Kept(), Kept()
    reg = PretrainedImageRegressor(
        **params,
        checkpoint_dir=tmp_path / "c",
        callbacks=[("stop", _Interrupt(1, 1, fired, nets))],
    )
    with pytest.raises(KeyboardInterrupt):
        reg.fit(X, target)
    reg.fit(X, target)
    _same_fit(whole, reg)


class _Unpicklable(Callback):
    def __init__(self):
        import threading

        self.lock = threading.Lock()


def test_a_callback_that_cannot_be_saved_leaves_checkpoints_between_stages(
    images, base, tmp_path
):
    X, y = images
    folder = tmp_path / "checkpoints"
    clf = PretrainedImageClassifier(
        **base, **RECIPE, checkpoint_dir=folder, callbacks=[_Unpicklable()]
    )
    with pytest.warns(UserWarning, match="between its stages only"):
        clf.fit(X, y)
    assert not list(folder.iterdir())
    assert any(r["stage"] == "unfrozen" for r in clf.history_)


def test_a_damaged_checkpoint_is_named_and_the_fit_starts_again(images, base, tmp_path):
    X, y = images
    folder = tmp_path / "checkpoints"
    params = dict(base, **RECIPE, checkpoint_dir=folder)
    _interrupted(X, y, params)
    (saved,) = folder.glob("fit-*.ckpt")
    saved.write_bytes(saved.read_bytes()[:100])
    whole = PretrainedImageClassifier(**base, **RECIPE).fit(X, y)
    with pytest.warns(UserWarning, match="could not be read.*from the beginning"):
        again = PretrainedImageClassifier(**params).fit(X, y)
    _same_fit(whole, again)


@pytest.mark.parametrize("value", [3, ["a"], b"x"])
def test_bad_checkpoint_dir_is_named(images, base, value):
    X, y = images
    clf = PretrainedImageClassifier(**base, checkpoint_dir=value)
    with pytest.raises(InvalidParameterError, match="checkpoint_dir"):
        clf.fit(X, y)


def test_checkpoint_dir_is_not_saved_with_the_model(images, base, tmp_path):
    from sktransfer import load, save

    X, y = images
    clf = PretrainedImageClassifier(**base, checkpoint_dir=tmp_path / "c").fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = load(save(clf, tmp_path / "model"), cache=base["cache"])
    assert again.checkpoint_dir is None


class _InterruptAtEnd(Callback):
    """Ctrl-C when stage number ``stage`` ends (after its last epoch was
    written), once."""

    def __init__(self, stage, fired, nets):
        self.stage, self.fired, self.nets = stage, fired, nets

    def on_train_begin(self, net, **kwargs):
        self.nets.append(1)

    def on_train_end(self, net, **kwargs):
        if len(self.nets) == self.stage and not self.fired:
            self.fired.append(len(net.history))
            raise KeyboardInterrupt


def test_a_stage_that_early_stopping_ended_is_not_trained_further(
    images, base, tmp_path
):
    X, y = images
    params = dict(
        base,
        **RECIPE,
        early_stopping=True,
        n_iter_no_change=1,
        tol=10.0,  # no epoch counts as better: the stage stops after two
    )
    params["unfrozen_cycles"] = 3  # 1 + 2 + 4 epochs, unless stopped
    whole = PretrainedImageClassifier(**params).fit(X, y)
    unfrozen = [r for r in whole.history_ if r["stage"] == "unfrozen"]
    assert len(unfrozen) == 2  # early stopping ended it
    fired, nets, epochs = Kept(), Kept(), Kept()
    clf = PretrainedImageClassifier(
        **params,
        checkpoint_dir=tmp_path / "c",
        callbacks=[("stop", _InterruptAtEnd(3, fired, nets))],
    )
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y)
    assert fired == [2]
    clf.set_params(callbacks=[_Epochs(epochs)]).fit(X, y)
    assert len(epochs) == 0  # the stopped stage went on to its end only
    _same_fit(whole, clf)


#: A user's script with an augmentation of its own (a lambda calling the
#: script's functions, one of which reads a set of strings): run once with
#: ``stop`` (Ctrl-C after the first unfrozen epoch), then again.
_SCRIPT = """
import os
import sys

from PIL import ImageOps
from skorch.callbacks import Callback

from sktransfer import PretrainedImageClassifier


def turned(image):
    return ImageOps.mirror(image) if image.mode in {"RGB", "RGBA", "L"} else image


def mirrored(image):
    return turned(image)


class Stop(Callback):
    def on_epoch_end(self, net, **kwargs):
        if any(group["lr"] < 1e-3 for group in net.optimizer_.param_groups):
            raise KeyboardInterrupt


folder, checkpoints, cache = sys.argv[1:4]
names = sorted(os.listdir(folder))
X, y = [f"{folder}/{name}" for name in names], [name[0] for name in names]
clf = PretrainedImageClassifier(
    "resnet18", weights=None, image_size=32, augment=lambda im: mirrored(im),
    batch_size=6,
    unfrozen_cycles=2, unfrozen_lr=1e-4, random_state=0, cache=cache,
    checkpoint_dir=checkpoints, verbose=int(sys.argv[4] == "again"),
    callbacks=[("stop", Stop())] if sys.argv[4] == "stop" else None,
)
try:
    clf.fit(X, y)
except KeyboardInterrupt:
    sys.exit(130)
print("epochs", sum(row["stage"] == "unfrozen" for row in clf.history_))
"""


def test_a_script_with_its_own_augment_function_resumes_in_a_new_process(
    images, tmp_path
):
    """The checkpoint's name is a digest of the parameters: a function's
    ``repr`` holds its address, which a new process does not share, so the
    same script run again after Ctrl-C did not find its checkpoint; and a
    function edited between the two runs must not resume the first one's
    fit, even one the augmentation reaches only through another."""
    import os
    import shutil
    import subprocess
    import sys

    X, _ = images
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in X:
        shutil.copy(path, folder)
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    checkpoints, cache = tmp_path / "checkpoints", tmp_path / "cache"
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def run(mode, hash_seed):
        argv = [sys.executable, str(script), str(folder), str(checkpoints)]
        # each run orders a set of strings its own way, as new processes do
        env["PYTHONHASHSEED"] = str(hash_seed)
        return subprocess.run(
            argv + [str(cache), mode], capture_output=True, text=True, env=env,
            timeout=300,
        )  # fmt: skip

    first = run("stop", 1)
    assert first.returncode == 130, first.stderr[-2000:]
    assert len(list(checkpoints.iterdir())) == 1
    # a function the lambda calls through another, edited before the rerun:
    # that fit starts again; the first fit's checkpoint is left for the
    # script as it was
    script.write_text(_SCRIPT.replace("ImageOps.mirror(", "ImageOps.flip("))
    edited = run("again", 2)
    assert edited.returncode == 0, edited.stderr[-2000:]
    assert "going on from the checkpoint" not in edited.stdout + edited.stderr
    assert "epochs 2" in edited.stdout
    assert len(list(checkpoints.iterdir())) == 1
    script.write_text("# a comment moves no code\n" + _SCRIPT)
    again = run("again", 3)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "going on from the checkpoint" in again.stdout + again.stderr
    assert "epochs 2" in again.stdout
    assert not list(checkpoints.iterdir())
