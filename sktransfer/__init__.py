"""Transfer learning for images, the scikit-learn way."""

from ._backbones import WeightsUnavailableError, available_backbones
from ._cache import CacheWarning, FeatureCache, default_cache_dir
from ._classifier import PretrainedImageClassifier
from ._features import PretrainedFeatures
from ._images import ImageLoadError
from ._lr_finder import LRFinder
from .callbacks import SGDR

__version__ = "0.1.0"

__all__ = [
    "SGDR",
    "CacheWarning",
    "FeatureCache",
    "ImageLoadError",
    "LRFinder",
    "PretrainedFeatures",
    "PretrainedImageClassifier",
    "WeightsUnavailableError",
    "available_backbones",
    "default_cache_dir",
]
