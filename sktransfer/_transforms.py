"""Preprocessing presets and deterministic views (plain and TTA).

A view is the part of the photo that the network sees. The plain view is the
weights' own evaluation preset; TTA views are fixed, seeded variations of it
(flip, zoom, off-centre crop), so that each of them is a pure function of the
image and can be cached like the plain view.

How a picture becomes a square (``resize_mode``, as fastai offers it):

* ``"crop"`` (default, the weights' preset): resize the short side to
  ``resize_size`` and cut the centre ``crop_size`` square; the borders of
  long pictures are lost.
* ``"squish"``: resize the whole picture to the square, ignoring its aspect
  ratio; nothing is lost, shapes are stretched.
* ``"pad"``: fit the whole picture inside the square, keeping its aspect
  ratio, and fill the rest with the preprocessing mean colour (zero after
  normalisation, so padding adds no signal). A constant rather than
  fastai's reflection: reflection would mirror objects near the edges into
  the padding, doubling them.

``crop_size`` is the side of the square in every mode; ``resize_size`` only
matters to ``"crop"``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, replace
from numbers import Integral, Real

import numpy as np
import torch
from PIL import Image

from ._trivial_augment import trivial_augment
from ._user_augment import user_pixels

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}

#: Filters resized by torch's antialiased uint8 kernels (:func:`resize_box`).
_TORCH_RESIZE = ("bilinear", "bicubic")

RESIZE_MODES = ("crop", "squish", "pad")

#: Largest side of the network input: 4096 x 4096 is far beyond what any
#: backbone was trained at, and one batch of it already takes gigabytes.
MAX_CROP_SIZE = 4096


def _show(value) -> str:
    """``repr`` of a value as the user wrote it (``'cats'``, not
    ``np.str_('cats')``)."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _side(key: str, value, largest: int | None = None) -> int:
    whole = not isinstance(value, (bool, np.bool_)) and (
        isinstance(value, Integral)
        or (isinstance(value, Real) and float(value).is_integer())
    )
    if not whole or value < 1 or (largest is not None and value > largest):
        bound = f" and <= {largest}" if largest is not None else ""
        raise ValueError(
            f"preprocessing[{key!r}] must be a whole number of pixels >= 1"
            f"{bound}; got {_show(value)}."
        )
    return int(value)


def _channels(key: str, value) -> tuple:
    """Three finite floats, one per RGB channel (std: each > 0)."""
    rule = "three numbers in (0, 1]" if key == "std" else "three numbers in [0, 1]"
    example = "(0.229, 0.224, 0.225)" if key == "std" else "(0.485, 0.456, 0.406)"
    problem = None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        problem = f"got {_show(value)}"
    elif len(value) != 3:
        problem = f"got {len(value)} value(s): {_show(tuple(value))}"
    else:
        try:
            floats = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            floats = None
        if floats is None or any(
            isinstance(v, (str, bytes, bool, np.bool_)) for v in value
        ):
            problem = f"got {_show(tuple(value))}"
        elif not all(math.isfinite(v) for v in floats):
            problem = f"got non-finite values {floats}"
        elif key == "std" and min(floats) <= 0:
            problem = (
                f"got {floats}; a std of 0 divides by zero (NaN features), a "
                "negative one inverts the colours"
            )
        elif min(floats) < 0 or max(floats) > 1:
            problem = f"got {floats} (in units of 0-255? divide by 255)"
        else:
            return floats
    raise ValueError(
        f"preprocessing[{key!r}] must be {rule}, one per RGB channel, for "
        f"pixel values scaled to [0, 1], such as {example}; {problem}."
    )


def _choice(key: str, value, choices) -> str:
    if isinstance(value, str) and value.lower() in choices:
        return value.lower()
    raise ValueError(
        f"preprocessing[{key!r}] must be one of {', '.join(map(repr, choices))} "
        f"(case-insensitive); got {_show(value)}."
    )


