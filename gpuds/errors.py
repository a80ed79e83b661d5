"""Errors raised by gpuds.

Every error a user can cause derives from :class:`GpudsError` *and* from the builtin it resembles,
so ``except ValueError`` keeps working for callers that do not know gpuds. The command line catches
``GpudsError`` only, prints its message on one line and exits 1.
"""

from __future__ import annotations

__all__ = [
    "Cancelled",
    "ConfigError",
    "CorruptChunkError",
    "DeviceError",
    "GpudsError",
    "IncompleteStoreError",
    "SourceError",
    "StoreError",
    "StoreExistsError",
]


class GpudsError(Exception):
    """Base class of every error gpuds raises on purpose."""


class SourceError(GpudsError, ValueError):
    """A raw input cannot be read as asked (corrupt file, ragged shapes, bad header, ...)."""


class ConfigError(GpudsError, ValueError):
    """An option, config key or value is not valid."""


class DeviceError(GpudsError, RuntimeError):
    """The requested device cannot be used."""


class StoreError(GpudsError, ValueError):
    """A store is not a valid gpuds store, or cannot be written."""


class StoreExistsError(GpudsError, FileExistsError):
    """The output exists and ``overwrite`` was not given."""


class IncompleteStoreError(StoreError):
    """A store lacks its completion marker: it was interrupted or is still being written."""


class CorruptChunkError(StoreError):
    """A chunk is missing, does not decode, or decodes to the wrong size."""


class Cancelled(GpudsError):
    """The run was asked to stop (SIGTERM, Ctrl-C) and stopped at a safe point."""
