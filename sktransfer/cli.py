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
import inspect
import json
import os
import sys
import warnings

__all__ = ["main", "parse_value", "run"]

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


def parse_sequence(text: str):
    """``"512,256"`` -> ``(512, 256)``; ``""`` -> ``()``; JSON lists as JSON."""
    if text.strip().startswith("["):
        return parse_value(text)
    if "," not in text and text.strip():
        return parse_value(text)
    return tuple(parse_value(part) for part in text.split(",") if part.strip())


# -- options --------------------------------------------------------------------

#: Estimator parameters with an option of their own: (name, metavar, help).
NAMED_OPTIONS = (
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
    ("lr_mult", "X", "stage 3: each earlier layer group's rate is X times lower"),
    ("schedule", "sgdr|one_cycle", "the rate within each stage"),
    ("batch_size", "N", "mini-batch size"),
    ("augment", "PRESET", "side_on, top_down, trivial or none"),
    ("tta", "N", "augmented views averaged at prediction time"),
    ("validation_fraction", "F", "hold out this fraction to record valid loss"),
    ("class_weight", "balanced", "class weights in the loss (classifier)"),
    ("on_error", "raise|skip", "what to do with images that cannot be read"),
    ("precision", "auto|fp32|bf16|fp16", "numeric precision"),
    ("device", "DEVICE", "auto, cpu, cuda, ..."),
    ("cache", "DIR", "feature cache folder, none, or auto ($SKTRANSFER_CACHE)"),
    (
        "checkpoint_dir",
        "DIR",
        "save the fit's state after every epoch of the body; the same command "
        "run again after an interruption goes on from there",
    ),
    ("random_state", "SEED", "seed of the head, shuffling and augmentation"),
)
SEQUENCE_OPTIONS = {"hidden_sizes", "unfrozen_lr"}
FLAG_OPTIONS = (
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
    for name, metavar, text in NAMED_OPTIONS:
        default = defaults[name]
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            metavar=metavar,
            help=f"{text} (default: {shown})",
        )
    for name, text in FLAG_OPTIONS:
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            action="store_const",
            const=True,
            help=text,
        )
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

    _add_fit(commands, common, data, estimator)
    _add_predict(commands, common)
    _add_evaluate(commands, common, data)
    _add_lr_find(commands, common, data, estimator)
    _add_backbones(commands, common)
    return parser


def _add_fit(commands, common, data, estimator) -> None:
    """``sktransfer fit``."""
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


def _add_predict(commands, common) -> None:
    """``sktransfer predict``."""
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


def _add_evaluate(commands, common, data) -> None:
    """``sktransfer evaluate``."""
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


def _add_lr_find(commands, common, data, estimator) -> None:
    """``sktransfer lr-find``."""
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


def _add_backbones(commands, common) -> None:
    """``sktransfer backbones``."""
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


def _device_option(parser) -> None:
    parser.add_argument(
        "--device", help="device of the loaded model (default: the saved one)"
    )


# -- main -----------------------------------------------------------------------


def run() -> None:
    """The ``sktransfer`` program (console script and ``python -m``):
    :func:`main`, then exit with its status.

    After Ctrl-C the process leaves at once with status 130, its output
    flushed (``os._exit``): CPython otherwise ends a process by SIGINT
    whenever a KeyboardInterrupt passed through code that it ran itself
    (``PyRun_*``), even one that :func:`main` caught and reported."""
    status = main()
    if status == INTERRUPTED:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status)
    sys.exit(status)


def main(argv=None) -> int:
    """Run the ``sktransfer`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    show_trace = "--traceback" in argv
    from . import _cli_commands as commands  # they import this module

    try:
        args = build_parser().parse_args(argv)
        with warnings.catch_warnings(), _CtrlC():
            warnings.showwarning = _show_warning
            return commands.COMMANDS[args.command](args) or 0
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


class _CtrlC:
    """Ctrl-C while a command runs, made certain to stop it.

    Python drops a KeyboardInterrupt that lands in a finalizer (a generator
    closed by the garbage collector, a ``__del__``): the command would go on
    as if nothing had been pressed. Here the first SIGINT raises
    KeyboardInterrupt and, until the command has left this context, raises
    it again every second (only where the first one was lost); once the
    command has stopped, further SIGINTs are ignored rather than killing the
    process half-way through its exit. The previous handler is restored for
    callers that run :func:`main` in-process. Main thread only (signal
    handlers can only be set there)."""

    RETRY_SECONDS = 1.0

    def __enter__(self):
        import signal
        import threading

        self._signal = signal
        self._done = threading.Event()
        self._retrying = None
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum, frame):
        if self._done.is_set():
            return
        if self._retrying is None:
            import threading

            self._retrying = threading.Thread(
                target=self._retry, name="sktransfer-ctrl-c", daemon=True
            )
            self._retrying.start()
        raise KeyboardInterrupt

    def _retry(self):
        import _thread
        import threading

        main = threading.main_thread().ident
        while not self._done.wait(self.RETRY_SECONDS):
            try:  # a real signal to the main thread also ends a blocking call
                self._signal.pthread_kill(main, self._signal.SIGINT)
            except (AttributeError, OSError):  # no pthread_kill (Windows)
                _thread.interrupt_main(self._signal.SIGINT)

    def __exit__(self, *exc_info):
        self._done.set()
        if self._previous is not None:
            stopped = exc_info[0] is KeyboardInterrupt
            self._signal.signal(
                self._signal.SIGINT,
                self._signal.SIG_IGN if stopped else self._previous,
            )
        return False


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
