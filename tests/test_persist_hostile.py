"""save, load and export against interruptions, concurrent writers and
tampered folders: either model stays usable, and a folder can only produce a
model, never a side effect."""

from __future__ import annotations

import datetime
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from conftest import TINY

from sktransfer import PretrainedFeatures, PretrainedImageClassifier, load, save
from sktransfer.exceptions import ModelFormatError
from sktransfer.export import export_onnx, export_torchscript

QUICK = dict(TINY, random_state=0, precompute_epochs=1)


@pytest.fixture(scope="module")
def two_models():
    """Two small fitted models whose tensors differ: A and B."""
    a = PretrainedFeatures("squeezenet1_1", weights=None, image_size=32, cache=None)
    b = PretrainedFeatures(
        "mobilenet_v3_small", weights=None, image_size=32, cache=None
    )
    return a.fit(), b.fit()


@pytest.fixture(scope="module")
def saved(images, module_dir):
    """A fitted tiny classifier, its folder, and its probabilities."""
    paths, labels = images
    clf = PretrainedImageClassifier(**QUICK, cache=None).fit(paths, labels)
    return clf, save(clf, module_dir / "saved"), clf.predict_proba(paths)


def copy_of(folder, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def rewrite_json(folder, change):
    path = folder / "model.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def interrupt_after(n_events):
    """A profile hook that raises KeyboardInterrupt at the n-th event (a
    Python or C function call or return), as Ctrl-C would there."""
    count = [0]

    def hook(frame, event, arg):
        if frame.f_code.co_filename == __file__:
            # not this test's own steps (its `finally: sys.setprofile(None)`
            # is a C call too: an interrupt there would escape the test)
            return
        count[0] += 1
        if count[0] == n_events:
            raise KeyboardInterrupt

    return hook


def events_of(call):
    """The events ``interrupt_after`` counts (this file's own left out)."""
    events = []

    def record(frame, event, arg):
        if frame.f_code.co_filename != __file__:
            events.append((event, arg))

    sys.setprofile(record)
    try:
        call()
    finally:
        sys.setprofile(None)
    return events


# --- 1. a save interrupted anywhere --------------------------------------------


def test_a_save_interrupted_at_any_point_leaves_the_old_or_the_new_model(
    two_models, tmp_path
):
    a, b = two_models
    folder = save(a, tmp_path / "model")
    rng = random.Random(0)
    outcomes = []
    for old, new in [(a, b), (b, a)]:
        save(old, folder, overwrite=True)
        save(new, folder, overwrite=True)  # once before counting: lazy imports
        save(old, folder, overwrite=True)
        events = events_of(lambda: save(new, folder, overwrite=True))  # noqa: B023
        renames = [
            i
            for i, (event, arg) in enumerate(events)
            if event == "c_call" and getattr(arg, "__name__", "") == "replace"
        ]
        assert renames  # the folder is switched by renames
        points = {i + d for i in renames for d in (0, 1, 2)}  # at each rename
        points |= set(rng.sample(range(renames[0] - 200, len(events)), 8))
        points |= set(rng.sample(range(1, len(events)), 5))
        after = old.backbone
        for n_events in sorted(points):
            if after != old.backbone:
                save(old, folder, overwrite=True)
            sys.setprofile(interrupt_after(n_events))
            try:
                save(new, folder, overwrite=True)
            except KeyboardInterrupt:
                pass
            finally:
                sys.setprofile(None)
            after = load(folder).backbone  # never "modified or damaged"
            assert after in (old.backbone, new.backbone), n_events
            outcomes.append(after == new.backbone)
    assert 0 < sum(outcomes) < len(outcomes)  # both outcomes happened
    save(b, folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "model.json",
        "weights.safetensors",
    ]
    batch = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(load(folder).transform(batch), b.transform(batch))


def test_a_save_interrupted_while_releasing_its_lock_never_blocks_the_next(
    two_models, tmp_path
):
    """A KeyboardInterrupt just before the folder lock's descriptor is
    closed left the lock held by the process, and the next save into the
    folder waited for ever."""
    a, b = two_models
    folder = save(a, tmp_path / "model")
    save(b, folder, overwrite=True)  # lazy imports done
    events = events_of(lambda: save(a, folder, overwrite=True))
    closes = [
        i
        for i, (event, arg) in enumerate(events)
        if event == "c_call" and getattr(arg, "__name__", "") == "close"
    ]
    sys.setprofile(interrupt_after(closes[-1]))  # the last close of the save
    try:
        save(b, folder, overwrite=True)
    except KeyboardInterrupt:
        pass
    finally:
        sys.setprofile(None)
    done = threading.Event()
    thread = threading.Thread(
        target=lambda: (save(a, folder, overwrite=True), done.set()), daemon=True
    )
    thread.start()
    thread.join(timeout=60)
    assert done.is_set(), "the next save is still waiting for the folder's lock"
    assert load(folder).backbone == a.backbone


def test_loading_while_another_thread_resaves_never_blames_damage(two_models, tmp_path):
    a, b = two_models
    folder = save(a, tmp_path / "model")
    stop = threading.Event()
    errors = []

    def resave():
        try:
            while not stop.is_set():
                for model in (b, a):
                    save(model, folder, overwrite=True)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    writer = threading.Thread(target=resave)
    writer.start()
    try:
        loaded = [load(folder).backbone for _ in range(15)]
    finally:
        stop.set()
        writer.join()
    assert not errors
    assert set(loaded) <= {a.backbone, b.backbone}


def test_two_threads_saving_into_one_folder_leave_one_complete_model(
    two_models, tmp_path
):
    a, b = two_models
    folder = tmp_path / "model"
    errors = []

    def resave(model):
        try:
            for _ in range(6):
                save(model, folder, overwrite=True)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    writers = [threading.Thread(target=resave, args=(m,)) for m in (a, b)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert not errors
    assert load(folder).backbone in (a.backbone, b.backbone)
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "model.json",
        "weights.safetensors",
    ]


# --- 2. a folder never chooses where the model writes ----------------------------


@pytest.mark.parametrize("kind", ["path", "FeatureCache"])
def test_a_cache_named_by_the_folder_is_never_used(
    saved, images, tmp_path, monkeypatch, kind
):
    clf, folder, proba = saved
    paths, _ = images
    folder = copy_of(folder, tmp_path)
    elsewhere = tmp_path / "someone-elses-cache"
    value = str(elsewhere)
    if kind == "FeatureCache":
        value = {"__cache__": {"directory": value, "max_bytes": 1024}}
    rewrite_json(folder, lambda d: d["params"].update(cache=value))
    mine = tmp_path / "my-cache"
    monkeypatch.setenv("SKTRANSFER_CACHE", str(mine))
    loaded = load(folder)
    assert loaded.cache == "auto"
    np.testing.assert_array_equal(loaded.predict_proba(paths), proba)
    assert not elsewhere.exists()
    assert mine.exists()  # the loading user's own cache
    uncached = load(folder, cache=None)
    assert uncached.cache is None
    np.testing.assert_array_equal(uncached.predict_proba(paths), proba)
    assert not elsewhere.exists()


def test_load_takes_the_cache_argument(saved, images, tmp_path):
    _, folder, proba = saved
    paths, _ = images
    chosen = tmp_path / "chosen"
    loaded = load(folder, cache=str(chosen))
    np.testing.assert_array_equal(loaded.predict_proba(paths), proba)
    assert chosen.exists()
    with pytest.raises(ValueError, match="empty path"):
        load(folder, cache="")


def test_a_device_the_machine_lacks_falls_back_with_a_warning(saved, images, tmp_path):
    _, folder, proba = saved
    paths, _ = images
    folder = copy_of(folder, tmp_path)
    rewrite_json(folder, lambda d: d["params"].update(device="meta"))
    with pytest.warns(UserWarning, match="device='meta'.*device='auto'"):
        loaded = load(folder)
    assert loaded.device == "auto"
    np.testing.assert_array_equal(loaded.predict_proba(paths), proba)
    assert load(folder, device="cpu").device == "cpu"


def test_a_weights_path_in_the_folder_is_not_read(saved, images, tmp_path):
    _, folder, proba = saved
    paths, _ = images
    folder = copy_of(folder, tmp_path)
    missing = tmp_path / "nowhere" / "weights.pth"
    rewrite_json(folder, lambda d: d["params"].update(weights=str(missing)))
    loaded = load(folder)  # the body comes from the folder's own tensors
    np.testing.assert_array_equal(loaded.predict_proba(paths), proba)
    assert not missing.parent.exists()


# --- tampered model.json: ModelFormatError naming the entry -------------------------


def set_at(*keys_and_value):
    *keys, value = keys_and_value

    def change(document):
        target = document
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


def describe_first_tensor_as_a_list(document):
    name = sorted(document["tensors"])[0]
    document["tensors"][name] = ["float32"]


def drop_tensor_from_manifest(document):
    name = sorted(document["tensors"])[0]
    del document["tensors"][name]


BODY = ("state", "extractor")
HEAD = ("state", "heads", 0)
ATTRIBUTES = ("state", "attributes")
TAMPERINGS = {
    "lr a string": (set_at("params", "lr", "fast"), "'lr' parameter"),
    "lr a nested list": (set_at("params", "lr", [[1]]), "'lr' parameter"),
    "dropout huge": (set_at("params", "dropout", 10**300), "'dropout' parameter"),
    "device a list": (set_at("params", "device", ["cpu"]), "'params'.*'device'"),
    "param naming a method": (set_at("params", "predict", 1), "\\['predict'\\]"),
    "class_weight list key": (
        set_at("params", "class_weight", {"__dict__": [[["a"], 1.0]]}),
        "params\\['class_weight'\\].*cannot be a dict key",
    ),
    "attribute naming a method": (
        set_at(*ATTRIBUTES, "predict", 1),
        "state\\['attributes'\\]\\['predict'\\].*not the name of a fitted",
    ),
    "private attribute": (
        set_at(*ATTRIBUTES, "_task", 1),
        "\\['_task'\\].*not the name of a fitted",
    ),
    "dunder attribute": (
        set_at(*ATTRIBUTES, "__class__", 1),
        "state\\['attributes'\\]",
    ),
    "module attribute": (set_at(*ATTRIBUTES, "head_", 1), "\\['head_'\\]"),
    "model attribute": (set_at(*ATTRIBUTES, "model_", 1), "\\['model_'\\]"),
    "classes_ a list": (set_at(*ATTRIBUTES, "classes_", ["a", "b"]), "classes_"),
    "classes_ 2-d": (
        set_at(
            *ATTRIBUTES, "classes_", {"__ndarray__": [[1], [2]], "__dtype__": "<i8"}
        ),
        "classes_.*1-d",
    ),
    "classes_ void dtype": (
        set_at(*ATTRIBUTES, "classes_", {"__ndarray__": [1, 2], "__dtype__": "V8"}),
        "classes_.*data type 'V8'",
    ),
    "classes_ bad dtype": (
        set_at(*ATTRIBUTES, "classes_", {"__ndarray__": [1, 2], "__dtype__": "zz"}),
        "classes_.*not understood",
    ),
    "classes_ unhashable": (
        set_at(*ATTRIBUTES, "classes_", {"__ndarray__": [[1], [2]], "__dtype__": "O"}),
        "classes_.*unhashable",
    ),
    "classes_ too many": (
        set_at(
            *ATTRIBUTES,
            "classes_",
            {"__ndarray__": ["a", "b", "c"], "__dtype__": "<U1"},
        ),
        "classes_.*3 classes for a head of 2",
    ),
    "classes_ mixed dtype": (
        set_at(*ATTRIBUTES, "classes_", {"__ndarray__": ["a", 2], "__dtype__": "<U1"}),
        "classes_.*other values",
    ),
    "multilabel_ a string": (set_at(*ATTRIBUTES, "multilabel_", "no"), "multilabel_"),
    "bad date": (set_at(*ATTRIBUTES, "when_", {"__date__": "never"}), "when_"),
    "bad float": (set_at(*ATTRIBUTES, "lr_", {"__float__": "1e999"}), "lr_"),
    "big backbone": (
        set_at(*BODY, "backbone", "vit_l_16"),
        "do not fit the body \\(vit_l_16\\)",
    ),
    "unknown backbone": (set_at(*BODY, "backbone", "os.system"), "'backbone'.*unknown"),
    "backbone a number": (set_at(*BODY, "backbone", 5), "'backbone'.*str is needed"),
    "n_features huge": (set_at(*BODY, "n_features", 10**40), "'n_features'.*range"),
    "body flag": (set_at(*BODY, "body_flags", {"forward": True}), "'body_flags'"),
    "crop size huge": (
        set_at(*BODY, "preprocessing", "crop_size", 10**9),
        "'preprocessing'.*crop_size",
    ),
    "precision": (set_at(*BODY, "precision", "fp8"), "'precision'"),
    "head outputs": (set_at(*HEAD, "n_outputs", 3), "classes_.*head of 3 outputs"),
    "head hidden nested": (set_at(*HEAD, "hidden_sizes", [[512]]), "layer widths"),
    "head dropout string": (set_at(*HEAD, "dropout", "x"), "'dropout'.*float"),
    "member index": (set_at("state", "members", [5]), "'members'"),
    "state extra key": (set_at("state", "code", 1), "'state'"),
    "unknown top-level key": (set_at("code", "x"), "unknown entries \\['code'\\]"),
    "estimator a list": (set_at("estimator", ["x"]), "entry 'estimator'"),
    "format_version a string": (set_at("format_version", "1"), "'format_version'"),
    "sha256 a number": (set_at("files", "weights.safetensors", 5), "'files'"),
    "protocol": (set_at("state_protocol", "pickle"), "'state_protocol'"),
    "params a list": (set_at("params", []), "'params'"),
    "tensor description": (describe_first_tensor_as_a_list, "'tensors'"),
    "tensor not listed": (drop_tensor_from_manifest, "disagree on the tensors"),
}


@pytest.mark.parametrize("change, message", TAMPERINGS.values(), ids=TAMPERINGS)
def test_every_tampered_entry_gets_a_model_format_error_naming_it(
    saved, tmp_path, change, message
):
    _, folder, _ = saved
    folder = copy_of(folder, tmp_path)
    rewrite_json(folder, change)
    with pytest.raises(ModelFormatError, match=message) as info:
        load(folder)
    assert "model.json" in str(info.value) or "weights.safetensors" in str(info.value)


def test_numbers_too_long_for_python_are_a_model_format_error(saved, tmp_path):
    _, folder, _ = saved
    folder = copy_of(folder, tmp_path)
    path = folder / "model.json"
    text = path.read_text().replace('"dropout": 0.5', '"dropout": ' + "9" * 5000)
    path.write_text(text)
    with pytest.raises(ModelFormatError, match="model.json is not valid JSON"):
        load(folder)


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_tensors_added_or_removed_in_both_files_are_named(saved, tmp_path, change):
    from safetensors.torch import load_file, save_file

    _, folder, _ = saved
    folder = copy_of(folder, tmp_path)
    path = folder / "weights.safetensors"
    tensors = load_file(str(path))
    document = json.loads((folder / "model.json").read_text())
    if change == "extra":
        tensors["payload"] = torch.zeros(4)
        document["tensors"]["payload"] = "float32[4]"
        message = "no part of the model uses: \\['payload'\\]"
    else:
        name = next(k for k in sorted(tensors) if k.startswith("bodies.0."))
        del tensors[name]
        del document["tensors"][name]
        short = name.removeprefix("bodies.0.")
        message = f"do not fit the body \\(resnet18\\).*missing \\[{short!r}\\]"
    save_file(tensors, str(path))
    import hashlib

    document["files"]["weights.safetensors"] = hashlib.sha256(
        path.read_bytes()
    ).hexdigest()
    (folder / "model.json").write_text(json.dumps(document))
    with pytest.raises(ModelFormatError, match=message):
        load(folder)


def test_folders_whose_files_are_folders_or_nested_too_deeply_are_named(
    saved, tmp_path
):
    _, folder, _ = saved
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ModelFormatError, match="a-file' is a file, not a folder"):
        load(tmp_path / "a-file")
    with pytest.raises(FileExistsError, match="a-file' is a file; save writes"):
        save(load(folder), tmp_path / "a-file")
    for name in ("model.json", "weights.safetensors"):
        broken = copy_of(folder, tmp_path, name)
        (broken / name).unlink()
        (broken / name).mkdir()
        with pytest.raises(ModelFormatError, match=f"{name} is a folder"):
            load(broken)
    if os.path.exists("/dev/zero"):  # endless: refused, never read
        endless = copy_of(folder, tmp_path, "endless")
        (endless / "weights.safetensors").unlink()
        (endless / "weights.safetensors").symlink_to("/dev/zero")
        with pytest.raises(ModelFormatError, match="not a regular file"):
            load(endless)
    if hasattr(os, "mkfifo"):  # opening a pipe with no writer would wait
        piped = copy_of(folder, tmp_path, "piped")
        (piped / "model.json").unlink()
        os.mkfifo(piped / "model.json")
        with pytest.raises(ModelFormatError, match="not a regular file"):
            load(piped)
    deep = copy_of(folder, tmp_path, "deep")
    nested = json.loads("[" * 900 + "]" * 900)
    rewrite_json(deep, set_at("params", "verbose", nested))
    with pytest.raises(ModelFormatError, match="nested too deeply"):
        load(deep)


