"""The ``sktransfer`` command: fit, predict, evaluate, lr-find, backbones.

Each subcommand is a thin layer over the public API: the data loaders of
:mod:`sktransfer.datasets`, the estimators, :func:`sktransfer.save` and
:func:`sktransfer.load`. Expected errors (a missing folder, an unreadable
image, a bad parameter, a folder that is not a model) print the package's
own message on one line and exit with 2 (usage and parameters) or 1 (data
and runtime); ``--traceback`` shows the whole trace.

Examples
--------
>>> from sktransfer.cli import parse_value
>>> parse_value("1e-3"), parse_value("auto"), parse_value("none"), parse_value("[1, 2]")
(0.001, 'auto', None, [1, 2])
"""

from __future__ import annotations

import argparse
import csv
import difflib
import inspect
import json
import os
import sys
import time
import warnings
from pathlib import Path

__all__ = ["main", "parse_value"]

#: Exit status of usage and parameter errors (argparse's own).
USAGE = 2
#: Exit status of data and runtime errors.
FAILURE = 1
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130

#: Errors whose message is the whole story: printed on one line.
_EXPECTED = (ValueError, OSError, ImportError, RuntimeError, LookupError)


class UsageError(Exception):
    """A command line that cannot run as given: exit status 2."""


def parse_value(text: str):
    """A parameter value from the command line: JSON when it parses
    (numbers, ``true``, ``[1, 2]``, ``{"a": 1}``), None for ``none`` or
    ``null``, the text itself otherwise."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    if text.strip().lower() in ("none", "null"):
        return None
    return text


def _parse_sequence(text: str):
    """``"512,256"`` -> ``(512, 256)``; ``""`` -> ``()``; JSON lists as JSON."""
    if text.strip().startswith("["):
        return parse_value(text)
    if "," not in text and text.strip():
        return parse_value(text)
    return tuple(parse_value(part) for part in text.split(",") if part.strip())


# -- options --------------------------------------------------------------------

#: Estimator parameters with an option of their own: (name, metavar, help).
_NAMED = (
    ("backbone", "NAME", "torchvision name or timm:NAME ('sktransfer backbones')"),
    (
        "weights",
        "WEIGHTS",
        "DEFAULT, a torchvision weights name, a state_dict file, or none (random)",
    ),
    ("image_size", "PIXELS", "side of the network input; none: the weights' preset"),
    ("hidden_sizes", "N,N", "hidden layers of the head, comma-separated; '' linear"),
    ("dropout", "P", "dropout before the head's last layer"),
    ("precompute_epochs", "N", "stage 1: epochs of the head on cached features"),
    ("augmented_cycles", "N", "stage 2: SGDR cycles on augmented photos"),
    ("unfrozen_cycles", "N", "stage 3: SGDR cycles with the body unfrozen"),
    ("cycle_len", "EPOCHS", "epochs of the first SGDR cycle"),
    ("cycle_mult", "X", "each stage-3 cycle is X times longer than the last"),
    ("lr", "RATE", "learning rate of the head, or auto (a sweep inside fit)"),
    ("unfrozen_lr", "RATE", "stage-3 rate (late group), auto, or 3 comma-separated"),
    ("batch_size", "N", "mini-batch size"),
    ("augment", "PRESET", "side_on, top_down or none"),
    ("tta", "N", "augmented views averaged at prediction time"),
    ("validation_fraction", "F", "hold out this fraction to record valid loss"),
    ("class_weight", "balanced", "class weights in the loss (classifier)"),
    ("on_error", "raise|skip", "what to do with images that cannot be read"),
    ("precision", "auto|fp32|bf16", "numeric precision"),
    ("device", "DEVICE", "auto, cpu, cuda, ..."),
    ("cache", "DIR", "feature cache folder, none, or auto ($SKTRANSFER_CACHE)"),
    ("random_state", "SEED", "seed of the head, shuffling and augmentation"),
)
_SEQUENCES = {"hidden_sizes", "unfrozen_lr"}
_FLAGS = (
    ("early_stopping", "stop a stage when the validation loss stops improving"),
    ("snapshot_ensemble", "average the models at the end of every SGDR cycle"),
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other error here."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _Formatter(argparse.HelpFormatter):
    """Descriptions wrapped to the terminal, examples (text with line
    breaks) kept as written."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=32)

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("output")
    group.add_argument(
        "-q", "--quiet", action="store_true", help="print results and errors only"
    )
    group.add_argument(
        "--traceback", action="store_true", help="show the full trace of an error"
    )
    return common


