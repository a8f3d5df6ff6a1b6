"""Prediction: the fitted heads' outputs, averaged over views and members.

The features of every view are read from the cache or computed once per
extractor; each ensemble member's head then runs on them in batches.
"""

from __future__ import annotations

import numpy as np
import torch

from ._threads import small_work_threads
from .exceptions import DivergedError


def predict_outputs(members, X, views, task, extract_batch_size, verbose=0):
    """Average of the task outputs over views and ensemble members.

    ``members`` is a list of ``(extractor, head)``; members sharing an
    extractor share its features (computed or read once).
    """
    output = task.output_module()
    total, count = None, 0
    features = {}
    for extractor, head in members:
        key = id(extractor)
        if key not in features:
            features[key] = extractor.transform(
                X, views=views, batch_size=extract_batch_size, verbose=verbose
            )
        for view_features in features[key]:
            out = head_outputs(head, output, view_features, extractor.device)
            total = out if total is None else total + out
            count += 1
    result = total / count
    if not np.all(np.isfinite(result)):
        raise DivergedError(
            "the model's outputs are not finite: the fitted weights hold NaN or "
            "inf (training diverged, or the weights file is corrupt)."
        )
    return result


def head_outputs(head, output, features, device, batch_size=4096) -> np.ndarray:
    head.eval()
    out = []
    with small_work_threads(True), torch.inference_mode():
        for start in range(0, len(features), batch_size):
            x = torch.from_numpy(features[start : start + batch_size]).to(device)
            out.append(output(head(x).float()).cpu().numpy())
    return np.concatenate(out).astype(np.float64)
