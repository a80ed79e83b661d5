"""gpuds: build compressed, GPU-ready datasets.

>>> import gpuds
>>> gpuds.ingest(["photos/"], "raw.zarr")                      # doctest: +SKIP
>>> gpuds.inspect("raw.zarr")["num_samples"]                   # doctest: +SKIP
1000
"""

from __future__ import annotations

import warnings

__version__ = "0.1.0"

# zarr warns at every open that numcodecs.* codecs are outside the Zarr v3 spec. gpuds writes
# them on purpose (byte shuffle, lz4) and reports each field's portability itself (inspect), so
# this one message is silenced; every other warning is left alone.
warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3")

from gpuds.api import (  # noqa: E402 - after the warning filter, on purpose
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
    resolve_device,
    shuffle_quality,
)
from gpuds.errors import GpudsError  # noqa: E402

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
    "resolve_device",
    "shuffle_quality",
]
