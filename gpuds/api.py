"""The Python API: what the command line calls and what Python users call.

>>> import gpuds
>>> gpuds.ingest(["photos/"], "raw.zarr")                      # doctest: +SKIP
>>> gpuds.inspect("raw.zarr", verify=True)["problems"]         # doctest: +SKIP
[]

Importing this module imports every stage; ``import gpuds`` alone does not (the package loads
this module on first use of one of its names).
"""

from __future__ import annotations

from gpuds.backend import resolve as resolve_device
from gpuds.bench import bench, tune
from gpuds.codecs import CodecConfig
from gpuds.compress import FieldSettings, compress, load_compress_config
from gpuds.config import PipelineConfig, Shortcuts, load_config, pipeline_config
from gpuds.dataset import Dataset
from gpuds.dataset import open_dataset as open
from gpuds.environment import environment
from gpuds.ingest import ingest
from gpuds.inspection import inspect_store as inspect
from gpuds.loader import Loader, shuffle_quality
from gpuds.preprocess import preprocess
from gpuds.report import report
from gpuds.sources import FORMATS, ReadOptions
from gpuds.store import open_store, read_info

__all__ = [
    "FORMATS",
    "CodecConfig",
    "Dataset",
    "FieldSettings",
    "Loader",
    "PipelineConfig",
    "ReadOptions",
    "Shortcuts",
    "bench",
    "compress",
    "environment",
    "ingest",
    "inspect",
    "load_compress_config",
    "load_config",
    "open",
    "open_store",
    "pipeline_config",
    "preprocess",
    "read_info",
    "report",
    "resolve_device",
    "shuffle_quality",
    "tune",
]
