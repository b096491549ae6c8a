"""Exceptions a user can cause. The CLI turns each into one sentence and a non-zero exit code."""

from __future__ import annotations


class RetinasegError(Exception):
    """Base class for every error that is the user's input, not a bug in retinaseg."""


class ImageReadError(RetinasegError):
    """An image or volume file could not be read."""


class DatasetLayoutError(RetinasegError):
    """A dataset root does not have the expected folder layout."""


class ConfigError(RetinasegError):
    """A config file or override is invalid."""


class ModelLoadError(RetinasegError):
    """A model name or weights file could not be resolved or loaded."""


class TrainingError(RetinasegError):
    """Training could not continue (for example a non-finite loss)."""


class OptionError(RetinasegError):
    """An option (of the API or the CLI) is out of range or of the wrong kind."""


class VolumeError(RetinasegError):
    """A volume array has the wrong shape or values, or is too large, for the step asked."""


class MissingDependencyError(RetinasegError):
    """An optional package (an extra such as ``retinaseg[sam]``) is needed but not installed."""


class ExportError(RetinasegError):
    """A model could not be exported to another format (e.g. an operator ONNX lacks)."""