@dataclass(frozen=True)
class Preprocessing:
    """How a backbone wants its input: the weights' evaluation preset.

    Values are checked and normalised on creation (interpolation names in
    lower case, mean and std as tuples of floats); a bad one raises a
    ``ValueError`` naming the ``preprocessing`` key.
    """

    resize_size: int = 256
    crop_size: int = 224
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    resize_mode: str = "crop"

    def __post_init__(self):
        checked = {
            "resize_size": _side("resize_size", self.resize_size),
            "crop_size": _side("crop_size", self.crop_size, MAX_CROP_SIZE),
            "mean": _channels("mean", self.mean),
            "std": _channels("std", self.std),
            "interpolation": _choice("interpolation", self.interpolation, _RESAMPLE),
            "resize_mode": _choice("resize_mode", self.resize_mode, RESIZE_MODES),
        }
        for key, value in checked.items():
            object.__setattr__(self, key, value)

    @classmethod
    def keys(cls) -> tuple:
        return tuple(cls.__dataclass_fields__)

    def with_overrides(self, overrides: dict | None) -> Preprocessing:
        """This preset with the user's ``preprocessing`` overrides applied."""
        if not overrides:
            return self
        if not isinstance(overrides, dict):
            raise ValueError(
                "preprocessing must be a dict of overrides such as "
                f"{{'resize_mode': 'pad'}} or None; got {_show(overrides)}."
            )
        unknown = [k for k in overrides if k not in self.keys()]
        if unknown:
            raise ValueError(
                f"preprocessing has unknown key(s) {', '.join(map(_show, unknown))}; "
                f"allowed: {', '.join(map(repr, self.keys()))}."
            )
        return replace(self, **overrides)

    def with_image_size(self, image_size: int | None) -> Preprocessing:
        """The same preset at another crop size, keeping the crop ratio."""
        if image_size is None or image_size == self.crop_size:
            return self
        ratio = self.crop_size / self.resize_size
        return replace(
            self,
            resize_size=max(1, int(round(image_size / ratio))),
            crop_size=int(image_size),
        )

    def as_dict(self) -> dict:
        return asdict(self)


def check_preprocessing(overrides) -> None:
    """Raise a ``ValueError`` naming the key for a bad ``preprocessing``
    parameter, before any backbone is loaded."""
    Preprocessing().with_overrides(overrides)


@dataclass(frozen=True)
class View:
    """One deterministic view of an image: flip, zoom and crop offset.

    ``zoom`` > 1 crops a smaller part of the picture; ``dx``/``dy`` in
    [-1, 1] move the crop towards the left/top (-1) or right/bottom (+1)
    edge of the room left around it.
    """

    flip: bool = False
    zoom: float = 1.0
    dx: float = 0.0
    dy: float = 0.0
    #: top-down views: a vertical flip and a number of quarter turns
    vflip: bool = False
    turns: int = 0

    @property
    def key(self) -> str:
        if self == PLAIN:
            return "plain"
        key = (
            f"flip={int(self.flip)},zoom={self.zoom:.4f},"
            f"dx={self.dx:.4f},dy={self.dy:.4f}"
        )
        if self.vflip or self.turns:  # older keys stay as they were
            key += f",vflip={int(self.vflip)},turns={self.turns % 4}"
        return key


PLAIN = View()


def tta_views(n: int, max_zoom: float = 1.1, augment="side_on") -> list[View]:
    """The plain view followed by ``n`` fixed augmented views.

    The views follow the training augmentation ``augment``: ``"side_on"``
    starts with the horizontal mirror (the most useful TTA view for photos)
    and adds mild zooms and off-centre crops, some mirrored; ``"top_down"``
    adds vertical flips and quarter turns; ``None`` (for targets that a
    mirror would change) uses zooms and shifts only. The parameters come
    from a fixed seed, so the views (and their cached features) are the same
    in every process and every run.
    """
    views = [PLAIN]
    rng = np.random.default_rng(20180101)
    for i in range(n):
        flips = augment is not None
        if i == 0 and flips:
            views.append(View(flip=True))
            continue
        zoom = float(rng.uniform(1.0, max_zoom))
        dx, dy = (float(v) for v in rng.uniform(-1.0, 1.0, size=2))
        extra = {}
        if augment == "top_down":
            extra = {"vflip": bool(i % 3 == 1), "turns": i % 4}
        views.append(View(flip=flips and i % 2 == 0, zoom=zoom, dx=dx, dy=dy, **extra))
    return views


