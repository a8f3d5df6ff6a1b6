"""What ``checkpoint_dir`` costs, and what it saves after an interruption.

    .venv/bin/python benchmarks/bench_checkpoint.py
    .venv/bin/python benchmarks/bench_checkpoint.py --n 800 --epochs 3

The fit is the probe, then the whole body for ``--epochs`` epochs (one SGDR
cycle), with 10% held out for validation, on ``--n`` dogs-vs-cats photos at
224 px (``mobilenet_v2``, offline weights, the features cached by a first
fit that is not timed). Rows:

- the fit without checkpoints;
- the same fit writing a checkpoint after every unfrozen epoch (and the size
  of the file it writes);
- the same fit stopped by Ctrl-C at the end of the last unfrozen epoch but
  one, then ``fit`` again: the seconds of the second call, which trains the
  last epoch only, and whether its model equals the uninterrupted one's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from skorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WEIGHTS, machine, split  # noqa: E402

from sktransfer import PretrainedImageClassifier  # noqa: E402

#: the checkpoint's sizes seen at epoch ends (a global: every stage gets
#: deep copies of the callbacks)
SIZES = []


class _StopAt(Callback):
    """Ctrl-C at the end of unfrozen epoch ``at``; notes the checkpoint's
    size in :data:`SIZES` when a file is there."""

    def __init__(self, at, folder):
        self.at, self.folder = at, folder

    def on_epoch_end(self, net, **kwargs):
        files = list(Path(self.folder).glob("fit-*.ckpt"))
        if files:
            SIZES.append(files[0].stat().st_size)
        if self.at is not None and len(net.history) == self.at:
            raise KeyboardInterrupt


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    X, _, y, _ = split("dogscats")
    X, y = X[: args.n], y[: args.n]
    params = dict(
        backbone="mobilenet_v2",
        weights=str(WEIGHTS),
        unfrozen_cycles=1,
        cycle_len=args.epochs,
        validation_fraction=0.1,
        random_state=0,
    )
    PretrainedImageClassifier(**params).fit(X, y)  # features into the cache
    print(f"machine: {machine()}")
    print(f"{args.n} photos, probe + {args.epochs} unfrozen epochs")
    print("fit | seconds | checkpoint file (MB) | same model")

    start = time.perf_counter()
    plain = PretrainedImageClassifier(**params).fit(X, y)
    print(f"no checkpoints | {time.perf_counter() - start:.1f} | |")

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        written = PretrainedImageClassifier(
            **params, checkpoint_dir=folder, callbacks=[_StopAt(None, folder)]
        ).fit(X, y)
        seconds = time.perf_counter() - start
        print(
            f"checkpoint every epoch | {seconds:.1f} | {max(SIZES) / 1e6:.0f} | "
            f"{_same(plain, written)}"
        )
        resumed = PretrainedImageClassifier(
            **params,
            checkpoint_dir=folder,
            callbacks=[("stop", _StopAt(args.epochs - 1, folder))],
        )
        try:
            resumed.fit(X, y)
        except KeyboardInterrupt:
            pass
        start = time.perf_counter()
        resumed.set_params(callbacks=None).fit(X, y)
        print(
            f"fit again after Ctrl-C in the last epoch but one | "
            f"{time.perf_counter() - start:.1f} | | {_same(plain, resumed)}"
        )


def _same(a, b) -> bool:
    pairs = zip(a.model_.state_dict().values(), b.model_.state_dict().values())
    return all(np.array_equal(va.cpu().numpy(), vb.cpu().numpy()) for va, vb in pairs)


if __name__ == "__main__":
    main()
