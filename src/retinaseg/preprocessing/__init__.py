"""Preprocessing (plain array functions, composed from config) and MONAI augmentation."""

from retinaseg.preprocessing.augment import build_augmentation
from retinaseg.preprocessing.functions import (
    clahe,
    gamma,
    green_channel,
    hist_equalise,
    pad_to_multiple,
    resize,
    standardise,
    to_grey,
)
from retinaseg.preprocessing.pipeline import PRESETS, build_preprocess

__all__ = ["PRESETS", "build_augmentation", "build_preprocess", "clahe", "gamma",
           "green_channel", "hist_equalise", "pad_to_multiple", "resize", "standardise",
           "to_grey"]
