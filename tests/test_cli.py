"""The ``sktransfer`` command, end to end in fresh interpreters.

Each run imports torch (seconds), so a test combines the steps that belong
together: one fit is shared by the tests of the module, and one call checks
several output columns at once. The error cases call ``main`` in this
interpreter; the traceback and Ctrl-C tests run the command as a process.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, MOBILENET, make_images, requires_shared
from sklearn.metrics import mean_absolute_error, r2_score

from sktransfer import load
from sktransfer.cli import main, parse_value
from sktransfer.inspection import top_k

ROOT = Path(__file__).resolve().parents[1]
#: The tiny backbone of conftest's TINY, as options.
TINY = ["--backbone", "resnet18", "--weights", "none", "--image-size", "32"]


def sktransfer(*args, cwd=None, cache=None, timeout=300):
    """Run ``python -m sktransfer ARGS``; stdin closed, output captured."""
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
        SKTRANSFER_CACHE=str(cache) if cache else os.environ["SKTRANSFER_CACHE"],
    )
    return subprocess.run(
        [sys.executable, "-m", "sktransfer", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def in_process(*args, capsys):
    """``sktransfer.cli.main(ARGS)`` in this interpreter (no torch import to
    wait for), as a CompletedProcess."""
    status = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, status, out, err)


def read_csv(text: str) -> tuple[list, list]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


def error_line(done) -> str:
    """The one line an expected error prints: the last of stderr, after
    progress lines only, and no trace."""
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("sktransfer: error: "), done.stderr
    assert all(line.startswith("sktransfer: ") for line in lines), done.stderr
    assert sum(line.startswith("sktransfer: error: ") for line in lines) == 1
    return lines[-1]


@pytest.fixture(scope="module")
def tree(module_dir):
    """A class-folder tree: train/{a,b} with 6 photos each, of the colour
    of their class (as make_images draws classes a and b)."""
    for cls in ("a", "b"):
        folder = module_dir / "train" / cls
        paths, labels = make_images(folder, classes=("a", "b"))
        for path, label in zip(paths, labels):
            if label != cls:
                Path(path).unlink()
    return module_dir / "train"


@pytest.fixture(scope="module")
def model(tree, module_dir):
    """A classifier fitted on ``tree`` by ``sktransfer fit``."""
    out = module_dir / "model"
    done = sktransfer(
        "fit", tree, "--out", out, *TINY, "--precompute-epochs", 4,
        "--random-state", 0, cache=module_dir / "cache",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def test_fit_writes_a_model_folder_recording_the_options(model):
    document = json.loads((model / "model.json").read_text())

    assert document["estimator"] == "PretrainedImageClassifier"
    assert document["params"]["weights"] is None  # --weights none
    assert document["params"]["image_size"] == 32
    assert document["params"]["precompute_epochs"] == 4
    assert document["params"]["verbose"] == 0  # progress is not saved
    assert (model / "weights.safetensors").is_file()


def test_predict_a_folder_writes_one_row_per_photo_with_top_k_and_proba(
    model, tmp_path
):
    photos = tmp_path / "photos"
    make_images(photos, n_per_class=2, classes=("a", "b"))
    make_images(photos / "deeper", n_per_class=1, classes=("a", "b"), seed=3)
    (photos / "deeper" / "a_0.jpg").unlink()  # a green "b" photo is left
    (photos / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (photos / "._a_0.jpg").write_bytes(b"\0\5\26\7 AppleDouble")
    make_images(photos / "__MACOSX", n_per_class=1, classes=("a",))
    (photos / "notes.txt").write_text("not a photo")

    done = sktransfer(
        "predict", model, photos, "--top-k", 2, "--proba", "--out", tmp_path / "p.csv"
    )

    assert done.returncode == 0, done.stderr
    header, rows = read_csv((tmp_path / "p.csv").read_text())
    assert header == [
        "path", "prediction", "label_1", "probability_1", "label_2",
        "probability_2", "a", "b",
    ]  # fmt: skip
    names = sorted(Path(row[0]).relative_to(photos).as_posix() for row in rows)
    assert names == ["a_0.jpg", "a_1.jpg", "b_0.jpg", "b_1.jpg", "deeper/b_0.jpg"]
    for _, prediction, label_1, p_1, label_2, p_2, p_a, p_b in rows:
        assert prediction == label_1 and {label_1, label_2} == {"a", "b"}
        assert float(p_1) >= float(p_2)
        assert float(p_a) + float(p_b) == pytest.approx(1, abs=1e-5)
        assert float(p_1) == pytest.approx(max(float(p_a), float(p_b)), abs=1e-6)
    # the classes differ in colour: the tiny model gets them right
    truth = [Path(row[0]).name[0] for row in rows]
    assert [row[1] for row in rows] == truth
    # not a terminal: plain lines, no progress bars
    assert "\r" not in done.stderr
    assert "predicting 5 images" in done.stderr
    assert "wrote 5 rows" in done.stderr


def test_predict_reads_list_files_and_writes_csv_to_stdout(model, tree, tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text(f"# photos to check\n{tree / 'a' / 'a_1.jpg'}\n\n{tree / 'b'}\n")

    done = sktransfer("predict", model, f"@{listed}", tree / "a" / "a_2.jpg", "-q")

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # --quiet
    header, rows = read_csv(done.stdout)
    assert header == ["path", "prediction"]
    assert len(rows) == 1 + 6 + 1
    assert {row[1] for row in rows} <= {"a", "b"}


def test_evaluate_prints_accuracy_log_loss_and_the_confusion_matrix(
    model, tree, tmp_path
):
    png = tmp_path / "confusion.png"

    done = sktransfer("evaluate", model, tree, "--confusion-png", png)

    assert done.returncode == 0, done.stderr
    report = dict(
        line.split(None, 1) for line in done.stdout.splitlines()[:3] if line.strip()
    )
    assert report["images"] == "12"
    assert float(report["accuracy"]) == 1.0
    assert 0 <= float(report["log"].split()[-1]) < 0.7  # "log loss  0.0012"
    matrix = done.stdout.split("columns: predicted)\n")[1].splitlines()
    assert matrix[0].split() == ["a", "b"]
    assert matrix[1].split() == ["a", "6", "0"]
    assert matrix[2].split() == ["b", "0", "6"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_from_a_labels_csv_and_predict_in_kaggle_format(tmp_path):
    """The dog-breeds layout: labels.csv (id, breed) and a folder of photos,
    parameters from a JSON file and --param."""
    paths, labels = make_images(tmp_path / "train", classes=("husky", "pug"))
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "breed"])
        writer.writerows([Path(p).stem, y] for p, y in zip(paths, labels))
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"precompute_epochs": 3, "hidden_sizes": [16]}))
    test = tmp_path / "test"
    make_images(test, n_per_class=2, classes=("x", "y"), seed=5)

    fit = sktransfer(
        "fit", tmp_path / "labels.csv", "--folder", tmp_path / "train",
        "--label-col", "breed", "--out", tmp_path / "model", *TINY,
        "--params", params, "--param", "dropout=0.25", "--random-state", 0,
    )  # fmt: skip
    predict = sktransfer(
        "predict", tmp_path / "model", test, "--format", "kaggle",
        "--out", tmp_path / "submission.csv",
    )  # fmt: skip

    assert fit.returncode == 0, fit.stderr
    saved = json.loads((tmp_path / "model" / "model.json").read_text())["params"]
    assert saved["precompute_epochs"] == 3
    assert saved["hidden_sizes"] == [16]
    assert saved["dropout"] == 0.25
    assert predict.returncode == 0, predict.stderr
    header, rows = read_csv((tmp_path / "submission.csv").read_text())
    assert header == ["id", "husky", "pug"]
    assert sorted(row[0] for row in rows) == ["x_0", "x_1", "y_0", "y_1"]
    sums = [float(a) + float(b) for _, a, b in rows]
    np.testing.assert_allclose(sums, 1, atol=1e-5)


def test_regression_from_a_csv_of_numbers_reports_r2_and_predicts_numbers(
    tmp_path,
):
    """evaluate's R² and MAE are those of predict's numbers."""
    paths, _ = make_images(tmp_path / "faces", n_per_class=5, classes=("x", "y"))
    ages = [20 + 3 * i for i in range(len(paths))]
    with open(tmp_path / "ages.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "age"])
        writer.writerows([Path(p).name, age] for p, age in zip(paths, ages))

    fit = sktransfer(
        "fit", tmp_path / "ages.csv", "--folder", tmp_path / "faces",
        "--regression", "--out", tmp_path / "model", *TINY, "--random-state", 0,
    )  # fmt: skip
    evaluate = sktransfer(
        "evaluate", tmp_path / "model", tmp_path / "ages.csv",
        "--folder", tmp_path / "faces",
    )  # fmt: skip
    predict = sktransfer("predict", tmp_path / "model", tmp_path / "faces", "-q")

    assert fit.returncode == 0, fit.stderr
    assert "10 images with numeric targets" in fit.stderr
    assert evaluate.returncode == 0, evaluate.stderr
    report = dict(line.split(None, 1) for line in evaluate.stdout.splitlines())
    assert report["images"] == "10"
    assert 0 < float(report["MAE"]) <= float(report["RMSE"])
    assert predict.returncode == 0, predict.stderr
    header, rows = read_csv(predict.stdout)
    assert header == ["path", "prediction"]
    predicted = {Path(path).name: float(value) for path, value in rows}
    truth = dict(zip((Path(p).name for p in paths), ages))
    y_true = list(truth.values())
    y_pred = [predicted[name] for name in truth]
    assert r2_score(y_true, y_pred) == pytest.approx(float(report["R²"]), abs=1e-4)
    mae = mean_absolute_error(y_true, y_pred)
    assert mae == pytest.approx(float(report["MAE"]), rel=1e-4)


def test_backbones_prints_the_table_of_available_backbones():
    done = sktransfer("backbones", "resnet18", "mobilenet_v2")

    assert done.returncode == 0, done.stderr
    header, *rows = [line.split() for line in done.stdout.splitlines()]
    assert header == [
        "name", "weights", "params(M)", "GFLOPs", "top1(%)", "features", "size",
        "cached",
    ]  # fmt: skip
    table = {row[0]: row for row in rows}
    assert table["resnet18"][2:6] == ["11.7", "1.81", "69.76", "512"]
    assert table["mobilenet_v2"][5:7] == ["1280", "224"]


def test_lr_find_prints_the_suggestions_valley_first_and_plots(tree, tmp_path):
    done = sktransfer(
        "lr-find", tree, *TINY, "--batch-size", 4, "--end-lr", 100,
        "--num-it", 30, "--random-state", 0, "--plot", tmp_path / "lr.png",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    assert [line[0] for line in lines] == ["valley", "minimum", "steepest"]
    assert all(1e-7 <= float(line[1]) <= 100 for line in lines)
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "case, status, words",
    [
        ("missing folder", 1, "image folder 'no-such-folder' does not exist"),
        ("not a model", 1, "holds no saved model: model.json is missing"),
        ("bad parameter name", 2, "Invalid parameter 'lrr' .* Did you mean 'lr'\\?"),
        ("bad parameter value", 2, "The 'lr' parameter of PretrainedImageClassifier"),
        ("unreadable image", 1, "could not be decoded"),
        ("missing option", 2, "the following arguments are required: --out"),
        ("regression from a folder", 2, "--regression needs numeric targets"),
    ],
)
def test_expected_errors_print_one_line_and_exit_non_zero(
    case, status, words, model, tree, tmp_path, monkeypatch, capsys
):
    (tmp_path / "broken.jpg").write_bytes(b"this is not a JPEG")
    args = {
        "missing folder": ["fit", "no-such-folder", "--out", "m"],
        "not a model": ["predict", tree, tree],
        "bad parameter name": ["fit", tree, "--out", "m", "--param", "lrr=0.1"],
        "bad parameter value": ["fit", tree, "--out", "m", "--lr", "fast"],
        "unreadable image": ["predict", model, tmp_path / "broken.jpg"],
        "missing option": ["fit", tree],
        "regression from a folder": ["fit", tree, "--out", "m", "--regression"],
    }[case]

    monkeypatch.chdir(tmp_path)

    done = in_process(*args, capsys=capsys)

    assert done.returncode == status
    assert re.search(words, error_line(done))
    assert not (tmp_path / "m").exists()


def test_traceback_option_shows_the_trace_and_still_ends_with_the_error(tree):
    done = sktransfer("predict", tree, tree, "--traceback")

    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "ModelFormatError" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("sktransfer: error: ")


def test_ctrl_c_during_fit_exits_130_without_a_trace(tree, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "sktransfer", "fit", str(tree), "--out",
         str(tmp_path / "m"), *TINY, "--precompute-epochs", "100000"],
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    first = process.stderr.readline()  # "fitting ...": fit has started
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    process.wait(timeout=120)

    assert "fitting PretrainedImageClassifier" in first
    assert process.returncode == 130
    assert "Traceback" not in rest
    assert rest.strip().splitlines() == ["sktransfer: interrupted"]
    assert not (tmp_path / "m" / "model.json").exists()


def test_checkpoint_dir_lets_the_same_command_go_on_after_ctrl_c(tree, tmp_path):
    """--checkpoint-dir: Ctrl-C once an epoch of the body is written, then
    the same command again (verbose: it says where it goes on from) goes on
    from it and finishes, the checkpoint removed; --schedule and --lr-mult
    reach the model."""
    folder = tmp_path / "ckpt"
    command = [
        sys.executable, "-m", "sktransfer", "fit", str(tree), "--out",
        str(tmp_path / "m"), *TINY, "--unfrozen-cycles", "1", "--cycle-len", "20",
        "--schedule", "one_cycle", "--lr-mult", "3", "--checkpoint-dir",
        str(folder), "--random-state", "0",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        command, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env
    )
    deadline = time.monotonic() + 240
    # the probe's checkpoint, then the first unfrozen epoch's replaces it
    while not folder.is_dir() or not any(folder.glob("fit-*.ckpt")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    first = next(folder.glob("fit-*.ckpt")).stat().st_mtime_ns
    while next(folder.glob("fit-*.ckpt")).stat().st_mtime_ns == first:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    assert process.returncode == 130

    again = subprocess.run(
        [*command, "--param", "verbose=1"], capture_output=True,
        stdin=subprocess.DEVNULL, text=True, env=env, timeout=600,
    )  # fmt: skip

    assert again.returncode == 0, again.stderr
    assert "going on from the checkpoint" in again.stderr
    assert not list(folder.iterdir())  # removed once the fit completed
    saved = json.loads((tmp_path / "m" / "model.json").read_text())["params"]
    assert saved["schedule"] == "one_cycle" and saved["lr_mult"] == 3
    history = load(tmp_path / "m").history_
    assert sum(row["stage"] == "unfrozen" for row in history) == 20


_LOSES_THE_FIRST_CTRL_C = """
import sys, time
from sktransfer import _cli_commands, cli

