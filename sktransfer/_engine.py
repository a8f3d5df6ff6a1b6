"""The recipe engine: builds body + head + layer groups once, runs stages.

The estimators are fronts: they check the parameters and ``y``, turn the
images into a :class:`TrainingSet` and hand it with a plan (see
:mod:`._plan`) and a task (see :mod:`._tasks`) to :func:`train`. skorch runs
each stage's training loop; the schedule is skorch's ``LRScheduler`` over a
``LambdaLR`` of the pure SGDR function. Learning-rate sweeps live here too,
so the public :class:`~sktransfer.LRFinder` depends on the engine and the
engine on nothing above it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, EarlyStopping, LRScheduler
from skorch.helper import predefined_split
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ._finetune import (
    CopiesDataset,
    FeatureDataset,
    FeatureLoader,
    ImageDataset,
    ImageLoader,
    TransferNet,
    adamw_options,
    group_parameters,
    set_trainable,
)
from ._head import Head, InputNorm, prepare_batchnorm
from ._plan import N_BODY_GROUPS, Stage
from ._probe import (
    floor_variance,
    floored,
    input_statistics,
    linear_probe,
    set_statistics,
)
from ._seeding import seeded
from ._sweep import sweep_rate
from ._threads import decode_plan, small_work_threads
from ._transforms import AugmentedView
from .callbacks import sgdr_schedule

#: Rates used when a sweep cannot suggest one (it never diverged, or it had
#: too few batches to be read): the constructor defaults.
FALLBACK_LRS = {"head": 1e-3, "unfrozen": 1e-4}


class DivergedError(ValueError, FloatingPointError):
    """Training produced a non-finite loss or output."""


@dataclasses.dataclass
class TrainingSet:
    """Everything a fit trains on, checked once by the front.

    ``targets`` is the task's target tensor for every image, ``weights`` a
    float32 tensor (ones when the user gave none), ``train``/``valid`` index
    arrays (``valid`` may be None), ``features`` the plain-view features of
    every image when a stage needs them (filled lazily by
    :meth:`plain_features`).
    """

    extractor: object
    sources: list
    fingerprints: list
    targets: torch.Tensor
    weights: torch.Tensor
    train: np.ndarray
    valid: np.ndarray | None
    extract_batch_size: int = 32
    verbose: int = 0
    features: np.ndarray | None = None

    def augmented_features(self, rows, n_copies, augment, settings) -> np.ndarray:
        """Features ``(n_copies, len(rows), n_features)`` of fixed augmented
        copies of the images ``rows`` (cached like the plain view)."""
        views = [AugmentedView(i, augment, settings.max_zoom) for i in range(n_copies)]
        return self.extractor.transform(
            [self.sources[i] for i in rows],
            views=views,
            batch_size=self.extract_batch_size,
            verbose=self.verbose,
            fingerprints=[self.fingerprints[i] for i in rows],
        )

    def plain_features(self) -> np.ndarray:
        if self.features is None:
            self.features = self.extractor.transform(
                self.sources,
                batch_size=self.extract_batch_size,
                verbose=self.verbose,
                fingerprints=self.fingerprints,
            )[0]
        return self.features

    def stage_dataset(self, stage, rows, settings, seed, augment):
        """The features, augmented copies' features or images of ``rows`` for
        ``stage`` (``augment=None``: the plain view)."""
        if stage.input == "copies" and augment is not None:
            copies = self.augmented_features(rows, stage.copies, augment, settings)
            return CopiesDataset(copies, self.targets[rows], self.weights[rows])
        if stage.on_features:
            return FeatureDataset(
                self.plain_features()[rows], self.targets[rows], self.weights[rows]
            )
        return ImageDataset(
            [self.sources[i] for i in rows],
            self.targets[rows],
            self.extractor.preprocessing,
            augment=augment,
            max_zoom=settings.max_zoom,
            seed=seed,
            weights=self.weights[rows],
        )


@dataclasses.dataclass
class Settings:
    """The training settings shared by every stage."""

    batch_size: int = 64
    weight_decay: float = 1e-2
    max_zoom: float = 1.1
    early_stopping: bool = False
    n_iter_no_change: int = 3
    tol: float = 1e-4
    #: the user's skorch callbacks, ``(name, callback)``; every stage's net
    #: gets deep copies of them
    callbacks: list = dataclasses.field(default_factory=list)
    verbose: int = 0


@dataclasses.dataclass
class Result:
    """What :func:`train` returns: the model, the history rows, the rates
    found by sweeps, and the snapshots of the last stage."""

    model: TransferNet
    groups: list
    history: list
    rates: dict
    snapshots: list
    tuned: bool


def new_head(n_features, n_outputs, hidden_sizes, dropout, seed) -> Head:
    with seeded(seed):
        return Head(n_features, n_outputs, tuple(hidden_sizes), dropout)


def build_model(extractor, head) -> tuple[TransferNet, list]:
    """Body + head as one module, and its layer groups' parameters (early,
    middle, late, head). The one place where they are assembled."""
    pre = extractor.preprocessing
    model = TransferNet(extractor.backbone.body, head, pre.mean, pre.std)
    model.to(extractor.device)
    return model, group_parameters(model, extractor.backbone.groups)


def train(plan, data: TrainingSet, head, task, settings: Settings, seed) -> Result:
    """Run every stage of ``plan`` on ``data``, starting from ``head`` and the
    extractor's body (both trained in place: pass copies).

    A rate of ``"auto"`` is found by a sweep when its first stage starts:
    the head's rate on cached features (cheap, and reused by every head
    stage), the unfrozen rate on images with the stage's group ratios.
    """
    model, groups = build_model(data.extractor, head)
    history, rates, snapshots = [], {}, []
    probed = False
    try:
        for stage in plan:
            if stage.name == "probe":
                history.append(run_probe(stage, model.head, data, task, seed))
                probed = True
                continue
            if not probed and stage.input == "features":
                # a warm start from a probed head: its input statistics
                # again from the features it now trains on (the same ones
                # unless the image size changed), with the probe's scaling
                probed = refresh_probe_statistics(model.head, data)
            lr = _stage_rate(stage, rates, model, groups, data, task, settings, seed)
            rows, snapshots = run_stage(
                stage, lr, model, groups, data, task, settings, seed, probed
            )
            history.extend(rows)
    finally:
        set_trainable(groups, N_BODY_GROUPS)
        model.eval()
    for module in model.head.modules():
        if isinstance(module, InputNorm):
            module.frozen = False
        if isinstance(module, nn.BatchNorm1d):
            floor_variance(module)
    snapshots = [_floored(state) for state in snapshots]
    tuned = any(stage.trains_body for stage in plan)
    return Result(model, groups, history, rates, snapshots, tuned)


def _stage_rate(stage, rates, model, groups, data, task, settings, seed) -> float:
    """The stage's top rate: its own, or the rate a sweep found for
    ``"auto"`` (swept when the first stage that needs it starts, and kept in
    ``rates`` for the stages after it)."""
    if stage.lr != "auto":
        return stage.lr
    key = "unfrozen" if stage.trains_body else "head"
    if key not in rates:
        rates[key] = sweep_rate(
            stage, model, groups, data, task, settings, seed, FALLBACK_LRS[key]
        )
    return rates[key]


def run_probe(stage: Stage, head, data: TrainingSet, task, seed) -> dict:
    """Fit the head as a linear probe on the cached plain features of the
    training images (see :mod:`._probe`); returns its history row."""
    start = time.perf_counter()
    features = data.plain_features()
    train = data.train
    with small_work_threads(True):
        info = linear_probe(
            head,
            features[train],
            data.targets[train],
            data.weights[train].numpy(),
            task,
            seed,
        )
        valid_loss = score = math.nan
        if data.valid is not None:
            valid_loss, score = _head_validation(head, features, data, task)
    return {
        "stage": stage.name,
        "epoch": 1,
        "image_size": data.extractor.preprocessing.crop_size,
        "lrs": [],
        "train_loss": info["train_loss"],
        "valid_loss": valid_loss,
        task.score_name: score,
        "seconds": time.perf_counter() - start,
        "penalty": info["penalty"],
        "scaling": info["scaling"],
    }


def refresh_probe_statistics(head, data: TrainingSet) -> bool:
    """For a head a probe started: set its input statistics from the plain
    features of the training images, scaled as the probe chose. False (and
    nothing done) for any other head."""
    norm = next((m for m in head.modules() if isinstance(m, InputNorm)), None)
    scaling = getattr(norm, "scaling", None)
    if scaling is None:
        return False
    train = data.train
    features = torch.as_tensor(data.plain_features()[train], dtype=torch.float32)
    mean, var = input_statistics(features, data.weights[train])
    if scaling == "common":
        var = torch.full_like(var, float(var.mean()))
    set_statistics(norm, mean, var, identity=False)
    return True


def _head_validation(head, features, data, task) -> tuple[float, float]:
    """Weighted validation loss and the task's score of ``head`` on the
    validation rows' features."""
    rows = data.valid
    head.eval()
    with torch.no_grad():
        raw = head(torch.as_tensor(features[rows])).float()
        target, weight = data.targets[rows], data.weights[rows]
        losses = task.loss(raw, target)
        loss = float((losses * weight).sum() / weight.sum().clamp_min(1e-12))
    return loss, task.validation_score(raw.numpy(), target.numpy())