def crop_box(width: int, height: int, pre: Preprocessing, view: View) -> tuple:
    """The region of the original image that becomes the network input.

    In ``"crop"`` mode, resizing the short side to ``resize_size`` and then
    centre-cropping ``crop_size`` is the same as cropping a square of side
    ``short * crop_size / resize_size`` from the original and resizing that
    square once, which is what :func:`render` does (one resize, not two).
    In ``"squish"`` and ``"pad"`` modes the region is the whole image (a
    ``zoom`` > 1 takes a part of it, of the same shape).
    """
    if pre.resize_mode == "crop":
        short = min(width, height)
        side = short * pre.crop_size / pre.resize_size / view.zoom
        box_w = box_h = min(side, short)
    else:
        box_w, box_h = width / view.zoom, height / view.zoom
    cx = width / 2 + view.dx * (width - box_w) / 2
    cy = height / 2 + view.dy * (height - box_h) / 2
    return (cx - box_w / 2, cy - box_h / 2, cx + box_w / 2, cy + box_h / 2)


def render(img, pre: Preprocessing, view: View = PLAIN) -> np.ndarray:
    """Return the ``(crop, crop, 3)`` uint8 network input for one RGB image
    (a PIL image or an ``(H, W, 3)`` uint8 array)."""
    pixels = as_pixels(img)
    height, width = pixels.shape[:2]
    box = crop_box(width, height, pre, view)
    size = _content_size(box[2] - box[0], box[3] - box[1], pre)
    return _placed(resize_box(pixels, box, size, pre.interpolation), pre, view)


def as_pixels(img) -> np.ndarray:
    """An RGB PIL image or array as an ``(H, W, 3)`` uint8 array."""
    if isinstance(img, Image.Image):
        return np.asarray(img)
    return img


def pixel_box(box: tuple, width: int, height: int) -> tuple:
    """``box`` (floats, as :func:`crop_box` gives it) on whole pixels: its
    size rounded once (a square stays square), its centre kept, inside the
    image."""
    w = min(width, max(1, round(box[2] - box[0])))
    h = min(height, max(1, round(box[3] - box[1])))
    left = min(max(0, round((box[0] + box[2] - w) / 2)), width - w)
    top = min(max(0, round((box[1] + box[3] - h) / 2)), height - h)
    return left, top, left + w, top + h


def resize_box(pixels: np.ndarray, box: tuple, size: tuple, interpolation: str):
    """The ``box`` of ``pixels`` (on whole pixels, :func:`pixel_box`)
    resized to ``size`` = (width, height) with antialiasing.

    Bilinear and bicubic use torch's uint8 kernels, which give PIL's
    antialiased result (within a level or two on a few pixels) in a third
    of PIL's time; the other filters use PIL.
    """
    left, top, right, bottom = pixel_box(box, pixels.shape[1], pixels.shape[0])
    part = pixels[top:bottom, left:right]
    if (right - left, bottom - top) == tuple(size):
        return part
    if interpolation not in _TORCH_RESIZE:
        img = Image.fromarray(np.ascontiguousarray(part))
        return np.asarray(img.resize(size, _RESAMPLE[interpolation]))
    part = np.ascontiguousarray(part)
    if not part.flags.writeable:  # torch wants memory it may write to
        part = part.copy()
    height, width = part.shape[:2]
    # the (h, w, 3) pixels seen as a (1, 3, h, w) tensor with channels_last
    # strides in every dimension: the kernel then writes its result
    # channels_last too, which is an (h, w, 3) array as it is (a planar
    # result would take a strided copy costing as much as the resize)
    x = torch.from_numpy(part).as_strided(
        (1, 3, height, width), (height * width * 3, 1, width * 3, 3)
    )
    out = torch.nn.functional.interpolate(
        x, size=(size[1], size[0]), mode=interpolation, antialias=True
    )
    return out[0].permute(1, 2, 0).numpy()


