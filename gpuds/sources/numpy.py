"""NumPy ``.npy`` (memory-mapped) and ``.npz`` (one field per member) files.

Nothing is ever unpickled: object arrays are refused. ``.npz`` members are streamed straight out
of the zip archive, and a member whose header declares more bytes than the archive says it holds
is refused before anything is allocated.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
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

__all__ = ["NpySource", "NpzSource"]


def _check_dtype(dtype: np.dtype[Any], where: str) -> None:
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

    def __init__(self, path: Path, options: ReadOptions) -> None:
        super().__init__(path, options)
        try:
            self._array = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise SourceError(f"{path}: not a readable .npy array ({e})") from e
        except OSError as e:
            raise SourceError(f"{path}: cannot read ({e.strerror or e})") from e
        if not isinstance(self._array, np.ndarray):
            raise SourceError(f"{path}: expected a .npy array, found an archive; use --format npz")
        _check_dtype(self._array.dtype, str(path))
        _check_shape(self._array.shape, str(path))
        name = check_field_name(path.stem, str(path))
        self._selected = bool(
            select_fields([name], options.fields, str(path), strict=options.strict_fields)
        )
        native = native_dtype(self._array.dtype)
        assert native is not None, "checked by _check_dtype"
        self._spec = FieldSpec(name, native, tuple(self._array.shape[1:]))

    @property
    def fields(self) -> list[FieldSpec]:
        return [self._spec] if self._selected else []

    @property
    def length(self) -> int:
        return int(self._array.shape[0])

    def blocks(self, max_samples: int) -> Iterator[dict[str, np.ndarray]]:
        if not self._selected:
            return
        for start in range(0, self.length, max_samples):
            # np.array copies the memory-mapped slice: one block in RAM at a time.
            chunk = self._array[start : start + max_samples]
            yield {self._spec.name: np.array(chunk, dtype=self._spec.dtype)}

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
            self.shape, self.fortran, self.dtype = self._read_header(fh)
            self.header_size = fh.tell()
        _check_dtype(self.dtype, where)
        native = native_dtype(self.dtype)
        assert native is not None, "checked by _check_dtype"
        self.native = native
        _check_shape(self.shape, where)
        if self.fortran and len(self.shape) > 1:
            raise SourceError(f"{where}: Fortran-ordered arrays are not supported; save C-ordered")
        declared = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        actual = info.file_size - self.header_size
        if declared != actual:
            raise SourceError(
                f"{where}: header declares {declared} bytes of data but the archive holds "
                f"{actual}; the file is corrupt or crafted"
            )

    def _read_header(self, fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        except ValueError as e:
            raise SourceError(f"{self.where}: not a valid .npy member ({e})") from e
        return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype)


class NpzSource(Source):
    """A ``.npz`` archive: one field per member, all of the same length."""

    format = "npz"

    def __init__(self, path: Path, options: ReadOptions) -> None:
        super().__init__(path, options)
        try:
            self._zip = zipfile.ZipFile(path)
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
