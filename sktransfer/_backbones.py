"""Backbone registry: a string name -> a frozen body, its feature size, its
layer groups and its preprocessing.

Every classification model of torchvision is addressed by its torchvision
name (``"resnet34"``, ``"mobilenet_v2"``, ``"convnext_tiny"``, ...), and every
timm model by ``"timm:NAME"`` when timm is installed. ``weights`` chooses the
pretrained parameters:

* ``"DEFAULT"``: the library's recommended weights (downloaded once, then
  read from torch's cache);
* a torchvision weights name such as ``"IMAGENET1K_V1"`` or
  ``"ResNet34_Weights.IMAGENET1K_V1"``;
* a path to a local ``state_dict`` file (offline, air-gapped machines);
* ``None``: random initialisation (for tests and for training from scratch).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ._transforms import Preprocessing

_TIMM_PREFIX = "timm:"
_N_GROUPS = 3


class WeightsUnavailableError(RuntimeError):
    """Registry weights could not be downloaded and are not cached locally."""


@dataclass
class Backbone:
    """A pretrained body with everything the rest of the package needs."""

    name: str
    body: nn.Module
    n_features: int
    groups: list = field(repr=False)
    preprocessing: Preprocessing
    weights_id: str
    base_preprocessing: Preprocessing | None = None  # before user overrides

    def fingerprint(self, preprocessing: Preprocessing, precision: str) -> str:
        """Identity of the features this body computes (for the cache key)."""
        text = "|".join(
            [
                "sktransfer-features-v1",
                self.name,
                self.weights_id,
                repr(sorted(preprocessing.as_dict().items())),
                precision,
            ]
        )
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def available_backbones() -> list[str]:
    """Names accepted by ``backbone``: torchvision's classification models
    (and, when timm is installed, any ``"timm:NAME"``)."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def load_backbone(name: str, weights, preprocessing=None) -> Backbone:
    """Build the frozen feature extractor ``name`` with ``weights``."""
    if not isinstance(name, str):
        raise TypeError(f"backbone must be a string name, got {type(name).__name__}.")
    # Building a model draws its initial parameters from torch's global RNG.
    # A fixed seed inside fork_rng makes ``weights=None`` reproducible (so its
    # cached features stay valid) and leaves the caller's RNG state as found.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if name.startswith(_TIMM_PREFIX):
            backbone = _load_timm(name[len(_TIMM_PREFIX) :], weights)
        else:
            backbone = _load_torchvision(name, weights)
    backbone.base_preprocessing = backbone.preprocessing
    if preprocessing:
        backbone.preprocessing = _override(backbone.preprocessing, preprocessing)
    backbone.body.eval()
    for p in backbone.body.parameters():
        p.requires_grad_(False)
    return backbone


def _override(pre: Preprocessing, overrides: dict) -> Preprocessing:
    allowed = set(pre.as_dict())
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(
            f"preprocessing has unknown keys {sorted(unknown)}; "
            f"allowed: {sorted(allowed)}."
        )
    values = {**pre.as_dict(), **overrides}
    values["mean"] = tuple(float(v) for v in values["mean"])
    values["std"] = tuple(float(v) for v in values["std"])
    return Preprocessing(**values)


# --- torchvision -------------------------------------------------------------


