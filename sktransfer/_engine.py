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

import contextlib
import copy
import dataclasses
import math
import sys
import time
import warnings

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, EarlyStopping, LRScheduler
from skorch.helper import predefined_split
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset, default_collate

from ._finetune import (
    ImageDataset,
    ImageLoader,
    TransferNet,
    adamw_options,
    group_parameters,
)
from ._head import Head, InputNorm
from ._plan import N_BODY_GROUPS, Stage
from ._probe import (
    floor_variance,
    floored,
    input_statistics,
    linear_probe,
    set_statistics,
)
from ._threads import decode_plan, decoded_batches
from ._transforms import AugmentedView
from .callbacks import sgdr_schedule
from .exceptions import DivergedError

#: Rates used when a sweep cannot suggest one (it never diverged, or it had
#: too few batches to be read): the constructor defaults.
FALLBACK_LRS = {"head": 1e-3, "unfrozen": 1e-4}


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
            lr = stage.lr
            if lr == "auto":
                key = "unfrozen" if stage.trains_body else "head"
                if key not in rates:
                    rates[key] = sweep_rate(
                        stage, model, groups, data, task, settings, seed
                    )
                lr = rates[key]
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
    _prepare_head_batchnorm(model.head, stage.input == "features", keep_input=probed)
    set_trainable(groups, stage.trainable_from)
    train_set = _dataset(stage, data, data.train, settings, seed, stage.augment)
    valid_set = None
    if data.valid is not None:
        valid_set = _dataset(stage, data, data.valid, settings, seed, None)
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


def _dataset(stage, data, rows, settings, seed, augment):
    """The features, augmented copies' features or images of ``rows`` for
    ``stage`` (``augment=None``: the plain view)."""
    if stage.input == "copies" and augment is not None:
        copies = data.augmented_features(rows, stage.copies, augment, settings)
        return CopiesDataset(copies, data.targets[rows], data.weights[rows])
    if stage.on_features:
        return FeatureDataset(
            data.plain_features()[rows], data.targets[rows], data.weights[rows]
        )
    return ImageDataset(
        [data.sources[i] for i in rows],
        data.targets[rows],
        data.extractor.preprocessing,
        augment=augment,
        max_zoom=settings.max_zoom,
        seed=seed,
        weights=data.weights[rows],
    )


class FeatureDataset(Dataset):
    """Precomputed features with targets and sample weights."""

    def __init__(self, features, targets, weights):
        self.x = torch.as_tensor(np.ascontiguousarray(features))
        self.targets = targets
        self.weights = weights

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        # ``i`` may be a tensor of rows: a whole mini-batch at once
        return self.x[i], (self.targets[i], self.weights[i])


class FeatureLoader(DataLoader):
    """The data loader of stages on features: each mini-batch is gathered
    with one index operation instead of collating items one by one (a head
    step on features is a millisecond; per-item collation cost as much)."""

    def __iter__(self):
        for rows in self.batch_sampler:
            yield self.dataset[torch.as_tensor(rows)]


class CopiesDataset(FeatureDataset):
    """Features of ``k`` augmented copies of every sample, ``(k, n, f)``:
    epoch ``e`` serves copy ``e % k`` (:class:`_NextCopy` turns the page)."""

    def __init__(self, copies, targets, weights):
        super().__init__(copies, targets, weights)
        self.epoch = 0

    def __len__(self):
        return self.x.shape[1]

    def __getitem__(self, i):
        return self.x[self.epoch % len(self.x), i], (self.targets[i], self.weights[i])


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
        param_groups = list(zip(groups, lrs))
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