def run_stage(stage: Stage, lr, model, groups, data, task, settings, seed, probed):
    """Train one stage at top rate ``lr``; returns ``(history rows,
    snapshots)``. After a probe, the head's input statistics (the exact,
    floored ones it set) are kept in the stages on features."""
    on_features = stage.on_features
    # augmented copies move the features from epoch to epoch like images do
    prepare_batchnorm(model.head, stage.input == "features", keep_input=probed)
    set_trainable(groups, stage.trainable_from)
    train_set = data.stage_dataset(stage, data.train, settings, seed, stage.augment)
    valid_set = None
    if data.valid is not None:
        valid_set = data.stage_dataset(stage, data.valid, settings, seed, None)
    with small_work_threads(on_features):
        net = _stage_net(
            stage,
            model,
            groups,
            lr,
            task,
            settings,
            valid_set,
            data.extractor.precision,
        )
        n_train = len(train_set)
        net.set_params(iterator_train__drop_last=n_train % settings.batch_size == 1)
        steps = _steps_per_epoch(n_train, settings.batch_size)
        snapshots = _Snapshots(stage, steps)
        net.callbacks = [
            *_callbacks(stage, steps, task, valid_set, settings),
            ("snapshots", snapshots),
            *[(name, fresh_copy(cb)) for name, cb in settings.callbacks],
        ]
        with seeded(seed):
            net.initialize()
            try:
                net.partial_fit(train_set, None)
            except DivergedError as exc:
                raise DivergedError(_diverged_message(stage, lr, exc)) from None
    return _history_rows(net, stage, task, data), snapshots.states


