"""NumPy ``.npy`` (memory-mapped) and ``.npz`` (one field per member) files.

Nothing is ever unpickled: gpuds reads the ``.npy`` header itself (with NumPy's header parser)
and checks it before any data is mapped or allocated. A file without the NumPy magic, a header
NumPy would not read, an array of Python objects (stored pickled), and data shorter or longer than
the header declares are refused with a message that says which.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from gpuds.errors import SourceError
from gpuds.sources.base import (
    FieldSpec,
    ReadOptions,
    Samples,
    Source,
    check_field_name,
    common_length,
    native_dtype,
    select_fields,
)
from gpuds.storage import Location

__all__ = ["NpySource", "NpzSource", "crc32_combine"]

_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_LOCAL_HEADER_SIZE = 30  # a zip member's local file header before its name and extra field
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
        try:
            size = path.size() if isinstance(path, Location) else path.stat().st_size
            with path.open("rb") as fh:
                self._header = _read_header(fh, size or 0, str(path), "file")
            header = self._header
            remote = isinstance(path, Location) and header.data_nbytes
            if remote and header.fortran and len(header.shape) > 1:
                raise SourceError(
                    f"{path}: a Fortran-ordered array is read from local files only; save "
                    "it C-ordered (np.ascontiguousarray) or copy it locally"
                )
            self._map: np.memmap[Any, Any] | None = self._open()
        except OSError as e:
            raise SourceError(f"{path}: cannot read ({e.strerror or e})") from e
        name = check_field_name(path.stem, str(path))
        self._selected = bool(
            select_fields([name], options.fields, str(path), strict=options.strict_fields)
        )
        native = native_dtype(self._header.dtype)
        assert native is not None, "checked by _read_header"
        self._spec = FieldSpec(name, native, self._header.shape[1:])

    def _open(self) -> np.memmap[Any, Any] | None:
        """The local file's data memory-mapped; None for an object (read by ranged requests,
        range by range: nothing is downloaded whole) and for no data at all."""
        header = self._header
        if isinstance(self.path, Location) or header.data_nbytes == 0:
            return None
        return np.memmap(
            self.path,
            dtype=header.dtype,
            mode="r",
            offset=header.offset,
            shape=header.shape,
            order="F" if header.fortran else "C",
        )

    @property
    def fields(self) -> list[FieldSpec]:
        return [self._spec] if self._selected else []

    @property
    def length(self) -> int:
        return self._header.shape[0]

    def stream_only(self) -> str | None:
        return None

    def read(self, start: int, stop: int) -> Samples:
        if not self._selected:
            return Samples({})
        return Samples({self._spec.name: self._values(start, stop)})

    def _values(self, start: int, stop: int) -> np.ndarray:
        header = self._header
        if header.data_nbytes == 0:
            return np.empty((stop - start, *header.shape[1:]), dtype=self._spec.dtype)
        if isinstance(self.path, Location):
            row = math.prod(header.shape[1:]) * header.dtype.itemsize
            data = self.path.read_range(header.offset + start * row, (stop - start) * row)
            if len(data) != (stop - start) * row:
                raise SourceError(f"{self.path}: truncated: the data ends before the header says")
            values = np.frombuffer(data, dtype=header.dtype).reshape((-1, *header.shape[1:]))
            return values.astype(self._spec.dtype, copy=False)
        if self._map is None:
            try:
                self._map = self._open()
            except OSError as e:
                raise SourceError(f"{self.path}: cannot read ({e.strerror or e})") from e
        assert self._map is not None
        # np.array copies the memory-mapped slice: one block in RAM at a time.
        return np.array(self._map[start:stop], dtype=self._spec.dtype)

    def blocks(self, max_samples: int) -> Iterator[dict[str, np.ndarray]]:
        if not self._selected:
            return
        for start in range(0, self.length, max_samples):
            yield self.read(start, min(start + max_samples, self.length)).values

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_map": None}  # a copy maps the file again when it reads

    def close(self) -> None:
        mm = getattr(self._map, "_mmap", None)
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
        self.row = math.prod(self.shape[1:]) * self.dtype.itemsize
        self.stored = info.compress_type == zipfile.ZIP_STORED
        """Stored as is (``numpy.savez``), so any sample is at a known place in the archive."""
        self.data_start = 0
        self.header_crc = 0

    def locate(self, raw: IO[bytes]) -> None:
        """Find where the samples of this stored member start in the archive file ``raw``, and
        the CRC-32 of its ``.npy`` header (the member's CRC-32 then adds its samples')."""
        raw.seek(self.info.header_offset)
        local = raw.read(_LOCAL_HEADER_SIZE)
        if len(local) != _LOCAL_HEADER_SIZE or local[:4] != _ZIP_MAGIC:
            raise SourceError(f"{self.where}: corrupt archive (bad local file header)")
        names, extra = struct.unpack("<HH", local[26:30])
        raw.seek(self.info.header_offset + _LOCAL_HEADER_SIZE + names + extra)
        header = raw.read(self.header_size)
        self.data_start = raw.tell()
        self.header_crc = zlib.crc32(header)


class NpzSource(Source):
    """A ``.npz`` archive: one field per member, all of the same length."""

    format = "npz"

    def __init__(self, path: Path | Location, options: ReadOptions) -> None:
        super().__init__(path, options)
        try:
            archive = zipfile.ZipFile(path.open("rb") if isinstance(path, Location) else path)
        except (zipfile.BadZipFile, OSError) as e:
            raise SourceError(f"{path}: not a readable .npz archive ({e})") from e
        self._zip: zipfile.ZipFile | None = archive
        members: dict[str, zipfile.ZipInfo] = {}
        for info in archive.infolist():
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
            self._members[name] = _Member(archive, members[name], f"{path}[{name}]")
        lengths = {name: m.shape[0] for name, m in self._members.items()}
        self._length = common_length(lengths, str(path), "members")
        if self.stream_only() is None:
            try:
                with path.open("rb") as raw:
                    for member in self._members.values():
                        member.locate(raw)
            except OSError as e:
                raise SourceError(f"{path}: cannot read ({e.strerror or e})") from e
        self._crcs = {name: m.header_crc for name, m in self._members.items()}

    @property
    def fields(self) -> list[FieldSpec]:
        return [FieldSpec(n, m.native, m.shape[1:]) for n, m in self._members.items()]

    @property
    def length(self) -> int:
        return self._length

    def stream_only(self) -> str | None:
        packed = next((name for name, m in self._members.items() if not m.stored), None)
        if packed is not None:
            return (
                f"its member {packed!r} is compressed, and compressed data is read from its "
                "start only"
            )
        return None

    def read(self, start: int, stop: int) -> Samples:
        values: dict[str, np.ndarray] = {}
        crcs: dict[str, int] = {}
        try:
            with self.path.open("rb") as raw:
                for name, member in self._members.items():
                    raw.seek(member.data_start + start * member.row)
                    nbytes = (stop - start) * member.row
                    data = raw.read(nbytes)
                    if len(data) != nbytes:
                        raise SourceError(f"{member.where}: truncated member data")
                    crcs[name] = zlib.crc32(data)
                    samples = np.frombuffer(data, dtype=member.dtype)
                    samples = samples.astype(member.native, copy=False)
                    values[name] = samples.reshape((stop - start, *member.shape[1:]))
        except OSError as e:
            raise SourceError(f"{self.path}: cannot read ({e.strerror or e})") from e
        return Samples(values, (start, stop, crcs))

    def learn(self, facts: Any) -> None:
        """Add the CRC-32 of the samples read to each member's; at the end, check it against the
        archive's record, as reading a member to its end does."""
        start, stop, crcs = facts
        for name, crc in crcs.items():
            nbytes = (stop - start) * self._members[name].row
            self._crcs[name] = crc32_combine(self._crcs[name], crc, nbytes)
        if stop < self._length:
            return
        for name, member in self._members.items():
            if self._crcs[name] != member.info.CRC:
                raise SourceError(
                    f"{self.path}: corrupt archive (Bad CRC-32 for file {member.info.filename!r})"
                )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_zip": None}  # a copy reads the archive file directly

    def blocks(self, max_samples: int) -> Iterator[dict[str, np.ndarray]]:
        assert self._zip is not None, "a copy made for a task reads ranges only"
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
        if self._zip is not None:
            self._zip.close()


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of ``a + b`` from ``crc1`` of ``a``, ``crc2`` of ``b`` and ``len(b)``, as
    zlib's ``crc32_combine`` (which Python's zlib does not offer) computes it: appending
    ``length2`` zero bytes to ``crc1`` is a linear map over GF(2), applied by squaring.

    Examples
    --------
    >>> a, b = b"gpuds ", b"ingest"
    >>> crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
    True
    """
    if length2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # the map of one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four
    while True:
        even = _gf2_square(odd)  # a zero byte the first time round, then twice as many
        if length2 & 1:
            crc1 = _gf2_times(even, crc1)
        length2 >>= 1
        if not length2:
            break
        odd = _gf2_square(even)
        if length2 & 1:
            crc1 = _gf2_times(odd, crc1)
        length2 >>= 1
        if not length2:
            break
    return crc1 ^ crc2


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, row) for row in matrix]
