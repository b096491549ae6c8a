"""Inference on preprocessed images: whole image or Gaussian-weighted sliding window."""

from retinaseg.inference.predictor import (
    predict_class_probabilities,
    predict_logits,
    predict_probability,
)

__all__ = ["predict_class_probabilities", "predict_logits", "predict_probability"]
