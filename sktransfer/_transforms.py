"""Preprocessing presets and deterministic views (plain and TTA).

A view is the crop of the photo that the network sees. The plain view is the
weights' own evaluation preset (resize the short side, centre crop). TTA views
are fixed, seeded variations of it (flip, zoom, off-centre crop), so that each
of them is a pure function of the image and can be cached like the plain view.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Preprocessing:
    """How a backbone wants its input: the weights' evaluation preset."""

    resize_size: int = 256
    crop_size: int = 224
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"

    def with_image_size(self, image_size: int | None) -> Preprocessing:
        """The same preset at another crop size, keeping the crop ratio."""
        if image_size is None or image_size == self.crop_size:
            return self
        ratio = self.crop_size / self.resize_size
        return Preprocessing(
            resize_size=int(round(image_size / ratio)),
            crop_size=int(image_size),
            mean=self.mean,
            std=self.std,
            interpolation=self.interpolation,
        )

    def as_dict(self) -> dict:
        return asdict(self)


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

    @property
    def key(self) -> str:
        if self == PLAIN:
            return "plain"
        return (
            f"flip={int(self.flip)},zoom={self.zoom:.4f},"
            f"dx={self.dx:.4f},dy={self.dy:.4f}"
        )


PLAIN = View()


def tta_views(n: int, max_zoom: float = 1.1) -> list[View]:
    """The plain view followed by ``n`` fixed augmented views.

    The first augmented view is the horizontal mirror (the most useful TTA
    view for photos); the others add a mild zoom and an off-centre crop. The
    parameters come from a fixed seed, so the views (and their cached
    features) are the same in every process and every run.
    """
    views = [PLAIN]
    rng = np.random.default_rng(20180101)
    for i in range(n):
        if i == 0:
            views.append(View(flip=True))
            continue
        zoom = float(rng.uniform(1.0, max_zoom))
        dx, dy = (float(v) for v in rng.uniform(-1.0, 1.0, size=2))
        views.append(View(flip=bool(i % 2 == 0), zoom=zoom, dx=dx, dy=dy))
    return views


def crop_box(width: int, height: int, pre: Preprocessing, view: View) -> tuple:
    """The region of the original image that becomes the network input.

    Resizing the short side to ``resize_size`` and then centre-cropping
    ``crop_size`` is the same as cropping a square of side
    ``short * crop_size / resize_size`` from the original and resizing that
    square once, which is what :func:`render` does (one resize, not two).
    """
    short = min(width, height)
    side = short * pre.crop_size / pre.resize_size / view.zoom
    side = min(side, short)
    cx = width / 2 + view.dx * (width - side) / 2
    cy = height / 2 + view.dy * (height - side) / 2
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def render(img: Image.Image, pre: Preprocessing, view: View = PLAIN) -> np.ndarray:
    """Return the ``(crop, crop, 3)`` uint8 network input for one RGB image."""
    box = crop_box(img.width, img.height, pre, view)
    size = (pre.crop_size, pre.crop_size)
    out = img.resize(size, _RESAMPLE[pre.interpolation], box=box, reducing_gap=3.0)
    if view.flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out, dtype=np.uint8)


def to_tensor(batch: np.ndarray, pre: Preprocessing) -> torch.Tensor:
    """uint8 ``(n, H, W, 3)`` -> normalised float ``(n, 3, H, W)``, channels_last.

    The NHWC buffer is used as it is: permuting it gives a channels_last
    tensor with no copy, which is the layout the CPU convolution kernels like.
    """
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    return (x - mean) / std


AUGMENTATIONS = ("side_on", "top_down")


def random_augment(
    img: Image.Image,
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
    flips and 90-degree rotations. ``None`` returns the plain view.
    """
    if kind is None:
        return render(img, pre, PLAIN)
    if kind not in AUGMENTATIONS:
        raise ValueError(
            f"augment must be one of {AUGMENTATIONS} or None; got {kind!r}."
        )
    if max_rotate:
        angle = float(rng.uniform(-max_rotate, max_rotate))
        img = img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False)
    if kind == "top_down":
        k = int(rng.integers(4))
        if k:
            img = img.transpose(
                (
                    Image.Transpose.ROTATE_90,
                    Image.Transpose.ROTATE_180,
                    Image.Transpose.ROTATE_270,
                )[k - 1]
            )
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    view = View(
        flip=bool(rng.random() < 0.5),
        zoom=float(rng.uniform(1.0, max(1.0, max_zoom))),
        dx=float(rng.uniform(-1, 1)),
        dy=float(rng.uniform(-1, 1)),
    )
    out = render(img, pre, view)
    if max_lighting:
        brightness = float(rng.uniform(-max_lighting, max_lighting)) * 255.0
        contrast = 1.0 + float(rng.uniform(-max_lighting, max_lighting))
        mean = out.mean()
        out = np.clip((out - mean) * contrast + mean + brightness, 0, 255).astype(
            np.uint8
        )
    return out


def augmented_copies(
    image,
    n=8,
    *,
    augment="side_on",
    image_size=224,
    max_zoom=1.1,
    random_state=0,
):
    """``n`` randomly augmented copies of one image, as training sees them.

    Parameters
    ----------
    image : str, PIL image or uint8 array
        One image (a path is decoded like any training image).
    n : int, default=8
        Number of copies.
    augment : {"side_on", "top_down"} or None, default="side_on"
        The augmentation preset (see ``PretrainedImageClassifier``).
    image_size : int, default=224
        Side of each square copy.
    max_zoom : float, default=1.1
        Largest random zoom.
    random_state : int, default=0
        Seed of the draws: the same seed gives the same copies.

    Returns
    -------
    copies : ndarray of shape (n, image_size, image_size, 3), uint8
    """
    from ._images import load_image

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}.")
    pre = Preprocessing().with_image_size(int(image_size))
    img = load_image(image, draft_size=pre.resize_size)
    rng = np.random.default_rng(random_state)
    return np.stack(
        [random_augment(img, pre, rng, augment, max_zoom) for _ in range(n)]
    )
