"""Prediction: the fitted model's outputs, averaged over views.

The pooled features of every view are read from the feature cache or
computed once per body of the model (by the extractor that runs it); the
rest of the model (:meth:`~._model.FittedModel.head_outputs`) then runs on
them in batches.
"""

from __future__ import annotations

import numpy as np
import torch

from ._threads import small_work_threads
from .exceptions import DivergedError


def predict_outputs(model, extractors, X, views, extract_batch_size, verbose=0):
    """Average of the model's outputs over ``views`` of the images ``X``.

    ``extractors[i]`` runs ``model.bodies[i]`` (with the feature cache).
    """
    features = [
        extractor.transform(
            X, views=views, batch_size=extract_batch_size, verbose=verbose
        )
        for extractor in extractors
    ]
    device = extractors[0].device
    total = None
    for v in range(len(views)):
        out = head_outputs(model, [f[v] for f in features], device)
        total = out if total is None else total + out
    result = total / len(views)
    if not np.all(np.isfinite(result)):
        raise DivergedError(
            "the model's outputs are not finite: the fitted weights hold NaN or "
            "inf (training diverged, or the weights file is corrupt)."
        )
    return result


def head_outputs(model, features, device, batch_size=4096) -> np.ndarray:
    """``model.head_outputs`` on the features of each body (float32 arrays
    of one row per image), as a float64 array."""
    model.eval()
    out = []
    with small_work_threads(True), torch.inference_mode():
        for start in range(0, len(features[0]), batch_size):
            part = [
                torch.from_numpy(f[start : start + batch_size]).to(device)
                for f in features
            ]
            out.append(model.head_outputs(part).cpu().numpy())
    return np.concatenate(out).astype(np.float64)
