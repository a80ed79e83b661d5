"""NumPy ``.npy`` (memory-mapped) and ``.npz`` (one field per member) files.

Nothing is ever unpickled: gpuds reads the ``.npy`` header itself (with NumPy's header parser)
and checks it before any data is mapped or allocated. A file without the NumPy magic, a header
NumPy would not read, an array of Python objects (stored pickled), and data shorter or longer than
the header declares are refused with a message that says which.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from gpuds.errors import SourceError
from gpuds.sources.base import (
    FieldSpec,
    ReadOptions,
    Source,
    check_field_name,
    common_length,
    native_dtype,
    select_fields,
)
from gpuds.storage import Location

__all__ = ["NpySource", "NpzSource"]

_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
# NumPy's own limit (np.lib.format's max_header_size): headers it writes are far smaller.
_MAX_HEADER = 10_000


@dataclass(frozen=True)
class _Header:
    """What a ``.npy`` header declares, and where its data starts."""

    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype[Any]
    offset: int

    @property
    def data_nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # Python ints: no overflow


def _read_header(fh: IO[bytes], size: int, where: str, what: str) -> _Header:
    """Read and check the header of the ``.npy`` data in ``fh`` (``size`` bytes in all).

    ``what`` names the container in messages (``file`` or ``archive member``).
    """
    start = fh.read(len(_MAGIC) + 2)
    if start[: len(_MAGIC)] != _MAGIC:
        if not start:
            raise SourceError(f"{where}: not a .npy {what}: it is empty")
        if what != "file":
            hint = "the archive was not written by numpy.savez"
        elif start[:4] == _ZIP_MAGIC:
            hint = "it is a zip archive: if it is a .npz, pass --format npz"
        else:
            hint = "write it with numpy.save, or pass --format with the format it is in"
        raise SourceError(
            f"{where}: not a .npy {what}: no NumPy magic (it starts with {start!r}); {hint}"
        )
    if len(start) < len(_MAGIC) + 2:
        raise SourceError(f"{where}: truncated: the {what} ends inside the .npy header")
    version = (start[-2], start[-1])
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise SourceError(
            f"{where}: not a readable .npy {what}: format version {version[0]}.{version[1]} is "
            "unknown (NumPy writes 1.0, 2.0 and 3.0)"
        )
    length_size = 2 if version == (1, 0) else 4
    length_field = fh.read(length_size)
    if len(length_field) < length_size:
        raise SourceError(f"{where}: truncated: the {what} ends inside its .npy header")
    declared = int.from_bytes(length_field, "little")
    if declared > _MAX_HEADER:
        raise SourceError(
            f"{where}: not a readable .npy {what}: its header claims {declared} bytes, more than "
            f"NumPy reads ({_MAX_HEADER}); the {what} is corrupt or crafted"
        )
    header = fh.read(declared)
    if len(header) < declared:
        raise SourceError(
            f"{where}: truncated: the {what} ends inside its .npy header ({len(header)} of "
            f"{declared} header bytes)"
        )
    parse = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    try:
        shape, fortran, dtype = parse(io.BytesIO(length_field + header))
    except ValueError as e:
        raise SourceError(f"{where}: not a readable .npy {what}: bad header ({e})") from e
    parsed = _Header(
        tuple(int(s) for s in shape),
        bool(fortran),
        np.dtype(dtype),
        len(start) + len(length_field) + declared,
    )
    if any(s < 0 for s in parsed.shape):
        raise SourceError(f"{where}: not a readable .npy {what}: negative shape {parsed.shape}")
    _check_dtype(parsed.dtype, where)
    _check_shape(parsed.shape, where)
    actual = size - parsed.offset
    if actual < parsed.data_nbytes:
        raise SourceError(
            f"{where}: truncated: header declares {parsed.data_nbytes} bytes of data, {what} has "
            f"{actual}; the {what} is incomplete (an interrupted copy?), corrupt or crafted"
        )
    if actual > parsed.data_nbytes:
        raise SourceError(
            f"{where}: header declares {parsed.data_nbytes} bytes of data, {what} has {actual}; "
            f"the {what} is corrupt or crafted (re-save it with numpy.save)"
        )
    return parsed


def _check_dtype(dtype: np.dtype[Any], where: str) -> None:
    if dtype.hasobject:
        raise SourceError(
            f"{where}: holds Python objects (dtype {dtype}), which NumPy stores pickled; gpuds "
            "never unpickles input (unpickling can run any code): save a numeric array instead"
        )
    if native_dtype(dtype) is None:
        raise SourceError(
            f"{where}: dtype {dtype} is not supported (only bool, integer, float up to 64 bit "
            "and complex arrays; object, string, datetime and structured arrays are refused)"
        )


def _check_shape(shape: tuple[int, ...], where: str) -> None:
    if len(shape) == 0:
        raise SourceError(f"{where}: a 0-d array has no samples axis; save it with shape (N, ...)")


class NpySource(Source):
    """One ``.npy`` file: one field named after the file (``x.npy`` gives ``x``)."""

    format = "npy"

    def __init__(self, path: Path | Location, options: ReadOptions) -> None:
        super().__init__(path, options)
        self._remote: _Header | None = None
        try:
            size = path.size() if isinstance(path, Location) else path.stat().st_size
            with path.open("rb") as fh:
                header = _read_header(fh, size or 0, str(path), "file")
            if header.data_nbytes == 0:
                self._array: np.ndarray = np.empty(header.shape, dtype=header.dtype)
            elif isinstance(path, Location):
                # Read by ranged requests, block by block (nothing is downloaded whole).
                if header.fortran and len(header.shape) > 1:
                    raise SourceError(
                        f"{path}: a Fortran-ordered array is read from local files only; save "
                        "it C-ordered (np.ascontiguousarray) or copy it locally"
                    )
                self._remote = header
                self._array = np.empty((0, *header.shape[1:]), dtype=header.dtype)
            else:
                self._array = np.memmap(
                    path,
                    dtype=header.dtype,
                    mode="r",
                    offset=header.offset,
                    shape=header.shape,
                    order="F" if header.fortran else "C",
                )
        except OSError as e:
            raise SourceError(f"{path}: cannot read ({e.strerror or e})") from e
        name = check_field_name(path.stem, str(path))
        self._selected = bool(
            select_fields([name], options.fields, str(path), strict=options.strict_fields)
        )
        native = native_dtype(self._array.dtype)
        assert native is not None, "checked by _read_header"
        self._spec = FieldSpec(name, native, tuple(self._array.shape[1:]))

    @property
    def fields(self) -> list[FieldSpec]:
        return [self._spec] if self._selected else []

    @property
    def length(self) -> int:
        return int(self._remote.shape[0] if self._remote else self._array.shape[0])

    def blocks(self, max_samples: int) -> Iterator[dict[str, np.ndarray]]:
        if not self._selected:
            return
        if self._remote is not None:
            yield from self._remote_blocks(self._remote, max_samples)
            return
        for start in range(0, self.length, max_samples):
            # np.array copies the memory-mapped slice: one block in RAM at a time.
            chunk = self._array[start : start + max_samples]
            yield {self._spec.name: np.array(chunk, dtype=self._spec.dtype)}

    def _remote_blocks(self, header: _Header, max_samples: int) -> Iterator[dict[str, np.ndarray]]:
        assert isinstance(self.path, Location)
        row = math.prod(header.shape[1:]) * header.dtype.itemsize
        for start in range(0, self.length, max_samples):
            count = min(max_samples, self.length - start)
            data = self.path.read_range(header.offset + start * row, count * row)
            if len(data) != count * row:
                raise SourceError(f"{self.path}: truncated: the data ends before the header says")
            values = np.frombuffer(data, dtype=header.dtype).reshape((count, *header.shape[1:]))
            yield {self._spec.name: values.astype(self._spec.dtype, copy=False)}

    def close(self) -> None:
        mm = getattr(self._array, "_mmap", None)
        if mm is not None:
            mm.close()


class _Member:
    """One ``.npz`` member: its header, checked against the archive's own size record."""

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> None:
        self.info = info
        self.where = where
        with archive.open(info) as fh:
            header = _read_header(fh, info.file_size, where, "archive member")
        self.shape, self.fortran, self.dtype = header.shape, header.fortran, header.dtype
        self.header_size = header.offset
        native = native_dtype(self.dtype)
        assert native is not None, "checked by _read_header"
        self.native = native
        if self.fortran and len(self.shape) > 1:
            raise SourceError(f"{where}: Fortran-ordered arrays are not supported; save C-ordered")


class NpzSource(Source):
    """A ``.npz`` archive: one field per member, all of the same length."""

    format = "npz"

    def __init__(self, path: Path | Location, options: ReadOptions) -> None:
        super().__init__(path, options)
        try:
            self._zip = zipfile.ZipFile(path.open("rb") if isinstance(path, Location) else path)
        except (zipfile.BadZipFile, OSError) as e:
            raise SourceError(f"{path}: not a readable .npz archive ({e})") from e
        members: dict[str, zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            if info.filename.endswith(".npy"):
                members[info.filename[: -len(".npy")]] = info
        if not members:
            raise SourceError(f"{path}: the archive holds no arrays")
        names = select_fields(
            list(members), options.fields, str(path), strict=options.strict_fields
        )
        self._members: dict[str, _Member] = {}
        for name in names:
            check_field_name(name, f"{path}")
            self._members[name] = _Member(self._zip, members[name], f"{path}[{name}]")
        lengths = {name: m.shape[0] for name, m in self._members.items()}
        self._length = common_length(lengths, str(path), "members")

    @property
    def fields(self) -> list[FieldSpec]:
        return [FieldSpec(n, m.native, m.shape[1:]) for n, m in self._members.items()]

    @property
    def length(self) -> int:
        return self._length

    def blocks(self, max_samples: int) -> Iterator[dict[str, np.ndarray]]:
        handles = {}
        try:
            for name, member in self._members.items():
                fh = self._zip.open(member.info)
                fh.seek(member.header_size)
                handles[name] = fh
            for start in range(0, self._length, max_samples):
                count = min(max_samples, self._length - start)
                block = {}
                for name, member in self._members.items():
                    sample = int(np.prod(member.shape[1:], dtype=np.int64))
                    nbytes = count * sample * member.dtype.itemsize
                    data = handles[name].read(nbytes)
                    if len(data) != nbytes:
                        raise SourceError(f"{member.where}: truncated member data")
                    values = np.frombuffer(data, dtype=member.dtype).astype(
                        member.native, copy=False
                    )
                    block[name] = values.reshape((count, *member.shape[1:]))
                yield block
        except zipfile.BadZipFile as e:
            raise SourceError(f"{self.path}: corrupt archive ({e})") from e
        finally:
            for fh in handles.values():
                fh.close()

    def close(self) -> None:
        self._zip.close()
