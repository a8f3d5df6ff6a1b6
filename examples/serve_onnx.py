"""Classify a folder of photos with an exported ONNX model, and nothing else.

A service needs only the ``.onnx`` file that
``sktransfer.export.export_onnx`` wrote, ONNX Runtime, Pillow and numpy: no
scikit-learn, no PyTorch, no sktransfer.
Normalisation, network, head and softmax are inside the graph; the file's
metadata holds the class names and how to resize and crop a photo, which
this script repeats with Pillow as the estimator does (decode, EXIF
orientation, RGB, then cut the box of whole pixels that ``resize_mode`` says
and resize it to the square, padding it in ``"pad"`` mode). Pillow's resize
and the estimator's agree within a level or two on a few pixels.

    python examples/serve_onnx.py model.onnx photos/

prints one line per photo: ``file -> class (probability)``.

To make a model file first (``pip install 'sktransfer[export]'``)::

    from sktransfer import PretrainedImageClassifier
    from sktransfer.datasets import load_image_folder
    from sktransfer.export import export_onnx
    paths, labels = load_image_folder("../shared/data/hymenoptera_data/train")
    clf = PretrainedImageClassifier(
        "mobilenet_v2", weights="../shared/weights/mobilenet_v2-imagenet.pth"
    ).fit(paths, labels)
    export_onnx(clf, "model.onnx")
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}
SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def load_model(path):
    """The ONNX Runtime session and the metadata sktransfer stored in it."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map.get("sktransfer")
    if meta is None:
        sys.exit(f"{path} has no sktransfer metadata: export it with export_onnx.")
    return session, json.loads(meta)


def prepare(path, pre) -> np.ndarray:
    """One photo as the ``(crop, crop, 3)`` uint8 input the model expects."""
    img = Image.open(path)
    if img.format == "JPEG":  # decode large JPEGs at reduced scale, as fit did
        w, h = img.size
        scale = pre["resize_size"] / min(w, h)
        img.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
    img.load()
    img = ImageOps.exif_transpose(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
    img = img.convert("RGB")
    side = pre["crop_size"]
    mode = pre.get("resize_mode", "crop")
    if mode == "crop":
        # resize the short side to resize_size, then centre-crop crop_size: the
        # same as cropping the matching square of the original, resized once
        short = min(img.width, img.height)
        box_w = box_h = min(short, short * side / pre["resize_size"])
    else:  # "squish" and "pad" keep the whole picture
        box_w, box_h = img.width, img.height
    # the box on whole pixels, as sktransfer cuts it: its size rounded once,
    # its centre kept
    w = min(img.width, max(1, round(box_w)))
    h = min(img.height, max(1, round(box_h)))
    left, top = round((img.width - w) / 2), round((img.height - h) / 2)
    img = img.crop((left, top, left + w, top + h))
    size = (side, side)
    if mode == "pad":  # fit inside the square, keeping the aspect ratio
        scale = side / max(box_w, box_h)
        size = (
            min(side, max(1, round(box_w * scale))),
            min(side, max(1, round(box_h * scale))),
        )
    out = img if img.size == size else img.resize(size, RESAMPLE[pre["interpolation"]])
    if size != (side, side):  # pad with the colour normalisation makes zero
        colour = tuple(int(round(m * 255)) for m in pre["mean"])
        canvas = Image.new("RGB", (side, side), colour)
        canvas.paste(out, ((side - size[0]) // 2, (side - size[1]) // 2))
        out = canvas
    return np.asarray(out, dtype=np.uint8)


def classify(model_path, folder, batch_size=16):
    """Yield ``(file, class, probability)`` for each photo of ``folder``."""
    session, meta = load_model(model_path)
    pre, classes = meta["preprocessing"], meta["classes"]
    input_name = session.get_inputs()[0].name
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in SUFFIXES)
    for start in range(0, len(files), batch_size):
        batch, names = [], []
        for path in files[start : start + batch_size]:
            try:
                batch.append(prepare(path, pre))
                names.append(path)
            except OSError as exc:  # not an image, or a damaged one
                print(f"{path} -> could not be read ({exc})", file=sys.stderr)
        if not batch:
            continue
        (proba,) = session.run(None, {input_name: np.stack(batch)})
        for path, row in zip(names, proba):
            k = int(np.argmax(row))
            label = classes[k] if classes else k
            yield path, label, float(row[k])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="the .onnx file written by export_onnx")
    parser.add_argument("folder", help="a folder of photos (searched recursively)")
    args = parser.parse_args(argv)
    root = Path(args.folder)
    for path, label, p in classify(args.model, root):
        print(f"{path.relative_to(root)} -> {label} ({p:.3f})")


if __name__ == "__main__":
    main()
