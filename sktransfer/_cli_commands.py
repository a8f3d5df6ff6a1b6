"""The subcommands of the ``sktransfer`` command (:mod:`sktransfer.cli`):
each reads its parsed options, calls the public API and prints or writes
the result. Errors are raised, never printed: :func:`sktransfer.cli.main`
turns them into one line and an exit status."""

from __future__ import annotations

import csv
import difflib
import json
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

from ._params import validate
from .cli import (
    FLAG_OPTIONS,
    NAMED_OPTIONS,
    SEQUENCE_OPTIONS,
    UsageError,
    parse_sequence,
    parse_value,
)


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
    for name, _, _ in NAMED_OPTIONS:
        text = getattr(args, name)
        if text is not None:
            params[name] = (
                parse_sequence(text) if name in SEQUENCE_OPTIONS else parse_value(text)
            )
    for name, _ in FLAG_OPTIONS:
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
        validate(estimator)  # the estimator's own checks, before any image
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
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be 1 or more; got {args.top_k}.")
    if args.format == "kaggle" and (args.top_k or args.proba):
        raise UsageError(
            "--format kaggle writes one probability column per class: leave out "
            "--top-k and --proba."
        )
    paths = _photo_paths(args.photos)
    model = _load_model(args, need="predict")
    classifier = hasattr(model, "predict_proba")
    if not classifier and (args.top_k or args.proba or args.format == "kaggle"):
        raise UsageError(
            f"--top-k, --proba and --format kaggle need a classifier; "
            f"{args.model!r} holds a {type(model).__name__}."
        )
    _say(args, f"predicting {_images(len(paths))} with {_describe(model)}")
    header, rows = _prediction_table(model, paths, args)
    _write_csv(args.out, header, rows)
    if args.out != "-":
        _say(args, f"wrote {len(rows)} rows to {args.out!r}")
    return 0


def _prediction_table(model, paths, args) -> tuple[list, list]:
    import numpy as np

    from .inspection import top_k

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
        twice = sorted(i for i, n in Counter(ids).items() if n > 1)
        if twice:
            warnings.warn(
                f"{len(twice)} ids belong to several photos (files of the same "
                f"name in different folders): {twice[:10]}",
                stacklevel=2,
            )
        return ["id", *classes], [[i, *map(_num, row)] for i, row in zip(ids, proba)]
    if model.multilabel_:
        chosen = proba >= model._thresholds()  # threshold, or tuned thresholds_
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
        validate(finder)
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


COMMANDS = {
    "fit": _cmd_fit,
    "predict": _cmd_predict,
    "evaluate": _cmd_evaluate,
    "lr-find": _cmd_lr_find,
    "backbones": _cmd_backbones,
}