def _data_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group(
        "data",
        "DATA is a class-folder tree (root/class/image) or a labels CSV with a "
        "header row (an id column and a label column, images in --folder).",
    )
    group.add_argument(
        "--csv",
        metavar="FILE",
        help="labels CSV, when DATA is the folder of images",
    )
    group.add_argument(
        "--folder",
        metavar="DIR",
        help="images of a labels CSV given as DATA (default: the CSV's folder)",
    )
    group.add_argument("--id-col", metavar="COL", help="id column (default: first)")
    group.add_argument(
        "--label-col", metavar="COL", help="label column (default: second)"
    )
    group.add_argument(
        "--suffix", help="appended to every id to make a file name, e.g. .jpg"
    )
    group.add_argument(
        "--label-sep",
        metavar="SEP",
        help="separator of several labels in one cell (multi-label; ' ' any space)",
    )
    group.add_argument(
        "--regression",
        action="store_true",
        help="numeric targets in the label column: a regressor",
    )
    return parent


def _estimator_options() -> argparse.ArgumentParser:
    from ._classifier import PretrainedImageClassifier

    defaults = {
        name: p.default
        for name, p in inspect.signature(PretrainedImageClassifier).parameters.items()
    }
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group(
        "estimator parameters",
        "Any parameter of PretrainedImageClassifier / PretrainedImageRegressor: "
        "the common ones below, all of them with --param NAME=VALUE or --params "
        "FILE. Values are read as JSON where they parse (1e-3, true, [256, 128]), "
        "'none' is None, anything else a string. Later sources win: --params, "
        "then --param, then the named options.",
    )
    for name, metavar, text in _NAMED:
        default = defaults[name]
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            metavar=metavar,
            help=f"{text} (default: {shown})",
        )
    for name, text in _FLAGS:
        group.add_argument(
            "--" + name.replace("_", "-"), dest=name, action="store_const", const=True
        )
        group._group_actions[-1].help = text
    group.add_argument(
        "--param",
        dest="param_items",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="any estimator parameter (repeatable)",
    )
    group.add_argument(
        "--params",
        dest="params_file",
        metavar="FILE",
        help="a JSON (or YAML, with PyYAML) mapping of parameters",
    )
    return parent


_EPILOG_FIT = """\
examples:
  sktransfer fit photos/train --out ants-bees --backbone mobilenet_v2
  sktransfer fit labels.csv --folder train --suffix .jpg --out breeds \\
      --backbone resnet50 --unfrozen-cycles 3 --param lr_mult=3
  sktransfer fit train --csv labels.csv --label-sep " " --out tags
  sktransfer fit ages.csv --folder faces --regression --out age-model
  sktransfer fit photos/train --out m --backbone resnet18 --weights none \\
      --image-size 32 --params recipe.json
"""

_EPILOG_PREDICT = """\
PHOTOS are image files, folders (searched recursively; .DS_Store, __MACOSX
and names starting with '.' are skipped), or @FILE: a text file listing one
path per line.

examples:
  sktransfer predict ants-bees photos/val --out predictions.csv
  sktransfer predict ants-bees new.jpg --top-k 3 --out -
  sktransfer predict breeds test --format kaggle --out submission.csv
  sktransfer predict ants-bees @to-check.txt --proba --out proba.csv
"""

_EPILOG_EVALUATE = """\
examples:
  sktransfer evaluate ants-bees photos/val
  sktransfer evaluate breeds labels-val.csv --folder train --confusion-png cm.png
"""

_EPILOG_LR_FIND = """\
examples:
  sktransfer lr-find photos/train --backbone mobilenet_v2 --plot lr.png
  sktransfer lr-find photos/train --stage unfrozen --precompute-epochs 2
"""

