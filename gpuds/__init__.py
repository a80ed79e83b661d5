"""gpuds: build compressed, GPU-ready datasets.

>>> import gpuds
>>> gpuds.ingest(["photos/"], "raw.zarr")                      # doctest: +SKIP
>>> gpuds.inspect("raw.zarr")["num_samples"]                   # doctest: +SKIP
1000
"""

from __future__ import annotations

__version__ = "0.1.0"

from gpuds.api import (
    FORMATS,
    CodecConfig,
    FieldSettings,
    PipelineConfig,
    ReadOptions,
    compress,
    ingest,
    inspect,
    load_config,
    open_store,
    preprocess,
    read_info,
    resolve_device,
)
from gpuds.errors import GpudsError

__all__ = [
    "FORMATS",
    "CodecConfig",
    "FieldSettings",
    "GpudsError",
    "PipelineConfig",
    "ReadOptions",
    "__version__",
    "compress",
    "ingest",
    "inspect",
    "load_config",
    "open_store",
    "preprocess",
    "read_info",
    "resolve_device",
]
