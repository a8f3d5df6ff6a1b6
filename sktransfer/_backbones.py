"""Backbone registry: a string name -> a frozen body, its feature size, its
layer groups and its preprocessing.

Every classification model of torchvision is addressed by its torchvision
name (``"resnet34"``, ``"mobilenet_v2"``, ``"convnext_tiny"``, ...), and every
timm model by ``"timm:NAME"`` when timm is installed. ``weights`` chooses the
pretrained parameters:

* ``"DEFAULT"``: the library's recommended weights (downloaded once, then
  read from torch's cache). A cached file is checked against the SHA-256
  prefix its published name carries (``resnet18-f37072fd.pth``) and read
  with ``weights_only=True``, so a replaced or poisoned file in the cache is
  refused, never executed;
* a torchvision weights name such as ``"IMAGENET1K_V1"`` or
  ``"ResNet34_Weights.IMAGENET1K_V1"``;
* a path to a local ``state_dict`` file (offline, air-gapped machines);
* ``None``: random initialisation (for tests and for training from scratch).

A registry name wins over a file or folder of the same name in the working
directory (``weights="DEFAULT"`` beside a folder ``DEFAULT/`` means the
registry weights); write ``"./DEFAULT"`` for a file of that name. A string
with a path separator or a weights file ending (``.pth``, ``.pt``, ``.bin``,
``.safetensors``) is always a path, and a folder is never a weights file.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import stat
import urllib.error
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ._plan import N_BODY_GROUPS
from ._transforms import Preprocessing, check_preprocessing
from ._weights_files import (
    check_finite,
    expand,
    file_digest,
    is_path,
    load_state,
    read_state_dict,
)
from .exceptions import WeightsUnavailableError

_TIMM_PREFIX = "timm:"


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
    #: The file the weights were read from (for messages), if any.
    weights_file: str | None = None

    def fingerprint(self, preprocessing: Preprocessing, precision: str) -> str:
        """Identity of the features this body computes (for the cache key)."""
        settings = preprocessing.as_dict()
        if settings["resize_mode"] == "crop":
            # the default, as before the option existed: cached keys stay valid
            del settings["resize_mode"]
        text = "|".join(
            [
                "sktransfer-features-v2",
                self.name,
                self.weights_id,
                repr(sorted(settings.items())),
                precision,
            ]
        )
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def torchvision_names() -> list[str]:
    """The sorted names of torchvision's classification models (``backbone``
    also accepts any ``"timm:NAME"`` when timm is installed); the public
    list is :func:`sktransfer.available_backbones`."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def load_backbone(name: str, weights, preprocessing=None) -> Backbone:
    """Build the frozen feature extractor ``name`` with ``weights``."""
    if not isinstance(name, str):
        raise TypeError(f"backbone must be a string name, got {type(name).__name__}.")
    check_preprocessing(preprocessing)  # before the minutes a download takes
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
    backbone.preprocessing = backbone.preprocessing.with_overrides(preprocessing)
    backbone.body.eval()
    for p in backbone.body.parameters():
        p.requires_grad_(False)
    return backbone


# --- torchvision -------------------------------------------------------------


def _load_torchvision(name: str, weights) -> Backbone:
    import torchvision.models as tvm

    names = torchvision_names()
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
    elif is_path(weights, _is_enum_name(enum, weights)):
        model = tvm.get_model(name, weights=None, **kwargs)
        path = expand(weights)
        state = read_state_dict(path)
        if aux:
            state = _drop_aux_heads(state)
        load_state(model, state, path, name)
        weights_id = "file:" + file_digest(path)
        pre = _preset_from_enum(list(enum)[0])
    else:
        member = _resolve_enum_member(enum, weights, name)
        model = tvm.get_model(name, weights=None, **kwargs)
        path = _registry_file(member.url, f"the weights {member}", name)
        state = read_state_dict(path, registry=True)
        if aux:
            state = _drop_aux_heads(state)
        load_state(model, state, path, name)
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
        weights_file=None if weights is None else str(path),
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
        folder = ""
        with contextlib.suppress(OSError, ValueError):
            if weights.strip() and expand(weights).is_dir():
                folder = (
                    f" ({weights!r} here is a folder; a weights file must be a file)"
                )
        raise ValueError(
            f"weights {weights!r} is neither a file that exists nor a weights name "
            f"of backbone {name!r}{folder} (choose from {options}, or pass the path "
            "of a state_dict file)."
        ) from None


def _is_enum_name(enum, weights) -> bool:
    """Whether ``weights`` is a weights name of torchvision's ``enum``."""
    if not isinstance(weights, str):
        return False
    key = weights.split(".")[-1]
    return key == "DEFAULT" or key in enum.__members__


