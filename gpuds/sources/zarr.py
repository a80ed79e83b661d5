"""Existing Zarr stores (format 2 or 3): one field per array.

The store is opened read-only with ``zarr.open(path, mode="r")``; zarr-python 3 reads both
format 2 and format 3, and the format is recorded in :meth:`ZarrSource.describe` and
:meth:`ZarrSource.metadata` (``"zarr_format": 2`` or ``3``). Consolidated metadata is ignored:
the hierarchy is read from each node's own metadata, so a stale consolidation cannot hide arrays.

Which arrays become fields
    A group: every array in it, walked recursively in sorted path order, becomes a field named
    after its path in the store with ``/`` replaced by ``.`` (``x`` gives ``x``, ``data/x`` gives
    ``data.x``). A single array at ``path`` (no group) gives one field named after the path's stem
    (``foo.zarr`` gives ``foo``). ``--fields`` selects by these names. :meth:`ZarrSource.metadata`
    maps each field to the array's zarr path (``{"arrays": {"data.x": "data/x"}, ...}``; ``""``
    for a store that is itself one array). Attributes of the source store are not copied.

Dtypes
    Bool, signed and unsigned integers (8 to 64 bit), float16/32/64 and complex64/128 are kept with
    the same values, delivered in native byte order. 0-d arrays and string, object, structured and
    other dtypes are refused with an error naming the array and suggesting ``--fields``.

Samples
    Every selected array must have the same length along axis 0. :meth:`ZarrSource.blocks` reads
    ``array[start:start + max_samples]`` from each array, which decodes only the chunks that
    overlap those samples, so memory is one block plus the chunks it touches. A chunk that is
    missing from the store reads as the array's fill value: that is what Zarr defines a missing
    chunk to mean, so it is not an error. A chunk that is present but fails to decode raises an
    error naming the array, the samples and the chunk indices along axis 0.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from gpuds.errors import SourceError
from gpuds.sources.base import ArraysSource, FieldSpec, Member, ReadOptions, native_dtype
from gpuds.storage import Location

__all__ = ["ZarrSource"]


def _array_problem(array: zarr.Array) -> str | None:
    if array.ndim == 0:
        return "is 0-d (a scalar) and has no samples axis"
    if native_dtype(array.dtype) is None:
        return (
            f"has dtype {array.dtype}; only bool, integer, float (up to 64 bit) and complex "
            "arrays can be read"
        )
    return None


class ZarrSource(ArraysSource):
    """A Zarr store (format 2 or 3): one field per array, named by its path with ``.`` for ``/``.

    Parameters
    ----------
    path
        The store folder (a group or a single array); it is only ever opened read-only.
    options
        ``fields`` selects arrays by field name (``data.x`` for the array ``data/x``).

    Examples
    --------
    >>> src = ZarrSource(Path("old.zarr"), ReadOptions())              # doctest: +SKIP
    >>> src.describe()["zarr_format"], [f.name for f in src.fields]    # doctest: +SKIP
    (2, ['images', 'labels'])
    """

    format = "zarr"

    def __init__(self, path: Path | Location, options: ReadOptions) -> None:
        super().__init__(path, options)
        try:
            node = self._open()
            members = self._members(node)
        # zarr reports a missing store, unparsable JSON and invalid metadata with several types.
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise SourceError(
                f"{path}: not a readable Zarr store ({type(e).__name__}: {e}); "
                "expected a folder with zarr.json (format 3) or .zgroup/.zarray (format 2)"
            ) from e
        self._zarr_format: int = node.metadata.zarr_format
        if not members:
            raise SourceError(f"{path}: the store holds no arrays")
        self._take(members)

    def _open(self) -> zarr.Array | zarr.Group:
        path = self.path
        # An object store's Zarr store is read through obstore, chunk by chunk.
        store = path.zarr_store(read_only=True) if isinstance(path, Location) else str(path)
        return zarr.open(store, mode="r", use_consolidated=False)

    def _reopen(self) -> dict[str, Any]:
        try:
            node = self._open()
            return {
                name: node if isinstance(node, zarr.Array) else node[where]
                for name, where in self._locations.items()
            }
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise SourceError(
                f"{self.path}: cannot open the store again ({type(e).__name__}: {e}); was it "
                "changed while it was being read?"
            ) from e

    def _members(self, node: zarr.Array | zarr.Group) -> dict[str, Member]:
        if isinstance(node, zarr.Array):
            where = self.path
            stem = where.stem if isinstance(where, Location) else Path(os.path.abspath(where)).stem
            return {stem: _member(node.path, node)}
        members: dict[str, Member] = {}
        found = sorted(node.members(max_depth=None), key=lambda item: item[0].split("/"))
        for rel_path, array in found:
            if not isinstance(array, zarr.Array):
                continue
            name = rel_path.replace("/", ".")
            member = _member(rel_path, array)
            if name in members:
                member = replace(
                    member,
                    problem=f"and {members[name].location!r} both map to the field name {name!r} "
                    "('/' becomes '.'), so one must be renamed in the store",
                )
            members[name] = member
        return members

    def _read(self, spec: FieldSpec, start: int, stop: int) -> np.ndarray:
        array = self._array(spec.name)
        try:
            data = array[start:stop]
        # Each codec reports a bad chunk its own way (RuntimeError from zstd and blosc,
        # ValueError from a wrong size, zlib.error, ...); all mean the same thing here.
        except Exception as e:
            rows = (array.shards or array.chunks)[0]
            raise SourceError(
                f"{self.path}: cannot read array {self._locations[spec.name]!r} samples "
                f"{start}:{stop} (chunk {start // rows}..{(stop - 1) // rows} along axis 0): "
                f"{type(e).__name__}: {e}; the store is corrupt"
            ) from e
        return np.asarray(data).astype(spec.dtype, copy=False)

    def metadata(self) -> dict[str, Any]:
        return {"arrays": dict(self._locations), "zarr_format": self._zarr_format}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "zarr_format": self._zarr_format}


def _member(zarr_path: str, array: zarr.Array) -> Member:
    return Member(f"array {zarr_path!r}", zarr_path, array, _array_problem(array))