def test_bad_arguments_of_load_are_the_callers_errors(saved):
    _, folder, _ = saved
    with pytest.raises(ValueError, match="device='nonsense' is not a device") as info:
        load(folder, device="nonsense")
    assert not isinstance(info.value, ModelFormatError)
    with pytest.raises(ValueError, match="cache must be") as info:
        load(folder, cache=123)
    assert not isinstance(info.value, ModelFormatError)


def test_exports_to_a_folder_or_into_a_missing_folder_say_so(two_models, tmp_path):
    a, _ = two_models
    with pytest.raises(FileNotFoundError, match="the folder .*nowhere' does not"):
        export_torchscript(a, tmp_path / "nowhere" / "model.pt")
    (tmp_path / "model.pt").mkdir()
    with pytest.raises(IsADirectoryError, match="model.pt' is a folder"):
        export_torchscript(a, tmp_path / "model.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


# --- bytes and date labels round-trip ---------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [
        [b"ant", b"bee"],
        [datetime.date(2020, 1, 1), datetime.date(2021, 6, 30)],
        [datetime.datetime(2020, 1, 1, 12, 30), datetime.datetime(2021, 6, 30)],
        [
            datetime.datetime(2020, 1, 1, 12, 30, tzinfo=datetime.timezone.utc),
            datetime.datetime(
                2021, 6, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
            ),
        ],
        np.array(["2020-01-01", "2021-01-01"], dtype="datetime64[D]"),
        [datetime.timedelta(hours=1), datetime.timedelta(days=2, microseconds=5)],
    ],
    ids=["bytes", "date", "datetime", "datetime-utc-offset", "datetime64", "timedelta"],
)
def test_bytes_and_date_labels_save_and_load_exactly(images, tmp_path, labels):
    paths, names = images
    y = np.where(names == "a", 0, 1)
    y = (
        np.asarray(labels)[y]
        if isinstance(labels, np.ndarray)
        else [labels[i] for i in y]
    )
    clf = PretrainedImageClassifier(**QUICK, cache=None).fit(paths, y)
    loaded = load(save(clf, tmp_path / "model"))
    assert loaded.classes_.dtype == clf.classes_.dtype
    assert loaded.classes_.tolist() == clf.classes_.tolist()
    assert [type(c) for c in loaded.classes_] == [type(c) for c in clf.classes_]
    np.testing.assert_array_equal(loaded.predict(paths), clf.predict(paths))