#: The SHA-256 prefix in a published weights file name (torch.hub's rule).
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")


def _hub_file(url: str) -> Path:
    """Where torch.hub (and timm) cache the file of ``url``."""
    return (
        Path(torch.hub.get_dir())
        / "checkpoints"
        / os.path.basename(urllib.parse.urlparse(url).path)
    )


def _registry_file(url: str, what: str, name: str) -> Path:
    """The cached file of registry weights, downloaded when missing.

    torch.hub checks the hash only while downloading; a file already in the
    cache is trusted blindly there. Here it is checked every time against
    the prefix in its published name, so a file replaced in the cache (or
    left half-written) is refused before it is read.
    """
    path = _hub_file(url)
    match = _HASH_IN_NAME.search(path.name)
    prefix = match.group(1) if match else None
    if not os.path.lexists(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # verifies the prefix on the temporary file before moving it in
            torch.hub.download_url_to_file(
                url, str(path), hash_prefix=prefix, progress=False
            )
        except (urllib.error.URLError, OSError, RuntimeError) as exc:
            raise WeightsUnavailableError(
                f"{what} of backbone {name!r} are not in torch's cache "
                f"({torch.hub.get_dir()}) and could not be downloaded from "
                f"{url} ({type(exc).__name__}: {exc}). On a machine without "
                "internet, download the file elsewhere and pass its path: "
                f"PretrainedImageClassifier(backbone={name!r}, "
                "weights='/path/to/file.pth')."
            ) from exc
    elif prefix is not None:
        _check_hash_prefix(path, prefix, what, name)
    return path


def _check_hash_prefix(path: Path, prefix: str, what: str, name: str) -> None:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise OSError("not a regular file")
        digest = file_digest(path, length=64)
    except OSError as exc:
        raise WeightsUnavailableError(
            f"the cached weights file {str(path)!r} ({what} of backbone "
            f"{name!r}) could not be read ({exc}). Delete it and load again to "
            "download a fresh copy."
        ) from None
    if not digest.startswith(prefix):
        raise WeightsUnavailableError(
            f"the cached weights file {str(path)!r} ({what} of backbone "
            f"{name!r}) is not the published file: its SHA-256 begins "
            f"{digest[: len(prefix)]!r}, its name promises {prefix!r}. It was "
            "replaced, damaged or only partly downloaded, and is not loaded. "
            f"Delete it (rm {str(path)!r}) and load again to download a fresh "
            "copy."
        )


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
    there are at least ``3 * N_BODY_GROUPS`` blocks with parameters or nothing is
    left to open; forward order is kept. The blocks are then cut into three
    runs of equal length, each block staying whole. This finds ResNet stages,
    MobileNet/EfficientNet blocks, ConvNeXt stages and ViT encoder layers
    alike, with no per-family table.
    """

    def n_params(module):
        return sum(p.numel() for p in module.parameters())

    blocks = [child for child in model.children() if n_params(child) > 0]
    while len(blocks) < 3 * N_BODY_GROUPS:
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
        return [[] for _ in range(N_BODY_GROUPS)]
    n = len(blocks)
    bounds = [round(i * n / N_BODY_GROUPS) for i in range(N_BODY_GROUPS + 1)]
    return [blocks[bounds[i] : bounds[i + 1]] for i in range(N_BODY_GROUPS)]


# --- timm --------------------------------------------------------------------

_HF_HUB = "hf-hub:"
#: ``ORG/NAME`` of a hub repository, optionally ``@revision``
_HUB_REPO = re.compile(r"[\w.-]+/[\w.-]+(@[\w./-]+)?")


def _load_timm(name: str, weights) -> Backbone:
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError:
        raise ImportError(
            f"backbone 'timm:{name}' needs the timm package: pip install timm"
        ) from None
    if name.startswith(_HF_HUB):
        model, weights_id, weights_file = _timm_hub_model(timm, name, weights)
    else:
        model, weights_id, weights_file = _timm_model(timm, name, weights)
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
        weights_file=weights_file,
    )


def _timm_model(timm, name: str, weights) -> tuple:
    """``(model, weights_id, weights_file)`` of a model in timm's registry."""
    if name not in timm.list_models(pretrained=False) and name not in timm.list_models(
        pretrained=True
    ):
        raise ValueError(
            f"unknown backbone 'timm:{name}': timm has no model of that name."
        )
    if weights is None or is_path(weights, _is_timm_tag(timm, name, weights)):
        model = timm.create_model(name, pretrained=False)
        return (model, *_timm_local_weights(model, weights, f"timm:{name}"))
    if not isinstance(weights, str):
        raise ValueError(f"weights must be 'DEFAULT', a path or None; got {weights!r}.")
    tag = "" if weights == "DEFAULT" else f".{weights}"
    weights_file = _timm_checked_file(name + tag)
    model = _timm_pretrained(timm, name + tag, f"timm:{name}")
    return model, _timm_weights_id(model, name), weights_file


def _timm_hub_model(timm, name: str, weights) -> tuple:
    """``(model, weights_id, weights_file)`` of a model named by its Hugging
    Face hub repository (``hf-hub:ORG/NAME``): its architecture and
    preprocessing come from the repository's config, its weights from the
    repository (``"DEFAULT"``) or a local file, through the hub's cache."""
    repo = name[len(_HF_HUB) :]
    if not _HUB_REPO.fullmatch(repo):
        raise ValueError(
            f"backbone 'timm:{name}': a hub name is 'timm:hf-hub:ORG/NAME' "
            "(for example 'timm:hf-hub:timm/resnet18.a1_in1k')."
        )
    if weights is None or is_path(weights):
        model = _timm_pretrained(timm, name, f"timm:{name}", pretrained=False)
        return (model, *_timm_local_weights(model, weights, f"timm:{name}"))
    if weights != "DEFAULT":
        raise ValueError(
            f"backbone 'timm:{name}' takes weights='DEFAULT' (the repository's), "
            f"a path or None; got {weights!r}."
        )
    model = _timm_pretrained(timm, name, f"timm:{name}")
    return model, _timm_weights_id(model, name), None


def _timm_pretrained(timm, model_name: str, shown: str, pretrained=True):
    """``timm.create_model``, its failures (no network, nothing cached) as a
    :class:`WeightsUnavailableError` naming the backbone."""
    try:
        with _timm_hash_check():
            return timm.create_model(model_name, pretrained=pretrained)
    except WeightsUnavailableError:
        raise
    except Exception as exc:
        hub = (
            " and its files are not in the Hugging Face cache"
            if model_name.startswith(_HF_HUB)
            else ""
        )
        raise WeightsUnavailableError(
            f"the pretrained weights of {shown!r} could not be loaded or "
            f"downloaded{hub} ({type(exc).__name__}: {exc}). On a machine "
            "without internet, pass the path of a local state_dict file as "
            "weights."
        ) from exc


def _timm_local_weights(model, weights, shown: str) -> tuple:
    """Load a local weights file (None: keep the random initialisation);
    ``(weights_id, weights_file)``."""
    if weights is None:
        return "random-init", None
    path = expand(weights)
    load_state(model, read_state_dict(path), path, shown)
    return "file:" + file_digest(path), str(path)


def _timm_weights_id(model, name: str) -> str:
    """The cache key of pretrained timm weights: the resolved tag (timm's
    default weights of a name change between releases, and the key must
    change with them) and where they come from. The weights are checked to
    be finite."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    resolved = f"{cfg.get('architecture', name)}.{cfg.get('tag', '')}"
    check_finite(model.state_dict(), f"the pretrained weights of 'timm:{name}'")
    return f"timm:{resolved}:{cfg.get('hf_hub_id') or cfg.get('url', '')}"


def _is_timm_tag(timm, name: str, weights) -> bool:
    """Whether ``weights`` names pretrained weights of timm model ``name``."""
    if not isinstance(weights, str):
        return False
    if weights == "DEFAULT":
        return True
    try:
        return f"{name}.{weights}" in timm.list_pretrained(f"{name}.*")
    except Exception:  # a name timm's filter cannot take
        return False


def _timm_checked_file(model_name: str) -> str | None:
    """Check timm weights that come from a URL into torch's cache (as
    :func:`_registry_file` does); return the file's path, if any.

    Weights from the Hugging Face hub are not checked here: timm reads them
    as safetensors or with ``weights_only=True`` (no code runs), and the hub
    stores each file under its own content hash.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    if cfg is None or not isinstance(cfg.url, str) or not cfg.url:
        return None
    if cfg.hf_hub_id and importlib.util.find_spec("huggingface_hub") is not None:
        return None
    path = _hub_file(cfg.url)
    match = _HASH_IN_NAME.search(path.name)
    if match and os.path.lexists(path):
        _check_hash_prefix(path, match.group(1), "the pretrained weights", model_name)
    return str(path)


@contextlib.contextmanager
def _timm_hash_check():
    """timm downloads without checking the published hash unless asked."""
    from timm.models import _builder, set_pretrained_check_hash

    before = bool(getattr(_builder, "_CHECK_HASH", False))
    set_pretrained_check_hash(True)
    try:
        yield
    finally:
        set_pretrained_check_hash(before)


# --- local files -------------------------------------------------------------
