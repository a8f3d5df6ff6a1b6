"""The exceptions and warnings that sktransfer raises.

Every error and warning class a user of the package can meet, in one place
(as :mod:`sklearn.exceptions` does for scikit-learn):

- :class:`CacheWarning`: the feature cache could not be used; features are
  computed without it.
- :class:`DivergedError`: training produced a non-finite loss or output.
- :class:`ImageLoadError`: an image could not be read or decoded.
- :class:`InvalidParameterError`: a constructor parameter has a value the
  estimator does not accept.
- :class:`ModelFormatError`: a saved model folder cannot be loaded.
- :class:`NonFiniteFeaturesError`: the body computed NaN or inf features.
- :class:`WeightsUnavailableError`: registry weights could not be downloaded
  and are not cached locally.

Each error also derives from the built-in exception a caller would catch
without knowing sktransfer (``ValueError``, ``RuntimeError``), and the
warning from ``UserWarning``.
"""

__all__ = [
    "CacheWarning",
    "DivergedError",
    "ImageLoadError",
    "InvalidParameterError",
    "ModelFormatError",
    "NonFiniteFeaturesError",
    "WeightsUnavailableError",
]


class CacheWarning(UserWarning):
    """The cache could not be used; features are computed without it.

    Raised as a warning, never an error: a read-only or broken cache folder
    costs time, not results.

    Examples
    --------
    >>> import tempfile
    >>> import warnings
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from sktransfer import PretrainedFeatures
    >>> from sktransfer.exceptions import CacheWarning
    >>> blocker = Path(tempfile.mkdtemp()) / "cache"
    >>> _ = blocker.write_text("a file where the cache folder should be")
    >>> features = PretrainedFeatures(
    ...     "resnet18", weights=None, image_size=32, cache=str(blocker)
    ... )
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     out = features.fit_transform(np.zeros((2, 32, 32, 3), np.uint8))
    >>> out.shape, [w.category.__name__ for w in caught]
    ((2, 512), ['CacheWarning'])
    """


class DivergedError(ValueError, FloatingPointError):
    """Training produced a non-finite loss or output.

    The message names the stage and the learning rate; the estimator keeps
    the model it had before the failed ``fit``, if any.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import PretrainedImageClassifier
    >>> from sktransfer.exceptions import DivergedError
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 255, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> y = ["cat"] * 4 + ["dog"] * 4
    >>> clf = PretrainedImageClassifier(
    ...     "resnet18", weights=None, image_size=32, cache=None, random_state=0,
    ...     lr=1e30, precompute_epochs=8,
    ... )
    >>> try:
    ...     clf.fit(X, y)
    ... except DivergedError as error:
    ...     print("lower lr" in str(error))
    True
    """


class ImageLoadError(ValueError):
    """An image could not be read or decoded. The message names the image.

    ``fit`` checks every image before training and lists all the bad ones in
    one error (or, with ``on_error="skip"``, leaves them out).

    Examples
    --------
    >>> from sktransfer import PretrainedFeatures
    >>> from sktransfer.exceptions import ImageLoadError
    >>> features = PretrainedFeatures(
    ...     "resnet18", weights=None, image_size=32, cache=None
    ... ).fit()
    >>> try:
    ...     features.transform(["no-such-photo.jpg"])
    ... except ImageLoadError as error:
    ...     print(error)
    1 of 1 images could not be used:
      image 'no-such-photo.jpg' does not exist.
    """


class InvalidParameterError(ValueError, TypeError):
    """A constructor parameter has a value the estimator does not accept.

    Raised by ``fit`` (and ``load``, and the command line) before any image
    is read; the message names the parameter, the estimator, what it
    accepts and the value given. It is both a ``ValueError`` and a
    ``TypeError``, as a wrong value may be either.

    Examples
    --------
    >>> from sktransfer import PretrainedImageClassifier
    >>> from sktransfer.exceptions import InvalidParameterError
    >>> clf = PretrainedImageClassifier(dropout=1.5)
    >>> try:
    ...     clf.fit(["a.jpg", "b.jpg"], [0, 1])
    ... except InvalidParameterError as exc:
    ...     print(exc)  # doctest: +NORMALIZE_WHITESPACE
    The 'dropout' parameter of PretrainedImageClassifier must be a float in the
    range [0, 1). Got 1.5 instead.
    """


class ModelFormatError(ValueError):
    """A saved model folder cannot be loaded: newer format, tampered or
    incomplete files. The message names the file and what is wrong.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from sktransfer import PretrainedFeatures, load, save
    >>> from sktransfer.exceptions import ModelFormatError
    >>> features = PretrainedFeatures(
    ...     "resnet18", weights=None, image_size=32, cache=None
    ... ).fit()
    >>> folder = save(features, Path(tempfile.mkdtemp()) / "features")
    >>> with open(folder / "weights.safetensors", "r+b") as f:
    ...     _ = f.seek(-4, 2)
    ...     _ = f.write(b"oops")  # the file no longer matches its sha256
    >>> try:
    ...     load(folder)
    ... except ModelFormatError as error:
    ...     print("sha256" in str(error))
    True
    """


class NonFiniteFeaturesError(ValueError):
    """The body computed NaN or inf features (none of them is cached).

    The message names an image of the batch and the likely cause: the
    weights, the preprocessing's mean and std, or the precision.

    Examples
    --------
    Weights that are finite but large enough to overflow the next layer:

    >>> import os
    >>> import tempfile
    >>> import numpy as np
    >>> import torch
    >>> import torchvision
    >>> from sktransfer import PretrainedFeatures
    >>> from sktransfer.exceptions import NonFiniteFeaturesError
    >>> state = torchvision.models.resnet18().state_dict()
    >>> _ = state["layer4.0.bn2.bias"].fill_(3e38)
    >>> path = os.path.join(tempfile.mkdtemp(), "overflowing.pth")
    >>> torch.save(state, path)
    >>> features = PretrainedFeatures(
    ...     "resnet18", weights=path, image_size=32, cache=None
    ... ).fit()
    >>> try:
    ...     features.transform(np.zeros((2, 32, 32, 3), np.uint8))
    ... except NonFiniteFeaturesError as error:
    ...     print("non-finite features" in str(error))
    True
    """


class WeightsUnavailableError(RuntimeError):
    """Registry weights could not be downloaded and are not cached locally.

    The message names the URL, torch's cache folder, and the way out on a
    machine without internet: pass the path of a local ``state_dict`` file
    as ``weights``.

    Examples
    --------
    A program that should fall back to a local file when the registry is out
    of reach (the download is not attempted here):

    >>> from sktransfer import PretrainedFeatures
    >>> from sktransfer.exceptions import WeightsUnavailableError
    >>> def load_features(local_file):
    ...     try:
    ...         return PretrainedFeatures("resnet34", weights="DEFAULT").fit()
    ...     except WeightsUnavailableError:
    ...         return PretrainedFeatures("resnet34", weights=local_file).fit()
    >>> issubclass(WeightsUnavailableError, RuntimeError)
    True
    """
