"""Export: preprocess, to_torch, ONNX and TorchScript give what predict gives."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, MOBILENET, TINY, requires_shared
from PIL import Image
from sklearn.exceptions import NotFittedError

from sktransfer import (
    PretrainedFeatures,
    PretrainedImageClassifier,
    PretrainedImageRegressor,
)
from sktransfer.export import (
    export_onnx,
    export_program,
    export_torchscript,
    to_torch,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "serve_onnx.py"
#: TINY in float32, so that the graph's outputs equal predict's within 1e-5
EXACT = dict(TINY, precision="fp32", random_state=0, precompute_epochs=2)


def run_graph(module, estimator, X) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(estimator.preprocess(X))).numpy()


@pytest.fixture(scope="module")
def classifier(images, cache_dir):
    paths, labels = images
    return PretrainedImageClassifier(**EXACT, cache=cache_dir).fit(paths, labels)


# --- preprocess and to_torch -------------------------------------------------


def test_preprocess_returns_the_crop_the_model_sees(classifier, images, tmp_path):
    paths, _ = images
    batch = classifier.preprocess(paths)
    assert batch.shape == (12, 32, 32, 3) and batch.dtype == np.uint8
    # a photo stored sideways with an EXIF orientation is seen upright
    rng = np.random.default_rng(1)
    upright = rng.integers(0, 256, size=(60, 40, 3), dtype=np.uint8)
    upright[:, :10] = 255  # a white band on the left
    Image.fromarray(upright).save(tmp_path / "upright.png")
    sideways = Image.fromarray(np.rot90(upright, k=1).copy())
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    sideways.save(tmp_path / "sideways.png", exif=exif)
    a, b = classifier.preprocess([tmp_path / "upright.png", tmp_path / "sideways.png"])
    assert a[:, :3].mean() > 200 and b[:, :3].mean() > 200  # band on the left
    assert a[:, -3:].mean() < 180 and b[:, -3:].mean() < 180
    np.testing.assert_array_equal(a, b)
    # every input kind the estimator takes
    arrays = np.stack([np.asarray(Image.open(p)) for p in paths[:2]])
    assert classifier.preprocess(arrays).shape == (2, 32, 32, 3)


def test_to_torch_maps_uint8_batch_to_predict_proba(classifier, images):
    paths, _ = images
    module = to_torch(classifier)
    proba = run_graph(module, classifier, paths)
    assert proba.dtype == np.float32 and proba.shape == (12, 2)
    np.testing.assert_allclose(proba, classifier.predict_proba(paths), atol=1e-5)
    # a copy on the CPU, frozen, in eval mode: the estimator is untouched
    assert not module.training
    assert all(
        not p.requires_grad and p.device.type == "cpu" for p in module.parameters()
    )
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    assert np.abs(classifier.predict_proba(paths) - proba).max() < 1e-5


@pytest.mark.parametrize(
    "y_kind", ["regression_1d", "regression_2d", "multilabel", "snapshots"]
)
def test_to_torch_matches_every_kind_of_fitted_estimator(images, cache_dir, y_kind):
    paths, labels = images
    n = len(paths)
    if y_kind == "regression_1d":
        model = PretrainedImageRegressor(**EXACT, cache=cache_dir)
        model.fit(paths, np.linspace(-3.0, 5.0, n))
        expected = model.predict(paths)
    elif y_kind == "regression_2d":
        model = PretrainedImageRegressor(**EXACT, cache=cache_dir)
        model.fit(paths, np.c_[np.arange(n), np.arange(n) ** 2])
        expected = model.predict(paths)
    elif y_kind == "multilabel":
        y = np.c_[labels == "a", np.arange(n) % 2, np.arange(n) % 3 == 0]
        model = PretrainedImageClassifier(**EXACT, cache=cache_dir)
        model.fit(paths, y.astype(int))
        expected = model.predict_proba(paths)
    else:  # three heads from the cycle ends, averaged
        params = dict(EXACT, precompute_epochs=3, cycle_len=1)
        model = PretrainedImageClassifier(**params, snapshot_ensemble=True)
        model.set_params(cache=cache_dir).fit(paths, labels)
        assert len(model.ensemble_) == 3
        expected = model.predict_proba(paths)
    out = run_graph(to_torch(model), model, paths)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_to_torch_of_snapshots_with_tuned_bodies_averages_each_body(images, tmp_path):
    paths, labels = images
    model = PretrainedImageClassifier(
        **dict(EXACT, precompute_epochs=1),
        unfrozen_cycles=2,
        cycle_len=1,
        snapshot_ensemble=True,
        batch_size=4,
        cache=str(tmp_path / "cache"),
    ).fit(paths, labels)
    module = to_torch(model)
    assert len(module.bodies) == 2 and len(module.heads) == 2
    np.testing.assert_allclose(
        run_graph(module, model, paths), model.predict_proba(paths), atol=1e-5
    )


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_export_program_maps_any_batch_to_what_predict_returns(
    images, cache_dir, classifier, tmp_path, kind
):
    paths, _ = images
    if kind == "classifier":
        model, expected = classifier, classifier.predict_proba(paths)
    else:
        model = PretrainedImageRegressor(**EXACT, cache=cache_dir)
        expected = model.fit(paths, np.linspace(-3.0, 5.0, len(paths))).predict(paths)
    path = export_program(model, tmp_path / "model.pt2")
    assert path == str(tmp_path / "model.pt2")
    extra = {"sktransfer.json": ""}
    program = torch.export.load(path, extra_files=extra).module()
    meta = json.loads(extra["sktransfer.json"])
    assert meta["preprocessing"]["crop_size"] == 32
    for n in (len(paths), 1):  # the batch dimension is dynamic
        out = run_graph(program, model, paths[:n])
        np.testing.assert_allclose(out, expected[:n], rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"]


def test_to_torch_of_features_gives_transform(images, cache_dir):
    paths, _ = images
    features = PretrainedFeatures(**dict(TINY, precision="fp32"), cache=cache_dir)
    features.fit()
    out = run_graph(to_torch(features), features, paths)
    np.testing.assert_allclose(out, features.transform(paths), rtol=1e-5, atol=1e-5)


def test_tta_warns_and_the_graph_computes_the_plain_view(classifier, images):
    paths, _ = images
    plain = classifier.predict_proba(paths)
    classifier.set_params(tta=2)
    try:
        with pytest.warns(UserWarning, match="tta=2.*plain view only"):
            module = to_torch(classifier)
        with_tta = classifier.predict_proba(paths)
    finally:
        classifier.set_params(tta=0)
    out = run_graph(module, classifier, paths)
    np.testing.assert_allclose(out, plain, atol=1e-5)
    # the views do differ (compared as log-probabilities: a confident model's
    # probabilities differ only in their last digits)
    assert np.abs(np.log(with_tta) - np.log(plain)).max() > 1e-4


def test_unfitted_estimators_cannot_be_exported(tmp_path):
    with pytest.raises(NotFittedError, match="PretrainedImageClassifier.*fit"):
        to_torch(PretrainedImageClassifier(**TINY))
    with pytest.raises(NotFittedError):
        PretrainedFeatures(**TINY).preprocess(["x.jpg"])
    with pytest.raises(NotFittedError):
        export_onnx(PretrainedImageRegressor(**TINY), tmp_path / "m.onnx")


@pytest.mark.parametrize("mode", ["crop", "squish", "pad"])
def test_served_example_prepares_photos_like_preprocess(mode, tmp_path):
    """PIL alone (the example) and sktransfer's torch resize differ by
    rounding: a level or two on a few pixels, never a shifted crop."""
    from sktransfer.export import export_metadata

    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, size=(200, 300, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "large.jpg", quality=90)  # draft path
    palette = Image.fromarray(big[:90, :60]).convert("P", palette=1, colors=16)
    palette.info["transparency"] = 3
    palette.save(tmp_path / "palette.png", transparency=3)
    rgba = np.dstack([big[:50, :80], np.full((50, 80), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    files = [tmp_path / n for n in ("large.jpg", "palette.png", "alpha.png")]
    features = PretrainedFeatures(**TINY, preprocessing={"resize_mode": mode})
    features.fit()
    pre = export_metadata(features)["preprocessing"]
    assert pre["resize_mode"] == mode
    example = runpy.run_path(str(EXAMPLE))  # defines prepare(); runs nothing
    served = np.stack([example["prepare"](f, pre) for f in files]).astype(int)
    diff = np.abs(served - features.preprocess(files))
    assert diff.mean() < 0.1, diff.mean()
    assert (diff > 2).mean() < 1e-3


# --- files: ONNX and TorchScript on real photos ------------------------------


def _photos(split, n):
    root = DATA / "hymenoptera_data" / split
    out = []
    for cls in ("ants", "bees"):
        files = sorted(p for p in (root / cls).iterdir() if p.suffix == ".jpg")
        out += [(str(p), cls) for p in files[:n]]
    return [p for p, _ in out], np.array([c for _, c in out])


@pytest.fixture(scope="module")
def real(module_dir, cache_dir):
    """A mobilenet_v2 classifier (fp32) on 2 x 10 photos, its ONNX file, and
    16 other photos including the largest and a palette-mode one."""
    if not (MOBILENET.exists() and DATA.exists()):
        pytest.skip("../shared weights and photos are not present")
    train_paths, train_labels = _photos("train", 10)
    test_paths, _ = _photos("val", 8)
    clf = PretrainedImageClassifier(
        "mobilenet_v2",
        weights=str(MOBILENET),
        precision="fp32",
        precompute_epochs=4,
        random_state=0,
        cache=cache_dir,
    ).fit(train_paths, train_labels)
    onnx_path = export_onnx(clf, module_dir / "ants_bees.onnx")
    return clf, test_paths, onnx_path


@requires_shared
def test_onnx_runtime_matches_predict_proba_on_real_photos(real):
    ort = pytest.importorskip("onnxruntime")
    clf, paths, onnx_path = real
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    meta = json.loads(session.get_modelmeta().custom_metadata_map["sktransfer"])
    assert meta["classes"] == ["ants", "bees"]
    assert meta["preprocessing"]["crop_size"] == 224
    batch = clf.preprocess(paths)
    expected = clf.predict_proba(paths)
    (proba,) = session.run(None, {"images": batch})
    np.testing.assert_allclose(proba, expected, atol=1e-4)
    (one,) = session.run(None, {"images": batch[:1]})  # any batch size
    np.testing.assert_allclose(one, expected[:1], atol=1e-4)
    assert np.mean(clf.classes_[proba.argmax(1)] == clf.predict(paths)) == 1.0


@requires_shared
def test_torchscript_matches_predict_proba_on_real_photos(real, module_dir):
    clf, paths, _ = real
    path = export_torchscript(clf, module_dir / "ants_bees.pt")
    extra = {"sktransfer.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation
        loaded = torch.jit.load(path, _extra_files=extra)
    assert json.loads(extra["sktransfer.json"])["classes"] == ["ants", "bees"]
    with torch.inference_mode():
        proba = loaded(torch.from_numpy(clf.preprocess(paths))).numpy()
    np.testing.assert_allclose(proba, clf.predict_proba(paths), atol=1e-4)


@requires_shared
def test_served_example_classifies_a_folder_with_the_onnx_file_alone(real, tmp_path):
    pytest.importorskip("onnxruntime")
    clf, paths, onnx_path = real
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for i, p in enumerate(paths):
        shutil.copy(p, folder / ("more" if i % 2 else ".") / Path(p).name)
    (folder / "notes.txt").write_text("not a photo")
    # torch, scikit-learn and sktransfer cannot be imported by the example
    blocker = (
        "import sys, runpy\n"
        "for name in ('torch', 'sklearn', 'sktransfer', 'torchvision'):\n"
        "    sys.modules[name] = None\n"
        f"sys.argv = ['serve_onnx.py', {str(onnx_path)!r}, {str(folder)!r}]\n"
        f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')\n"
    )
    env = dict(os.environ, PYTHONPATH="")
    done = subprocess.run(
        [sys.executable, "-c", blocker],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == len(paths)
    served = {}
    for line in lines:
        name, rest = line.split(" -> ")
        label, prob = rest.split(" (")
        served[Path(name).name] = (label, float(prob.rstrip(")")))
    proba = clf.predict_proba(paths)
    for p, row in zip(paths, proba):
        label, prob = served[Path(p).name]
        assert label == clf.classes_[row.argmax()]
        # printed with 3 decimals, from pixels that differ by resampling
        # rounding (see test_served_example_prepares_photos_like_preprocess)
        assert abs(prob - row.max()) <= 5e-3
