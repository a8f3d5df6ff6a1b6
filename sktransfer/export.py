"""A fitted model as one torch graph, and from it torch.export, ONNX and
TorchScript files.

:func:`to_torch` returns one ``torch.nn.Module`` that maps a uint8 batch
``(n, H, W, 3)``, what the estimator's ``preprocess`` method returns (the
images decoded, EXIF-rotated, resized and centre-cropped exactly as
``predict`` does), to what ``predict_proba`` (classifier), ``predict``
(regressor) or ``transform`` (:class:`~sktransfer.PretrainedFeatures`)
returns: normalisation, body, pooling, head and output activation in one
graph, with nothing else to ship. :func:`export_program` (``torch.export``),
:func:`export_onnx` and :func:`export_torchscript` write it to a file that a
service loads without Python's pickle, without scikit-learn and without
sktransfer.
"""

from __future__ import annotations

import glob
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ._model import FittedModel, features_model

__all__ = ["export_onnx", "export_program", "export_torchscript", "to_torch"]

#: Input and output names of exported graphs.
INPUT_NAME = "images"


def to_torch(estimator) -> FittedModel:
    """The fitted ``estimator`` as one ``torch.nn.Module``.

    The module maps a uint8 batch ``(n, H, W, 3)`` (what the estimator's
    ``preprocess`` method returns) to float32 outputs: the class probabilities of
    ``predict_proba`` for a classifier, the predictions of ``predict`` for a
    regressor, the features of ``transform`` for
    :class:`~sktransfer.PretrainedFeatures`. Normalisation, body, pooling,
    head, output activation and the average over a snapshot ensemble are
    all in the graph. The module is the estimator's ``model_`` (for
    :class:`~sktransfer.PretrainedFeatures`, its body's) as a float32 copy
    on the CPU, in eval mode, with gradients off and float32 outputs; it
    does not share weights with the estimator.

    Parameters
    ----------
    estimator : fitted PretrainedImageClassifier, PretrainedImageRegressor
        or PretrainedFeatures

    Returns
    -------
    module : torch.nn.Module

    Notes
    -----
    The graph computes the plain view only. An estimator fitted with
    ``tta > 0`` averages its predictions over augmented views too, which
    the graph does not do: a ``UserWarning`` says so, and the exported
    outputs are those of the same estimator with ``tta=0``.

    The graph computes in float32. An estimator that predicts with bf16 or
    fp16 autocast (``precision="bf16"`` / ``"fp16"``, or ``"auto"`` on
    hardware where one of them is fast) gives outputs that differ from the
    graph's (by about 1e-2 with bf16); fit with
    ``precision="fp32"`` for outputs equal to the graph's within 1e-5.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import PretrainedImageClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 255, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> y = ["cat"] * 4 + ["dog"] * 4
    >>> clf = PretrainedImageClassifier(
    ...     "resnet18", weights=None, image_size=32, cache=None, random_state=0,
    ...     precision="fp32",
    ... ).fit(X, y)
    >>> import torch
    >>> from sktransfer.export import to_torch
    >>> model = to_torch(clf).eval()
    >>> with torch.no_grad():
    ...     proba = model(torch.from_numpy(clf.preprocess(X))).numpy()
    >>> proba.shape
    (8, 2)
    >>> bool(np.abs(proba - clf.predict_proba(X)).max() < 1e-5)
    True
    """
    extractor = _extractor(estimator)
    _warn_tta(estimator)
    model = getattr(estimator, "model_", None) or features_model(extractor)
    return model.for_export()


