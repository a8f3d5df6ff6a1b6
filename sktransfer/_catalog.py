"""What each backbone costs and what it is worth, to choose one by numbers.

:func:`available_backbones` lists the names that ``backbone`` accepts; with
``details=True`` it describes each of them: parameters, GFLOPs and ImageNet
top-1 from the registry's own metadata (torchvision's weights ``meta``),
feature size, input size, and whether the default weights are already in the
local cache (so that a machine without internet can use them).

Nothing here downloads or allocates weights: models are built with their
parameters on PyTorch's ``meta`` device, which has shapes and no storage.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ._backbones import _TIMM_PREFIX, _strip_classifier, torchvision_names

#: The columns of ``available_backbones(details=True)``, in order.
COLUMNS = (
    "name",
    "weights",
    "parameters",
    "gflops",
    "imagenet_top1",
    "feature_size",
    "image_size",
    "cached",
)


def available_backbones(details=False, *, names=None, as_frame=False):
    """Names accepted by ``backbone``, or a table to choose one by.

    Parameters
    ----------
    details : bool, default=False
        False returns the sorted names of torchvision's classification models
        (any ``"timm:NAME"`` is accepted too when timm is installed). True
        returns one row per backbone with the columns below.
    names : list of str, default=None
        With ``details=True``, the backbones to describe (torchvision names
        or ``"timm:NAME"``); None describes every torchvision model.
    as_frame : bool, default=False
        With ``details=True``, return a pandas DataFrame instead of a list of
        dicts (needs pandas).

    Returns
    -------
    names : list of str
        When ``details=False``.
    table : list of dict or pandas.DataFrame
        When ``details=True``, one row per backbone, sorted by name:

        - ``name``: the value to pass as ``backbone``;
        - ``weights``: the default weights (``weights="DEFAULT"``);
        - ``parameters``: parameters of the whole published network;
        - ``gflops``: GFLOPs of one image at ``image_size`` (None if unknown);
        - ``imagenet_top1``: ImageNet-1k top-1 accuracy in percent of the
          default weights, as the registry reports it (None if unknown);
        - ``feature_size``: length of the feature vector the body returns;
        - ``image_size``: side of the default weights' input crop;
        - ``cached``: whether the default weights are in the local cache
          (torch's hub folder, or Hugging Face's for timm), so that
          ``weights="DEFAULT"`` works without network.

    Notes
    -----
    Nothing is downloaded: the numbers come from the registry's metadata and
    from a model built on PyTorch's ``meta`` device. timm does not ship
    accuracy or FLOPs metadata, so those columns are None for ``"timm:"``
    rows. Describing all torchvision models takes a few seconds the first
    time (each architecture is built once per process).

    ImageNet top-1 ranks bodies only roughly for transfer: on dogs-vs-cats
    photos, frozen ``"timm:tf_efficientnet_lite0"`` features with a logistic
    regression reached 0.990-0.993 accuracy against 0.981-0.982 for
    ``"mobilenet_v2"``, at about the same extraction speed on a CPU.

    Examples
    --------
    >>> from sktransfer import available_backbones
    >>> "resnet34" in available_backbones()
    True
    >>> row, = available_backbones(details=True, names=["mobilenet_v2"])
    >>> row["feature_size"], row["imagenet_top1"]
    (1280, 72.154)
    """
    if not details:
        if names is not None or as_frame:
            raise ValueError(
                "names and as_frame describe backbones: pass details=True with "
                "them, e.g. available_backbones(details=True, names=['resnet34'])."
            )
        return torchvision_names()
    if names is None:
        names = torchvision_names()
    elif isinstance(names, str):
        raise ValueError(
            f"names must be a list of backbone names; got the string {names!r}. "
            f"Use names=[{names!r}]."
        )
    rows = [describe_backbone(name) for name in sorted(set(names))]
    if not as_frame:
        return rows
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "available_backbones(as_frame=True) needs pandas: pip install pandas "
            "(or use the default as_frame=False, a list of dicts)."
        ) from None
    return pd.DataFrame(rows, columns=list(COLUMNS))


def describe_backbone(name: str) -> dict:
    """One row of :func:`available_backbones` (``details=True``)."""
    if not isinstance(name, str):
        raise TypeError(f"a backbone name must be a string; got {name!r}.")
    if name.startswith(_TIMM_PREFIX):
        static, weight_files = _describe_timm(name[len(_TIMM_PREFIX) :])
    else:
        static, weight_files = _describe_torchvision(name)
    return {**static, "cached": any(_in_cache(f) for f in weight_files)}


@functools.cache
def _describe_torchvision(name: str) -> tuple[dict, tuple]:
    import torchvision.models as tvm

    if name not in torchvision_names():
        close = [n for n in torchvision_names() if n.startswith(name[:4])][:8]
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise ValueError(
            f"unknown backbone {name!r}: not a torchvision classification model, "
            f"and not of the form 'timm:NAME'.{hint}"
        )
    member = tvm.get_model_weights(name).DEFAULT
    meta = member.meta
    kwargs = {}
    if name in ("googlenet", "inception_v3"):
        kwargs = {"aux_logits": False, "init_weights": False}
    model = _build_empty(lambda: tvm.get_model(name, weights=None, **kwargs))
    counted = _count_parameters(model)
    top1 = meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    row = {
        "name": name,
        "weights": member.name,
        "parameters": int(meta.get("num_params", counted)),
        "gflops": float(meta["_ops"]) if "_ops" in meta else None,
        "imagenet_top1": float(top1) if top1 is not None else None,
        "feature_size": _strip_classifier(model),
        "image_size": int(member.transforms().crop_size[0]),
    }
    files = (("torch", os.path.basename(member.url)),)
    return row, files


@functools.cache
def _describe_timm(name: str) -> tuple[dict, tuple]:
    try:
        import timm
    except ImportError:
        raise ImportError(
            f"backbone 'timm:{name}' needs the timm package: pip install timm"
        ) from None
    if name not in timm.list_models():
        raise ValueError(
            f"unknown backbone 'timm:{name}': timm has no model of that name."
        )
    model = _build_empty(lambda: timm.create_model(name, pretrained=False))
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    files = []
    if cfg.get("hf_hub_id"):
        for filename in ("model.safetensors", "pytorch_model.bin"):
            files.append(("hf", cfg["hf_hub_id"], filename))
    if cfg.get("url"):
        files.append(("torch", os.path.basename(cfg["url"])))
    row = {
        "name": f"{_TIMM_PREFIX}{name}",
        "weights": cfg.get("tag") or None,
        "parameters": _count_parameters(model),
        "gflops": None,
        "imagenet_top1": None,
        "feature_size": int(model.num_features),
        "image_size": int(cfg.get("input_size", (3, 224, 224))[-1]),
    }
    return row, tuple(files)


def _in_cache(location: tuple) -> bool:
    """Whether a weights file is in a local cache (no network)."""
    if location[0] == "torch":
        return (Path(torch.hub.get_dir()) / "checkpoints" / location[1]).is_file()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(location[1], location[2])
    return isinstance(found, str) and os.path.isfile(found)


def _count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


class _EmptyOnMeta(TorchFunctionMode):
    """Create the storage of ``torch.empty`` (what layers allocate their
    parameters with) on the ``meta`` device: shapes without memory.

    Unlike ``with torch.device("meta")`` it leaves every other tensor on the
    CPU, so constructors that compute with tensors (RegNet's widths) work.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.empty:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _build_empty(build) -> nn.Module:
    # a few constructors draw from the global RNG: leave it as found
    with torch.random.fork_rng(devices=[]), _EmptyOnMeta():
        return build()