def _prepare_head_batchnorm(head, on_features, keep_input=False) -> None:
    """On precomputed features the head's BatchNorm averages every batch of
    the stage (exact after one epoch on a fixed distribution) and forgets
    statistics of other features (another image size, a warm start). On
    images the features move with the augmentation and, unfrozen, with the
    body: track recent batches. ``keep_input`` keeps the statistics of the
    head's first BatchNorm (set by a probe from every training image) in
    stages on features."""
    for module in head.modules():
        if not isinstance(module, nn.BatchNorm1d):
            continue
        if isinstance(module, InputNorm):
            module.frozen = keep_input and on_features
            if module.frozen:
                continue
        if on_features:
            module.reset_running_stats()
            module.momentum = None
        else:
            module.momentum = 0.1


def set_trainable(groups, first_trainable: int) -> None:
    """Freeze the groups before ``first_trainable``, unfreeze the rest
    (freezing flips ``requires_grad``; the optimizer's groups never change)."""
    for g, params in enumerate(groups):
        for p in params:
            p.requires_grad_(g >= first_trainable)


# -- learning-rate sweeps -------------------------------------------------------


def sweep_rate(stage, model, groups, data, task, settings, seed) -> float:
    """The rate the default rule reads off a sweep for ``stage``; a stated
    fallback (with a warning) when the sweep cannot be read."""
    fallback = FALLBACK_LRS["unfrozen" if stage.trains_body else "head"]
    problem = too_few_samples(len(data.train), settings.batch_size)
    if not problem:
        sweep = stage_sweep(stage, model, groups, data, task, settings, seed)
        problem = sweep_problem(sweep, len(data.train), settings.batch_size)
    if problem:
        name = "unfrozen_lr" if stage.trains_body else "lr"
        warnings.warn(
            f"the learning-rate sweep for {name}={'auto'!r} {problem}; it uses "
            f"the default rate {fallback:g} instead.",
            UserWarning,
            stacklevel=2,
        )
        return fallback
    return float(suggest_lrs(sweep["lrs"], sweep["smoothed"])["valley"])


def stage_sweep(stage, model, groups, data, task, settings, seed, **options):
    """Sweep the rate on a copy of the trainable part of ``model``: the head
    on cached features for a head-only stage, else the unfrozen network on
    augmented images with the stage's ratios between layer groups."""
    head_only = not stage.trains_body
    if head_only:
        copy_of = copy.deepcopy(model.head)
        _prepare_head_batchnorm(copy_of, True)
        param_groups = [(copy_of.parameters(), 1.0)]
        sweep_stage = dataclasses.replace(stage, input="features")
    else:
        copy_of = copy.deepcopy(model)
        copy_groups = _same_groups(groups, model, copy_of)
        set_trainable(copy_groups, stage.trainable_from)
        param_groups = [
            (params, ratio)
            for g, (params, ratio) in enumerate(zip(copy_groups, stage.ratios))
            if g >= stage.trainable_from
        ]
        sweep_stage = stage
    train_set = _dataset(sweep_stage, data, data.train, settings, seed, stage.augment)
    device = next(model.head.parameters()).device
    batches = dataset_batches(train_set, settings.batch_size, seed, decode_plan(device))
    with seeded(seed), small_work_threads(head_only):
        return lr_sweep(
            copy_of,
            param_groups,
            batches,
            task.loss,
            weight_decay=settings.weight_decay,
            device=device,
            **options,
        )


def _same_groups(groups, model, copy_of):
    """``groups`` (parameter lists of ``model``) on its deep copy ``copy_of``:
    a copy lists its parameters in the same order."""
    index = {id(p): i for i, p in enumerate(model.parameters())}
    copied = list(copy_of.parameters())
    return [[copied[index[id(p)]] for p in group] for group in groups]


def too_few_samples(n_train, batch_size) -> str | None:
    if n_train < 2 * batch_size and n_train < 64:
        return (
            f"had only {n_train} training samples (fewer than two batches of "
            f"{batch_size}), too few for a readable loss curve"
        )
    return None