def _load_torchvision(name: str, weights) -> Backbone:
    import torchvision.models as tvm

    names = available_backbones()
    if name not in names:
        close = [n for n in names if n.startswith(name[:4])][:8]
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise ValueError(
            f"unknown backbone {name!r}: not a torchvision classification model, "
            f"and not of the form 'timm:NAME'.{hint} "
            "See sktransfer.available_backbones()."
        )
    enum = tvm.get_model_weights(name)
    aux = name in ("googlenet", "inception_v3")
    kwargs = {"aux_logits": False, "init_weights": False} if aux else {}
    if aux and weights is not None:
        # torchvision's pretrained GoogLeNet/Inception expect this input remap
        kwargs["transform_input"] = True
    if weights is None:
        model = tvm.get_model(name, weights=None, **kwargs)
        weights_id = "random-init"
        pre = _preset_from_enum(list(enum)[0])
    elif _is_path(weights):
        model = tvm.get_model(name, weights=None, **kwargs)
        path = Path(weights).expanduser()
        state = _read_state_dict(path)
        if aux:
            state = _drop_aux_heads(state)
        _load_state(model, state, path, name)
        weights_id = "file:" + _file_digest(path)
        pre = _preset_from_enum(list(enum)[0])
    else:
        member = _resolve_enum_member(enum, weights, name)
        model = tvm.get_model(name, weights=None, **kwargs)
        state = _download_state_dict(member, name)
        if aux:
            state = _drop_aux_heads(state)
        model.load_state_dict(state)
        weights_id = f"torchvision:{member}"
        pre = _preset_from_enum(member)
    n_features = _strip_classifier(model)
    return Backbone(
        name=name,
        body=model,
        n_features=n_features,
        groups=_split_groups(model),
        preprocessing=pre,
        weights_id=weights_id,
    )


def _drop_aux_heads(state: dict) -> dict:
    """GoogLeNet/Inception files carry auxiliary training heads
    (``aux1.*``, ``AuxLogits.*``) that the feature extractor does not use."""
    return {k: v for k, v in state.items() if not k.lower().startswith("aux")}


def _preset_from_enum(member) -> Preprocessing:
    t = member.transforms()
    return Preprocessing(
        resize_size=int(t.resize_size[0]),
        crop_size=int(t.crop_size[0]),
        mean=tuple(float(v) for v in t.mean),
        std=tuple(float(v) for v in t.std),
        interpolation=str(t.interpolation.value),
    )


def _resolve_enum_member(enum, weights, name):
    if not isinstance(weights, str):
        raise ValueError(
            "weights must be 'DEFAULT', a weights name, a path to a local file "
            f"or None; got {weights!r}."
        )
    key = weights.split(".")[-1]
    if key == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[key]
    except KeyError:
        options = ", ".join(["DEFAULT", *(m.name for m in enum)])
        raise ValueError(
            f"weights {weights!r} is neither a file that exists nor a weights name "
            f"of backbone {name!r} (choose from {options})."
        ) from None


def _download_state_dict(member, name):
    """Fetch registry weights through torch's hub cache (no network if cached)."""
    try:
        return member.get_state_dict(progress=False, check_hash=False)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise WeightsUnavailableError(
            f"the weights {member} of backbone {name!r} are not in torch's cache "
            f"({torch.hub.get_dir()}) and could not be downloaded from "
            f"{member.url} ({type(exc).__name__}: {exc}). On a machine without "
            "internet, download the file elsewhere and pass its path: "
            f"PretrainedImageClassifier(backbone={name!r}, "
            "weights='/path/to/file.pth')."
        ) from exc


def _strip_classifier(model: nn.Module) -> int:
    """Replace the last Linear (or final 1x1 Conv classifier) with Identity.

    What is left returns the pooled features the original classifier saw,
    using the architecture's own pooling, so every torchvision model works
    without a per-family table.
    """
    last_name, last = None, None
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last_name, last = mod_name, mod
    if model.__class__.__name__ == "SqueezeNet":
        # classifier = Dropout, Conv2d(512 -> classes), ReLU, AdaptiveAvgPool
        model.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return 512 if model.features[-1].expand1x1.out_channels == 256 else 512
    if last is None:
        raise ValueError(
            f"could not find the classifier layer of {type(model).__name__}."
        )
    parent = model
    *path, leaf = last_name.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, leaf, nn.Identity())
    return int(last.in_features)


