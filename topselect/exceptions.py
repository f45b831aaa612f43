"""Exceptions raised by topselect. Every error derives from :class:`TopselectError`."""

from __future__ import annotations

__all__ = [
    "TopselectError",
    "InvalidInputError",
    "IncompatibleVersionError",
    "TrackingError",
    "ExperimentNotFoundError",
]


class TopselectError(Exception):
    """Base class of every error that topselect raises on purpose."""


class InvalidInputError(TopselectError, ValueError):
    """An argument or an input array has an invalid value, type or shape."""


class IncompatibleVersionError(TopselectError, RuntimeError):
    """An installed dependency no longer offers an interface topselect relies on."""


class TrackingError(TopselectError, RuntimeError):
    """Reading from or writing to the MLflow tracking store failed."""


class ExperimentNotFoundError(TrackingError, LookupError):
    """No MLflow experiment has the requested name or id."""
