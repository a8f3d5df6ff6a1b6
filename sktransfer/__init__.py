"""Transfer learning for images, the scikit-learn way."""

from ._cache import FeatureCache
from ._catalog import available_backbones
from ._classifier import PretrainedImageClassifier
from ._features import PretrainedFeatures
from ._lr_finder import LRFinder
from ._persist import load, save
from ._plan import Stage, make_plan
from ._regressor import PretrainedImageRegressor
from .callbacks import SGDR

__version__ = "0.1.0"

__all__ = [
    "SGDR",
    "FeatureCache",
    "LRFinder",
    "PretrainedFeatures",
    "PretrainedImageClassifier",
    "PretrainedImageRegressor",
    "Stage",
    "available_backbones",
    "load",
    "make_plan",
    "save",
]
