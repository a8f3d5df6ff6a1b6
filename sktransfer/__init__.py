"""Transfer learning for images, the scikit-learn way."""

from ._cache import FeatureCache, default_cache_dir
from ._catalog import available_backbones
from ._classifier import PretrainedImageClassifier
from ._features import PretrainedFeatures
from ._lr_finder import LRFinder
from ._persist import load, save
from ._plan import Stage, make_plan
from ._regressor import PretrainedImageRegressor
from ._transforms import augmented_copies
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
    "augmented_copies",
    "available_backbones",
    "default_cache_dir",
    "load",
    "make_plan",
    "save",
]
