"""Decoding images for the network, in a pool of threads.

Decoding and resizing a photo (PIL) releases the GIL, so threads decode
several photos at once. Threads rather than ``DataLoader`` worker processes:
no pickling of the data set, no start-up cost per epoch, and no copies of
the images between processes.

Where the network runs decides how decoding is scheduled (:func:`decode_plan`):

- On a GPU the CPUs are free while the network computes: threads decode the
  next batches ahead of it (*overlap*).
- On a CPU the network's forward and backward passes already use every core
  with intra-op threads that wait for each other at every layer. A decoding
  thread running beside them takes a core from one of those threads and the
  others spin until it gets it back, which costs more than the decoding
  itself (on 2 cores, ``mobilenet_v3_large`` in bf16: 0.71 of the bare
  forward with one thread decoding beside it, 0.78 when all cores decode
  between forward passes). So each batch is decoded *between* the
  network's passes (*phased*) by as many threads as those passes use, and
  decoding threads run torch with one intra-op thread of their own.

Small-tensor work (the head on cached features, its sweeps and predictions)
runs with one intra-op thread (:func:`small_work_threads`).
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import torch

WORKERS_ENV = "SKTRANSFER_DECODE_WORKERS"
#: More decoding threads than this is never what was meant (a typo).
MAX_WORKERS = 1024


class DecodePlan(NamedTuple):
    workers: int  # decoding threads
    overlap: bool  # decode ahead of the network (True) or between its passes


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def decode_plan(device: torch.device | str = "cpu") -> DecodePlan:
    """How to decode images for a network on ``device`` (see the module
    docstring): on a GPU, every CPU but one (at most 8) decodes ahead of the
    network; on a CPU, as many threads as the network's passes use (torch's
    intra-op threads: all cores, or the limit a parent process such as a
    joblib worker set) decode each batch between those passes.
    ``SKTRANSFER_DECODE_WORKERS=n`` sets the number of threads (a whole
    number from 1 to 1024; any other value is refused with a ``ValueError``
    naming the variable, so that a typo never goes unnoticed).
    """
    overlap = torch.device(device).type != "cpu"
    cpus = available_cpus()
    if overlap:
        workers = max(1, min(8, cpus - 1))
    else:
        workers = max(1, min(cpus, torch.get_num_threads()))
    chosen = workers_from_environment()
    if chosen is not None:
        workers = chosen
    return DecodePlan(workers, overlap)


def workers_from_environment() -> int | None:
    """``$SKTRANSFER_DECODE_WORKERS`` as a number of threads; None when it is
    unset or empty. Any other value that is not a whole number from 1 to
    :data:`MAX_WORKERS` raises a ``ValueError`` naming the variable."""
    value = os.environ.get(WORKERS_ENV, "")
    if value == "":
        return None
    # ASCII digits only: str.isdigit() accepts "²", which int() refuses
    text = value.strip()
    if re.fullmatch(r"[0-9]{1,6}", text) and 1 <= int(text) <= MAX_WORKERS:
        return int(text)
    raise ValueError(
        f"${WORKERS_ENV}={value!r} is not a number of image decoding threads: "
        f"set it to a whole number from 1 to {MAX_WORKERS} (such as 4), or "
        "unset it to let sktransfer choose."
    )


def _one_intra_op_thread():
    # torch ops in a decoding thread (tensor conversions, resizes) must not
    # start intra-op threads of their own next to the network's; the
    # setting is per thread, the network's threads keep theirs.
    torch.set_num_threads(1)


def decoded_batches(fn, batches, plan: DecodePlan):
    """Yield ``[fn(item) for item in batch]`` for each batch, in order,
    decoded by ``plan.workers`` threads.

    With ``plan.overlap`` whole batches are decoded up to two batches per
    thread ahead of the consumer; otherwise the items of a batch are decoded
    in parallel when the consumer asks for it, and nothing is decoded while
    the consumer works. An exception raised by ``fn`` is raised here, at its
    batch. Closing the generator early (an error or Ctrl-C in the consumer)
    cancels what has not started and waits for what is being decoded, so
    nothing still reads the user's images once the caller has moved on.
    """
    batches = [list(b) for b in batches]
    if not batches:
        return
    pool = ThreadPoolExecutor(
        max_workers=max(1, plan.workers),
        thread_name_prefix="decode",
        initializer=_one_intra_op_thread,
    )
    pending: collections.deque = collections.deque()
    try:
        if not plan.overlap:
            for batch in batches:
                yield list(pool.map(fn, batch))
            return
        todo = iter(batches)

        def whole(batch):
            return [fn(item) for item in batch]

        for batch in todo:
            pending.append(pool.submit(whole, batch))
            if len(pending) >= 2 * plan.workers:
                break
        while pending:
            result = pending.popleft().result()
            for batch in todo:
                pending.append(pool.submit(whole, batch))
                break
            yield result
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def small_work_threads(active=True):
    """One intra-op thread for small-tensor work (the head on features, its
    sweeps and predictions). On shared cores, threads spinning on tiny
    tensors wait for each other: one thread is several times faster there,
    and about as fast on idle cores. The body's work keeps its threads."""
    before = torch.get_num_threads()
    if not active or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
