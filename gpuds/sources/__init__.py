"""Readers of raw inputs, one module per format, looked up by name or detected from the path.

An input is a local path or an object-store :class:`~gpuds.storage.Location` (``s3://...``): a
reader reads an object through ranged requests (:meth:`~gpuds.storage.Location.open`) and a
prefix as a folder, except those whose library needs a local file (``remote="copy"``), which read
a temporary local copy.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpuds.errors import SourceError
from gpuds.sources.base import FieldSpec, ReadOptions, Samples, Source
from gpuds.storage import Location

# A compressed table keeps its inner suffix: t.csv.gz, t.tsv.zst (the CSV reader decompresses).
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zstd")
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")

__all__ = [
    "FORMATS",
    "FieldSpec",
    "ReadOptions",
    "Reader",
    "Samples",
    "Source",
    "detect_format",
    "open_source",
]


@dataclass(frozen=True)
class Reader:
    """One registry line: a format's name (the reader class's ``format``), where its reader
    lives (``module:Class``, imported on first use so that ``import gpuds`` does not pay for
    pyarrow, h5py or Pillow) and how its inputs are recognised."""

    name: str
    location: str
    suffixes: tuple[str, ...] = ()
    """File suffixes (lower case) of the format."""
    compressed: bool = False
    """The reader decompresses files itself (``t.csv.gz``): a compression suffix is looked
    through."""
    markers: tuple[str, ...] = ()
    """Files whose presence makes a folder this format."""
    folders: bool = False
    """The reader of a folder without any format's marker."""
    remote: Literal["stream", "copy"] = "stream"
    """How it reads an object-store input: ``stream`` (ranged requests; a prefix as a folder) or
    ``copy`` (its library reads local files only: a temporary local copy, said in a note)."""

    def load(self) -> type[Source]:
        """The reader class."""
        module_name, class_name = self.location.split(":")
        reader: type[Source] = getattr(importlib.import_module(module_name), class_name)
        return reader


FORMATS: dict[str, Reader] = {
    reader.name: reader
    for reader in (
        Reader("npy", "gpuds.sources.numpy:NpySource", (".npy",)),
        Reader("npz", "gpuds.sources.numpy:NpzSource", (".npz",)),
        Reader("images", "gpuds.sources.images:ImageFolderSource", folders=True),
        Reader("csv", "gpuds.sources.tables:CsvSource", (".csv", ".tsv"), compressed=True),
        Reader("parquet", "gpuds.sources.tables:ParquetSource", (".parquet", ".pq")),
        Reader("hdf5", "gpuds.sources.hdf5:Hdf5Source", (".h5", ".hdf5", ".hdf"), remote="copy"),
        Reader("zarr", "gpuds.sources.zarr:ZarrSource", (".zarr",), markers=_ZARR_MARKERS),
    )
}
"""Every reader by format name, in the order they are listed to users."""


def detect_format(path: Path | Location) -> str:
    """Guess the reader for ``path`` from its suffix or, for folders, their contents."""
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    if path.is_dir():
        for reader in FORMATS.values():
            if any((path / marker).exists() for marker in reader.markers):
                return reader.name
        return next(reader.name for reader in FORMATS.values() if reader.folders)
    suffix = path.suffix.lower()
    inner = Path(path.stem).suffix.lower()
    for reader in FORMATS.values():
        if suffix in reader.suffixes or (
            reader.compressed and suffix in _COMPRESSED and inner in reader.suffixes
        ):
            return reader.name
    raise SourceError(
        f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
        f"pass --format with one of {', '.join(FORMATS)}"
    )


@contextmanager
def open_source(
    path: Path | Location, options: ReadOptions, fmt: str | None = None
) -> Iterator[Source]:
    """Open ``path`` (a local path or an object-store location) with the reader for ``fmt``
    (detected when None); closed (and a temporary local copy removed) on exit."""
    if isinstance(path, Location) and path.is_local:
        path = path.path
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise SourceError(f"Unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    reader = FORMATS[fmt]
    if isinstance(path, Location) and reader.remote == "copy":
        with _local_copy(path) as copy, reader.load()(copy, options) as source:
            source.path = path
            source.copied = True
            yield source
        return
    with reader.load()(path, options) as source:
        yield source


@contextmanager
def _local_copy(loc: Location) -> Iterator[Path]:
    """A temporary local copy of the object ``loc``, removed on exit; errors name ``loc``."""
    folder = Path(tempfile.mkdtemp(prefix="gpuds-source-"))
    try:
        copy = folder / loc.name
        with loc.open() as src, open(copy, "wb") as dst:
            shutil.copyfileobj(src, dst, 2**22)
        try:
            yield copy
        except SourceError as e:
            raise SourceError(str(e).replace(str(copy), str(loc))) from e
    finally:
        shutil.rmtree(folder, ignore_errors=True)