def _content_size(box_w: float, box_h: float, pre: Preprocessing) -> tuple:
    """Size of the picture inside the square input: the whole square, or in
    ``"pad"`` mode the box fitted inside it."""
    side = pre.crop_size
    if pre.resize_mode != "pad":
        return side, side
    scale = side / max(box_w, box_h)
    return (
        min(side, max(1, round(box_w * scale))),
        min(side, max(1, round(box_h * scale))),
    )


def _placed(out: np.ndarray, pre: Preprocessing, view: View) -> np.ndarray:
    """The picture padded to the square input, then flipped and turned as
    ``view`` says, as a contiguous uint8 array."""
    side = pre.crop_size
    height, width = out.shape[:2]
    if (height, width) != (side, side):
        canvas = np.empty((side, side, 3), dtype=np.uint8)
        canvas[:] = _mean_colour(pre)
        top, left = (side - height) // 2, (side - width) // 2
        canvas[top : top + height, left : left + width] = out
        out = canvas
    if view.flip:
        out = out[:, ::-1]
    if view.vflip:
        out = out[::-1]
    if view.turns % 4:
        out = np.rot90(out, view.turns % 4)  # counter-clockwise
    return np.ascontiguousarray(out, dtype=np.uint8)


def render_rotated(img, pre: Preprocessing, view: View, angle: float) -> np.ndarray:
    """:func:`render` of ``img`` rotated by ``angle`` degrees (counter-
    clockwise, about its centre), in one affine resampling pass.

    Only the output pixels are computed: rotating the whole photo first and
    then resizing costs several times more (3 ms against well under 1 ms for
    a 500 x 375 photo), and training decodes every photo on every epoch. A
    photo larger than the output is first shrunk with the antialiasing
    resize of :func:`render`, so the rotation resamples at about 1:1. Corners
    the rotation uncovers show the photo's edge mirrored, except in
    ``"pad"`` mode, where they take the padding colour around them.
    """
    if not angle:
        return render(img, pre, view)
    pixels = as_pixels(img)
    height, width = pixels.shape[:2]
    x0, y0, x1, y1 = crop_box(width, height, pre, view)
    box_w, box_h = x1 - x0, y1 - y0
    out_w, out_h = _content_size(box_w, box_h, pre)
    scale = max(out_w / box_w, out_h / box_h)
    if scale < 0.8:
        # shrink the photo first, with the antialiasing resize ``render``
        # uses, so that the affine pass below never shrinks by more than
        # 1.25x (where bilinear sampling starts to alias) and the view looks
        # like the plain view does
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        fx, fy = size[0] / width, size[1] / height
        pixels = resize_box(pixels, (0, 0, width, height), size, pre.interpolation)
        x0, x1, y0, y1 = x0 * fx, x1 * fx, y0 * fy, y1 * fy
        box_w, box_h = x1 - x0, y1 - y0
        width, height = size
    # output pixel (u, v) -> the box in the rotated image -> the original:
    # rotating the picture counter-clockwise by ``angle`` about its centre
    # means sampling the original at the clockwise rotation of each point
    sx, sy = box_w / out_w, box_h / out_h
    cx, cy = width / 2, height / 2
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    ox, oy = x0 - cx, y0 - cy
    coeffs = (
        cos * sx, -sin * sy, cos * ox - sin * oy + cx,
        sin * sx, cos * sy, sin * ox + cos * oy + cy,
    )  # fmt: skip
    fill = _mean_colour(pre)
    if pre.resize_mode != "pad":
        pixels, coeffs = _mirrored_margin(pixels, coeffs, (out_w, out_h))
    out = Image.fromarray(np.ascontiguousarray(pixels)).transform(
        (out_w, out_h),
        Image.Transform.AFFINE,
        coeffs,
        resample=Image.Resampling.BILINEAR,
        fillcolor=fill,
    )
    return _placed(np.asarray(out), pre, view)


