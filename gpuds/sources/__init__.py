"""Readers of raw inputs, one module per format, looked up by name or detected from the path."""

from __future__ import annotations

import importlib
from pathlib import Path

from gpuds.errors import SourceError
from gpuds.sources.base import FieldSpec, ReadOptions, Source

__all__ = ["FORMATS", "FieldSpec", "ReadOptions", "Source", "detect_format", "open_source"]

# Name -> "module:class". Imported on first use so that `import gpuds` does not pay for pyarrow,
# h5py or Pillow.
FORMATS: dict[str, str] = {
    "npy": "gpuds.sources.numpy:NpySource",
    "npz": "gpuds.sources.numpy:NpzSource",
    "images": "gpuds.sources.images:ImageFolderSource",
    "csv": "gpuds.sources.tables:CsvSource",
    "parquet": "gpuds.sources.tables:ParquetSource",
    "hdf5": "gpuds.sources.hdf5:Hdf5Source",
    "zarr": "gpuds.sources.zarr:ZarrSource",
}

_SUFFIXES = {
    ".npy": "npy",
    ".npz": "npz",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".zarr": "zarr",
}
# A compressed table keeps its inner suffix: t.csv.gz, t.tsv.zst (the CSV reader decompresses).
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zstd")
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")


def detect_format(path: Path) -> str:
    """Guess the reader for ``path`` from its suffix or, for folders, their contents."""
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    if path.is_dir():
        if any((path / marker).exists() for marker in _ZARR_MARKERS):
            return "zarr"
        return "images"
    suffix = path.suffix.lower()
    if suffix in _COMPRESSED and Path(path.stem).suffix.lower() in (".csv", ".tsv"):
        suffix = Path(path.stem).suffix.lower()
    fmt = _SUFFIXES.get(suffix)
    if fmt is None:
        raise SourceError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
            f"pass --format with one of {', '.join(FORMATS)}"
        )
    return fmt


def open_source(path: Path, options: ReadOptions, fmt: str | None = None) -> Source:
    """Open ``path`` with the reader for ``fmt`` (detected when None)."""
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise SourceError(f"Unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    module_name, class_name = FORMATS[fmt].split(":")
    reader: type[Source] = getattr(importlib.import_module(module_name), class_name)
    return reader(path, options)
