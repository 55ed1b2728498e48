"""Typed errors. Every error bastion raises on bad input derives from :class:`BastionError`."""

from __future__ import annotations


class BastionError(ValueError):
    """Base class of bastion's errors about bad input or bad files."""


class InputShapeError(BastionError):
    """An input tensor has the wrong rank, shape or dtype."""


class InputRangeError(BastionError):
    """Pixel values outside the declared bounds, or NaN/inf values."""


class LabelError(BastionError):
    """Labels of the wrong dtype or shape, or outside the range of classes."""


class ModelModeError(BastionError):
    """The model is in training mode where evaluation mode is required."""


class ConfigError(BastionError):
    """An attack, defense or evaluation was configured with invalid parameters."""


class UnknownNameError(BastionError, KeyError):
    """A name (data set, model, attack, ...) is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class DataError(BastionError):
    """A data file is missing, truncated, malformed or fails its checksum."""


class ChecksumError(DataError):
    """A file's checksum differs from the published one."""


class WeightsError(BastionError):
    """A weights file is missing, corrupt, truncated or does not match the architecture."""


class OutputError(BastionError):
    """An output cannot be written as asked: it exists from an earlier run, a folder stands in its place, or its
    folder cannot be created or written."""