def sweep_problem(sweep, n_train, batch_size) -> str | None:
    """Why a sweep cannot be trusted, or None."""
    steps = len(sweep["lrs"])
    if steps < max(3, sweep.get("num_it", 0) // 5):
        return (
            f"stopped after {steps} of {sweep.get('num_it', steps)} steps (the "
            "loss jumped at once: too few or too noisy batches)"
        )
    problem = too_few_samples(n_train, batch_size)
    if problem:
        return problem
    if not sweep["diverged"]:
        return (
            f"never diverged up to a rate of {sweep['lrs'][-1]:.3g}, so the "
            "curve has no valley to read"
        )
    return None


def lr_sweep(
    model,
    param_groups,
    batches,
    loss_fn,
    *,
    start_lr=1e-7,
    end_lr=10.0,
    num_it=100,
    smooth=0.98,
    diverge=4.0,
    weight_decay=0.0,
    device="cpu",
) -> dict:
    """Train ``model`` on ``batches`` while the base rate sweeps up
    exponentially from ``start_lr`` to ``end_lr``.

    ``param_groups`` is a list of ``(params, ratio)``: each group follows
    the sweep scaled by its ratio. ``batches(i)`` returns the ``(x, target,
    weight)`` mini-batch of iteration ``i``; ``loss_fn(outputs, target)``
    gives per-sample losses. The sweep stops when the loss is not finite or
    the smoothed loss exceeds ``diverge`` times its best.

    Returns a dict of arrays ``lrs``, ``losses``, ``smoothed`` (one value
    per iteration run) and ``diverged`` (whether it stopped on divergence).
    """
    ratios = [ratio for _, ratio in param_groups]
    groups = [{"params": list(p), "lr": start_lr * r} for p, r in param_groups]
    optimizer = torch.optim.AdamW(
        groups, lr=start_lr, weight_decay=weight_decay, **adamw_options()
    )
    model.train()
    mult = (end_lr / start_lr) ** (1.0 / max(1, num_it - 1))
    lrs, losses, smoothed = [], [], []
    avg, best, diverged = 0.0, math.inf, False
    for i in range(num_it):
        lr = start_lr * mult**i
        for group, ratio in zip(optimizer.param_groups, ratios):
            group["lr"] = lr * ratio
        x, target, weight = (t.to(device) for t in batches(i))
        optimizer.zero_grad(set_to_none=True)
        per_sample = loss_fn(model(x).float(), target)
        loss = (per_sample * weight).sum() / weight.sum().clamp_min(1e-12)
        value = float(loss.detach())
        if not math.isfinite(value):
            diverged = True
            break
        loss.backward()
        optimizer.step()
        avg = smooth * avg + (1 - smooth) * value
        s = avg / (1 - smooth ** (i + 1))
        lrs.append(lr)
        losses.append(value)
        smoothed.append(s)
        best = min(best, s)
        if i > 5 and s > diverge * best:
            diverged = True
            break
    model.eval()
    return {
        "lrs": np.asarray(lrs),
        "losses": np.asarray(losses),
        "smoothed": np.asarray(smoothed),
        "diverged": diverged,
        "num_it": num_it,
    }


def suggest_lrs(lrs, smoothed) -> dict:
    """Suggested rates from a sweep, one per rule.

    ``"minimum"``: a tenth of the rate at the lowest smoothed loss (the
    lesson's reading of the plot). ``"steepest"``: the rate where the
    smoothed loss falls fastest per log-rate step, between the first tenth
    of the sweep (where the smoothing is still warming up) and the minimum.
    ``"valley"``: two thirds of the way down the longest stretch over which
    the smoothed loss only falls (small bumps below 1% of the loss range
    allowed).
    """
    lrs = np.asarray(lrs, dtype=float)
    loss = np.asarray(smoothed, dtype=float)
    if len(lrs) < 3:
        raise ValueError(
            f"the sweep ran only {len(lrs)} iterations before the loss diverged; "
            "lower start_lr."
        )
    i_min = int(np.argmin(loss))
    out = {"minimum": float(lrs[i_min] / 10)}
    skip = min(len(loss) // 10, max(i_min - 2, 0))
    upto = max(i_min, skip + 2)
    slope = np.gradient(loss[skip : upto + 1], np.log(lrs[skip : upto + 1]))
    out["steepest"] = float(lrs[skip + int(np.argmin(slope))])
    out["valley"] = float(lrs[_valley(loss)])
    return out


def _valley(loss) -> int:
    """Two thirds down the longest run where the loss keeps falling."""
    tol = 0.01 * (np.nanmax(loss) - np.nanmin(loss) + 1e-12)
    best_start, best_len, start = 0, 1, 0
    running_min = loss[0]
    for i in range(1, len(loss)):
        if loss[i] <= running_min + tol:
            running_min = min(running_min, loss[i])
        else:
            start, running_min = i, loss[i]
        if i - start + 1 > best_len:
            best_start, best_len = start, i - start + 1
    end = best_start + best_len - 1
    return best_start + int(round((end - best_start) * 2 / 3))


def dataset_batches(dataset, batch_size, seed, plan):
    """``batches(i)``: the i-th ``(x, target, weight)`` mini-batch of a
    sweep; the data is cycled with a fresh seeded shuffle on every pass, so
    small data sets still give as many iterations as the sweep needs.
    Batches are gathered as the stages' loaders gather them: features with
    one index operation, images decoded by threads as ``plan`` says."""
    n = len(dataset)
    batch_size = min(batch_size, n)
    per_pass = max(1, n // batch_size)
    rng = np.random.default_rng(seed)
    orders = {}

    def batches(i):
        p, b = divmod(i, per_pass)
        if p not in orders:
            orders.clear()
            orders[p] = rng.permutation(n)
            if isinstance(dataset, ImageDataset):
                dataset.new_pass()  # new augmentations on every pass
        rows = orders[p][b * batch_size : (b + 1) * batch_size]
        if isinstance(dataset, ImageDataset):
            decoded = decoded_batches(dataset.__getitem__, [rows], plan)
            with contextlib.closing(decoded):
                x, (target, weight) = default_collate(next(decoded))
        else:
            x, (target, weight) = dataset[torch.as_tensor(rows)]
        return x, target, weight

    return batches


# -- prediction -------------------------------------------------------------------


def predict_outputs(members, X, views, task, extract_batch_size, verbose=0):
    """Average of the task outputs over views and ensemble members.

    ``members`` is a list of ``(extractor, head)``; members sharing an
    extractor share its features (computed or read once).
    """
    output = task.output_module()
    total, count = None, 0
    features = {}
    for extractor, head in members:
        key = id(extractor)
        if key not in features:
            features[key] = extractor.transform(
                X, views=views, batch_size=extract_batch_size, verbose=verbose
            )
        for view_features in features[key]:
            out = head_outputs(head, output, view_features, extractor.device)
            total = out if total is None else total + out
            count += 1
    result = total / count
    if not np.all(np.isfinite(result)):
        raise DivergedError(
            "the model's outputs are not finite: the fitted weights hold NaN or "
            "inf (training diverged, or the weights file is corrupt)."
        )
    return result


def head_outputs(head, output, features, device, batch_size=4096) -> np.ndarray:
    head.eval()
    out = []
    with small_work_threads(True), torch.inference_mode():
        for start in range(0, len(features), batch_size):
            x = torch.from_numpy(features[start : start + batch_size]).to(device)
            out.append(output(head(x).float()).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


# -- global state discipline ----------------------------------------------------------


@contextlib.contextmanager
def seeded(seed):
    """Run a block with torch's global RNG seeded, restoring it afterwards."""
    with torch.random.fork_rng(devices=cuda_devices()):
        torch.manual_seed(int(seed))
        yield


def cuda_devices():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


@contextlib.contextmanager
def small_work_threads(active=True):
    """One intra-op thread for small-tensor work (the head on features, its
    sweeps and predictions). On shared cores, threads spinning on tiny
    tensors wait for each other: one thread is several times faster there,
    and about as fast on idle cores. The body's work keeps its threads."""
    before = torch.get_num_threads()
    if not active or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
