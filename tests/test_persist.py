"""save/load without pickle: round trips, and what a bad folder gets."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import DATA, MOBILENET, TINY, requires_shared
from sklearn.exceptions import NotFittedError

import sktransfer
from sktransfer import (
    PretrainedFeatures,
    PretrainedImageClassifier,
    PretrainedImageRegressor,
    load,
    save,
)
from sktransfer.exceptions import ModelFormatError

QUICK = dict(TINY, random_state=0, precompute_epochs=2)


@pytest.fixture(scope="module")
def saved(images, module_dir, cache_dir):
    """A fitted classifier and the folder it was saved to."""
    paths, labels = images
    clf = PretrainedImageClassifier(**QUICK, cache=cache_dir).fit(paths, labels)
    return clf, save(clf, module_dir / "saved")


def copy_of(folder, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def rewrite_json(folder, change):
    path = folder / "model.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


# --- round trips -------------------------------------------------------------


def test_saved_folder_is_json_and_safetensors_and_reads_back_equal(
    saved, images, cache_dir
):
    clf, folder = saved
    paths, _ = images
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "model.json",
        "weights.safetensors",
    ]
    document = json.loads((folder / "model.json").read_text())
    assert document["estimator"] == "PretrainedImageClassifier"
    assert document["format_version"] == 2
    assert document["params"]["backbone"] == "resnet18"
    assert document["versions"]["torch"] == torch.__version__
    loaded = load(folder, cache=cache_dir)
    assert type(loaded) is PretrainedImageClassifier
    assert loaded.get_params() == clf.get_params()
    assert list(loaded.classes_) == ["a", "b"]
    np.testing.assert_array_equal(loaded.predict_proba(paths), clf.predict_proba(paths))
    assert json.dumps(loaded.history_) == json.dumps(clf.history_)  # NaN too


def test_loading_never_unpickles_and_leaves_global_rng_as_found(saved, monkeypatch):
    _, folder = saved

    def refuse(*args, **kwargs):
        raise AssertionError("load used pickle")

    for module, name in [(pickle, "load"), (pickle, "loads"), (torch, "load")]:
        monkeypatch.setattr(module, name, refuse)
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    load(folder)
    assert torch.equal(torch.rand(2), expected)


def test_loaded_model_reuses_the_features_cached_before_saving(
    saved, images, forward_count, cache_dir
):
    _, folder = saved
    paths, _ = images
    load(folder, cache=cache_dir).predict_proba(paths)
    assert forward_count["n"] == 0  # same cache key: nothing recomputed


@pytest.mark.parametrize(
    "kind", ["regressor_1d", "multilabel", "int_labels", "tuned_snapshots", "features"]
)
def test_every_estimator_kind_round_trips(kind, images, tmp_path, cache_dir):
    paths, labels = images
    n = len(paths)
    params = dict(QUICK, cache=cache_dir)
    if kind == "regressor_1d":
        model = PretrainedImageRegressor(**params).fit(paths, np.linspace(0, 9, n))
        outputs = "predict"
    elif kind == "multilabel":
        y = np.c_[labels == "a", np.arange(n) % 2].astype(int)
        model = PretrainedImageClassifier(**params).fit(paths, y)
        outputs = "predict_proba"
    elif kind == "int_labels":  # and dict/tuple parameters with int keys
        y = np.where(labels == "a", 3, 11)
        model = PretrainedImageClassifier(
            **params,
            class_weight={3: 1.0, 11: 2.0},
            hidden_sizes=(16, 8),
            preprocessing={"resize_mode": "pad"},
        ).fit(paths, y)
        outputs = "predict"
    elif kind == "tuned_snapshots":
        model = PretrainedImageClassifier(
            **dict(params, precompute_epochs=1),
            unfrozen_cycles=2,
            cycle_len=1,
            snapshot_ensemble=True,
            batch_size=4,
        ).fit(paths, labels)
        outputs = "predict_proba"
    else:
        model = PretrainedFeatures(**TINY, cache=cache_dir).fit()
        outputs = "transform"
    loaded = load(save(model, tmp_path / kind), cache=cache_dir)
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(
        getattr(loaded, outputs)(paths), getattr(model, outputs)(paths)
    )
    if kind == "tuned_snapshots":
        assert len(loaded.ensemble_) == 2
        assert loaded.ensemble_[0][0] is not loaded.ensemble_[1][0]
    if kind == "int_labels":
        assert loaded.classes_.dtype == model.classes_.dtype
        assert loaded.get_params()["hidden_sizes"] == (16, 8)


@requires_shared
def test_round_trip_in_a_fresh_process_without_network_or_weights_file(
    tmp_path,
):
    """Fit with a weights file, delete it, load in a new interpreter that has
    no network and an empty torch cache: the same probabilities."""
    weights = tmp_path / "mobilenet_v2-copy.pth"
    shutil.copy(MOBILENET, weights)
    root = DATA / "hymenoptera_data" / "train"
    paths = [
        str(p) for c in ("ants", "bees") for p in sorted((root / c).glob("*.jpg"))[:6]
    ]
    labels = ["ants"] * 6 + ["bees"] * 6
    clf = PretrainedImageClassifier(
        "mobilenet_v2", weights=str(weights), cache=None, precompute_epochs=2,
        random_state=0,
    ).fit(paths, labels)  # fmt: skip
    features = PretrainedFeatures("mobilenet_v2", weights=str(weights), cache=None)
    features.fit()
    save(clf, tmp_path / "clf")
    save(features, tmp_path / "features")
    np.save(tmp_path / "paths.npy", np.array(paths))
    weights.unlink()
    script = textwrap.dedent(
        f"""
        import socket, sys
        import numpy as np

        def no_network(*args, **kwargs):
            raise OSError("network is off in this test")

        socket.socket.connect = socket.socket.connect_ex = no_network
        import sktransfer

        paths = list(np.load({str(tmp_path / "paths.npy")!r}))
        clf = sktransfer.load({str(tmp_path / "clf")!r})
        np.save({str(tmp_path / "proba.npy")!r}, clf.predict_proba(paths))
        features = sktransfer.load({str(tmp_path / "features")!r})
        np.save({str(tmp_path / "features.npy")!r}, features.transform(paths))
        """
    )
    env = dict(
        os.environ,
        TORCH_HOME=str(tmp_path / "empty-torch-home"),
        SKTRANSFER_CACHE=str(tmp_path / "empty-cache"),
        HF_HUB_OFFLINE="1",
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_array_equal(
        np.load(tmp_path / "proba.npy"), clf.predict_proba(paths)
    )
    np.testing.assert_array_equal(
        np.load(tmp_path / "features.npy"), features.transform(paths)
    )


# --- what a bad folder or estimator gets ---------------------------------------


def test_a_changed_weights_file_is_refused(saved, tmp_path):
    _, folder = saved
    folder = copy_of(folder, tmp_path)
    path = folder / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="modified or damaged.*sha256"):
        load(folder)


def test_tensors_that_do_not_fit_are_refused_even_with_a_matching_hash(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    from sktransfer._persist_io import _sha256

    _, folder = saved
    folder = copy_of(folder, tmp_path)
    path = folder / "weights.safetensors"
    tensors = load_file(str(path))
    name = next(k for k in tensors if k.startswith("heads.0.") and "weight" in k)
    tensors[name] = torch.zeros(3, 3)
    save_file(tensors, str(path))
    rewrite_json(folder, lambda d: d["files"].update({path.name: _sha256(path)}))
    with pytest.raises(ModelFormatError, match=f"tensor '{name}'.*float32\\[3, 3\\]"):
        load(folder)
    rewrite_json(folder, lambda d: d["tensors"].update({name: "float32[3, 3]"}))
    with pytest.raises(ModelFormatError, match="do not fit head 0"):
        load(folder)


def test_newer_format_version_says_to_upgrade(saved, tmp_path):
    _, folder = saved
    folder = copy_of(folder, tmp_path)
    rewrite_json(folder, lambda d: d.update(format_version=3))
    with pytest.raises(ModelFormatError, match="format version 3.*Upgrade sktransfer"):
        load(folder)


def test_older_format_version_is_refused_naming_it(saved, tmp_path):
    """Format 1 saved the body and the heads apart ("extractors.0.body.",
    "heads.0."); format 2 saves the state dict of ``model_``."""
    _, folder = saved
    folder = copy_of(folder, tmp_path)
    rewrite_json(
        folder, lambda d: d.update(format_version=1, versions={"sktransfer": "0.9"})
    )
    with pytest.raises(
        ModelFormatError,
        match="saved by sktransfer 0.9 in model format version 1; this sktransfer "
        "reads model format version 2",
    ):
        load(folder)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(estimator="os.system"), "names the estimator 'os.system'"),
        (lambda d: d["params"].update(epochs=3), r"parameter\(s\) \['epochs'\]"),
        (lambda d: d["params"].update(dropout={"__code__": "x"}), "unknown value"),
        (lambda d: d.update(files={"../../x": "0"}), "exactly the file"),
        (lambda d: d.update(format="pickle"), "not a model saved by"),
    ],
)
def test_edited_model_json_gets_a_clear_error(saved, tmp_path, change, message):
    _, folder = saved
    folder = copy_of(folder, tmp_path)
    rewrite_json(folder, change)
    with pytest.raises(ModelFormatError, match=message):
        load(folder)


def test_missing_files_are_named(saved, tmp_path):
    _, folder = saved
    with pytest.raises(ModelFormatError, match="model.json is missing"):
        load(tmp_path)
    folder = copy_of(folder, tmp_path)
    (folder / "weights.safetensors").unlink()
    with pytest.raises(ModelFormatError, match="weights.safetensors is missing"):
        load(folder)


def test_save_refuses_to_overwrite_unless_asked(saved, tmp_path):
    clf, folder = saved
    folder = copy_of(folder, tmp_path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save(clf, folder)
    assert save(clf, folder, overwrite=True) == folder
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "model.json",
        "weights.safetensors",
    ]


def test_unsaveable_estimators_get_errors_naming_the_culprit(images, tmp_path):
    from sklearn.linear_model import LogisticRegression

    paths, labels = images
    with pytest.raises(NotFittedError, match="fit before saving"):
        save(PretrainedImageClassifier(**TINY), tmp_path / "a")
    with pytest.raises(TypeError, match="LogisticRegression.*joblib"):
        save(LogisticRegression(), tmp_path / "b")
    clf = PretrainedImageClassifier(
        **dict(QUICK, random_state=np.random.RandomState(0)), cache=None
    ).fit(paths, labels)
    with pytest.raises(TypeError, match="parameter 'random_state'.*an int"):
        save(clf, tmp_path / "c")
    assert not (tmp_path / "c" / "model.json").exists()


def test_public_names():
    assert sktransfer.save is save and sktransfer.load is load
    assert issubclass(ModelFormatError, ValueError)
