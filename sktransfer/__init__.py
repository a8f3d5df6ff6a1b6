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
from .datasets import image_size_summary, load_image_csv, load_image_folder
from .inspection import most_confused, plot_top_losses, top_losses
from .plotting import plot_augmentations, plot_history, plot_image_sizes

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
    "image_size_summary",
    "load",
    "load_image_csv",
    "load_image_folder",
    "make_plan",
    "most_confused",
    "plot_augmentations",
    "plot_history",
    "plot_image_sizes",
    "plot_top_losses",
    "save",
    "top_losses",
]