class _NextCopy(Callback):
    """Serve the next augmented copy on every epoch."""

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        if isinstance(dataset_train, CopiesDataset):
            dataset_train.epoch = len(net.history) - 1  # this stage's epochs


class _StageNet(NeuralNet):
    """A skorch net with one optimizer parameter group per layer group,
    weighted per-sample losses from the task, and Ctrl-C passed on."""

    def __init__(self, *args, task=None, param_groups=None, bf16=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.task = task
        self.param_groups = param_groups
        self.bf16 = bf16

    def infer(self, x, **fit_params):
        # bf16 autocast where the extractor chose it (hardware with native
        # bf16), also for the head on features: ~40% faster per step there,
        # same held-out accuracy and log loss (benchmarks.md); the loss is
        # computed in float32 (see get_loss); outputs leave in float32, so
        # that the user's callbacks (EpochScoring) can turn them into numpy
        device = torch.device(self.device).type
        with torch.autocast(device, dtype=torch.bfloat16, enabled=self.bf16):
            out = super().infer(x, **fit_params)
        return out.float() if self.bf16 and out.is_floating_point() else out

    def initialize_optimizer(self, *args, **kwargs):
        _, options = self.get_params_for_optimizer("optimizer", [])
        options.pop("lr", None)
        groups = [{"params": p, "lr": lr} for p, lr in self.param_groups]
        self.optimizer_ = self.optimizer(groups, **options)
        return self

    def get_loss(self, y_pred, y_true, X=None, training=False):
        target, weight = y_true
        losses = self.task.loss(y_pred.float(), target)
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
            raise _StopStage()

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        # skorch's own partial_fit swallows KeyboardInterrupt and returns
        # normally; a fit interrupted by the user must stop, not go on with
        # a half-trained model.
        if not self.initialized_:
            self.initialize()
        self.notify("on_train_begin", X=X, y=y)
        try:
            self.fit_loop(X, y, **fit_params)
        except _StopStage:
            pass
        self.notify("on_train_end", X=X, y=y)
        return self


class _StopStage(Exception):
    """Early stopping ended the stage (not the user: see ``_StageNet.notify``)."""


def fresh_copy(callback):
    """A deep copy of a user's callback for one stage, so that nothing it
    learns carries over to the next stage or fit. One that cannot be deep
    copied (it holds an open writer or a lock) is copied shallowly: the copy
    shares what it holds, and skorch's ``initialize`` resets its state."""
    try:
        return copy.deepcopy(callback)
    except Exception:  # TypeError: cannot pickle '_thread.lock' object, ...
        return copy.copy(callback)


def _ends_stage(callback, method_name) -> bool:
    """Whether a KeyboardInterrupt from ``callback`` is skorch's early
    stopping ending training (its patience is used up), not a Ctrl-C."""
    return (
        method_name == "on_epoch_end"
        and isinstance(callback, EarlyStopping)
        and callback.misses_ >= callback.patience
    )


def _stage_net(stage, model, groups, lr, task, settings, valid_set, precision):
    module = model.head if stage.on_features else model
    device = next(model.head.parameters()).device
    lrs = stage.group_lrs(lr)
    if stage.on_features:
        param_groups = [(groups[-1], lrs[-1])]
    else:
        param_groups = list(zip(groups, lrs, strict=True))
    return _StageNet(
        module,
        task=task,
        param_groups=param_groups,
        bf16=precision == "bf16",
        criterion=nn.Identity,  # the task computes the loss (get_loss)
        optimizer=torch.optim.AdamW,
        optimizer__weight_decay=settings.weight_decay,
        **{f"optimizer__{k}": v for k, v in adamw_options().items()},
        lr=lrs[-1],
        max_epochs=stage.epochs,
        batch_size=settings.batch_size,
        train_split=None if valid_set is None else predefined_split(valid_set),
        iterator_train__shuffle=True,
        **_loaders(stage, device),
        device=str(device),
        predict_nonlinearity=None,
        callbacks="disable",
        verbose=0,
    )


def _loaders(stage, device) -> dict:
    """Stages on features gather whole batches at once; image stages decode
    in a pool of threads (see :mod:`._threads`)."""
    if stage.on_features:
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


def _steps_per_epoch(n_train, batch_size) -> int:
    steps = n_train // batch_size
    if n_train % batch_size > 1:
        steps += 1
    return max(1, steps)


def _callbacks(stage, steps, task, valid_set, settings):
    factors, _ = stage_schedule(stage, steps)
    last = len(factors) - 1
    callbacks = [
        (
            "sgdr",
            LRScheduler(
                policy=LambdaLR,
                lr_lambda=lambda step: float(factors[min(step, last)]),
                step_every="batch",
                event_name=None,
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


def stage_schedule(stage: Stage, steps_per_epoch: int):
    """``(factors, cycle_ends)`` of a stage: its SGDR cycles stretched to
    fill its epochs."""
    return sgdr_schedule(
        steps_per_epoch * stage.epochs,
        steps_per_epoch=steps_per_epoch,
        cycle_len=stage.cycle_len,
        cycle_mult=stage.cycle_mult,
        n_cycles=stage.n_cycles,
    )


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


class _Snapshots(Callback):
    """The model's weights at the end of every SGDR cycle of a stage
    (kept in memory: cycles may end inside an epoch, where skorch's
    Checkpoint does not act)."""

    def __init__(self, stage, steps_per_epoch):
        self.stage = stage
        self.steps_per_epoch = steps_per_epoch
        self.states = []

    def on_train_begin(self, net, **kwargs):
        self.states, self.step_ = [], 0
        _, ends = stage_schedule(self.stage, self.steps_per_epoch)
        self.ends_ = set(ends) if self.stage.snapshot else set()

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if training:
            self.step_ += 1
            if self.step_ in self.ends_:
                self.states.append(_state_of(net.module_))


def _floored(state: dict) -> dict:
    """A snapshot's state with its head's BatchNorm variances floored as
    :func:`._probe.floor_variance` floors the model's (the body's pretrained
    statistics are left as they are)."""
    out = dict(state)
    for key, value in state.items():
        if key.endswith("running_var") and not key.startswith("body."):
            out[key] = floored(value)
    return out


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


def _history_rows(net, stage, task, data) -> list[dict]:
    """One ``history_`` record per epoch of the stage; scalars the user's
    callbacks recorded (an ``EpochScoring``'s score) are kept too."""
    rows = []
    for row in net.history:
        batches = row.get("batches") or [{}]
        record = {
            "stage": stage.name,
            "epoch": int(row["epoch"]),
            "image_size": data.extractor.preprocessing.crop_size,
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


def _diverged_message(stage, lr, exc) -> str:
    return (
        f"training diverged in the {stage.name!r} stage ({exc}) at a learning "
        f"rate of {lr:.3g} for the {'unfrozen groups' if stage.trains_body else 'head'}"
        f". The rate is probably too high: lower "
        f"{'unfrozen_lr' if stage.trains_body else 'lr'} (or use 'auto'). If it "
        "is not, the inputs are not finite: check the 'preprocessing' mean/std "
        "and the weights file. The previous model, if any, is kept."
    )