def _mirrored_margin(pixels: np.ndarray, coeffs: tuple, size: tuple):
    """The part of ``pixels`` that the affine map ``coeffs`` (output pixel
    -> source point) reads for an output of ``size``, widened by a mirrored
    margin where it reaches past the photo, and the map shifted onto it.

    The corners a rotation uncovers then show the photo's own edge mirrored
    (fastai's ``padding_mode="reflection"``) instead of a constant colour,
    which would teach the network that tilted photos have flat triangles
    in their corners. Only the part read is copied, so this costs less than
    the copy of the whole photo it replaces. A margin wider than the part
    itself is cut to what mirroring can give; beyond it is the fill colour.
    """
    a, b, c, d, e, f = coeffs
    out_w, out_h = size
    xs = [a * u + b * v + c for u in (0, out_w) for v in (0, out_h)]
    ys = [d * u + e * v + f for u in (0, out_w) for v in (0, out_h)]
    height, width = pixels.shape[:2]
    # one pixel more on each side for the bilinear neighbours
    x0, x1 = math.floor(min(xs)) - 1, math.ceil(max(xs)) + 1
    y0, y1 = math.floor(min(ys)) - 1, math.ceil(max(ys)) + 1
    left, top = max(0, x0), max(0, y0)
    bottom, right = max(top + 1, min(height, y1)), max(left + 1, min(width, x1))
    part = pixels[top:bottom, left:right]
    rows, cols = part.shape[:2]
    # reflection needs a margin shorter than the side it mirrors
    pad_l, pad_r = min(max(0, -x0), cols - 1), min(max(0, x1 - width), cols - 1)
    pad_t, pad_b = min(max(0, -y0), rows - 1), min(max(0, y1 - height), rows - 1)
    if pad_l or pad_r or pad_t or pad_b:
        part = np.pad(part, ((pad_t, pad_b), (pad_l, pad_r), (0, 0)), mode="reflect")
    return part, (a, b, c - left + pad_l, d, e, f - top + pad_t)


def _mean_colour(pre: Preprocessing) -> tuple:
    """The colour that normalisation turns into zero."""
    return tuple(int(round(m * 255)) for m in pre.mean)


def to_tensor(batch: np.ndarray, pre: Preprocessing, device=None) -> torch.Tensor:
    """uint8 ``(n, H, W, 3)`` -> normalised float ``(n, 3, H, W)``, channels_last,
    on ``device`` (default: the CPU).

    The NHWC buffer is used as it is: permuting it gives a channels_last
    tensor with no copy, which is the layout the CPU convolution kernels like.
    For a GPU the uint8 pixels travel (a quarter of the bytes of floats),
    from pinned memory without blocking, and are normalised there.
    """
    x = torch.from_numpy(batch)
    if device is not None and torch.device(device).type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).float()
    mean = torch.tensor(pre.mean, dtype=torch.float32, device=x.device) * 255.0
    std = torch.tensor(pre.std, dtype=torch.float32, device=x.device) * 255.0
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


AUGMENTATIONS = ("side_on", "top_down", "trivial")


