"""Grad-CAM on a fitted recipe estimator (the machinery of
:func:`sktransfer.inspection.grad_cam`).

The model is the one :func:`~sktransfer.export.to_torch` gives (a float32
copy of the estimator's ``model_``), so the estimator's own modules, parameters,
``requires_grad`` flags and train/eval modes are never touched.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._inspection_data import plain_value
from .export import to_torch


@dataclass(frozen=True)
class _Site:
    """Where a body's last feature map comes from: the ``call``-th output
    (counting from 1) of ``module``, laid out ``"NCHW"`` or ``"NHWC"``."""

    module: nn.Module
    call: int
    layout: str


@dataclass
class CamResult:
    heatmaps: np.ndarray  # (n, H, W) float32 in [0, 1]
    outputs: np.ndarray  # (n, n_outputs): what predict_proba / predict return
    columns: np.ndarray  # (n,) output column of each image's target


def compute(estimator, crops: np.ndarray, target, batch_size: int) -> CamResult:
    """Grad-CAM of ``target`` for the uint8 crops ``(n, H, W, 3)``."""
    # gradients are needed whatever the caller's context (no_grad, or
    # inference_mode, whose tensors could not be saved for backward)
    with torch.inference_mode(False), torch.enable_grad():
        return _compute(estimator, crops, target, batch_size)


def _compute(estimator, crops, target, batch_size):
    with warnings.catch_warnings():
        # grad_cam documents that it explains the plain view, as to_torch does
        warnings.filterwarnings("ignore", message=".*has tta=", category=UserWarning)
        model = to_torch(estimator)
    device = estimator.extractor_.device
    model = model.to(device)
    n_features = estimator.extractor_.n_features
    n, height, width = crops.shape[:3]
    fixed = _fixed_columns(estimator, target, n)
    name = estimator.extractor_.backbone.name
    first = torch.from_numpy(crops[:1]).to(device)
    sites = [_find_site(body, first, model, n_features, name) for body in model.bodies]
    heatmaps = np.empty((n, height, width), dtype=np.float32)
    outputs, columns = [], []
    for start in range(0, n, batch_size):
        batch = torch.from_numpy(crops[start : start + batch_size]).to(device)
        cols = None if fixed is None else fixed[start : start + batch_size]
        maps, out, cols = _batch_cam(estimator, model, sites, batch, cols)
        heatmaps[start : start + len(batch)] = maps
        outputs.append(out)
        columns.append(cols)
    return CamResult(heatmaps, np.concatenate(outputs), np.concatenate(columns))


def _batch_cam(estimator, model, sites, batch, columns):
    captured: list[list[torch.Tensor]] = [[] for _ in sites]
    handles = [
        site.module.register_forward_hook(_capture(site, captured[b]))
        for b, site in enumerate(sites)
    ]
    try:
        features = model.features(batch)
        raw = [head(features[b]) for head, b in zip(model.heads, model.member_body)]
        outputs = model.head_outputs(features)
        if columns is None:
            columns = _predicted_columns(estimator, outputs.detach())
        index = torch.as_tensor(columns, device=raw[0].device).view(-1, 1)
        # the score explained: the members' mean raw output (logit)
        score = sum(r.gather(1, index) for r in raw) / len(raw)
        maps = [c[0] for c in captured]
        grads = torch.autograd.grad(score.sum(), maps)
    finally:
        for handle in handles:
            handle.remove()
    cam = 0
    for site, fmap, grad in zip(sites, maps, grads):
        if site.layout == "NHWC":
            fmap, grad = fmap.permute(0, 3, 1, 2), grad.permute(0, 3, 1, 2)
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = cam + (weights * fmap).sum(dim=1, keepdim=True)
    cam = nn.functional.interpolate(
        torch.relu(cam), size=batch.shape[1:3], mode="bilinear", align_corners=False
    )[:, 0]
    top = cam.flatten(1).amax(dim=1).view(-1, 1, 1)
    cam = torch.where(top > 0, cam / top.clamp_min(1e-30), torch.zeros_like(cam))
    cam = torch.nan_to_num(cam, nan=0.0).clamp(0.0, 1.0)
    return (
        cam.detach().cpu().numpy(),
        outputs.detach().to(torch.float64).cpu().numpy().reshape(len(batch), -1),
        np.asarray(columns, dtype=np.int64),
    )


def _capture(site: _Site, store: list):
    calls = [0]

    def hook(module, inputs, output):
        calls[0] += 1
        if calls[0] != site.call:
            return None
        # a leaf of our own: gradients stop here (nothing earlier needs
        # them), and in-place operations downstream (DenseNet's final ReLU)
        # change the clone, not the activations read afterwards
        leaf = output.detach().requires_grad_(True)
        store.append(leaf)
        return leaf.clone()

    return hook


def _find_site(
    body: nn.Module, x: torch.Tensor, model, n_features: int, name: str
) -> _Site:
    """The body's last feature map: the last 4-D module output, in forward
    order, with more than one spatial position; what follows it is the
    global pooling (and, for some families, a norm, a 1x1 convolution or a
    small MLP on the pooled vector)."""
    records = _records(body, model.normalize(x))
    chosen = _last_map(records, n_features)
    size = f"{x.shape[1]}x{x.shape[2]} pixels"
    if chosen is None:
        raise ValueError(
            f"Grad-CAM found no spatial feature map in the body of {name!r}: no "
            "layer gives a 4-D output with more than one position. Grad-CAM "
            "needs a convolutional backbone and an input large enough to keep "
            f"a spatial map (the input is {size})."
        )
    i, site = chosen
    later = records[i + 1 :]
    if any(len(shape) == 3 and _has_own_parameters(m) for m, _, shape in later):
        raise ValueError(
            f"Grad-CAM needs a convolutional backbone; the last layers of "
            f"{name!r} work on token sequences (a vision transformer), so it "
            "has no feature map before its pooling."
        )
    # At twice the size the same layer must give the last map: if a later
    # one takes over, this input shrinks the body's own last map to 1x1 and
    # ``site`` is an earlier stage (a body that accepts one input size only
    # is judged by the layer that follows instead).
    try:
        double = x.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
        larger = _last_map(_records(body, model.normalize(double)), n_features)
        collapsed = larger is None or larger[1] != site
    except Exception:
        collapsed = bool(later) and isinstance(later[0][0], nn.Conv2d)
    if collapsed:
        raise ValueError(
            f"the last feature map of {name!r} is 1x1 at this input "
            f"size ({size}): its Grad-CAM would be uniform. Fit with a larger "
            "image_size (e.g. 64 or more for a ResNet)."
        )
    return site


def _records(body: nn.Module, x: torch.Tensor) -> list:
    """(module, call number, output shape) of every module call, in the
    order the calls return."""
    records = []
    calls: dict[int, int] = {}

    def record(module, inputs, output):
        calls[id(module)] = calls.get(id(module), 0) + 1
        if isinstance(output, torch.Tensor):
            records.append((module, calls[id(module)], tuple(output.shape)))

    handles = [m.register_forward_hook(record) for m in body.modules()]
    try:
        with torch.no_grad():
            body(x)
    finally:
        for handle in handles:
            handle.remove()
    return records


def _last_map(records: list, n_features: int):
    """(index, site) of the last 4-D output with more than one position."""
    chosen = None
    for i, (module, call, shape) in enumerate(records):
        if len(shape) != 4:
            continue
        layout = "NHWC" if shape[3] == n_features != shape[1] else "NCHW"
        spatial = shape[1:3] if layout == "NHWC" else shape[2:]
        if spatial[0] * spatial[1] > 1:
            chosen = i, _Site(module, call, layout)
    return chosen


def _has_own_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _predicted_columns(estimator, outputs: torch.Tensor) -> np.ndarray:
    """The default target: the most probable class (for multi-label, the
    label with the highest probability), output 0 for a regressor."""
    if hasattr(estimator, "classes_"):
        return outputs.argmax(dim=1).cpu().numpy()
    return np.zeros(len(outputs), dtype=np.int64)


def _fixed_columns(estimator, target, n: int):
    """``target`` as one output column per image; None when it is None."""
    if target is None:
        return None
    many = np.ndim(target) > 0 and not isinstance(target, (str, bytes))
    values = list(np.asarray(target, dtype=object).ravel()) if many else [target]
    if many and len(values) != n:
        raise ValueError(
            f"target holds {len(values)} values but X has {n} images; pass one "
            "label (or output index) per image, a single one, or None."
        )
    if hasattr(estimator, "classes_"):
        classes = [plain_value(c) for c in np.asarray(estimator.classes_).tolist()]
        position = {}
        for j, c in enumerate(classes):
            position.setdefault(c, j)
        columns = []
        for value in values:
            value = plain_value(value)
            try:
                columns.append(position[value])
            except (KeyError, TypeError):
                raise ValueError(
                    f"target {value!r} is not a class of this model; its "
                    f"classes_ are {classes[:20]}."
                ) from None
    else:
        n_outputs = int(getattr(estimator, "n_outputs_", 1))
        columns = []
        for value in values:
            value = plain_value(value)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or not 0 <= value < n_outputs
            ):
                raise ValueError(
                    f"target {value!r} is not an output of this regressor: pass "
                    f"an output index from 0 to {n_outputs - 1}, or None."
                )
            columns.append(int(value))
    columns = np.asarray(columns, dtype=np.int64)
    return columns if many else np.full(n, columns[0], dtype=np.int64)


def crops_and_maps(estimator, X, target, batch_size):
    """The crops of ``X`` and their Grad-CAM result (heatmaps, outputs and
    target columns from one pass)."""
    from sklearn.utils.validation import check_is_fitted

    from ._base import RecipeEstimator

    if not isinstance(estimator, RecipeEstimator):
        raise TypeError(
            "grad_cam needs a fitted PretrainedImageClassifier or "
            f"PretrainedImageRegressor; got {type(estimator).__name__} (pass "
            "the estimator itself, not a pipeline around it)."
        )
    check_is_fitted(estimator, "head_")
    if batch_size is None:
        batch_size = getattr(estimator, "extract_batch_size", 32)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
    crops = estimator.preprocess(X)
    return crops, compute(estimator, crops, target, int(batch_size))
