"""Exception classes of ase_mlmd.

Every error a user can trigger with bad input is one of these, and its message says what was
wrong and what to do about it. They subclass the closest built-in exception so that generic
``except ValueError`` code keeps working.
"""

from __future__ import annotations


class MLMDError(Exception):
    """Base class of every ase_mlmd error."""


class InvalidStructureError(MLMDError, ValueError):
    """A structure cannot be evaluated: NaN/inf coordinates, a degenerate periodic cell, ..."""


class UnsupportedSpeciesError(MLMDError, ValueError):
    """A structure contains elements the model was not trained on."""


class ModelFileError(MLMDError, OSError):
    """A weights or model file is missing, truncated or not in the expected format."""


class ChecksumMismatchError(ModelFileError):
    """A weights file does not have the sha256 its model card declares."""


class UntrustedModelError(MLMDError, PermissionError):
    """Loading this file would execute code from it; the caller has not said it trusts it."""


class CardError(MLMDError, ValueError):
    """A model card (TOML) is malformed or names something that does not exist."""


class UnknownCalculatorError(MLMDError, KeyError):
    """No model card or backend has this name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class BackendNotAvailableError(MLMDError, ImportError):
    """An optional backend package (nequip, schnetpack) is not installed."""


class DeviceNotAvailableError(MLMDError, RuntimeError):
    """A device was requested (e.g. ``cuda``) that this machine does not have."""