def export_onnx(estimator, path, *, opset_version=None) -> str:
    """Write the fitted ``estimator`` as an ONNX file; return its path.

    The graph is :func:`to_torch`'s: input ``"images"``, a uint8 tensor
    ``(batch, H, W, 3)`` with any batch size (the output of the estimator's
    ``preprocess`` method); one float32 output, named ``"probabilities"``,
    ``"predictions"`` or ``"features"``. The file also carries what a
    service needs to prepare photos and name its outputs, as metadata
    (``onnx.ModelProto.metadata_props``, ``session.get_modelmeta()`` in ONNX
    Runtime): ``sktransfer`` holds a JSON document with ``classes`` (for a
    classifier), ``preprocessing`` (resize_size, crop_size, interpolation,
    resize_mode, mean and std), ``input_layout`` and the library versions.
    Weights are stored inside the file (one file to ship). The file is
    written beside ``path`` under a temporary name and then renamed, so a
    failed or interrupted export leaves an existing file at ``path`` intact.

    Parameters
    ----------
    estimator : fitted PretrainedImageClassifier, PretrainedImageRegressor
        or PretrainedFeatures
    path : str or path-like
        The ``.onnx`` file to write.
    opset_version : int, default=None
        ONNX opset; None uses the exporter's default.

    Returns
    -------
    path : str

    Notes
    -----
    Needs ``onnx`` and ``onnxscript`` (``pip install 'sktransfer[export]'``).
    See :func:`to_torch` for ``tta`` and bf16.
    ``examples/serve_onnx.py`` classifies a folder of photos with the file
    alone (onnxruntime, PIL and numpy).

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import PretrainedImageClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 255, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> y = ["cat"] * 4 + ["dog"] * 4
    >>> clf = PretrainedImageClassifier(
    ...     "resnet18", weights=None, image_size=32, cache=None, random_state=0
    ... ).fit(X, y)
    >>> import os
    >>> import tempfile
    >>> import onnxruntime
    >>> from sktransfer.export import export_onnx
    >>> path = export_onnx(clf, os.path.join(tempfile.mkdtemp(), "model.onnx"))
    >>> session = onnxruntime.InferenceSession(path)
    >>> session.run(None, {"images": clf.preprocess(X)})[0].shape
    (8, 2)
    """
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "export_onnx needs onnx and onnxscript: pip install 'sktransfer[export]'"
        ) from None
    path = os.fspath(path)
    model, metadata, example = _graph_inputs(estimator)
    with warnings.catch_warnings():
        # the exporter's notes on its own internals are not the user's business
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[metadata["output_name"]],
            dynamic_shapes=_dynamic_batch(),
            opset_version=opset_version,
            optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key = "sktransfer"
    entry.value = json.dumps(metadata)

    def write(tmp):
        with open(tmp, "wb") as f:
            onnx.save_model(proto, f, save_as_external_data=False)

    _write_aside(path, write)
    return path


def export_torchscript(estimator, path) -> str:
    """Write the fitted ``estimator`` as a TorchScript file; return its path.

    The module is :func:`to_torch`'s, traced on a batch of the input size:
    ``torch.jit.load(path)`` gives a module that maps a uint8
    ``(n, H, W, 3)`` tensor to the outputs, in C++ (libtorch) as in Python.
    The metadata of :func:`export_onnx` is stored in the file as the extra
    file ``sktransfer.json``
    (``torch.jit.load(path, _extra_files={"sktransfer.json": ""})``).

    PyTorch deprecates TorchScript in favour of ``torch.export``: for new
    deployments prefer :func:`export_program` or :func:`export_onnx`.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import PretrainedImageClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 255, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> y = ["cat"] * 4 + ["dog"] * 4
    >>> clf = PretrainedImageClassifier(
    ...     "resnet18", weights=None, image_size=32, cache=None, random_state=0
    ... ).fit(X, y)
    >>> import os
    >>> import tempfile
    >>> import torch
    >>> from sktransfer.export import export_torchscript
    >>> path = export_torchscript(clf, os.path.join(tempfile.mkdtemp(), "model.pt"))
    >>> model = torch.jit.load(path)
    >>> model(torch.from_numpy(clf.preprocess(X))).shape
    torch.Size([8, 2])
    """
    path = os.fspath(path)
    model, metadata, example = _graph_inputs(estimator)
    with torch.no_grad(), warnings.catch_warnings():
        # torch's deprecation notice of TorchScript: said in this docstring
        warnings.filterwarnings("ignore", "`torch.jit", category=FutureWarning)
        traced = torch.jit.trace(model, (example,), check_trace=False)
    extra = {"sktransfer.json": json.dumps(metadata)}
    _write_aside(path, lambda tmp: traced.save(str(tmp), _extra_files=extra))
    return path


