"""TrivialAugment (Müller & Hutter, 2021), wide search space: one operation
drawn uniformly from 14, at a magnitude drawn uniformly from its range.

Written on PIL with the caller's numpy generator (torchvision's
``TrivialAugmentWide`` draws from torch's global generator), so that a draw
is a pure function of the generator: an augmented copy stays a function of
the photo's fingerprint, whichever decoding thread renders it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

#: The wide space's largest magnitudes (fraction of the image side for
#: translations: 32 px of torchvision's 224).
_SHEAR, _TRANSLATE, _ROTATE, _ENHANCE = 0.99, 32 / 224, 135.0, 0.99


def _enhance(kind):
    def op(img, m, fill):
        return kind(img).enhance(1.0 + m)

    return op


def _shear(axis):
    def op(img, m, fill):
        coeffs = (1, m, -m * img.height / 2, 0, 1, 0)
        if axis == "y":
            coeffs = (1, 0, 0, m, 1, -m * img.width / 2)
        return img.transform(
            img.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR,
            fillcolor=fill,
        )  # fmt: skip

    return op


def _translate(axis):
    def op(img, m, fill):
        shift = m * (img.width if axis == "x" else img.height)
        coeffs = (1, 0, shift, 0, 1, 0) if axis == "x" else (1, 0, 0, 0, 1, shift)
        return img.transform(img.size, Image.Transform.AFFINE, coeffs, fillcolor=fill)

    return op


def _posterize(img, m, fill):
    return ImageOps.posterize(img, int(round(m)))


def _solarize(img, m, fill):
    return ImageOps.solarize(img, int(m))


#: name -> (operation, magnitude range, signed)
OPERATIONS = {
    "identity": (lambda img, m, fill: img, (0.0, 0.0), False),
    "shear_x": (_shear("x"), (0.0, _SHEAR), True),
    "shear_y": (_shear("y"), (0.0, _SHEAR), True),
    "translate_x": (_translate("x"), (0.0, _TRANSLATE), True),
    "translate_y": (_translate("y"), (0.0, _TRANSLATE), True),
    "rotate": (
        lambda img, m, fill: img.rotate(
            m, resample=Image.Resampling.BILINEAR, fillcolor=fill
        ),
        (0.0, _ROTATE),
        True,
    ),
    "brightness": (_enhance(ImageEnhance.Brightness), (0.0, _ENHANCE), True),
    "color": (_enhance(ImageEnhance.Color), (0.0, _ENHANCE), True),
    "contrast": (_enhance(ImageEnhance.Contrast), (0.0, _ENHANCE), True),
    "sharpness": (_enhance(ImageEnhance.Sharpness), (0.0, _ENHANCE), True),
    "posterize": (_posterize, (2, 8), False),
    "solarize": (_solarize, (0, 255), False),
    "autocontrast": (lambda img, m, fill: ImageOps.autocontrast(img), (0, 0), False),
    "equalize": (lambda img, m, fill: ImageOps.equalize(img), (0, 0), False),
}


def trivial_augment(
    pixels: np.ndarray, rng: np.random.Generator, fill=(0, 0, 0)
) -> np.ndarray:
    """One TrivialAugment draw on a ``(H, W, 3)`` uint8 array."""
    names = list(OPERATIONS)
    op, (low, high), signed = OPERATIONS[names[int(rng.integers(len(names)))]]
    magnitude = float(rng.uniform(low, high))
    if signed and rng.random() < 0.5:
        magnitude = -magnitude
    out = op(Image.fromarray(np.ascontiguousarray(pixels)), magnitude, fill)
    # a copy: torch.from_numpy warns on PIL's read-only buffers
    return np.array(out.convert("RGB"), dtype=np.uint8)
