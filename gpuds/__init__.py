"""gpuds: build compressed, GPU-ready datasets.

>>> import gpuds
>>> gpuds.ingest(["photos/"], "raw.zarr")                      # doctest: +SKIP
>>> gpuds.inspect("raw.zarr")["num_samples"]                   # doctest: +SKIP
1000

The names below come from :mod:`gpuds.api`, which is imported on first use of one of them:
``import gpuds`` alone imports no stage, zarr or NumPy (``gpuds --version`` answers at once), and
changes no process-wide state such as the warning filters.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from gpuds._version import __version__
from gpuds.errors import GpudsError

if TYPE_CHECKING:
    from gpuds.api import (
        FORMATS,
        CodecConfig,
        Dataset,
        FieldSettings,
        Loader,
        PipelineConfig,
        ReadOptions,
        compress,
        ingest,
        inspect,
        load_config,
        open,
        open_store,
        preprocess,
        read_info,
        report,
        resolve_device,
        shuffle_quality,
    )

__all__ = [
    "FORMATS",
    "CodecConfig",
    "Dataset",
    "FieldSettings",
    "GpudsError",
    "Loader",
    "PipelineConfig",
    "ReadOptions",
    "__version__",
    "compress",
    "ingest",
    "inspect",
    "load_config",
    "open",
    "open_store",
    "preprocess",
    "read_info",
    "report",
    "resolve_device",
    "shuffle_quality",
]

_API = frozenset(__all__) - {"GpudsError", "__version__"}


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("gpuds.api"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The package: importing a stage module (``gpuds.ingest``, ``gpuds.compress``, ...) must not
    bind it over the API function of the same name, as Python does for submodules."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