def export_program(estimator, path) -> str:
    """Write the fitted ``estimator`` as a ``torch.export`` program (a
    ``.pt2`` file); return its path.

    The program is :func:`to_torch`'s module exported with a dynamic batch
    dimension: ``torch.export.load(path).module()`` maps a uint8
    ``(n, H, W, 3)`` tensor (what ``preprocess`` returns) to the outputs,
    for any ``n``. It is PyTorch's own serialised graph, loaded without
    pickled Python code, and what PyTorch's deployment tools (AOTInductor,
    ExecuTorch) take as input. The metadata of :func:`export_onnx` is stored
    in the file as the extra file ``sktransfer.json``
    (``torch.export.load(path, extra_files={"sktransfer.json": ""})``).

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import PretrainedImageClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 255, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> y = ["cat"] * 4 + ["dog"] * 4
    >>> clf = PretrainedImageClassifier(
    ...     "resnet18", weights=None, image_size=32, cache=None, random_state=0
    ... ).fit(X, y)
    >>> import os
    >>> import tempfile
    >>> import torch
    >>> from sktransfer.export import export_program
    >>> path = export_program(clf, os.path.join(tempfile.mkdtemp(), "model.pt2"))
    >>> program = torch.export.load(path)
    >>> program.module()(torch.from_numpy(clf.preprocess(X[:3]))).shape
    torch.Size([3, 2])
    """
    path = os.fspath(path)
    model, metadata, example = _graph_inputs(estimator)
    with torch.no_grad():
        program = torch.export.export(
            model, (example,), dynamic_shapes=_dynamic_batch()
        )
    extra = {"sktransfer.json": json.dumps(metadata)}
    _write_aside(
        path, lambda tmp: torch.export.save(program, str(tmp), extra_files=extra)
    )
    return path


def _graph_inputs(estimator) -> tuple:
    """What every exporter starts from: :func:`to_torch`'s module, the
    export metadata, and an example uint8 batch of 2 at the input size."""
    model = to_torch(estimator)
    metadata = export_metadata(estimator)
    example = torch.from_numpy(_example_batch(metadata, n=2))
    return model, metadata, example


def _dynamic_batch() -> tuple:
    """``dynamic_shapes`` of the graph's one input: any batch size."""
    return ({0: torch.export.Dim("batch", min=1)},)


def _write_aside(path: str, write) -> None:
    """Write ``path`` through a temporary file in its folder, then rename it
    into place (as :func:`~sktransfer.save` does): a full disk or an
    interruption leaves the previous file as it was, and no temporary file."""
    from ._persist_io import _fsync, _fsync_folder, _temporary_file

    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(
            f"{str(target)!r} is a folder; pass the path of the file to write, "
            f"such as {str(target / ('model' + (target.suffix or '.onnx')))!r}."
        )
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write {str(target)!r}: the folder {str(target.parent)!r} does "
            "not exist. Create it first."
        )
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        leftover.unlink(missing_ok=True)  # from an export that was killed
    with _temporary_file(target.parent, target.name) as tmp:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, target)
    _fsync_folder(target.parent)


def export_metadata(estimator) -> dict:
    """What a service needs besides the graph: input size and layout,
    resize rule, output name and classes, library versions."""
    import sklearn
    import torchvision

    from . import __version__

    extractor = _extractor(estimator)
    pre = extractor.preprocessing
    classes = getattr(estimator, "classes_", None)
    if classes is not None:
        output_name = "probabilities"
    elif hasattr(estimator, "head_"):
        output_name = "predictions"
    else:
        output_name = "features"
    return {
        "format": "sktransfer-export",
        "estimator": type(estimator).__name__,
        "output_name": output_name,
        "classes": None if classes is None else [_json_label(c) for c in classes],
        "multilabel": bool(getattr(estimator, "multilabel_", False)),
        "input_layout": "NHWC uint8 RGB",
        "preprocessing": {
            **_json_preprocessing(pre),
            "normalised_inside_graph": True,
        },
        "backbone": extractor.backbone.name,
        "versions": {
            "sktransfer": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "scikit-learn": sklearn.__version__,
        },
    }


def _json_preprocessing(pre) -> dict:
    """The preprocessing as JSON values (tuples as lists)."""
    return {
        key: [float(v) for v in value] if isinstance(value, tuple) else value
        for key, value in pre.as_dict().items()
    }


def _json_label(value):
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _example_batch(metadata, n) -> np.ndarray:
    side = metadata["preprocessing"]["crop_size"]
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)


def _extractor(estimator):
    extractor = getattr(estimator, "extractor_", None)
    if extractor is None:
        from sklearn.exceptions import NotFittedError

        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet: call "
            "fit before exporting it."
        )
    return extractor


def _warn_tta(estimator) -> None:
    tta = getattr(estimator, "tta", 0) or 0
    if tta > 0:
        warnings.warn(
            f"{type(estimator).__name__} has tta={tta}: its predictions average "
            f"the plain view and {tta} augmented views, but the exported graph "
            "computes the plain view only (the outputs of the same estimator "
            "with tta=0). To average views in a service, run the graph on each "
            "view and average the outputs.",
            UserWarning,
            stacklevel=3,
        )