def test_datetimes_with_a_named_time_zone_are_refused_at_save(images, tmp_path):
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        zone = zoneinfo.ZoneInfo("Europe/Paris")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no time zone database")
    paths, names = images
    days = [datetime.datetime(2020, 1, d, tzinfo=zone) for d in (1, 2)]
    y = [days[int(n == "b")] for n in names]
    clf = PretrainedImageClassifier(**QUICK, cache=None).fit(paths, y)
    with pytest.raises(TypeError, match="classes_.*time zone.*fixed UTC offset"):
        save(clf, tmp_path / "model")
    assert not (tmp_path / "model" / "model.json").exists()


# --- 12. exports write aside -----------------------------------------------------


def test_an_onnx_export_onto_a_full_disk_keeps_the_previous_file(two_models, tmp_path):
    resource = pytest.importorskip("resource")  # POSIX
    pytest.importorskip("onnxscript")
    a, _ = two_models
    path = tmp_path / "model.onnx"
    export_onnx(a, path)
    before = path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, hard))
    try:
        with pytest.raises(OSError, match="too large"):
            export_onnx(a, path)  # the disk is "full" halfway through the file
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


FULL_DISK = """
import resource, signal, sys
import sktransfer
import sktransfer.export

model = sktransfer.load(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write, not a kill
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), resource.RLIM_INFINITY))
sktransfer.export.export_torchscript(model, sys.argv[2])
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_torchscript_export_onto_a_full_disk_keeps_the_previous_file(
    two_models, tmp_path
):
    """A process that can write only half the file (as on a full disk)
    fails; the previous file is intact. torch's writer aborts the process
    there, so the next export removes the temporary file it left."""
    a, _ = two_models
    folder = save(a, tmp_path / "model")
    out = tmp_path / "out"
    out.mkdir()
    path = out / "model.pt"
    export_torchscript(a, path)
    before = path.read_bytes()
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(folder), str(path)]
        + [str(len(before) // 2)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0
    assert path.read_bytes() == before
    export_torchscript(a, path)
    assert [p.name for p in out.iterdir()] == ["model.pt"]


def test_an_export_interrupted_at_random_points_keeps_a_whole_file(
    two_models, tmp_path
):
    """Ctrl-C anywhere in an export leaves the previous model or the new one,
    whole; the next export leaves no temporary file behind. (TorchScript:
    the ONNX exporter saves and restores profile hooks of its own, which an
    interrupt from one would confuse.)"""
    a, b = two_models
    path = tmp_path / "model.pt"
    batch = torch.zeros((2, 32, 32, 3), dtype=torch.uint8)

    def outputs():
        with torch.no_grad():
            return torch.jit.load(path)(batch).numpy()  # fails unless whole

    export_torchscript(a, path)
    old = outputs()
    export_torchscript(b, path)  # lazy imports done
    new = outputs()
    assert old.shape != new.shape or not np.allclose(old, new)
    export_torchscript(a, path)
    events = events_of(lambda: export_torchscript(b, path))
    export_torchscript(a, path)
    points = sorted(random.Random(1).sample(range(1, len(events)), 6))
    outcomes = set()
    for n_events in points + [len(events) - 1, len(events) + 2]:
        sys.setprofile(interrupt_after(n_events))
        try:
            export_torchscript(b, path)
        except KeyboardInterrupt:
            pass
        finally:
            sys.setprofile(None)
        out = outputs()
        is_new = out.shape == new.shape and np.allclose(out, new)
        assert is_new or (out.shape == old.shape and np.allclose(out, old))
        outcomes.add(is_new)
        if is_new:
            export_torchscript(a, path)
    assert outcomes == {False, True}
    export_torchscript(b, path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
