"""Training: YAML config → run folder with the best model (reference §10 for seed settings)."""

from retinaseg.training.config import RunConfig, load_config
from retinaseg.training.trainer import train

__all__ = ["RunConfig", "load_config", "train"]
