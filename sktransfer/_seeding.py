"""torch's global random state, seeded for a block and restored after it.

Training draws its initial weights, dropout masks and batch orders from
torch's global generator; :func:`seeded` gives each of them the fit's seed
and leaves the caller's random stream as it was.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def seeded(seed):
    """Run a block with torch's global RNG seeded, restoring it afterwards."""
    with torch.random.fork_rng(devices=cuda_devices()):
        torch.manual_seed(int(seed))
        yield


def cuda_devices():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []
