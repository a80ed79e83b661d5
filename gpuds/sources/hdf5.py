"""HDF5 files (``.h5``, ``.hdf5``, ``.hdf``): one field per dataset.

The file is opened read-only (``h5py.File(path, "r")``) and closed by :meth:`Hdf5Source.close`
(also when the constructor refuses the file).

Which datasets become fields
    Every dataset reachable from the root group, walked recursively with the members of each group
    in sorted name order, becomes a field named after its path in the file without the leading
    ``/`` and with ``/`` replaced by ``.``: ``/x`` gives ``x``, ``/data/x`` gives ``data.x``.
    ``--fields`` selects by these names. :meth:`Hdf5Source.metadata` maps each field to the HDF5
    path it was found at (``{"datasets": {"data.x": "/data/x"}}``).

Links
    Hard links and soft links are followed: a soft link always points inside the file, and a soft
    link to a group is walked under the link's own name. The same data reachable under two names
    therefore gives two fields; leave one out with ``--fields``. Nothing outside the file is ever
    read: external links, dangling soft links, user-defined links, links that loop back to one of
    their own parent groups, datasets whose raw data is stored in external files, and virtual
    datasets that map other files are listed under the link's field name but refused with an
    error unless ``--fields`` leaves them out. Committed (named) datatypes hold no samples and are
    not fields; attributes are not read.

Dtypes
    Bool, signed and unsigned integers (8 to 64 bit), float16/32/64 and complex64/128 are kept with
    the same values; big-endian data is delivered in native byte order. An enum dataset is read as
    its integer base type and its ``{name: value}`` mapping is kept in the field's ``enum``
    attribute. Scalar (0-d) and empty-dataspace datasets, strings, variable-length, reference,
    compound, array and opaque types are refused with an error naming the dataset.

Samples
    Every selected dataset must have the same length along axis 0. :meth:`Hdf5Source.blocks` reads
    the hyperslab ``[start:start + max_samples]`` of each dataset straight into a native array, so
    memory is one block (plus HDF5's small chunk cache) whatever the file size. A chunk that fails
    to decode (corruption, or a compression filter whose plugin is not installed) raises an error
    naming the dataset and the samples being read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from gpuds.errors import SourceError
from gpuds.sources.base import ArraysSource, FieldSpec, Member, ReadOptions, native_dtype

__all__ = ["Hdf5Source"]


def _dtype_problem(dtype: np.dtype[Any]) -> str:
    if h5py.check_string_dtype(dtype) is not None:
        kind = "string"
    elif h5py.check_vlen_dtype(dtype) is not None:
        kind = "variable-length"
    elif h5py.check_ref_dtype(dtype) is not None:
        kind = "reference"
    elif dtype.fields is not None:
        kind = "compound"
    elif dtype.subdtype is not None:
        kind = "array"
    else:
        kind = "unsupported"
    return (
        f"has {kind} dtype {dtype}; only bool, integer, float (up to 64 bit) and complex "
        "datasets can be read"
    )


def _dataset_problem(dataset: h5py.Dataset) -> str | None:
    if dataset.shape is None:
        return "has an empty dataspace (no values)"
    if len(dataset.shape) == 0:
        return "is 0-d (a scalar) and has no samples axis"
    if native_dtype(dataset.dtype) is None:
        return _dtype_problem(dataset.dtype)
    if dataset.id.get_create_plist().get_external_count() > 0:
        return "stores its raw data in external files, which are not read"
    if dataset.is_virtual:
        others = sorted({m.file_name for m in dataset.virtual_sources() if m.file_name != "."})
        if others:
            return f"is a virtual dataset mapping other files ({', '.join(others)}), not read"
    return None


def _link(path: str, problem: str) -> Member:
    return Member(f"link {path}", path, problem=problem)


def _walk(
    group: h5py.Group, prefix: str, ancestors: dict[Any, str]
) -> Iterator[tuple[str, Member]]:
    """Yield ``(hdf5_path, member)`` for every dataset or unreadable link under ``group``.

    ``prefix`` is the path ``group`` was reached by (``""`` for the root); ``ancestors`` maps the
    object id of ``group`` and of each group above it to its path.
    """
    for name in sorted(group):
        path = f"{prefix}/{name}"
        try:
            link = group.get(name, getlink=True)
        except TypeError:
            # h5py raises TypeError for user-defined link classes it cannot represent.
            yield path, _link(path, "is a user-defined link, which is not followed")
            continue
        if isinstance(link, h5py.ExternalLink):
            outside = f"is an external link to {link.filename}:{link.path}; only this file is read"
            yield path, _link(path, outside)
            continue
        node = group.get(name)
        if node is None:
            broken = (
                f"is a dangling soft link to {link.path}"
                if isinstance(link, h5py.SoftLink)
                else "cannot be opened (corrupt object header)"
            )
            yield path, _link(path, broken)
        elif isinstance(node, h5py.Dataset):
            yield path, Member(f"dataset {path}", path, node, _dataset_problem(node))
        elif isinstance(node, h5py.Group):
            if node.id in ancestors:
                cycle = f"links back to its parent group {ancestors[node.id]}, forming a cycle"
                yield path, _link(path, cycle)
            else:
                yield from _walk(node, path, {**ancestors, node.id: path})


class Hdf5Source(ArraysSource):
    """An HDF5 file: one field per dataset, named by its path with ``/`` replaced by ``.``.

    Parameters
    ----------
    path
        The HDF5 file; it is only ever opened read-only.
    options
        ``fields`` selects datasets by field name (``data.x`` for ``/data/x``).

    Examples
    --------
    >>> with Hdf5Source(Path("train.h5"), ReadOptions()) as src:     # doctest: +SKIP
    ...     [f.name for f in src.fields]
    ['data.images', 'data.labels']
    """

    format = "hdf5"
    what = "datasets"

    def __init__(self, path: Path, options: ReadOptions) -> None:
        super().__init__(path, options)
        try:
            file = h5py.File(path, "r")
        except OSError as e:
            raise SourceError(f"{path}: not a readable HDF5 file ({e})") from e
        self._file: h5py.File | None = file
        try:
            self._open(path, file)
        except BaseException:
            file.close()
            raise

    def _open(self, path: Path, file: h5py.File) -> None:
        members: dict[str, Member] = {}
        try:
            for hdf5_path, member in _walk(file, "", {file.id: "/"}):
                name = hdf5_path.lstrip("/").replace("/", ".")
                if name in members:
                    other = members[name].location
                    member = Member(
                        member.label,
                        hdf5_path,
                        problem=f"and {other} both map to the field name {name!r} ('/' becomes "
                        "'.'), so one must be renamed in the file",
                    )
                members[name] = member
        except (OSError, RuntimeError) as e:
            raise SourceError(f"{path}: corrupt HDF5 file ({e})") from e
        if not members:
            raise SourceError(f"{path}: the file holds no datasets")
        self._take(members)

    def _spec(self, name: str, array: Any) -> FieldSpec:
        spec = super()._spec(name, array)
        enum = h5py.check_enum_dtype(array.dtype)
        return replace(
            spec, attrs={"enum": {str(k): int(v) for k, v in enum.items()}} if enum else {}
        )

    def _reopen(self) -> dict[str, Any]:
        try:
            self._file = file = h5py.File(self.path, "r")
            return {name: file[where] for name, where in self._locations.items()}
        except (OSError, KeyError) as e:
            raise SourceError(
                f"{self.path}: cannot open the HDF5 file again ({e}); was it changed while it "
                "was being read?"
            ) from e

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_file": None}

    def _read(self, spec: FieldSpec, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *spec.sample_shape), dtype=spec.dtype)
        try:
            # HDF5 converts byte order and enum types while copying into `out`.
            self._array(spec.name).read_direct(out, np.s_[start:stop])
        except OSError as e:
            raise SourceError(
                f"{self.path}: cannot read dataset {self._locations[spec.name]} samples "
                f"{start}:{stop} ({e}); the file is corrupt or needs an HDF5 filter "
                "plugin that is not installed"
            ) from e
        return out

    def metadata(self) -> dict[str, Any]:
        return {"datasets": dict(self._locations)}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