def _split_groups(model: nn.Module) -> list[list[nn.Module]]:
    """Split the body into early, middle and late layer groups.

    Starting from the model's top-level children, the container holding the
    most parameters is opened up (replaced in place by its children) until
    there are at least ``3 * _N_GROUPS`` blocks with parameters or nothing is
    left to open; forward order is kept. The blocks are then cut into three
    runs of equal length, each block staying whole. This finds ResNet stages,
    MobileNet/EfficientNet blocks, ConvNeXt stages and ViT encoder layers
    alike, with no per-family table.
    """

    def n_params(module):
        return sum(p.numel() for p in module.parameters())

    blocks = [child for child in model.children() if n_params(child) > 0]
    while len(blocks) < 3 * _N_GROUPS:
        openable = [
            (n_params(b), i)
            for i, b in enumerate(blocks)
            if sum(1 for c in b.children() if n_params(c) > 0) > 1
        ]
        if not openable:
            break
        _, i = max(openable)
        children = [c for c in blocks[i].children() if n_params(c) > 0]
        blocks[i : i + 1] = children
    if not blocks:
        return [[] for _ in range(_N_GROUPS)]
    n = len(blocks)
    bounds = [round(i * n / _N_GROUPS) for i in range(_N_GROUPS + 1)]
    return [blocks[bounds[i] : bounds[i + 1]] for i in range(_N_GROUPS)]


# --- timm --------------------------------------------------------------------


def _load_timm(name: str, weights) -> Backbone:
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError:
        raise ImportError(
            f"backbone 'timm:{name}' needs the timm package: pip install timm"
        ) from None
    if name not in timm.list_models(pretrained=False) and name not in timm.list_models(
        pretrained=True
    ):
        raise ValueError(
            f"unknown backbone 'timm:{name}': timm has no model of that name."
        )
    if weights is None or _is_path(weights):
        model = timm.create_model(name, pretrained=False)
        if weights is None:
            weights_id = "random-init"
        else:
            path = Path(weights).expanduser()
            _load_state(model, _read_state_dict(path), path, f"timm:{name}")
            weights_id = "file:" + _file_digest(path)
    elif weights == "DEFAULT" or isinstance(weights, str):
        tag = "" if weights == "DEFAULT" else f".{weights}"
        try:
            model = timm.create_model(name + tag, pretrained=True)
        except Exception as exc:
            raise WeightsUnavailableError(
                f"the pretrained weights of 'timm:{name}' could not be loaded or "
                f"downloaded ({type(exc).__name__}: {exc}). On a machine without "
                "internet, pass the path of a local state_dict file as weights."
            ) from exc
        cfg = getattr(model, "pretrained_cfg", None) or {}
        # the resolved tag: timm's default weights of a name change between
        # releases, and the cache key must change with them
        resolved = f"{cfg.get('architecture', name)}.{cfg.get('tag', '')}"
        weights_id = f"timm:{resolved}:{cfg.get('hf_hub_id') or cfg.get('url', '')}"
    else:
        raise ValueError(f"weights must be 'DEFAULT', a path or None; got {weights!r}.")
    cfg = resolve_data_config({}, model=model)
    crop = int(cfg["input_size"][-1])
    pre = Preprocessing(
        resize_size=int(round(crop / cfg.get("crop_pct", 0.875))),
        crop_size=crop,
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bilinear")),
    )
    model.reset_classifier(0)
    return Backbone(
        name=f"timm:{name}",
        body=model,
        n_features=int(model.num_features),
        groups=_split_groups(model),
        preprocessing=pre,
        weights_id=weights_id,
    )


# --- local files -------------------------------------------------------------


def _is_path(weights) -> bool:
    if isinstance(weights, os.PathLike):
        return True
    if not isinstance(weights, str):
        return False
    return (
        os.sep in weights
        or weights.endswith((".pth", ".pt", ".bin", ".safetensors"))
        or (Path(weights).expanduser().exists())
    )


def _read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist.")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(
                "reading .safetensors weights needs: pip install safetensors"
            ) from None
        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(
                f"weights file {str(path)!r} could not be read as a PyTorch state_dict "
                f"with weights_only=True ({type(exc).__name__}: {exc})."
            ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(
        torch.is_tensor(v) for v in state.values()
    ):
        raise ValueError(
            f"weights file {str(path)!r} does not hold a state_dict of tensors."
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_state(model: nn.Module, state: dict, path: Path, name: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}")
        if mismatched:
            parts.append(f"shape mismatches {mismatched[:5]}")
        raise ValueError(
            f"weights file {str(path)!r} does not fit backbone {name!r}: "
            + "; ".join(parts)
            + ". Is it a file for another architecture?"
        )
    model.load_state_dict(state, strict=True)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:32]
