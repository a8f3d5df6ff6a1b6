"""The recipe engine: builds body + head + layer groups once, runs stages.

The estimators are fronts: they check the parameters and ``y``, turn the
images into a :class:`TrainingSet` and hand it with a plan (see
:mod:`._plan`) and a task (see :mod:`._tasks`) to :func:`train`, which runs
the stages in order: the linear probe (:mod:`._probe`), a learning-rate
sweep for a rate of ``"auto"`` (:mod:`._sweep`), and every other stage as
a skorch training loop (:mod:`._stage_net`). Prediction is in
:mod:`._predict`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from functools import partial
from numbers import Real

import numpy as np
import torch
from torch import nn

from ._checkpoint import live_objects, module_attributes, set_module_attributes
from ._finetune import (
    CopiesDataset,
    FeatureDataset,
    ImageDataset,
    TransferNet,
    block_parameters,
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
    scale_for,
    set_statistics,
)
from ._seeding import seeded
from ._stage_net import Snapshot, history_rows, stage_net
from ._sweep import sweep_rate
from ._threads import small_work_threads
from ._transforms import PLAIN, AugmentedView
from .callbacks import LRSweep
from .exceptions import DivergedError

#: Rates used when a sweep cannot suggest one (it never diverged, or it had
#: too few batches to be read): the constructor defaults.
FALLBACK_LRS = {"lr": 1e-3, "unfrozen_lr": 1e-4}


def needs_plain_features(plan, sweeps_head: bool) -> bool:
    """Whether a stage of ``plan`` reads the plain view's features: one that
    trains on features, or a head stage whose rate is swept (the head's
    sweep runs on them whatever the stage's input)."""
    return any(s.on_features for s in plan) or (
        sweeps_head and any(not s.trains_body for s in plan)
    )


@dataclasses.dataclass
class TrainingSet:
    """Everything a fit trains on, checked and computed by the front.

    ``targets`` is the task's target tensor for every image, ``weights`` a
    float32 tensor (ones when the user gave none), ``train``/``valid`` index
    arrays (``valid`` may be None). ``features`` holds the plain-view
    features of every image and ``copies`` the features of each copies
    stage's augmented copies of the training images, by stage name: both
    are computed through the feature cache before training starts
    (:meth:`compute_views`), so the stages never call the extractor.
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
    copies: dict = dataclasses.field(default_factory=dict)

    def compute_views(self, plan, settings, sweeps_head: bool) -> None:
        """Compute, through the cache, every view of the images that the
        stages of ``plan`` read as features: the plain view where a stage
        trains on features or the head's rate is swept (``sweeps_head``),
        and each copies stage's augmented copies."""
        if needs_plain_features(plan, sweeps_head) and self.features is None:
            self.features = self._features(self.sources, self.fingerprints)[0]
        for stage in plan:
            if stage.input == "copies" and stage.augment is not None:
                views = [
                    AugmentedView(i, stage.augment, settings.max_zoom)
                    for i in range(stage.copies)
                ]
                rows = self.train
                self.copies[stage.name] = self._features(
                    [self.sources[i] for i in rows],
                    [self.fingerprints[i] for i in rows],
                    views,
                )

    def _features(self, sources, fingerprints, views=(PLAIN,)) -> np.ndarray:
        """``(n_views, n, n_features)`` through the extractor and its cache."""
        return self.extractor.transform(
            sources,
            views=views,
            batch_size=self.extract_batch_size,
            verbose=self.verbose,
            fingerprints=fingerprints,
        )

    def plain_features(self) -> np.ndarray:
        if self.features is None:  # compute_views was not asked for them
            raise RuntimeError("the plain features were not computed before training")
        return self.features

    def stage_dataset(self, stage, rows, settings, seed, augment):
        """The features, augmented copies' features or images of ``rows`` for
        ``stage`` (``augment=None``: the plain view)."""
        if stage.input == "copies" and augment is not None:
            # the copies of the training rows (the only rows trained on)
            copies = self.copies[stage.name]
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
    #: the decay of the weights' moving average (None: no average)
    ema_decay: float | None = None
    #: Beta(alpha, alpha) of mixup and CutMix (0: off; classifiers only)
    mixup: float = 0.0
    cutmix: float = 0.0
    #: the user's skorch callbacks, ``(name, callback)``; every stage's net
    #: gets deep copies of them
    callbacks: list = dataclasses.field(default_factory=list)
    verbose: int = 0
    #: with ``early_stopping``, where the validation images are a part of
    #: the training images (``validation_fraction``, not the user's
    #: ``X_val``) and nothing after the fit reads them: when every stage
    #: after the probe was undone, fit the probe again on all the images
    refit: bool = False
    #: the fit's :class:`~._checkpoint.FitCheckpoint` (None: none written)
    checkpoint: object = None
    #: the state a checkpoint held, to go on from (None: from the start)
    resume: dict | None = None


@dataclasses.dataclass
class Result:
    """What :func:`train` returns: the model, the history rows, the
    learning-rate sweeps run (``{"lr": record, "unfrozen_lr": record}``, as
    ``lr_sweeps_`` holds them), the members of the fitted model and whether
    the body was trained.

    ``members`` holds one ``(body, head)`` pair per snapshot of the last
    stage's cycle ends (a snapshot ensemble), or the final model's alone.
    Members share the body unless the last stage trained it; the last
    member is the final model's own body and head."""

    model: TransferNet
    history: list
    sweeps: dict
    members: list
    tuned: bool
    refit: bool = False  # the probe fitted again on the validation images too


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

    With ``settings.checkpoint``, the state is written after every stage and
    every epoch of a stage that runs the body, and ``settings.resume`` (a state read
    back) makes the fit go on from where that state was written.
    """
    model, groups = build_model(data.extractor, head)
    state = _FitState()
    guard = settings.early_stopping and data.valid is not None
    checkpoint, resume = settings.checkpoint, settings.resume
    if resume is not None:
        state = _restore(model, resume)
    try:
        for index, stage in enumerate(plan):
            if index < state.done:
                continue
            in_stage = None
            if resume and resume["stage"] and index == state.done:
                in_stage = {**resume["stage"], "rng": resume["rng"]}
            if stage.name == "probe":
                row = run_probe(stage, model.head, data, task, seed)
                state.history.append({**row, "discarded": False})
                state.probed = True
                if guard and math.isfinite(row["valid_loss"]):
                    state.kept = _Kept(row["valid_loss"], _weights(model))
                state.done = index + 1
                _save(checkpoint, model, state, seed)
                continue
            if not state.probed and stage.input == "features":
                # a warm start from a probed head: its input statistics
                # again from the features it now trains on (the same ones
                # unless the image size changed), with the probe's scaling
                state.probed = refresh_probe_statistics(model.head, data)
            if in_stage is not None:
                lr = in_stage["lr"]
            else:
                lr = _stage_rate(
                    stage, state.sweeps, model, groups, data, task, settings, seed
                )
            on_epoch = None
            if checkpoint is not None and not stage.on_features:
                # inside the stages that run the body; a stage on cached
                # features takes less time than writing the model each epoch

                def on_epoch(net, live, stopping, lr=lr):
                    blob = checkpoint.pack(_net_state(net), live)
                    if blob is not None:
                        stage_state = {"lr": lr, "net": blob, "stopping": stopping}
                        _save(checkpoint, model, state, seed, stage_state)

            rows, snapshots = run_stage(
                stage, lr, model, groups, data, task, settings, seed,
                state.probed, on_epoch=on_epoch, resume=in_stage,
            )  # fmt: skip
            state.snapshots = snapshots
            rows = [{**row, "discarded": False} for row in rows]
            state.done = index + 1
            if guard:
                loss = _mark_after_best(rows, settings.tol)
                if state.kept is not None and not loss < state.kept.loss - settings.tol:
                    # the stage did not beat the model it started from on
                    # the validation images: undo it
                    model.load_state_dict(state.kept.weights)
                    rows = [{**row, "discarded": True} for row in rows]
                    state.snapshots = []
                    state.history.extend(rows)
                    _save(checkpoint, model, state, seed)
                    continue
                state.kept = _Kept(loss, _weights(model))
            state.tuned = state.tuned or stage.trains_body
            state.history.extend(rows)
            _save(checkpoint, model, state, seed)
    finally:
        set_trainable(groups, N_BODY_GROUPS)
        model.eval()
    refit = guard and settings.refit and _probe_alone(state.history)
    if refit:
        # every stage after the probe was undone: the model is the probe,
        # fitted without the images held out to judge those stages. Fit it
        # again on all the images, in their order: the model the probe
        # alone would have been, without early stopping.
        every = np.sort(np.concatenate([data.train, data.valid]))
        whole = dataclasses.replace(data, train=every, valid=None)
        probe = next(stage for stage in plan if stage.name == "probe")
        row = run_probe(probe, model.head, whole, task, seed)
        state.history.append({**row, "stage": "refit", "discarded": False})
    for module in model.head.modules():
        if isinstance(module, InputNorm):
            module.frozen = False
        if isinstance(module, nn.BatchNorm1d):
            floor_variance(module)
    members = snapshot_members(model, [_floored(s) for s in state.snapshots])
    return Result(model, state.history, state.sweeps, members, state.tuned, refit)


def _probe_alone(history: list) -> bool:
    """Whether a fit's model is its probe: a probe ran, and every stage
    after it was undone (or there was none)."""
    later = [row for row in history if row["stage"] != "probe"]
    return len(later) < len(history) and all(row["discarded"] for row in later)


@dataclasses.dataclass
class _FitState:
    """Where a fit stands between stages: what a checkpoint holds besides
    the model's weights."""

    done: int = 0  # stages of the plan done
    history: list = dataclasses.field(default_factory=list)
    sweeps: dict = dataclasses.field(default_factory=dict)
    snapshots: list = dataclasses.field(default_factory=list)
    probed: bool = False
    kept: object = None  # the validation loss and weights of the best stage end
    tuned: bool = False  # whether a stage the fitted model continues trained the body


def _save(checkpoint, model, state: _FitState, seed, stage_state=None) -> None:
    """Write the fit's state (and, inside a stage, the stage's) to its
    checkpoint, if it has one."""
    if checkpoint is None:
        return
    checkpoint.save(
        {
            "seed": seed,
            "progress": dict(vars(state)),
            "weights": _weights(model),
            "attributes": module_attributes(model),
            "rng": _rng_state(),
            "stage": stage_state,
        }
    )


def _restore(model, resume: dict) -> _FitState:
    """The model's weights and the fit's state as a checkpoint holds them."""
    model.load_state_dict(resume["weights"])
    set_module_attributes(model, resume["attributes"])
    return _FitState(**resume["progress"])


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _net_state(net) -> dict:
    """What a stage's net carries from one epoch to the next, besides the
    weights: history, optimizer (and gradient scaler), the weights' moving
    average and the callbacks (the progress bar and the checkpoint's own
    aside)."""
    return {
        "history": net.history_,
        "optimizer": net.optimizer_.state_dict(),
        "scaler": None if net.scaler_ is None else net.scaler_.state_dict(),
        "ema": net.ema_,
        "callbacks": [
            (name, cb) for name, cb in net.callbacks_ if name not in _NOT_SAVED
        ],
    }


#: The callbacks a checkpoint does not hold: a bar, and the checkpoint's.
_NOT_SAVED = frozenset({"progress", "fit_checkpoint"})


@dataclasses.dataclass
class _Kept:
    """The validation loss and a copy of the weights of the best stage end so
    far (``early_stopping`` with validation data)."""

    loss: float
    weights: dict


def _weights(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _mark_after_best(rows: list, tol: float) -> float:
    """Mark the epochs after the stage's best one as discarded (early
    stopping restored the best epoch's weights, by skorch's rule: an epoch
    is the new best when its loss is below the best so far minus ``tol``);
    returns the best epoch's validation loss."""
    best, best_at = math.inf, None
    for i, row in enumerate(rows):
        if row["valid_loss"] < best - tol:
            best, best_at = row["valid_loss"], i
    if best_at is None:  # no finite validation loss: keep every epoch
        return math.inf
    for row in rows[best_at + 1 :]:
        row["discarded"] = True
    return best


def snapshot_members(model: TransferNet, snapshots: list) -> list:
    """``(body, head)`` of every snapshot, or of the model alone (fewer than
    two snapshots). Snapshots of a stage that did not train the body share
    the model's body; the last snapshot is loaded into the model's own
    modules (the final weights, in every stage that ran to its end)."""
    if len(snapshots) < 2:
        return [(model.body, model.head)]
    members = []
    for i, snapshot in enumerate(snapshots):
        last = i == len(snapshots) - 1
        head = model.head if last else copy.deepcopy(model.head)
        head.load_state_dict(snapshot.head)
        body = model.body
        if snapshot.body is not None:
            body = model.body if last else copy.deepcopy(model.body)
            body.load_state_dict(snapshot.body)
        members.append((body, head))
    return members


def _stage_rate(stage, sweeps, model, groups, data, task, settings, seed) -> float:
    """The stage's top rate: its own, or the rate a sweep found for
    ``"auto"`` or an ``LRSweep`` (swept when the first stage that needs it
    starts, and kept in ``sweeps`` for the stages after it)."""
    if isinstance(stage.lr, Real):
        return stage.lr
    config = LRSweep() if stage.lr == "auto" else stage.lr
    key = "unfrozen_lr" if stage.trains_body else "lr"
    if key not in sweeps:
        _, sweeps[key] = sweep_rate(
            stage, config, model, groups, data, task, settings, seed, FALLBACK_LRS[key]
        )
    return sweeps[key]["rate"]


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
    set_statistics(norm, mean, scale_for(var, scaling), identity=False)
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


def run_stage(
    stage: Stage,
    lr,
    model,
    groups,
    data,
    task,
    settings,
    seed,
    probed,
    on_epoch=None,
    resume=None,
):
    """Train one stage at top rate ``lr``; returns ``(history rows,
    snapshots)``. After a probe, the head's input statistics (the exact,
    floored ones it set) are kept in the stages on features.

    ``on_epoch(net, live, stopping)`` is called at the end of every epoch
    (to write a checkpoint); ``resume``, the stage's state as a checkpoint
    holds it, makes the stage go on after the epoch it was written at."""
    # augmented copies move the features from epoch to epoch like images do
    prepare_batchnorm(model.head, stage.input == "features", keep_input=probed)
    set_trainable(groups, stage.trainable_from)
    train_set = data.stage_dataset(stage, data.train, settings, seed, stage.augment)
    valid_set = None
    if data.valid is not None:
        valid_set = data.stage_dataset(stage, data.valid, settings, seed, None)
    live = live_objects(model, train_set=train_set, valid_set=valid_set)
    with small_work_threads(stage.on_features):
        net, snapshots = stage_net(
            stage,
            model,
            groups,
            lr,
            task,
            settings,
            train_set,
            valid_set,
            data.extractor.precision,
            blocks=_blocks(stage, model, data),
            on_epoch=None if on_epoch is None else partial(on_epoch, live=live),
        )
        with seeded(seed):
            net.initialize()
            try:
                if resume is None:
                    net.partial_fit(train_set, None)
                else:
                    saved = settings.checkpoint.unpack(resume["net"], live)
                    _set_net_state(net, saved)
                    if isinstance(train_set, ImageDataset):
                        train_set.skip_passes(len(net.history_))
                    _set_rng_state(resume["rng"])
                    snapshots = dict(net.callbacks_)["snapshots"]
                    net.go_on(train_set, resume["stopping"])
            except DivergedError as exc:
                precision = data.extractor.precision
                message = _diverged_message(stage, lr, exc, precision)
                raise DivergedError(message) from None
    image_size = data.extractor.preprocessing.crop_size
    return history_rows(net, stage, task, image_size), snapshots.states


def _set_net_state(net, saved: dict) -> None:
    """Put the state :func:`_net_state` took back into a new, initialised
    net of the same stage."""
    net.history_ = saved["history"]
    net.optimizer_.load_state_dict(saved["optimizer"])
    if saved["scaler"] is not None:
        net.scaler_.load_state_dict(saved["scaler"])
    net.ema_ = saved["ema"]
    callbacks = dict(saved["callbacks"])
    net.callbacks_ = [(name, callbacks.get(name, cb)) for name, cb in net.callbacks_]


def _blocks(stage, model, data):
    """The body's parameters block by block, for a stage with rates per
    block (``layer_decay``); None for the others."""
    if stage.layer_decay is None or not stage.trains_body:
        return None
    return block_parameters(model, data.extractor.backbone.groups)


def _floored(snapshot: Snapshot) -> Snapshot:
    """A snapshot with its head's BatchNorm variances floored as
    :func:`._probe.floor_variance` floors the model's (the body's pretrained
    statistics are left as they are)."""
    head = {
        key: floored(value) if key.endswith("running_var") else value
        for key, value in snapshot.head.items()
    }
    return dataclasses.replace(snapshot, head=head)


def _diverged_message(stage, lr, exc, precision) -> str:
    narrow = ""
    if precision != "fp32":
        # fp16's range ends at 65504: activations beyond it become inf
        narrow = f" or {precision} overflowed (try precision='fp32')"
    return (
        f"training diverged in the {stage.name!r} stage ({exc}) at a learning "
        f"rate of {lr:.3g} for the {'unfrozen groups' if stage.trains_body else 'head'}"
        f". The rate is probably too high: lower "
        f"{'unfrozen_lr' if stage.trains_body else 'lr'} (or use 'auto'). If it "
        f"is not, the inputs are not finite{narrow}: check the 'preprocessing' "
        "mean/std and the weights file. The previous model, if any, is kept."
    )
