"""Rates read off a learning-rate sweep's curve, by three rules."""

from __future__ import annotations

import numpy as np

#: The rules, the default first.
RULES = ("valley", "minimum", "steepest")


def suggest_lrs(lrs, smoothed) -> dict:
    """Suggested rates from a sweep, one per rule.

    ``"minimum"``: a tenth of the rate at the lowest smoothed loss (the
    lesson's reading of the plot). ``"steepest"``: the rate where the
    smoothed loss falls fastest per log-rate step, between the first tenth
    of the sweep (where the smoothing is still warming up) and the minimum.
    ``"valley"``: two thirds of the way down the longest stretch over which
    the smoothed loss only falls (small bumps below 1% of the loss range
    allowed).
    """
    lrs = np.asarray(lrs, dtype=float)
    loss = np.asarray(smoothed, dtype=float)
    if len(lrs) < 3:
        raise ValueError(
            f"the sweep ran only {len(lrs)} iterations before the loss diverged; "
            "lower start_lr."
        )
    i_min = int(np.argmin(loss))
    out = {"minimum": float(lrs[i_min] / 10)}
    skip = min(len(loss) // 10, max(i_min - 2, 0))
    upto = max(i_min, skip + 2)
    slope = np.gradient(loss[skip : upto + 1], np.log(lrs[skip : upto + 1]))
    out["steepest"] = float(lrs[skip + int(np.argmin(slope))])
    out["valley"] = float(lrs[_valley(loss)])
    return out


def _valley(loss) -> int:
    """Two thirds down the longest run where the loss keeps falling."""
    tol = 0.01 * (np.nanmax(loss) - np.nanmin(loss) + 1e-12)
    best_start, best_len, start = 0, 1, 0
    running_min = loss[0]
    for i in range(1, len(loss)):
        if loss[i] <= running_min + tol:
            running_min = min(running_min, loss[i])
        else:
            start, running_min = i, loss[i]
        if i - start + 1 > best_len:
            best_start, best_len = start, i - start + 1
    end = best_start + best_len - 1
    return best_start + int(round((end - best_start) * 2 / 3))
