"""Exception types raised by swe_toolkit.

Every error that a user can cause with bad input derives from :class:`SweToolkitError`, so the CLI
can print its one-line message and exit with code 2 instead of showing a traceback.
"""

from __future__ import annotations


class SweToolkitError(Exception):
    """Base class for errors caused by invalid input or an unusable environment."""


class ConfigurationError(SweToolkitError, ValueError):
    """An argument, option or file has an invalid value."""


class ModelNotAvailableError(SweToolkitError):
    """A model cannot be found or assembled (missing package, wrong checksum, unknown id)."""


class UnsupportedArchitectureError(SweToolkitError):
    """No adapter exists for the MLP layout of a model class."""


class ShapeError(SweToolkitError, ValueError):
    """Tensors passed to the solver or an edit have incompatible shapes."""


class NumericalError(SweToolkitError, ArithmeticError):
    """A system is ill-conditioned or its inputs contain NaN or Inf."""


class EditStateError(SweToolkitError, RuntimeError):
    """An edit was applied twice, reverted before being applied, or does not match a model."""
