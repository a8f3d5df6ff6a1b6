"""Decoding ahead of the network, in a pool of threads.

Decoding and resizing a photo (PIL) releases the GIL, so threads decode
several batches at once while the body computes on the previous one. Threads
rather than ``DataLoader`` worker processes: no pickling of the data set, no
start-up cost per epoch, and no copies of the images between processes.
"""

from __future__ import annotations

import collections
import os
from concurrent.futures import ThreadPoolExecutor

import torch


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def decode_workers(device: torch.device | str = "cpu") -> int:
    """Threads that decode images ahead of the body on ``device``.

    On a GPU the body is far faster than one decoding thread (~400 photos a
    second): decode on every CPU but one, up to 8. On a CPU the body's
    forward pass already uses the cores, and decoding competes with it: one
    decoding thread per four CPUs (one on a small machine), which keeps the
    body busy without taking its cores.
    ``SKTRANSFER_DECODE_WORKERS`` overrides the choice.
    """
    chosen = os.environ.get("SKTRANSFER_DECODE_WORKERS", "").strip()
    if chosen.isdigit() and int(chosen) > 0:
        return int(chosen)
    cpus = available_cpus()
    if torch.device(device).type == "cuda":
        return max(1, min(8, cpus - 1))
    return max(1, cpus // 4)


def ordered_map(fn, items, workers: int = 1, ahead: int = 2):
    """Yield ``fn(item)`` for each item, in order, computed by ``workers``
    background threads up to ``workers + ahead`` items in advance.

    An exception raised by ``fn`` is raised here, at its item. Closing the
    generator early (an error or Ctrl-C in the consumer) cancels the items
    not yet started and waits for those being computed.
    """
    items = list(items)
    if len(items) <= 1:
        for item in items:
            yield fn(item)
        return
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode")
    pending: collections.deque = collections.deque()
    todo = iter(items)
    try:
        for item in todo:
            pending.append(pool.submit(fn, item))
            if len(pending) >= workers + ahead:
                break
        while pending:
            result = pending.popleft().result()
            for item in todo:
                pending.append(pool.submit(fn, item))
                break
            yield result
    finally:
        # Items not started are dropped; those being decoded are waited for
        # (a batch at most per thread), so that nothing still reads the
        # user's images once the caller has moved on or stopped.
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
