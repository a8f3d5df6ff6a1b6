"""The built wheel: it declares every distribution the core API imports,
carries the console script, and installs and runs outside the source tree.

The wheel is built offline (``--no-build-isolation``, with the setuptools of
the test environment) and installed without dependencies into a folder of
its own; the smoke run imports it from there, never from the checkout.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from conftest import make_images

ROOT = Path(__file__).resolve().parents[1]

#: Modules imported only by optional features -> the distribution an extra
#: declares that brings them (None: imported only when present, as YAML
#: parameter files of the command line).
OPTIONAL = {
    "timm": "timm",
    "huggingface_hub": "timm",  # timm's own dependency, for hub weights
    "matplotlib": "matplotlib",
    "dask": "dask",
    "distributed": "distributed",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "onnxscript": "onnxscript",
    "pandas": "pandas",
    "yaml": None,
}


def _requirement_names(metadata: str) -> tuple[set, set]:
    """Distributions required always, and by some extra."""
    core, extra = set(), set()
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        spec = line.split(":", 1)[1].strip()
        name = spec.split(";")[0].split("[")[0]
        for sep in "<>=!~ ":
            name = name.split(sep)[0]
        (extra if "extra ==" in spec else core).add(name.lower().replace("_", "-"))
    return core, extra


def _imported_top_level_modules() -> set:
    """Top-level modules the package's own files import (also inside
    functions), without the package itself."""
    names = set()
    for path in (ROOT / "sktransfer").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - {"sktransfer"} - set(sys.stdlib_module_names)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True, cwd=out,
    )  # fmt: skip
    (path,) = out.glob("sktransfer-*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_declares_every_distribution_the_package_imports(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith("/METADATA")))
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt")))
    core, extra = _requirement_names(metadata.decode())
    owners = packages_distributions()
    missing = []
    for module in sorted(_imported_top_level_modules()):
        if module in OPTIONAL:
            if OPTIONAL[module] is not None and OPTIONAL[module] not in extra:
                missing.append(f"{module} (extra {OPTIONAL[module]})")
            continue
        dists = {d.lower().replace("_", "-") for d in owners.get(module, [module])}
        if not dists & core:
            missing.append(f"{module} ({', '.join(sorted(dists))})")
    assert not missing, f"imported but not declared: {missing}"
    assert "safetensors" in core  # save / load are core API
    assert "sktransfer = sktransfer.cli:run" in entry_points.decode()
    assert not any(n.startswith(("tests/", "benchmarks/", "examples/")) for n in names)


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_source_tree(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q",
         "--target", str(site), str(wheel)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    paths, _ = make_images(tmp_path / "photos" / "a", n_per_class=4, classes=("a",))
    make_images(tmp_path / "photos" / "b", n_per_class=4, classes=("b",), seed=1)
    env = dict(os.environ, PYTHONPATH=str(site), SKTRANSFER_CACHE=str(tmp_path / "c"))
    smoke = (
        "import sktransfer, numpy as np\n"
        "from sktransfer import PretrainedImageClassifier, save, load\n"
        "from sktransfer.datasets import load_image_folder\n"
        f"X, y = load_image_folder({str(tmp_path / 'photos')!r})\n"
        "clf = PretrainedImageClassifier('resnet18', weights=None, image_size=32,"
        " random_state=0).fit(X, y)\n"
        f"folder = save(clf, {str(tmp_path / 'model')!r})\n"
        "same = np.allclose(load(folder).predict_proba(X), clf.predict_proba(X))\n"
        "print(sktransfer.__file__, same)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", smoke], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    where, same = run.stdout.split()
    assert Path(where).is_relative_to(site) and same == "True"
    script = site / "bin" / "sktransfer"
    assert script.exists()
    cli = subprocess.run(
        [sys.executable, str(script), "predict", str(tmp_path / "model"),
         str(tmp_path / "photos")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert len(cli.stdout.strip().splitlines()) == 1 + len(paths) * 2