def random_augment(
    img,
    pre: Preprocessing,
    rng: np.random.Generator,
    kind: str | None = "side_on",
    max_zoom: float = 1.1,
    max_rotate: float = 10.0,
    max_lighting: float = 0.05,
) -> np.ndarray:
    """One randomly augmented ``(crop, crop, 3)`` uint8 training view.

    ``"side_on"`` (photos taken from the side: animals, objects): horizontal
    flips, rotations up to ``max_rotate`` degrees, zoom up to ``max_zoom``
    with a random crop position, and small brightness/contrast changes.
    ``"top_down"`` (satellite, microscope, medical images) adds vertical
    flips and 90-degree rotations. ``"trivial"`` is ``"side_on"``'s flip,
    zoom and rotation followed by one TrivialAugment operation (wide space:
    shears, shifts, rotations up to 135 degrees, colour, contrast,
    sharpness, posterize, solarize, ...; see :mod:`._trivial_augment`) in
    place of the small lighting change. A callable is the user's own
    augmentation (see :mod:`._user_augment`). ``None`` returns the plain
    view.
    """
    if kind is None:
        return render(img, pre, PLAIN)
    if callable(kind):  # the user's own (see _user_augment)
        out = user_pixels(kind, as_pixels(img))
        if out.shape[:2] == (pre.crop_size, pre.crop_size):
            return out
        return render(out, pre, PLAIN)
    if kind not in AUGMENTATIONS:
        raise ValueError(
            f"augment must be one of {AUGMENTATIONS} or None; got {_show(kind)}."
        )
    angle = float(rng.uniform(-max_rotate, max_rotate)) if max_rotate else 0.0
    turns, vflip = 0, False
    if kind == "top_down":
        turns, vflip = int(rng.integers(4)), bool(rng.random() < 0.5)
    view = View(
        flip=bool(rng.random() < 0.5),
        zoom=float(rng.uniform(1.0, max(1.0, max_zoom))),
        dx=float(rng.uniform(-1, 1)),
        dy=float(rng.uniform(-1, 1)),
    )
    out = render_rotated(img, pre, view, angle)
    # quarter turns and vertical flips of the square output: the same
    # distribution as turning the photo first, at a fraction of the cost
    if vflip:
        out = out[::-1]
    if turns:
        out = np.rot90(out, turns)
    out = np.ascontiguousarray(out)
    if kind == "trivial":
        fill = (0, 0, 0) if pre.resize_mode == "crop" else _mean_colour(pre)
        return trivial_augment(out, rng, fill)
    if max_lighting:
        brightness = float(rng.uniform(-max_lighting, max_lighting)) * 255.0
        contrast = 1.0 + float(rng.uniform(-max_lighting, max_lighting))
        mean = out.mean()
        out = np.clip((out - mean) * contrast + mean + brightness, 0, 255).astype(
            np.uint8
        )
    return out


@dataclass(frozen=True)
class AugmentedView:
    """Copy number ``index`` of the fixed augmented copies of every photo.

    Each copy is a :func:`random_augment` draw from a generator seeded by
    the photo's fingerprint and ``index``: a pure function of the photo, so
    its features can be cached like the plain view's and shared by every
    fold, grid candidate and refit. Different photos get different draws.
    """

    index: int
    augment: object = "side_on"  # a preset's name or the user's function
    max_zoom: float = 1.1

    @property
    def key(self) -> str | None:
        if callable(self.augment):
            return None  # the user's function: never cached
        # "corners=mirror": the rotated corners changed from black (crop
        # mode) and the mean colour (squish mode) to mirrored edges, so
        # copies cached before that are never read as the new ones
        return (
            f"augmented={self.augment},copy={self.index},"
            f"zoom={self.max_zoom:.4f},corners=mirror"
        )

    def rng(self, fingerprint: str) -> np.random.Generator:
        digest = hashlib.blake2b(f"{fingerprint}:{self.key}".encode(), digest_size=8)
        return np.random.default_rng(int.from_bytes(digest.digest(), "little"))


def render_view(img, pre: Preprocessing, view, fingerprint: str):
    """The network input of ``img`` under a fixed view or augmented copy
    (the copy is drawn from the image's ``fingerprint``)."""
    if isinstance(view, AugmentedView):
        rng = view.rng(fingerprint)
        return random_augment(img, pre, rng, view.augment, view.max_zoom)
    return render(img, pre, view)