def backbones(args):
    try:
        print("started", file=sys.stderr, flush=True)  # the test's cue
        time.sleep(30)
    except KeyboardInterrupt:
        pass  # lost, as when it lands in a finalizer
    print("went on", file=sys.stderr, flush=True)
    time.sleep(30)

_cli_commands.COMMANDS["backbones"] = backbones
sys.argv = ["sktransfer", "backbones"]
cli.run()
"""


def test_a_lost_ctrl_c_is_raised_again_and_the_command_stops():
    """Python drops a KeyboardInterrupt raised in a finalizer; the command
    must stop all the same, with status 130 and one line."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-c", _LOSES_THE_FIRST_CTRL_C],
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert process.stderr.readline().strip() == "started"
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    process.wait(timeout=20)
    assert process.returncode == 130
    assert rest.strip().splitlines() == ["went on", "sktransfer: interrupted"]


# -- in-process helpers ---------------------------------------------------------


def test_parse_value_reads_json_then_none_then_text():
    assert parse_value("3") == 3 and parse_value("1e-3") == 0.001
    assert parse_value("true") is True and parse_value("[512, 256]") == [512, 256]
    assert parse_value("none") is None and parse_value("None") is None
    assert parse_value("auto") == "auto" and parse_value("side_on") == "side_on"