_EPILOG_MAIN = """\
examples:
  sktransfer backbones
  sktransfer lr-find photos/train --backbone mobilenet_v2 --plot lr.png
  sktransfer fit photos/train --out ants-bees --backbone mobilenet_v2 --lr 3e-3
  sktransfer evaluate ants-bees photos/val --confusion-png confusion.png
  sktransfer predict ants-bees new-photos --top-k 2 --out predictions.csv

Run 'sktransfer COMMAND --help' for the options of a command.
"""


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``sktransfer`` command and its subcommands."""
    from . import __version__

    parser = _Parser(
        prog="sktransfer",
        description="Transfer learning on images from the command line: fit a "
        "pretrained network on a folder of photos, save it, predict and evaluate.",
        epilog=_EPILOG_MAIN,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser, required=True
    )
    common, data, estimator = _common_options(), _data_options(), _estimator_options()

    fit = commands.add_parser(
        "fit",
        help="train on labelled photos and save the model folder",
        description="Train a PretrainedImageClassifier (or, with --regression, a "
        "PretrainedImageRegressor) on DATA and save it to --out, a folder of "
        "safetensors and JSON that 'predict' and sktransfer.load read.",
        epilog=_EPILOG_FIT,
        formatter_class=_Formatter,
        parents=[data, estimator, common],
    )
    fit.add_argument("data", metavar="DATA", help="class-folder tree or labels CSV")
    fit.add_argument("--out", required=True, metavar="MODEL", help="model folder")
    fit.add_argument(
        "--overwrite", action="store_true", help="replace a model saved in --out"
    )

    predict = commands.add_parser(
        "predict",
        help="predict photos with a saved model, write a CSV",
        description="Write one CSV row per photo: its path and the prediction "
        "(and the top-k labels with their probabilities, or one probability "
        "column per class).",
        epilog=_EPILOG_PREDICT,
        formatter_class=_Formatter,
        parents=[common],
    )
    predict.add_argument("model", metavar="MODEL", help="a folder written by 'fit'")
    predict.add_argument(
        "photos", metavar="PHOTOS", nargs="+", help="files, folders or @list.txt"
    )
    predict.add_argument(
        "--out", default="-", metavar="CSV", help="output file; - is stdout (default)"
    )
    predict.add_argument(
        "--top-k",
        type=int,
        metavar="K",
        help="add the K most probable labels and their probabilities",
    )
    predict.add_argument(
        "--proba", action="store_true", help="add one probability column per class"
    )
    predict.add_argument(
        "--format",
        choices=("paths", "kaggle"),
        default="paths",
        help="kaggle: an 'id' column (file name without extension) and one "
        "probability column per class, as competitions take them",
    )
    _device_option(predict)

    evaluate = commands.add_parser(
        "evaluate",
        help="score a saved model on labelled photos",
        description="Accuracy, log loss and the confusion matrix of a classifier "
        "(R², MAE and RMSE of a regressor) on DATA.",
        epilog=_EPILOG_EVALUATE,
        formatter_class=_Formatter,
        parents=[data, common],
    )
    evaluate.add_argument("model", metavar="MODEL", help="a folder written by 'fit'")
    evaluate.add_argument("data", metavar="DATA", help="class-folder tree or CSV")
    evaluate.add_argument(
        "--confusion-png", metavar="FILE", help="draw the confusion matrix (matplotlib)"
    )
    _device_option(evaluate)

    lr_find = commands.add_parser(
        "lr-find",
        help="sweep the learning rate and suggest one",
        description="Run sktransfer.LRFinder with the estimator the options "
        "describe and print its suggested learning rates.",
        epilog=_EPILOG_LR_FIND,
        formatter_class=_Formatter,
        parents=[data, estimator, common],
    )
    lr_find.add_argument("data", metavar="DATA", help="class-folder tree or CSV")
    sweep = lr_find.add_argument_group("sweep")
    sweep.add_argument("--plot", metavar="FILE", help="draw loss against rate")
    sweep.add_argument(
        "--stage",
        choices=("precomputed", "unfrozen"),
        default="precomputed",
        help="sweep the head on cached features, or the unfrozen network",
    )
    sweep.add_argument("--start-lr", type=float, default=1e-7, metavar="RATE")
    sweep.add_argument("--end-lr", type=float, default=10.0, metavar="RATE")
    sweep.add_argument("--num-it", type=int, default=100, metavar="N")

    backbones = commands.add_parser(
        "backbones",
        help="list the backbones with their size, cost and accuracy",
        description="The table of sktransfer.available_backbones(details=True): "
        "parameters, GFLOPs, ImageNet top-1, feature size, input size, and "
        "whether the default weights are cached locally.",
        epilog="examples:\n  sktransfer backbones\n"
        "  sktransfer backbones resnet18 mobilenet_v2 timm:resnet50\n",
        formatter_class=_Formatter,
        parents=[common],
    )
    backbones.add_argument(
        "names", metavar="NAME", nargs="*", help="describe these only"
    )
    return parser


def _device_option(parser) -> None:
    parser.add_argument(
        "--device", help="device of the loaded model (default: the saved one)"
    )


# -- main -----------------------------------------------------------------------


def main(argv=None) -> int:
    """Run the ``sktransfer`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    show_trace = "--traceback" in argv
    try:
        args = build_parser().parse_args(argv)
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return _COMMANDS[args.command](args) or 0
    except KeyboardInterrupt:
        print("sktransfer: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # the reader of stdout left (| head): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error at exit
        return FAILURE
    except UsageError as exc:
        return _fail(exc, USAGE, show_trace)
    except _EXPECTED as exc:
        return _fail(exc, FAILURE, show_trace)
    except Exception as exc:  # a bug: say so, still on one line
        return _fail(exc, FAILURE, show_trace, unexpected=True)


def _fail(exc, status, show_trace, unexpected=False) -> int:
    if show_trace:
        import traceback

        traceback.print_exception(exc)
    message = " ".join(str(exc).split()) or type(exc).__name__
    if unexpected:
        message = (
            f"{type(exc).__name__}: {message} (unexpected; run with --traceback "
            "and report it)"
        )
    print(f"sktransfer: error: {message}", file=sys.stderr)
    return status


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"sktransfer: warning: {' '.join(str(message).split())}", file=sys.stderr)


def _say(args, text: str) -> None:
    """A progress line on stderr, unless --quiet."""
    if not args.quiet:
        print(f"sktransfer: {text}", file=sys.stderr, flush=True)


def _verbose(args) -> int:
    """Progress bars when a person watches stderr; plain lines otherwise."""
    return 1 if not args.quiet and sys.stderr.isatty() else 0


# -- fit ------------------------------------------------------------------------


def _cmd_fit(args) -> int:
    from ._persist import save

    out = Path(args.out).expanduser()
    if (out / "model.json").exists() and not args.overwrite:
        raise UsageError(
            f"{str(out)!r} already holds a saved model; pass --overwrite to "
            "replace it, or choose another --out folder."
        )
    estimator, verbose = _make_estimator(args)
    X, y, what = _load_labelled(args)
    _say(args, f"fitting {_describe(estimator)} on {what}")
    start = time.perf_counter()
    estimator.fit(X, y)
    estimator.set_params(verbose=verbose)  # what the saved model records
    save(estimator, out, overwrite=args.overwrite)
    seconds = time.perf_counter() - start
    _say(args, f"fitted in {seconds:.1f} s; saved the model to {str(out)!r}")
    return 0


def _make_estimator(args):
    """The estimator the options describe (parameters checked), and the
    ``verbose`` the user asked for."""
    from ._classifier import PretrainedImageClassifier
    from ._regressor import PretrainedImageRegressor

    cls = PretrainedImageRegressor if args.regression else PretrainedImageClassifier
    params = _read_params_file(args.params_file) if args.params_file else {}
    for item in args.param_items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--param takes NAME=VALUE; got {item!r}.")
        params[name.strip()] = parse_value(value)
    for name, _, _ in _NAMED:
        text = getattr(args, name)
        if text is not None:
            params[name] = (
                _parse_sequence(text) if name in _SEQUENCES else parse_value(text)
            )
    for name, _ in _FLAGS:
        if getattr(args, name):
            params[name] = True
    estimator = cls()
    valid = estimator.get_params()
    unknown = [name for name in params if name not in valid]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(valid), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UsageError(
            f"Invalid parameter {unknown[0]!r} for estimator {cls.__name__}. Valid "
            f"parameters are: {sorted(valid)}.{hint}"
        )
    verbose = params.pop("verbose", 0)
    estimator.set_params(**params, verbose=verbose or _verbose(args))
    try:
        estimator._check_params()  # the estimator's own checks, before any image
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    return estimator, verbose


def _read_params_file(path) -> dict:
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"--params file {str(path)!r} could not be read: {exc}"
        ) from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise UsageError(
                f"--params {str(path)!r} is YAML, which needs PyYAML: pip install "
                "pyyaml (or write the parameters as JSON)."
            ) from None
        try:
            params = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(
                f"--params file {str(path)!r} is not valid YAML: {exc}"
            ) from None
    else:
        try:
            params = json.loads(text)
        except ValueError as exc:
            raise UsageError(
                f"--params file {str(path)!r} is not valid JSON: {exc}"
            ) from None
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise UsageError(
            f"--params file {str(path)!r} must hold a mapping of parameter names "
            f"to values; it holds a {type(params).__name__}."
        )
    return params


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def _describe(estimator) -> str:
    return f"{type(estimator).__name__}({estimator.backbone!r})"


def _load_labelled(args):
    """``(X, y, description)`` of DATA and the data options."""
    from .datasets import load_image_csv, load_image_folder

    data = Path(args.data).expanduser()
    csv_path, image_dir = None, None
    if args.csv is not None:
        if data.is_file():
            raise UsageError(
                f"with --csv, DATA is the folder of images; {str(data)!r} is a file."
            )
        csv_path, image_dir = Path(args.csv).expanduser(), data
    elif data.is_file():
        if data.suffix.lower() not in (".csv", ".tsv"):
            raise UsageError(
                f"DATA {str(data)!r} is a file but not a .csv or .tsv: DATA is a "
                "class-folder tree (root/class/image) or a labels CSV."
            )
        csv_path = data
        image_dir = Path(args.folder).expanduser() if args.folder else data.parent
    csv_options = ("folder", "id_col", "label_col", "suffix", "label_sep")
    if csv_path is None:
        given = [name for name in csv_options if getattr(args, name) is not None]
        if given:
            option = "--" + given[0].replace("_", "-")
            raise UsageError(f"{option} is for a labels CSV; DATA is a folder.")
        if args.regression:
            raise UsageError(
                "--regression needs numeric targets: DATA must be a labels CSV."
            )
        X, y = load_image_folder(data)
        return X, y, f"{_images(len(X))} in {len(set(y.tolist()))} classes"
    if not csv_path.is_file():
        raise FileNotFoundError(f"labels CSV {str(csv_path)!r} does not exist.")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {str(image_dir)!r} does not exist.")
    X, y = load_image_csv(
        csv_path,
        image_dir,
        id_column=_column(args.id_col),
        label_column=_column(args.label_col),
        suffix=args.suffix,
        label_sep=args.label_sep,
    )
    if args.regression:
        return X, _numeric(y, csv_path), f"{_images(len(X))} with numeric targets"
    if args.label_sep is not None:
        n = len({label for labels in y for label in labels})
        return X, y, f"{_images(len(X))} with {n} labels"
    return X, y, f"{_images(len(X))} in {len(set(y.tolist()))} classes"


def _column(value):
    """A CSV column option: a position when it is a number, else a name."""
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def _numeric(y, csv_path):
    import numpy as np

    try:
        return np.asarray(y, dtype=float)
    except ValueError:
        bad = next(v for v in y.tolist() if not _is_number(v))
        raise ValueError(
            f"--regression needs numbers in the label column of {str(csv_path)!r}; "
            f"it holds {bad!r}."
        ) from None


def _is_number(text) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- predict --------------------------------------------------------------------


def _cmd_predict(args) -> int:
    from .inspection import top_k

    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be 1 or more; got {args.top_k}.")
    if args.format == "kaggle" and (args.top_k or args.proba):
        raise UsageError("--format kaggle writes probabilities: leave out --top-k "
                         "and --proba.")  # fmt: skip
    paths = _photo_paths(args.photos)
    model = _load_model(args, need="predict")
    classifier = hasattr(model, "predict_proba")
    if not classifier and (args.top_k or args.proba or args.format == "kaggle"):
        raise UsageError(
            f"--top-k, --proba and --format kaggle need a classifier; "
            f"{args.model!r} holds a {type(model).__name__}."
        )
    _say(args, f"predicting {_images(len(paths))} with {_describe(model)}")
    header, rows = _prediction_table(model, paths, args, top_k)
    _write_csv(args.out, header, rows)
    if args.out != "-":
        _say(args, f"wrote {len(rows)} rows to {args.out!r}")
    return 0


def _prediction_table(model, paths, args, top_k):
    import numpy as np

    if not hasattr(model, "predict_proba"):
        pred = np.asarray(model.predict(paths))
        if pred.ndim == 1:
            return ["path", "prediction"], [[p, _num(v)] for p, v in zip(paths, pred)]
        header = ["path"] + [f"prediction_{j}" for j in range(pred.shape[1])]
        return header, [[p, *map(_num, row)] for p, row in zip(paths, pred)]
    proba = model.predict_proba(paths)
    classes = [str(c) for c in model.classes_.tolist()]
    if args.format == "kaggle":
        ids = [Path(p).stem for p in paths]
        return ["id", *classes], [[i, *map(_num, row)] for i, row in zip(ids, proba)]
    if model.multilabel_:
        chosen = proba >= model.threshold
        labels = [" ".join(c for c, on in zip(classes, row) if on) for row in chosen]
    else:
        labels = [classes[j] for j in np.argmax(proba, axis=1)]
    header = ["path", "prediction"]
    rows = [[p, label] for p, label in zip(paths, labels)]
    if args.top_k:
        k = min(args.top_k, len(classes))
        for j in range(1, k + 1):
            header += [f"label_{j}", f"probability_{j}"]
        # top_k again from the probabilities already computed, not the images
        best = top_k(_Fixed(proba, model.classes_), paths, k=k)
        for row, pairs in zip(rows, best):
            for label, p in pairs:
                row += [str(label), _num(p)]
    if args.proba:
        header += classes
        for row, values in zip(rows, proba):
            row += [_num(v) for v in values]
    return header, rows


class _Fixed:
    """Probabilities already computed, as a classifier :func:`top_k` reads."""

    def __init__(self, proba, classes):
        self._proba, self.classes_ = proba, classes

    def predict_proba(self, X):
        return self._proba


def _num(value) -> str:
    return f"{float(value):.6g}"


def _photo_paths(items) -> list:
    """The image paths of PHOTOS: files as given, folders listed, @lists read."""
    from .datasets import load_image_paths

    paths = []
    for item in items:
        if item.startswith("@"):
            listed = Path(item[1:]).expanduser()
            try:
                lines = listed.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise FileNotFoundError(
                    f"list of photos {str(listed)!r} could not be read: {exc}"
                ) from None
            names = [line.strip() for line in lines]
            entries = [n for n in names if n and not n.startswith("#")]
        else:
            entries = [item]
        for entry in entries:
            path = Path(entry).expanduser()
            if path.is_dir():
                paths.extend(load_image_paths(path).tolist())
            elif path.exists():
                paths.append(str(path))
            else:
                raise FileNotFoundError(f"image {entry!r} does not exist.")
    return list(dict.fromkeys(paths))


def _load_model(args, need: str):
    from ._persist import load

    folder = Path(args.model).expanduser()
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"model folder {args.model!r} {what}.")
    model = load(folder, device=args.device)
    if not hasattr(model, "predict"):
        raise UsageError(
            f"{args.model!r} holds a {type(model).__name__} (features, no "
            f"predictions): '{need}' needs a model saved by 'sktransfer fit'."
        )
    model.set_params(verbose=_verbose(args))
    return model


def _write_csv(out: str, header: list, rows: list) -> None:
    if out == "-":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        sys.stdout.flush()
        return
    path = Path(out).expanduser()
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


# -- evaluate -------------------------------------------------------------------


def _cmd_evaluate(args) -> int:
    model = _load_model(args, need="evaluate")
    classifier = hasattr(model, "predict_proba")
    args.regression = not classifier
    if args.confusion_png and (not classifier or model.multilabel_):
        raise UsageError("--confusion-png needs a single-label classifier.")
    X, y, what = _load_labelled(args)
    _say(args, f"evaluating {_describe(model)} on {what}")
    if not classifier:
        print(_regression_report(model, X, y))
        return 0
    if model.multilabel_:
        print(f"subset accuracy  {model.score(X, y):.4f}")
        return 0
    report, y_pred = _classification_report(model, X, y)
    print(report)
    if args.confusion_png:
        _confusion_png(y, y_pred, model.classes_, args.confusion_png)
        _say(args, f"wrote the confusion matrix to {args.confusion_png!r}")
    return 0


def _classification_report(model, X, y):
    import numpy as np
    from sklearn.metrics import confusion_matrix, log_loss

    proba = model.predict_proba(X)
    classes = model.classes_
    y_pred = classes[np.argmax(proba, axis=1)]
    y = np.asarray(y)
    known = np.isin(y, classes)
    lines = [
        f"images           {len(y)}",
        f"accuracy         {np.mean(y_pred == y):.4f}",
    ]
    if known.all():
        loss = log_loss(y, proba, labels=classes)
        lines.append(f"log loss         {loss:.4f}")
    else:
        unseen = sorted(set(y[~known].tolist()))
        lines.append(f"log loss         n/a: labels not seen in fit: {unseen[:10]}")
    labels = list(classes.tolist()) + sorted(set(y.tolist()) - set(classes.tolist()))
    matrix = confusion_matrix(y, y_pred, labels=labels)
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    lines += _matrix_lines(matrix, [str(label) for label in labels])
    return "\n".join(lines), y_pred


def _matrix_lines(matrix, labels) -> list:
    name_width = max(len(label) for label in labels)
    cell = max(max(len(label) for label in labels), len(str(matrix.max())))
    lines = [" " * name_width + "  " + " ".join(f"{c:>{cell}}" for c in labels)]
    for label, row in zip(labels, matrix):
        cells = " ".join(f"{v:>{cell}}" for v in row.tolist())
        lines.append(f"{label:<{name_width}}  {cells}")
    return lines


def _regression_report(model, X, y) -> str:
    import numpy as np
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    pred = model.predict(X)
    r2 = model.score(X, y)  # on standardised values: exact for any scale
    mae = mean_absolute_error(y, pred)
    rmse = float(np.sqrt(mean_squared_error(y, pred)))
    return "\n".join(
        [
            f"images           {len(y)}",
            f"R²               {r2:.4f}",
            f"MAE              {mae:.6g}",
            f"RMSE             {rmse:.6g}",
        ]
    )


def _confusion_png(y, y_pred, classes, path) -> None:
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "--confusion-png needs matplotlib: pip install matplotlib"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(
        y, y_pred, ax=ax, xticks_rotation="vertical", colorbar=False
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- lr-find --------------------------------------------------------------------


def _cmd_lr_find(args) -> int:
    from ._lr_finder import LRFinder

    estimator, _ = _make_estimator(args)
    finder = LRFinder(
        estimator,
        start_lr=args.start_lr,
        end_lr=args.end_lr,
        num_it=args.num_it,
        stage=args.stage,
        random_state=estimator.random_state,
    )
    try:
        finder._check()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    X, y, what = _load_labelled(args)
    _say(args, f"sweeping the learning rate of {_describe(estimator)} on {what}")
    finder.fit(X, y)
    for rule in sorted(finder.suggestions_, key=lambda r: r != "valley"):
        rate = finder.suggestions_[rule]
        used = "  (what lr='auto' uses)" if rule == "valley" else ""
        print(f"{rule:<10} {rate:.2e}{used}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ax = finder.plot()
        ax.figure.savefig(args.plot, dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
        _say(args, f"wrote the plot to {args.plot!r}")
    return 0


# -- backbones ------------------------------------------------------------------


def _cmd_backbones(args) -> int:
    from ._catalog import available_backbones

    rows = available_backbones(details=True, names=args.names or None)
    header = ["name", "weights", "params(M)", "GFLOPs", "top1(%)", "features"]
    header += ["size", "cached"]
    table = [
        [
            row["name"],
            row["weights"] or "-",
            f"{row['parameters'] / 1e6:.1f}",
            "-" if row["gflops"] is None else f"{row['gflops']:.2f}",
            "-" if row["imagenet_top1"] is None else f"{row['imagenet_top1']:.2f}",
            str(row["feature_size"]),
            str(row["image_size"]),
            "yes" if row["cached"] else "no",
        ]
        for row in rows
    ]
    widths = [max(len(r[j]) for r in [header, *table]) for j in range(len(header))]
    for row in [header, *table]:
        cells = [
            cell.ljust(w) if j < 2 else cell.rjust(w)
            for j, (cell, w) in enumerate(zip(row, widths))
        ]
        print("  ".join(cells).rstrip())
    return 0


_COMMANDS = {
    "fit": _cmd_fit,
    "predict": _cmd_predict,
    "evaluate": _cmd_evaluate,
    "lr-find": _cmd_lr_find,
    "backbones": _cmd_backbones,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
