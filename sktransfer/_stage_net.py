"""The skorch net of a stage and its callbacks.

skorch runs each stage's training loop. :class:`_StageNet` gives the
optimizer one parameter group per layer group, takes per-sample weighted
losses from the task, and lets early stopping end a stage while a Ctrl-C
stops the fit. The schedule is the public :class:`~sktransfer.SGDR`
callback; small callbacks record the rates, the task's validation score and
the snapshots at the ends of cycles, serve augmented copies and show
progress. The learning-rate sweeps run in the same net
(:func:`training_net`) with :class:`~sktransfer.callbacks.LRSweep` in
place of the schedule.
:func:`history_rows` turns the net's history into ``history_`` records.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, EarlyStopping
from skorch.dataset import unpack_data
from skorch.helper import predefined_split
from skorch.utils import TeeGenerator
from torch import nn

from ._devices import autocast_dtype
from ._ema import WeightAverage
from ._finetune import CopiesDataset, FeatureLoader, ImageLoader, adamw_options
from ._mixing import BatchMixer
from ._threads import decode_plan
from .callbacks import SGDR, LRSweep
from .exceptions import DivergedError


class _StageNet(NeuralNet):
    """A skorch net with one optimizer parameter group per layer group,
    weighted per-sample losses (the task's), mixed precision, and Ctrl-C
    passed on.

    Why a subclass of skorch's net and not skorch as it is: skorch gives
    every parameter group the same options through ``optimizer__...`` and
    has no per-sample weights in its criterion; it has no autocast or
    gradient scaling of its own (only through the accelerate library); it
    swallows a Ctrl-C in ``partial_fit`` and ends training on early stopping
    with the same exception. The overrides below are those differences; the
    loop itself (batches, validation, history, callbacks) is skorch's."""

    def __init__(
        self,
        *args,
        sample_loss=None,
        train_loss=None,
        param_groups=None,
        amp_dtype=None,
        ema_decay=None,
        mixer=None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.mixer = mixer
        self.sample_loss = sample_loss
        self.train_loss = train_loss
        self.param_groups = param_groups
        self.amp_dtype = amp_dtype
        self.ema_decay = ema_decay

    def infer(self, x, **fit_params):
        # autocast where the extractor chose it (bf16 on hardware with native
        # bf16, fp16 on GPUs without it), also for the head on features: ~40%
        # faster per step there with bf16, same held-out accuracy and log loss
        # (benchmarks.md); the loss is computed in float32 (see get_loss);
        # outputs leave in float32, so that the user's callbacks
        # (EpochScoring) can turn them into numpy
        if self.amp_dtype is None:
            return super().infer(x, **fit_params)
        device = torch.device(self.device).type
        with torch.autocast(device, dtype=self.amp_dtype):
            out = super().infer(x, **fit_params)
        return out.float() if out.is_floating_point() else out

    def initialize_optimizer(self, *args, **kwargs):
        _, options = self.get_params_for_optimizer("optimizer", [])
        options.pop("lr", None)
        groups = [{"params": p, "lr": lr} for p, lr in self.param_groups]
        self.optimizer_ = self.optimizer(groups, **options)
        # fp16's narrow range: small gradients would underflow to zero, so
        # the loss is scaled before backward and the gradients unscaled
        # before anyone reads them; a step whose gradients overflowed is
        # skipped and the scale lowered (torch.amp.GradScaler)
        self.scaler_ = None
        if self.amp_dtype == torch.float16:
            self.scaler_ = _grad_scaler(torch.device(self.device).type)
        return self

    def train_step_single(self, batch, **fit_params):
        if self.scaler_ is None:
            return super().train_step_single(batch, **fit_params)
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        self.scaler_.scale(loss).backward()
        self.scaler_.unscale_(self.optimizer_)  # callbacks see true gradients
        return {"loss": loss, "y_pred": y_pred}

    # -- the weights' moving average (ema_decay; see _ema) ----------------------

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        super().on_train_begin(net, X=X, y=y, **kwargs)
        self.ema_ = None
        if self.ema_decay is not None:
            self.ema_ = WeightAverage(self.module_, self.ema_decay)

    def on_epoch_begin(self, net, **kwargs):
        super().on_epoch_begin(net, **kwargs)
        if self.ema_ is not None:
            self.ema_.take_out(self.module_)

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        super().run_single_epoch(iterator, training, prefix, step_fn, **fit_params)
        if training and self.ema_ is not None:
            self.ema_.put_in(self.module_)  # validated, and kept, averaged

    def train_step(self, batch, **fit_params):
        if self.mixer is not None:
            # mixed where the network runs: on a GPU the uint8 batch moves
            # once, from pinned memory, and is blended there (see _mixing)
            x, (target, weight) = batch
            device = torch.device(self.device)
            x = x.to(device, non_blocking=True)
            batch = self.mixer((x, (target.to(device), weight.to(device))))
        step = self._scaled_train_step(batch, **fit_params)
        if self.ema_ is not None:
            self.ema_.update(self.module_)
        return step

    def _scaled_train_step(self, batch, **fit_params):
        if self.scaler_ is None:
            return super().train_step(batch, **fit_params)
        # skorch's step, with the scaler's step (skipped when a gradient
        # overflowed) in place of the optimizer's; AdamW needs no closure
        self.optimizer_.zero_grad(set_to_none=True)
        step = self.train_step_single(batch, **fit_params)
        self.notify(
            "on_grad_computed",
            named_parameters=TeeGenerator(self.get_all_learnable_params()),
            batch=batch,
            training=True,
        )
        self.scaler_.step(self.optimizer_)
        self.scaler_.update()
        return step

    def get_loss(self, y_pred, y_true, X=None, training=False):
        # the loaders move only the inputs (skorch's infer); targets and
        # weights join the outputs' device here (a no-op on the CPU)
        target, weight = (t.to(y_pred.device) for t in y_true)
        loss_of = self.sample_loss
        if training and self.train_loss is not None:
            loss_of = self.train_loss  # label smoothing; validation measures
        losses = loss_of(y_pred.float(), target)
        loss = (losses * weight).sum() / weight.sum().clamp_min(1e-12)
        if not torch.isfinite(loss):
            raise DivergedError(f"the loss became {loss.item()}")
        return loss

    def notify(self, method_name, **cb_kwargs):
        # skorch's EarlyStopping (the package's, or one of the user's) ends
        # training by raising KeyboardInterrupt: here that ends the stage,
        # once every callback has seen the epoch's end, and a KeyboardInterrupt
        # from anywhere else (the user's Ctrl-C) goes on up
        getattr(self, method_name)(self, **cb_kwargs)
        stop = False
        for _, callback in self.callbacks_:
            try:
                getattr(callback, method_name)(self, **cb_kwargs)
            except KeyboardInterrupt:
                if not _ends_stage(callback, method_name):
                    raise
                stop = True
        if stop:
            raise _StopTraining()

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        # skorch's own partial_fit swallows KeyboardInterrupt and returns
        # normally; a fit interrupted by the user must stop, not go on with
        # a half-trained model.
        if not self.initialized_:
            self.initialize()
        self.notify("on_train_begin", X=X, y=y)
        try:
            self.fit_loop(X, y, **fit_params)
        except _StopTraining:
            pass
        self.notify("on_train_end", X=X, y=y)
        return self

    def go_on(self, X, stopping: bool):
        """The rest of a stage whose state was put back into this net after
        its last epoch (see ``_engine``): the remaining epochs, unless early
        stopping had ended it, then the end of training."""
        for name, callback in self.callbacks_:
            if name == "progress":
                callback.on_train_begin(self)
        epochs = self.max_epochs - len(self.history_)
        if epochs > 0 and not stopping:
            try:
                self.fit_loop(X, None, epochs=epochs)
            except _StopTraining:
                pass
        self.notify("on_train_end", X=X, y=None)
        return self


def _grad_scaler(device_type: str):
    """A gradient scaler starting at 2**10, not torch's 2**16: every stage
    and sweep starts a new one, and a stage of a small data set has a few
    steps per epoch, so any steps skipped while a scale too high for its
    gradients halves down would be its first, highest-rate ones. (torch
    before 2.3 has only the CUDA scaler.)"""
    scaler = getattr(torch.amp, "GradScaler", None)
    if scaler is None:
        return torch.cuda.amp.GradScaler(init_scale=2.0**10)
    return scaler(device_type, init_scale=2.0**10)


class _StopTraining(Exception):
    """Early stopping ended the stage, or a sweep is over (not the user: see
    ``_StageNet.notify``)."""


def _ends_stage(callback, method_name) -> bool:
    """Whether a KeyboardInterrupt from ``callback`` is skorch's early
    stopping ending training (its patience is used up) or a sweep that is
    over, not a Ctrl-C."""
    if isinstance(callback, LRSweep):
        return method_name == "on_batch_end" and callback.done_
    return (
        method_name == "on_epoch_end"
        and isinstance(callback, EarlyStopping)
        and callback.misses_ >= callback.patience
    )


def fresh_copy(callback):
    """A deep copy of a user's callback for one stage, so that nothing it
    learns carries over to the next stage or fit. One that cannot be deep
    copied (it holds an open writer or a lock) is copied shallowly: the copy
    shares what it holds, and skorch's ``initialize`` resets its state."""
    try:
        return copy.deepcopy(callback)
    except Exception:  # TypeError: cannot pickle '_thread.lock' object, ...
        return copy.copy(callback)


def stage_net(
    stage,
    model,
    groups,
    lr,
    task,
    settings,
    train_set,
    valid_set,
    precision,
    blocks=None,
    on_epoch=None,
):
    """The skorch net that trains ``stage`` at top rate ``lr`` on
    ``train_set``, with its callbacks: the stage's schedule, snapshots,
    validation score, early stopping and progress, then fresh copies of the
    user's. Returns ``(net, snapshots)``; ``snapshots.states`` holds the
    :class:`Snapshot` kept at the end of each of the stage's cycles.
    ``blocks`` (the body's parameters block by block) is needed where the
    stage has rates per block (``layer_decay``)."""
    param_groups = optimizer_groups(stage, lr, groups, blocks)
    steps = steps_per_epoch(len(train_set), settings.batch_size)
    snapshots = _Snapshots(stage, steps, model)
    callbacks = [
        *_callbacks(stage, steps, task, valid_set, settings),
        ("snapshots", snapshots),
        *[(name, fresh_copy(cb)) for name, cb in settings.callbacks],
    ]
    if on_epoch is not None:  # last: it saves what the others did
        callbacks.append(("fit_checkpoint", _EpochCheckpoint(on_epoch)))
    net = training_net(
        model.head if stage.on_features else model,
        param_groups,
        task.loss,
        train_set,
        valid_set,
        callbacks,
        train_loss=task.train_loss,
        epochs=stage.epochs,
        batch_size=settings.batch_size,
        weight_decay=settings.weight_decay,
        on_features=stage.on_features,
        precision=precision,
        ema_decay=settings.ema_decay,
        mixer=_mixer(settings, task),
    )
    return net, snapshots


def _mixer(settings, task):
    """The stage's :class:`~._mixing.BatchMixer`, or None without mixing."""
    if not (settings.mixup or settings.cutmix):
        return None
    return BatchMixer(settings.mixup, settings.cutmix, task.soft_target)


def optimizer_groups(stage, lr, groups, blocks=None) -> list[tuple]:
    """``(params, rate)`` of each optimizer group of ``stage`` at top rate
    ``lr``: the head alone in stages on features; else every layer group at
    its ratio, or, with ``layer_decay``, every body block at its own rate
    (``blocks``, first to last) and the head at ``lr``'s head ratio. Frozen
    groups are listed too: their parameters get no gradient."""
    lrs = stage.group_lrs(lr)
    if stage.on_features:
        return [(groups[-1], lrs[-1])]
    if stage.layer_decay is None:
        return list(zip(groups, lrs, strict=True))
    ratios = stage.block_ratios(len(blocks))
    return [(p, lr * r) for p, r in zip(blocks, ratios, strict=True)] + [
        (groups[-1], lrs[-1])
    ]


def training_net(
    module,
    param_groups,
    loss,
    train_set,
    valid_set,
    callbacks,
    *,
    epochs,
    batch_size,
    weight_decay,
    on_features,
    precision,
    train_loss=None,
    ema_decay=None,
    mixer=None,
):
    """The one training loop of the package: a :class:`_StageNet` training
    ``module`` for ``epochs`` on ``train_set`` with AdamW, one parameter
    group ``(params, lr)`` per entry of ``param_groups``; ``loss(outputs,
    target)`` gives per-sample losses, weighted by the data's sample weights;
    ``train_loss``, when given, replaces it in training steps (validation
    keeps ``loss``). With ``ema_decay``, the net keeps a moving average of
    the module's weights (see :mod:`._ema`); a ``mixer`` mixes the training
    batches (see :mod:`._mixing`).
    The stages and the learning-rate sweeps differ only in their callbacks (a
    stage's schedule and snapshots; a sweep's exponential rate and its
    stop)."""
    device = next(module.parameters()).device
    n_train = len(train_set)
    return _StageNet(
        module,
        sample_loss=loss,
        train_loss=train_loss,
        ema_decay=ema_decay,
        mixer=mixer,
        param_groups=param_groups,
        amp_dtype=autocast_dtype(precision),
        criterion=nn.Identity,  # the task computes the loss (get_loss)
        optimizer=torch.optim.AdamW,
        optimizer__weight_decay=weight_decay,
        **{f"optimizer__{k}": v for k, v in adamw_options().items()},
        lr=param_groups[-1][1],
        max_epochs=epochs,
        batch_size=batch_size,
        train_split=None if valid_set is None else predefined_split(valid_set),
        iterator_train__shuffle=True,
        iterator_train__drop_last=n_train % batch_size == 1,
        **_loaders(on_features, device),
        device=str(device),
        predict_nonlinearity=None,
        callbacks=callbacks,
        verbose=0,
    )


def _loaders(on_features, device) -> dict:
    """Stages on features gather whole batches at once; image stages decode
    in a pool of threads (see :mod:`._threads`)."""
    if on_features:
        return {"iterator_train": FeatureLoader, "iterator_valid": FeatureLoader}
    plan = decode_plan(device)
    pin = device.type == "cuda"
    return {
        "iterator_train": ImageLoader,
        "iterator_valid": ImageLoader,
        "iterator_train__decode_plan": plan,
        "iterator_valid__decode_plan": plan,
        "iterator_train__pin_memory": pin,
        "iterator_valid__pin_memory": pin,
    }


def steps_per_epoch(n_train, batch_size) -> int:
    steps = n_train // batch_size
    if n_train % batch_size > 1:
        steps += 1
    return max(1, steps)


def _callbacks(stage, steps, task, valid_set, settings):
    callbacks = [
        (
            "sgdr",
            SGDR(
                cycle_len=stage.cycle_len,
                cycle_mult=stage.cycle_mult,
                n_cycles=stage.n_cycles,
                steps_per_epoch=steps,
                warmup=stage.warmup,
            ),
        ),
        ("lrs", _RecordRates()),
        ("copies", _NextCopy()),
    ]
    if valid_set is not None:
        callbacks.append(("valid_score", _ValidScore(task)))
        if settings.early_stopping:
            stop = EarlyStopping(
                monitor="valid_loss",
                patience=settings.n_iter_no_change,
                threshold=settings.tol,
                threshold_mode="abs",
                load_best=True,
            )
            callbacks.append(("early_stopping", stop))
    if settings.verbose:
        callbacks.append(("progress", _Progress(stage, steps, settings.verbose)))
    return callbacks


class _EpochCheckpoint(Callback):
    """Calls ``save(net, stopping)`` at the end of every epoch, ``stopping``
    saying whether early stopping ends the stage there."""

    def __init__(self, save):
        self.save = save

    def on_epoch_end(self, net, **kwargs):
        stopping = any(_ends_stage(cb, "on_epoch_end") for _, cb in net.callbacks_)
        self.save(net, stopping=stopping)


class _RecordRates(Callback):
    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if training:
            net.history.record_batch(
                "lrs", [g["lr"] for g in net.optimizer_.param_groups]
            )


class _ValidScore(Callback):
    """The task's validation score, from the outputs skorch already computed
    for the validation loss (no second pass over the validation set)."""

    def __init__(self, task):
        self.task = task

    def on_epoch_begin(self, net, **kwargs):
        self.outputs_, self.targets_ = [], []

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        if not training and y_pred is not None:
            self.outputs_.append(y_pred.detach().float().cpu().numpy())
            self.targets_.append(batch[1][0].cpu().numpy())

    def on_epoch_end(self, net, **kwargs):
        if self.outputs_:
            score = self.task.validation_score(
                np.concatenate(self.outputs_), np.concatenate(self.targets_)
            )
            net.history.record(self.task.score_name, score)


class _NextCopy(Callback):
    """Serve the next augmented copy on every epoch."""

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        if isinstance(dataset_train, CopiesDataset):
            dataset_train.epoch = len(net.history) - 1  # this stage's epochs


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The weights of the model at the end of a cycle: its head's, and its
    body's when the stage trains it (None: the body did not change)."""

    head: dict
    body: dict | None = None


class _Snapshots(Callback):
    """The model's weights at the end of every SGDR cycle of a stage
    (kept in memory: cycles may end inside an epoch, where skorch's
    Checkpoint does not act)."""

    def __init__(self, stage, steps_per_epoch, model):
        self.stage = stage
        self.steps_per_epoch = steps_per_epoch
        self.model = model
        self.states = []

    def on_train_begin(self, net, **kwargs):
        self.states, self.step_ = [], 0
        # the cycle ends of the stage's schedule (its SGDR callback, which
        # comes first among the callbacks)
        ends = dict(net.callbacks_)["sgdr"].cycle_ends_
        self.ends_ = set(ends) if self.stage.snapshot else set()

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if training:
            self.step_ += 1
            if self.step_ in self.ends_:
                body = None
                if self.stage.trains_body:
                    body = _state_of(self.model.body)
                self.states.append(Snapshot(_state_of(self.model.head), body))


def _state_of(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class _Progress(Callback):
    """verbose >= 1: a bar per stage (epochs x batches, current loss);
    verbose >= 2: one plain line per epoch (stage, rates, losses)."""

    def __init__(self, stage, steps_per_epoch, verbose):
        self.stage = stage
        self.steps_per_epoch = steps_per_epoch
        self.verbose = verbose

    def on_train_begin(self, net, **kwargs):
        from tqdm.auto import tqdm

        total = self.stage.epochs * self.steps_per_epoch
        self.bar_ = tqdm(total=total, desc=self.stage.name, unit="batch", leave=True)

    def on_batch_end(self, net, batch=None, training=False, loss=None, **kwargs):
        if training:
            self.bar_.update(1)
            if loss is not None:
                self.bar_.set_postfix(loss=f"{loss.item():.4f}", refresh=False)

    def on_epoch_end(self, net, **kwargs):
        if self.verbose < 2:
            return
        row = net.history[-1]
        lrs = row["batches"][0].get("lrs", []) if row["batches"] else []
        parts = [
            f"{self.stage.name} epoch {row['epoch']}/{self.stage.epochs}",
            "lrs " + ",".join(f"{v:.2g}" for v in lrs),
            f"train_loss {row.get('train_loss', float('nan')):.4f}",
        ]
        for key in ("valid_loss", "valid_acc", "valid_f1", "valid_r2"):
            if key in row:
                parts.append(f"{key} {row[key]:.4f}")
        parts.append(f"{row.get('dur', 0.0):.1f}s")
        self.bar_.write("  ".join(parts), file=sys.stderr)

    def on_train_end(self, net, **kwargs):
        self.bar_.close()


#: What skorch records per epoch that ``history_`` holds under its own names.
_SKORCH_KEYS = frozenset(
    {"batches", "epoch", "dur", "train_loss", "valid_loss", "train_loss_best"}
    | {"valid_loss_best", "train_batch_count", "valid_batch_count"}
)


def history_rows(net, stage, task, image_size) -> list[dict]:
    """One ``history_`` record per epoch of the stage; scalars the user's
    callbacks recorded (an ``EpochScoring``'s score) are kept too."""
    rows = []
    for row in net.history:
        batches = row.get("batches") or [{}]
        record = {
            "stage": stage.name,
            "epoch": int(row["epoch"]),
            "image_size": image_size,
            "lrs": [float(v) for v in batches[0].get("lrs", [])],
            "train_loss": float(row.get("train_loss", math.nan)),
            "valid_loss": float(row.get("valid_loss", math.nan)),
            task.score_name: float(row.get(task.score_name, math.nan)),
            "seconds": float(row.get("dur", math.nan)),
        }
        for key, value in row.items():
            if key in _SKORCH_KEYS or key in record:
                continue
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, (bool, int, float, str)):
                record[key] = value
        rows.append(record)
    return rows