def test_top_k_gives_the_k_most_probable_labels_with_probabilities():
    class Fixed:
        classes_ = np.array(["ant", "bee", "wasp"])

        def predict_proba(self, X):
            return np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])

    assert top_k(Fixed(), [None, None], k=2) == [
        [("bee", 0.5), ("wasp", 0.3)],
        [("ant", 0.6), ("wasp", 0.3)],
    ]
    assert [len(pairs) for pairs in top_k(Fixed(), [None, None], k=10)] == [3, 3]
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        top_k(Fixed(), [None], k=0)


# -- real photos ----------------------------------------------------------------


@requires_shared
@pytest.mark.real_data
@pytest.mark.slow
def test_fit_and_evaluate_ants_and_bees_with_mobilenet(tmp_path):
    root = DATA / "hymenoptera_data"

    fit = sktransfer(
        "fit", root / "train", "--out", tmp_path / "model",
        "--backbone", "mobilenet_v2", "--weights", MOBILENET, "--random-state", 0,
        timeout=900,
    )  # fmt: skip
    evaluate = sktransfer("evaluate", tmp_path / "model", root / "val", timeout=900)

    assert fit.returncode == 0, fit.stderr
    assert evaluate.returncode == 0, evaluate.stderr
    report = dict(
        line.split(None, 1) for line in evaluate.stdout.splitlines()[:2] if line
    )
    assert int(report["images"]) == 153
    assert float(report["accuracy"]) > 0.9
