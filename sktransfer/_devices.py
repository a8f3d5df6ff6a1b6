"""Where and how precisely features are computed: the ``device`` and
``precision`` parameters.

``device="auto"`` picks CUDA when available, then Apple's MPS, else the CPU;
a named device must exist on this machine (:func:`resolve_device`), or at
least be a device name (:func:`check_device_name`, for a fitted model whose
body stays where it was loaded). ``precision="auto"`` uses bf16 autocast
where the hardware runs bf16 natively (:func:`bf16_is_fast`), fp16 autocast
on CUDA GPUs with fp16 tensor cores but no native bf16 (:func:`fp16_is_fast`:
T4, V100), fp32 elsewhere. :func:`autocast_dtype` is the one place that turns
a precision into the dtype autocast runs in.
"""

from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """The values ``device`` accepts on this machine."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def resolve_device(device) -> torch.device:
    """The ``device`` parameter as a torch device that exists here.

    Raises a ``ValueError`` naming the parameter and the devices available
    for a name torch does not know, a device this machine lacks, or one that
    holds no data (``"meta"``).
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")  # Apple silicon
        return torch.device("cpu")
    dev = check_device_name(device)
    if dev.type == "cpu":
        return dev
    choices = ", ".join(repr(d) for d in available_devices())
    shown = repr(str(device)) if isinstance(device, str) else repr(device)
    module = getattr(torch, dev.type, None)
    if dev.type == "mps":
        module = getattr(torch.backends, "mps", None)
    is_available = getattr(module, "is_available", None)
    if is_available is None or not is_available():
        raise ValueError(
            f"device={shown}: this machine has no {dev.type.upper()} device "
            f"(or torch was built without it); available here: {choices}."
        )
    count = getattr(module, "device_count", None)
    if dev.index is not None and count is not None and dev.index >= count():
        raise ValueError(
            f"device={shown}: this machine has {count()} {dev.type.upper()} "
            f"device(s); available here: {choices}."
        )
    return dev


def check_device_name(device) -> torch.device:
    """``device`` as a torch device, without asking whether this machine has
    it: a ``ValueError`` for a name torch does not know or a device that
    holds no data (``"meta"``)."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cpu")
    shown = repr(str(device)) if isinstance(device, str) else repr(device)
    if isinstance(device, str):
        device = device.strip().lower()  # "CPU", "Cuda:0"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        choices = ", ".join(repr(d) for d in available_devices())
        raise ValueError(
            f"device={shown} is not a device name; available here: {choices}."
        ) from None
    if dev.type == "meta":
        choices = ", ".join(repr(d) for d in available_devices())
        raise ValueError(
            f"device={shown} holds no data and cannot compute features; "
            f"available here: {choices}."
        )
    return dev


def bf16_is_fast(device: torch.device) -> bool:
    """True where bf16 matrix work runs in hardware (AVX-512 BF16/AMX, or a GPU
    with bf16 tensor cores); elsewhere autocast to bf16 is several times
    slower than fp32."""
    if device.type == "cuda":
        # not emulated bf16: on GPUs without bf16 tensor cores (T4, V100)
        # torch reports bf16 as supported by emulation, several times
        # slower than fp32
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch before 2.3 has no including_emulation
            major, _ = torch.cuda.get_device_capability(device)
            return major >= 8
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def fp16_is_fast(device: torch.device) -> bool:
    """True on CUDA GPUs with fp16 tensor cores (compute capability 7.0 and
    later: V100, T4, and every later GPU). CPUs and Apple's MPS are left to
    fp32: autocast to fp16 there is emulated or unproven."""
    if device.type != "cuda":
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 7


PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: torch.device) -> str:
    """The ``precision`` parameter as ``"fp32"``, ``"bf16"`` or ``"fp16"`` on
    ``device``: ``"auto"`` picks bf16 where it is native, else fp16 where
    fp16 tensor cores are (GPUs without native bf16), else fp32."""
    if precision == "auto":
        if bf16_is_fast(device):
            return "bf16"
        return "fp16" if fp16_is_fast(device) else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be 'auto', 'fp32', 'bf16' or 'fp16'; got {precision!r}."
        )
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype autocast runs the network's matrix work in for a resolved
    ``precision``; None for fp32 (no autocast)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
