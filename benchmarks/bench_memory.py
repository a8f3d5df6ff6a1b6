"""Peak memory of ``PretrainedFeatures.transform`` against the number of images.

Each size runs in a fresh process, which loads the model, resets its peak
resident set size (``/proc/self/clear_refs``; elsewhere ``getrusage`` max RSS,
which includes loading), and reports the RSS before ``transform`` and the
peak during it; what grows with the number of images beyond the output array
is bookkeeping per image.

Modes:

* ``cold`` (default): ``cache=None``; the images are symbolic links (distinct
  names) to the 2,000 photos of ``../shared/data/dogscats/train``. Identical
  files are computed once per call, so the body runs on at most 2,000
  images whatever the size, which keeps 50,000 images quick on a CPU.
* ``warm``: distinct generated 8x8 PNGs, every feature already in a
  temporary cache (filled beforehand with random vectors under the right
  keys): the body never runs, ``transform`` is fingerprints plus cache reads,
  streamed from the database straight into the output array.

Run alone on an idle machine::

    .venv/bin/python benchmarks/bench_memory.py
    .venv/bin/python benchmarks/bench_memory.py --mode warm --sizes 1000 10000 50000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
WEIGHTS = SHARED / "weights" / "mobilenet_v2-imagenet.pth"
PHOTOS = SHARED / "data" / "dogscats" / "train"
N_FEATURES = 1280  # mobilenet_v2
MIB = 1024**2


def _status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def reset_peak_rss() -> float:
    """Current RSS (MiB), with the peak reset to it where Linux allows
    (``/proc/self/clear_refs``), so that the peak measured next belongs to
    what runs next, not to loading the model."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mib("VmRSS") or peak_rss_mib()


def peak_rss_mib() -> float:
    hwm = _status_mib("VmHWM")
    if hwm is not None:
        return hwm
    # ru_maxrss is in KiB on Linux, in bytes on macOS; it cannot be reset
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB


def transformer(cache):
    from sktransfer import PretrainedFeatures

    return PretrainedFeatures(
        "mobilenet_v2",
        weights=str(WEIGHTS),
        image_size=64,
        precision="fp32",
        device="cpu",
        cache=cache,
    ).fit()


def child(args) -> None:
    """Measure one size; print one JSON line."""
    import numpy as np

    paths = Path(args.list).read_text().split("\n")[: args.n]
    model = transformer(args.cache)
    model.transform(paths[:32])  # warm-up: allocator pools, oneDNN primitives
    before = reset_peak_rss()
    start = time.perf_counter()
    out = model.transform(paths)
    seconds = time.perf_counter() - start
    peak = peak_rss_mib()
    assert out.shape == (len(paths), N_FEATURES) and np.isfinite(out).all()
    print(
        json.dumps(
            {
                "n": len(paths),
                "out_mib": out.nbytes / MIB,
                "before_mib": before,
                "peak_mib": peak,
                "seconds": seconds,
            }
        )
    )


def make_links(folder: Path, n: int) -> list[str]:
    photos = sorted(str(p) for p in PHOTOS.rglob("*.jpg"))
    paths = []
    for i in range(n):
        link = folder / f"img{i:06d}.jpg"
        link.symlink_to(photos[i % len(photos)])
        paths.append(str(link))
    return paths


def make_generated(folder: Path, n: int) -> list[str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"gen{i:06d}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def fill_cache(cache_dir: Path, paths: list[str]) -> None:
    """Random vectors under the keys ``transform`` will look up."""
    import numpy as np

    from sktransfer._fingerprints import fingerprint
    from sktransfer._transforms import PLAIN

    model = transformer(str(cache_dir))
    key = model.extractor_.view_key(PLAIN)
    cache = model.extractor_.cache
    rng = np.random.default_rng(0)
    for start in range(0, len(paths), 1000):
        chunk = paths[start : start + 1000]
        vectors = rng.random((len(chunk), N_FEATURES), dtype=np.float32)
        cache.put_many(
            key, [(fingerprint(p), v) for p, v in zip(chunk, vectors, strict=True)]
        )
    cache.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--mode", choices=["cold", "warm"], default="cold")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--list", help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_max = max(args.sizes)
        started = time.perf_counter()
        if args.mode == "cold":
            paths = make_links(tmp, n_max)
            cache_args = []
        else:
            paths = make_generated(tmp, n_max)
            fill_cache(tmp / "cache", paths)
            cache_args = ["--cache", str(tmp / "cache")]
        listing = tmp / "paths.txt"
        listing.write_text("\n".join(paths))
        print(f"prepared {n_max} images in {time.perf_counter() - started:.0f} s")

        what = (
            "cache=None, symlinks to 2,000 photos"
            if args.mode == "cold"
            else "warm cache, distinct generated images"
        )
        print(f"\nmobilenet_v2, image_size=64, fp32, CPU; {what}\n")
        print(
            "| images | output MiB | RSS before MiB | peak RSS MiB "
            "| RSS − output MiB | growth beyond output MiB | seconds |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        rows = []
        for n in args.sizes:
            command = [
                sys.executable,
                __file__,
                "--child",
                "--n",
                str(n),
                "--list",
                str(listing),
                *cache_args,
            ]
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            result = subprocess.run(command, capture_output=True, text=True, env=env)
            if result.returncode != 0:
                sys.exit(result.stderr)
            row = json.loads(result.stdout.strip().splitlines()[-1])
            growth = row["peak_mib"] - row["before_mib"] - row["out_mib"]
            rows.append((row["n"], growth))
            print(
                f"| {row['n']:,} | {row['out_mib']:.0f} | {row['before_mib']:.0f} "
                f"| {row['peak_mib']:.0f} | {row['peak_mib'] - row['out_mib']:.0f} "
                f"| {growth:.0f} | {row['seconds']:.1f} |",
                flush=True,
            )
        if len(rows) > 1:
            (n0, g0), (n1, g1) = rows[0], rows[-1]
            per_image = (g1 - g0) * MIB / (n1 - n0)
            print(
                f"\nGrowth beyond the output: {per_image:,.0f} bytes per image "
                f"(between {n0:,} and {n1:,} images)."
            )


if __name__ == "__main__":
    main()
