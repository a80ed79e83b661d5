"""The gpuds store: layout, metadata, and safe (atomic) writes. See docs/FORMAT.md.

A store is a Zarr v3 group. Samples lie along axis 0; each *field* is an array; all fields of a
dataset have the same length. A split dataset holds its fields in subgroups ``train/``, ``val/``,
``test/``; an unsplit one at the root. The group attribute ``gpuds`` holds the dataset's metadata,
and ``complete: true`` is written last.

Writes never expose a half-written store: :class:`StoreWriter` builds a local store under a
hidden temporary sibling (``.NAME.partial-PID-RANDOM``) and renames it into place only after
everything, completion marker included, is on disk (:mod:`gpuds.commit`); an object store, which
has no rename, is claimed with a conditional write of an incomplete mark at its root and gets its
root metadata last (:mod:`gpuds.commit_remote`). An existing output is replaced only with
``overwrite=True``, and only if it is a Zarr store (a folder of the user's data is never deleted).
"""

from __future__ import annotations

import asyncio
import copy
import datetime as _dt
import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec

from gpuds._version import __version__
from gpuds.commit import (
    interrupted_overwrite,
    is_zarr_store,
    partial_path,
    publish,
    recover,
    remove,
)
from gpuds.commit_remote import ROOT, RemoteCommit, describe_writer, incomplete_writer
from gpuds.digest import ContentDigest
from gpuds.errors import GpudsError, IncompleteStoreError, StoreError, StoreExistsError
from gpuds.progress import check_cancelled
from gpuds.storage import Location, location, storage_error

if TYPE_CHECKING:
    from gpuds.execution import Executor

__all__ = [
    "ATTR",
    "DEFAULT_CHUNK_MB",
    "FIELD_ATTR",
    "FORMAT_VERSION",
    "MAX_CHUNKS",
    "SUPPORTED_DTYPES",
    "ArrayHandle",
    "FieldWriter",
    "Scratch",
    "StoreInfo",
    "StoreWriter",
    "check_records",
    "chunk_samples",
    "chunk_samples_for",
    "dataset_fingerprint",
    "field_fingerprint",
    "field_record",
    "field_records",
    "iter_fields",
    "open_group",
    "open_store",
    "read_info",
    "stage_entry",
    "utc_now",
]

FORMAT_VERSION = 3
"""3: field fingerprints hash the data in pieces (:mod:`gpuds.digest`), so that many workers can
write one field. 2: every chunk ends in a crc32c checksum; ``arrays`` records each field's
metadata; field fingerprints cover dtype and shape. Versions 1 and 2 still read."""
ATTR = "gpuds"
FIELD_ATTR = "gpuds"
DEFAULT_CHUNK_MB = 1.0
_WRITE_BYTES = 16 * 2**20

SUPPORTED_DTYPES = frozenset(
    np.dtype(name)
    for name in (
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
    )
)
"""Dtypes an array field may have: everything a Zarr v3 reader and a GPU handle natively."""
# largest single write: bounds how long a cancel request waits
# What a write answers when the output's filesystem is full (or the user's quota is).
_OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def utc_now() -> str:
    """The current time as ISO 8601 UTC, seconds precision (``2026-11-25T21:30:00Z``)."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def chunk_samples(sample_nbytes: int, chunk_mb: float) -> int:
    """Samples per chunk: the largest power of two whose chunk stays within ``chunk_mb`` MiB.

    Powers of two make the chunk boundaries of all fields nest, so a reader fetching one chunk of
    a large field needs whole chunks of the small ones. A sample larger than the target gets a
    chunk of its own.

    Examples
    --------
    >>> chunk_samples(3 * 32 * 32, 1.0)
    256
    >>> chunk_samples(8, 1.0)
    131072
    """
    if chunk_mb <= 0:
        raise StoreError(f"Expected a positive chunk size in MiB, got {chunk_mb}")
    target = int(chunk_mb * 2**20)
    per = max(1, target // max(1, sample_nbytes))
    return 1 << (per.bit_length() - 1)


def dataset_fingerprint(fields: Mapping[str, str]) -> str:
    """The dataset's fingerprint from its fields' (``"x"`` or ``"train/x"`` -> fingerprint):
    equal content gives an equal fingerprint whichever stage wrote it (docs/FORMAT.md)."""
    combined = hashlib.blake2b(digest_size=16)
    for label in sorted(fields):
        combined.update(f"{label}={fields[label]};".encode())
    return "blake2b:" + combined.hexdigest()


def field_fingerprint(data_digest: bytes, dtype: Any, shape: Sequence[int]) -> str:
    """A field's content fingerprint: BLAKE2b-128 over its dtype, its shape and the
    ``data_digest`` of its raw bytes (C order, little-endian; :mod:`gpuds.digest`), so that a
    change to any of the three changes it (docs/FORMAT.md).

    Examples
    --------
    >>> data = hashlib.blake2b(b"", digest_size=16).digest()
    >>> field_fingerprint(data, "uint8", (0,)) != field_fingerprint(data, "int8", (0,))
    True
    """
    header = f"dtype={np.dtype(dtype).name};shape={','.join(str(int(s)) for s in shape)};"
    combined = hashlib.blake2b(header.encode(), digest_size=16)
    combined.update(data_digest)
    return "blake2b:" + combined.hexdigest()


@dataclass(frozen=True)
class StoreInfo:
    """The store's metadata: the group attribute ``gpuds`` (docs/FORMAT.md, one key per field).

    A stage fills in what it knows (samples, splits, field kinds, classes, statistics, sources,
    history); :meth:`StoreWriter.commit` adds what the writer owns: the format and tool
    versions, the creation time, the dataset fingerprint (from the fields it finished), the
    record of every array and the completion mark. ``split_sizes`` is written for split stores
    only. :meth:`from_dict` reads the keys it knows and ignores others (a key this version does
    not know cannot be kept true by it).

    Examples
    --------
    >>> info = StoreInfo(num_samples=3, fields={"x": "array"})
    >>> StoreInfo.from_dict(info.to_dict()) == info
    True
    >>> list(info.to_dict())[:5]
    ['format_version', 'tool_version', 'created', 'num_samples', 'splits']
    """

    format_version: int = FORMAT_VERSION
    tool_version: str = __version__
    created: str = ""
    num_samples: int = 0
    splits: list[str] = field(default_factory=list)
    split_sizes: dict[str, int] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    classes: dict[str, list[str]] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: str | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    arrays: dict[str, dict[str, Any]] = field(default_factory=dict)
    complete: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The ``gpuds`` attribute: JSON-safe, keys in the documented order."""
        data = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclass_fields(self)}
        if not self.splits:
            del data["split_sizes"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoreInfo:
        """Read a ``gpuds`` attribute; a known key of the wrong type is a
        :class:`~gpuds.errors.StoreError` naming it."""
        if not isinstance(data, Mapping):
            raise StoreError(f"expected the '{ATTR}' attribute to be a mapping, got {_short(data)}")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise StoreError(f"store format version {version!r} is not a valid version")
        values: dict[str, Any] = {}
        for f in dataclass_fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            expected = _INFO_TYPES[f.name]
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise StoreError(
                    f"store attribute {f.name!r} is {_short(value)}, expected "
                    f"{' or '.join(t.__name__ for t in _as_tuple(expected))}"
                )
            values[f.name] = copy.deepcopy(value)
        return cls(**values)

    def next_stage(
        self,
        stage: str,
        source: str | Path,
        settings: Mapping[str, Any],
        started: float,
        *,
        counts: list[dict[str, Any]] | None = None,
        **changes: Any,
    ) -> StoreInfo:
        """The metadata of the store ``stage`` writes from this one (read from ``source``):
        ``changes`` applied, and one more ``history`` entry that records the input's path and
        fingerprint. What the commit writes (versions, time, fingerprint, arrays, completion) is
        left to :meth:`StoreWriter.commit`.

        Examples
        --------
        >>> raw = StoreInfo(num_samples=4, fingerprint="blake2b:00")
        >>> out = raw.next_stage("compress", "raw.zarr", {"verify": True}, 0.0)
        >>> out.history[-1]["input"], out.fingerprint
        ({'path': 'raw.zarr', 'fingerprint': 'blake2b:00'}, None)
        """
        entry = stage_entry(
            stage,
            settings,
            started,
            input={"path": str(source), "fingerprint": self.fingerprint},
            counts=counts,
        )
        return replace(
            self,
            **changes,
            history=[*copy.deepcopy(self.history), entry],
            created="",
            fingerprint=None,
            arrays={},
            complete=False,
        )


_INFO_TYPES: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "tool_version": str,
    "created": str,
    "num_samples": int,
    "splits": list,
    "split_sizes": dict,
    "fields": dict,
    "classes": dict,
    "stats": dict,
    "sources": list,
    "fingerprint": (str, type(None)),
    "skipped": list,
    "ignored_files": list,
    "history": list,
    "arrays": dict,
    "complete": bool,
}


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def stage_entry(
    stage: str,
    settings: Mapping[str, Any],
    started: float,
    *,
    input: Mapping[str, Any] | None = None,
    counts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One ``history`` entry: ``stage`` ran with ``settings`` (complete, enough to rerun it) from
    ``started`` (:func:`time.perf_counter`) until now; ``input`` names the store it read and
    ``counts`` what its ops dropped (docs/FORMAT.md)."""
    entry: dict[str, Any] = {"stage": stage, "time": utc_now()}
    if input is not None:
        entry["input"] = dict(input)
    entry["settings"] = dict(settings)
    if counts is not None:
        entry["counts"] = counts
    entry["seconds"] = round(time.perf_counter() - started, 3)
    return entry


def chunk_samples_for(sample_nbytes: int, chunk_mb: float, length: int) -> int:
    """:func:`chunk_samples`, but never longer than the dataset (rounded up to a power of two):
    a chunk longer than the data would only store padding."""
    return min(chunk_samples(sample_nbytes, chunk_mb), 1 << max(0, length - 1).bit_length())


def _within(a: Path, b: Path) -> bool:
    """True when ``a`` is ``b`` or lies inside it."""
    return a == b or b in a.parents


@dataclass(frozen=True)
class ArrayHandle:
    """A field being written, as a task on another worker (or thread) writes to it.

    It carries the array's metadata rather than reading it, since a remote store holds its
    metadata back until the commit. Made by :meth:`StoreWriter.handle`; picklable.
    """

    root: Location
    """Where the store's objects go: the partial store's folder, or the output URL."""
    path: str
    """The array's path in the store (``x`` or ``train/x``)."""
    metadata: Mapping[str, Any]

    def open(self) -> zarr.Array:
        """The array, for writes of whole chunks (``array[a:b] = values``, ``a`` and ``b`` on
        chunk boundaries or ``b`` at the end)."""
        from zarr.core.array import AsyncArray
        from zarr.core.metadata import ArrayV3Metadata
        from zarr.storage import LocalStore, StorePath

        store = self.root.zarr_store(read_only=False)
        if isinstance(store, str):
            store = LocalStore(store)
        meta = ArrayV3Metadata.from_dict(copy.deepcopy(dict(self.metadata)))
        return zarr.Array(
            AsyncArray(meta, StorePath(store, self.path), config={"write_empty_chunks": True})
        )

    def write_object(self, key: str, parts: Sequence[bytes]) -> int:
        """Write the stored object ``key`` (relative to the array, e.g. a shard ``c/0/0``)
        whole; return its size."""
        if self.root.is_object_store:
            import obstore

            data = parts[0] if len(parts) == 1 else b"".join(parts)
            target = f"{self.path}/{key}"
            try:
                obstore.put(self.root.object_store(), target, data)
            except Exception as e:
                raise storage_error(self.root, e, f"cannot write {target}") from e
            return len(data)
        root = self.root.path
        if not root.is_dir():  # removed by the client: the run failed or was cancelled
            raise StoreError(f"{root}: the partial store is gone; the run was stopped")
        path = root / self.path / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.writelines(parts)
        return sum(len(p) for p in parts)


@dataclass(frozen=True)
class Scratch:
    """Temporary objects of a store being written, which any task can write and read: files
    under the partial store's ``__gpuds_work`` folder, or objects under the output URL's
    ``__gpuds_work/`` prefix (Zarr reserves names starting with ``__``, so they never clash with
    a field). Made by :meth:`StoreWriter.scratch`; picklable. The stage deletes them
    (:meth:`clear`) once no task needs them; a local store's go with its work folder at the
    commit anyway, a remote store's with everything else when the run fails."""

    root: Location
    prefix: str

    def put(self, key: str, data: bytes | memoryview) -> None:
        """Write the object ``key`` (``data`` C-contiguous)."""
        data = memoryview(data).cast("B")  # as flat bytes, whatever the shape of the values
        if self.root.is_object_store:
            import obstore

            target = f"{self.prefix}/{key}"
            try:
                obstore.put(self.root.object_store(), target, data)
            except Exception as e:
                raise storage_error(self.root, e, f"cannot write {target}") from e
            return
        root = self.root.path
        if not root.is_dir():  # removed by the client: the run failed or was cancelled
            raise StoreError(f"{root}: the partial store is gone; the run was stopped")
        path = root / self.prefix / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def get(self, key: str) -> bytes:
        """Read the object ``key``."""
        if self.root.is_object_store:
            import obstore

            target = f"{self.prefix}/{key}"
            try:
                return bytes(obstore.get(self.root.object_store(), target).bytes())
            except Exception as e:
                raise storage_error(self.root, e, f"cannot read {target}") from e
        return (self.root.path / self.prefix / key).read_bytes()

    def clear(self) -> None:
        """Delete every object (once no task needs them: a task run again reads them again)."""
        if self.root.is_object_store:
            import obstore

            store = self.root.object_store()
            keys = [
                meta["path"]
                for batch in obstore.list(store, prefix=f"{self.prefix}/")
                for meta in batch
            ]
            try:
                for i in range(0, len(keys), 1000):
                    obstore.delete(store, keys[i : i + 1000])
            except Exception as e:
                raise storage_error(self.root, e, f"cannot delete {self.prefix}/") from e
            return
        shutil.rmtree(self.root.path / self.prefix, ignore_errors=True)


class FieldWriter:
    """Appends blocks of samples to one array, writing whole chunks only.

    It also hashes every sample it writes (:class:`gpuds.digest.ContentDigest`), which gives the
    field's content fingerprint at no extra read. Made by :meth:`StoreWriter.create_field`.
    """

    def __init__(self, array: zarr.Array, chunk: int, store: StoreWriter) -> None:
        self.array = array
        self.chunk = chunk
        self._store = store
        self.count = 0
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self._hash = ContentDigest(array.dtype.itemsize * math.prod(array.shape[1:]))

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.array.dtype)
        if block.shape[1:] != self.array.shape[1:]:
            raise StoreError(
                f"field {self.array.path!r}: expected samples of shape {self.array.shape[1:]}, "
                f"got {block.shape[1:]}"
            )
        self._hash.update(block)
        self._pending.append(block)
        self._pending_len += len(block)
        if self._pending_len >= self.chunk:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self._pending_len:
            return
        data = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        n = len(data) if final else (len(data) // self.chunk) * self.chunk
        end = self.count + n
        if end > self.array.shape[0]:
            self.array.resize((max(end, 2 * self.array.shape[0]), *self.array.shape[1:]))
        sample_bytes = max(1, data[:1].nbytes)
        step = max(self.chunk, (_WRITE_BYTES // sample_bytes) // self.chunk * self.chunk)
        for start in range(0, n, step):
            check_cancelled()
            stop = min(start + step, n)
            self.array[self.count + start : self.count + stop] = data[start:stop]
        self.count = end
        # A copy: a view would keep the whole block alive until the next flush.
        rest = data[n:].copy()
        self._pending = [rest] if len(rest) else []
        self._pending_len = len(rest)

    def finish(self) -> str:
        """Write what is left, trim the array to the samples written and finish the field
        (:meth:`StoreWriter.finish_field`); return its fingerprint."""
        self._flush(final=True)
        if self.array.shape[0] != self.count:
            self.array.resize((self.count, *self.array.shape[1:]))
        digest = self._hash.digest()
        return self._store.finish_field(
            self.array, field_fingerprint(digest, self.array.dtype, self.array.shape)
        )


class StoreWriter:
    """Build a store where no reader takes it for complete, and commit it atomically.

    Parameters
    ----------
    out
        The store to create: a local path (built under a hidden temporary sibling and renamed
        into place, :mod:`gpuds.commit`) or an object-store URL (claimed, written and published
        in place, :mod:`gpuds.commit_remote`). docs/FORMAT.md ("Safe writes").
    overwrite
        Replace an existing Zarr store at ``out``. Without it an existing path is an error.
    inputs
        Paths or URLs the stage reads: ``out`` may not be one of them, inside one, or contain one.
    storage_options
        For an object-store URL (docs/storage.md).

    The writer owns what every store it writes shares: the chunk codecs of the fields it creates
    (:attr:`CODEC`, then ``crc32c``), each field's attributes and fingerprint
    (:meth:`finish_field`) and the ``gpuds`` attribute (:meth:`commit`).

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with StoreWriter(folder / "a.zarr") as w:
    ...     f = w.create_field("x", np.dtype("f4"), (), length=10, chunk=4)
    ...     f.append(np.arange(10, dtype="f4"))
    ...     _ = f.finish()
    ...     path = w.commit(StoreInfo(num_samples=10, fields={"x": "array"}))
    >>> open_store(path)["x"][:3]
    array([0., 1., 2.], dtype=float32)
    >>> shutil.rmtree(folder)
    """

    CODEC = ZstdCodec(level=1, checksum=True)
    """The compressor of every field :meth:`create_field` makes (docs/FORMAT.md: spec codecs
    only, so that any Zarr v3 reader reads the store)."""

    def __init__(
        self,
        out: str | Path | Location,
        *,
        overwrite: bool = False,
        inputs: Sequence[str | Path | Location] = (),
        storage_options: Mapping[str, str] | None = None,
    ):
        self.location = location(out, storage_options)
        for src in inputs:
            _check_overlap(self.location, location(src, storage_options))
        self._overwrite = overwrite
        self._committed = False
        self._fingerprints: dict[str, str] = {}
        self._scratch: Path | None = None
        self.group: zarr.Group | None = None
        self._remote: RemoteCommit | None = None
        if self.location.is_object_store:
            self._remote = RemoteCommit(self.location, overwrite=overwrite)
            self._remote.precheck()
            return
        if not self.location.is_local:
            raise StoreError(
                f"{out}: gpuds writes stores to local paths and to s3://, gs:// and az:// URLs"
            )
        path = self.location.path
        if not path.parent.is_dir():
            raise StoreError(f"{path.parent}: output folder does not exist")
        recover(path)  # first, so that an old store a killed overwrite hid is seen below
        if path.exists() or path.is_symlink():
            if not overwrite:
                raise StoreExistsError(f"{path} already exists; pass --overwrite to replace it")
            if not is_zarr_store(path):
                raise StoreExistsError(
                    f"{path} exists and is not a Zarr store; refusing to replace it even with "
                    "--overwrite (remove it yourself if you mean it)"
                )
        self._partial = partial_path(path)

    @property
    def path(self) -> Path | str:
        """Where the store appears: a local :class:`~pathlib.Path`, or the URL."""
        return self.location.path if self.location.is_local else self.location.url

    @property
    def name(self) -> str:
        """The store's name (the last part of its path), for progress and messages."""
        return self.location.name

    def __enter__(self) -> StoreWriter:
        if self._remote is not None:
            try:
                self._remote.claim()
                self.group = zarr.open_group(self._remote.metadata, mode="w-", zarr_format=3)
            except BaseException:
                self._discard()  # the mark, if this run put one
                raise
            return self
        try:
            self.group = zarr.open_group(self._partial, mode="w-", zarr_format=3)
        except OSError as e:
            self._discard()
            if e.errno in _OUT_OF_SPACE:
                raise self._out_of_space(e) from e
            raise StoreError(f"cannot create {self._partial}: {e.strerror or e}") from e
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._committed:
            return
        self._discard()
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_SPACE:
            raise self._out_of_space(exc) from exc

    def _out_of_space(self, error: OSError) -> StoreError:
        """The error naming the output: the failed write itself may name no file, or a chunk."""
        assert error.errno is not None
        reason = os.strerror(error.errno).lower()
        return StoreError(f"{self.path}: {reason}; the partial store was removed")

    def _discard(self) -> None:
        """Remove the partial store (a remote run: what it wrote and its claim), after the
        writes zarr still has in flight have ended."""
        try:
            _settle_zarr_io()
            self._remove_partial()
        except BaseException:
            # Interrupted (a second Ctrl-C, which the CLI raises once): finish, then go on.
            _settle_zarr_io()
            self._remove_partial()
            raise

    def _remove_partial(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
        if self._remote is not None:
            self._remote.discard()
        else:
            remove(self._partial)

    def create_field(
        self,
        name: str,
        dtype: np.dtype[Any],
        sample_shape: tuple[int, ...],
        *,
        length: int,
        chunk: int,
        kind: str = "array",
        attrs: Mapping[str, Any] | None = None,
    ) -> FieldWriter:
        """Create the array ``name`` (``"x"`` or ``"train/x"``) of ``kind`` with the field
        attributes ``attrs`` (docs/FORMAT.md) and return a writer for it; its
        :meth:`FieldWriter.finish` finishes the field."""
        assert self.group is not None, "use StoreWriter as a context manager"
        array = self.group.create_array(
            name,
            shape=(max(length, 0), *sample_shape),
            chunks=(chunk, *sample_shape) if sample_shape else (chunk,),
            dtype=dtype,
            fill_value=0 if dtype.kind != "b" else False,
            serializer=BytesCodec(endian="little") if dtype.itemsize > 1 else "auto",
            # Every chunk checksummed, docs/FORMAT.md.
            compressors=[self.CODEC, Crc32cCodec()],
            config={"write_empty_chunks": True},
            attributes={FIELD_ATTR: {"kind": kind, **(attrs or {})}},
        )
        return FieldWriter(array, chunk, self)

    def finish_field(self, array: zarr.Array, fingerprint: str) -> str:
        """Mark the field ``array`` as complete with its content ``fingerprint``
        (:func:`field_fingerprint`): added to the attributes it was created with, and counted in
        the dataset fingerprint :meth:`commit` writes. Every field must be finished before the
        commit. Returns ``fingerprint``."""
        attrs = array.attrs.get(FIELD_ATTR)
        attrs = dict(attrs) if isinstance(attrs, Mapping) else {}
        if attrs.get("fingerprint") != fingerprint:
            attrs["fingerprint"] = fingerprint
            array.attrs.put({FIELD_ATTR: attrs})
        self._fingerprints[array.path] = fingerprint
        return fingerprint

    def write_object(self, key: str, parts: Sequence[bytes]) -> int:
        """Write the stored object ``key`` (relative to the store, e.g. a shard
        ``x/c/0/0/0``) from ``parts``, whole; return its size. For stages that encode objects
        themselves (``compress``)."""
        if self._remote is not None:
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            self._remote.put(key, data)
            return len(data)
        path = self._partial / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.writelines(parts)
        return sum(len(p) for p in parts)

    def check_reachable(self, executor: Executor) -> None:
        """Refuse, before any work, a local output that the executor's workers cannot see (a
        cluster on other machines without a shared filesystem)."""
        if executor.distributed and self._remote is None:
            executor.check_shared(self._partial)

    def handle(self, array: zarr.Array) -> ArrayHandle:
        """The field ``array`` (created by this writer) as tasks elsewhere write to it."""
        root = self.location if self._remote is not None else location(self._partial)
        return ArrayHandle(root, array.path, array.metadata.to_dict())

    def scratch(self, name: str) -> Scratch:
        """Temporary objects named ``name`` that tasks anywhere write and read
        (:class:`Scratch`): inside the partial store, or under the output URL."""
        if self._remote is not None:
            return Scratch(self.location, f"__gpuds_work/{name}")
        return Scratch(location(self._partial), f"__gpuds_work/{name}")

    def workdir(self, name: str) -> Path:
        """A local scratch folder, removed before the commit (or with the partial store).

        A local store's lies inside its partial store, under a name starting with ``__``, which
        Zarr reserves, so it can never clash with a field; an object store's in a local
        temporary folder.
        """
        if self._remote is not None:
            if self._scratch is None:
                self._scratch = Path(tempfile.mkdtemp(prefix=f".gpuds-work-{self.name}-"))
            path = self._scratch / name
        else:
            path = self._partial / "__gpuds_work" / name
        path.parent.mkdir(exist_ok=True)
        return path

    def commit(self, info: StoreInfo) -> Path | str:
        """Write the ``gpuds`` attribute, ``info`` completed with what the writer owns (format
        and tool version, time, dataset fingerprint, array records, ``complete: true``), then
        publish the store: a local one is moved into place (:func:`gpuds.commit.publish`:
        refused if the output appeared meanwhile, unless ``overwrite`` was given), a remote one
        gets its metadata, the root's last (:meth:`gpuds.commit_remote.RemoteCommit.publish`).
        """
        assert self.group is not None, "use StoreWriter as a context manager"
        check_cancelled()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        if self._remote is None:
            shutil.rmtree(self._partial / "__gpuds_work", ignore_errors=True)
        records = field_records(self.group)
        unfinished = sorted(set(records) - set(self._fingerprints))
        if unfinished:  # a bug of the stage, not of the data
            raise RuntimeError(f"fields {', '.join(unfinished)} were written but not finished")
        meta = replace(
            info,
            format_version=FORMAT_VERSION,
            tool_version=__version__,
            created=utc_now(),
            fingerprint=dataset_fingerprint(self._fingerprints),
            arrays=records,
            complete=True,
        )
        document = meta.to_dict()
        problems = check_records(self.group, document, str(self.path))
        if problems:  # the store would be refused when opened: a bug of the stage
            raise RuntimeError(f"{self.path}: {'; '.join(problems)}")
        self.group.attrs.put({ATTR: document})
        if self._remote is not None:
            _settle_zarr_io()
            self._remote.publish()
            self._committed = True
            return self.location.url
        path = self.location.path
        replaced = publish(self._partial, path, overwrite=self._overwrite)
        self._committed = True
        if replaced is not None:
            remove(replaced)
        return path


def _check_overlap(out: Location, src: Location) -> None:
    """``out`` may not be an input, lie inside one, or contain one."""
    if out.scheme != src.scheme or (out.scheme and out.bucket != src.bucket):
        return
    if out.is_local:
        a, b = Path(out.url), Path(src.url)
        overlaps = _within(a, b) or _within(b, a)
    else:
        a_key, b_key = out.url + "/", src.url + "/"
        overlaps = a_key.startswith(b_key) or b_key.startswith(a_key)
    if overlaps:
        raise StoreError(f"output {out} overlaps the input {src}; choose an output outside it")


def _settle_zarr_io(timeout: float = 30.0) -> None:
    """Wait, at most ``timeout`` seconds, until zarr's event loop has no task left (those of
    zarr calls made by other threads included).

    A zarr write that fails (disk full) or is interrupted (Ctrl-C) returns while its sibling
    chunk writes still run in zarr's I/O thread; removing the partial store before they end lets
    them recreate it, and a loop still busy at exit fails to close.
    """

    async def others_done() -> None:
        me = asyncio.current_task()
        while pending := [t for t in asyncio.all_tasks() if t is not me and not t.done()]:
            await asyncio.wait(pending)

    from zarr.core.sync import sync

    # Give up on writes that hang, and on a loop zarr already closed (at interpreter exit).
    with suppress(TimeoutError, RuntimeError):
        sync(others_done(), timeout=timeout)


def open_group(
    path: str | Path | Location, storage_options: Mapping[str, str] | None = None
) -> tuple[zarr.Group, str]:
    """Open the Zarr group at ``path`` (a local path or a URL) read-only; return it and how
    messages name it. A missing store, an object store's incomplete mark (a run is writing it,
    or was killed) and an unreachable service are one-line :class:`~gpuds.errors.StoreError`.

    Examples
    --------
    >>> group, name = open_group("s3://bucket/data.zarr")         # doctest: +SKIP
    """
    loc = location(path, storage_options)
    text = str(path) if loc.is_local else loc.url
    if loc.is_local and not loc.path.exists():
        if (hidden := interrupted_overwrite(loc.path)) is not None:
            raise StoreError(
                f"{text}: no such store: an overwrite was interrupted; the previous store is at "
                f"{hidden}; rerun the command or rename it back"
            )
        raise StoreError(f"{text}: no such store")
    if loc.is_object_store:
        _check_root(loc)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="Numcodecs codecs are not in the Zarr version 3"
            )
            group = zarr.open_group(loc.zarr_store(read_only=True), mode="r")
    except Exception as e:  # zarr and json raise many types for a missing or damaged zarr.json
        if loc.is_object_store:
            raise storage_error(loc, e, "not a readable Zarr group") from e
        raise StoreError(
            f"{text}: not a readable Zarr group ({type(e).__name__}: {_first_line(e)})"
        ) from e
    return group, text


def _check_root(loc: Location) -> None:
    """An object store's root ``zarr.json``: present, and not the incomplete mark."""
    import obstore

    try:
        root = bytes(obstore.get(loc.object_store(), ROOT).bytes())
    except FileNotFoundError as e:
        if "NoSuchBucket" in str(e):
            raise storage_error(loc, e) from e
        raise StoreError(f"{loc}: no such store (no zarr.json there)") from e
    except Exception as e:
        raise storage_error(loc, e) from e
    writer = incomplete_writer(root)
    if writer is not None:
        raise IncompleteStoreError(
            f"{loc}: incomplete store: being written ({describe_writer(writer)}), or that run "
            "was interrupted; rerun the command that writes it (it cleans up first)"
        )


def open_store(
    path: str | Path | Location,
    *,
    require_complete: bool = True,
    storage_options: Mapping[str, str] | None = None,
) -> zarr.Group:
    """Open a store read-only (a local path or a URL); refuse one that is not a gpuds store, is
    incomplete, or whose arrays' metadata disagrees with what the store recorded when it was
    written.

    Examples
    --------
    >>> g = open_store("data.zarr")                               # doctest: +SKIP
    >>> read_info(g)["format_version"]                            # doctest: +SKIP
    2
    """
    group, text = open_group(path, storage_options)
    info = group.attrs.get(ATTR)
    if not isinstance(info, dict):
        raise StoreError(f"{text}: a Zarr group, but not a gpuds store (no '{ATTR}' attribute)")
    if require_complete and info.get("complete") is not True:
        raise IncompleteStoreError(
            f"{text}: incomplete store (no completion marker): it was interrupted or is still "
            "being written; rebuild it"
        )
    version = info.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StoreError(f"{text}: store format version {version!r} is not a valid version")
    if version > FORMAT_VERSION:
        raise StoreError(
            f"{text}: store format version {version} is newer than this gpuds reads "
            f"({FORMAT_VERSION}); upgrade gpuds"
        )
    if require_complete:
        problems = check_records(group, info, text)
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise StoreError(f"{text}: {problems[0]}{more}; the store was edited or damaged")
    return group


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]


@overload
def read_info(group: zarr.Group) -> dict[str, Any]: ...
@overload
def read_info(group: zarr.Group, *, parsed: Literal[True]) -> StoreInfo: ...


def read_info(group: zarr.Group, *, parsed: bool = False) -> dict[str, Any] | StoreInfo:
    """The store's ``gpuds`` attribute as stored (empty for a plain Zarr group), or with
    ``parsed=True`` as a :class:`StoreInfo` (a group without the attribute is then a
    :class:`~gpuds.errors.StoreError`)."""
    info = group.attrs.get(ATTR)
    if not parsed:
        return dict(info) if isinstance(info, dict) else {}
    if not isinstance(info, dict):
        raise StoreError(f"{group.store_path}: not a gpuds store (no '{ATTR}' attribute)")
    try:
        return StoreInfo.from_dict(info)
    except StoreError as e:
        raise StoreError(f"{group.store_path}: {e}; the store was edited or damaged") from e


def iter_fields(
    group: zarr.Group, where: str | None = None
) -> Iterator[tuple[str, str, zarr.Array]]:
    """Yield ``(split, name, array)`` for every field; ``split`` is ``""`` for an unsplit store.

    A member whose ``zarr.json`` cannot be read is a :class:`~gpuds.errors.StoreError`.
    """
    try:
        with warnings.catch_warnings():
            # zarr warns at every numcodecs.* codec it reads; gpuds writes them on purpose and
            # reports each field's portability itself (`inspect`).
            warnings.filterwarnings(
                "ignore", message="Numcodecs codecs are not in the Zarr version 3"
            )
            # zarr skips a member whose zarr.json it cannot read, with a warning; the store's
            # list of fields makes that a problem named in one line (check_records).
            warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr")
            top = sorted(group.members(), key=lambda kv: kv[0])
            splits = [
                (split_name, sorted(sub.arrays(), key=lambda kv: kv[0]))
                for split_name, sub in top
                if isinstance(sub, zarr.Group)
            ]
    except GpudsError:
        raise
    except Exception as e:  # zarr and json raise many types for damaged metadata
        raise StoreError(
            f"{where or group.store_path}: the metadata of a field cannot be read "
            f"({type(e).__name__}: {_first_line(e)})"
        ) from e
    for name, node in top:
        if isinstance(node, zarr.Array):
            yield "", name, node
    for split_name, arrays in splits:
        for name, array in arrays:
            yield split_name, name, array


def field_record(array: zarr.Array) -> dict[str, Any]:
    """What a store records of one array when it is written: its ``zarr.json`` document without
    the attributes (data type, shape, chunk grid, codecs, fill value, ...), read back as stored,
    so that the comparison made whenever the store is opened does not depend on how a zarr-python
    version re-serialises it."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    key = f"{array.path}/zarr.json" if array.path else "zarr.json"
    stored = sync(array.store_path.store.get(key, default_buffer_prototype()))
    document = json.loads(stored.to_bytes()) if stored is not None else {}
    if not isinstance(document, dict):
        raise StoreError(f"{array.store_path}: zarr.json is not a JSON object")
    document.pop("attributes", None)
    return document


def field_records(group: zarr.Group) -> dict[str, dict[str, Any]]:
    """:func:`field_record` of every field, by ``"x"`` or ``"train/x"``."""
    return {
        f"{split}/{name}" if split else name: field_record(array)
        for split, name, array in iter_fields(group)
    }


def check_records(group: zarr.Group, info: Mapping[str, Any], where: str) -> list[str]:
    """Problems found comparing the arrays' metadata with what the store recorded: the fields
    and their whole ``zarr.json`` but the attributes (format 2), and their lengths against
    ``num_samples`` and ``split_sizes`` (every format). Empty when everything agrees."""
    problems: list[str] = []
    found: dict[str, zarr.Array] = {}
    try:
        found = {f"{s}/{n}" if s else n: a for s, n, a in iter_fields(group, where)}
    except StoreError as e:
        return [str(e).removeprefix(f"{where}: ")]
    problems += _check_sizes(found)
    if problems:  # nothing below may trust these shapes
        return problems
    version = info.get("format_version")
    records = info.get("arrays")
    if (
        isinstance(version, int)
        and version < 2
        and (records is not None or any(_checksummed(a) for a in found.values()))
    ):
        problems.append(
            f"format version {version} declared, but the store has format-2 checksums or "
            "records: its version was edited"
        )
    if isinstance(version, int) and version >= 2:
        if not isinstance(records, dict):
            return ["no record of its arrays ('arrays' attribute) although format 2 requires one"]
        for label in sorted(set(records) - set(found)):
            problems.append(f"field {label} is recorded but its array is missing")
        for label in sorted(set(found) - set(records)):
            problems.append(f"field {label} is not recorded: an array was added after writing")
        for label in sorted(set(found) & set(records)):
            actual, recorded = field_record(found[label]), records[label]
            if not isinstance(recorded, dict):
                problems.append(f"field {label}: its record is damaged")
                continue
            for key in sorted(set(actual) | set(recorded)):
                if actual.get(key) != recorded.get(key):
                    problems.append(
                        f"field {label}: {key} {_short(actual.get(key))} in its zarr.json, "
                        f"{_short(recorded.get(key))} recorded"
                    )
    layout = _check_layout(found, info)
    if layout:
        return problems + layout
    splits = info.get("splits") or []
    sizes = info.get("split_sizes") or {}
    total = info.get("num_samples")
    for label, array in sorted(found.items()):
        split = label.split("/")[0] if "/" in label else ""
        expected = sizes.get(split) if split else (None if splits else total)
        length = int(array.shape[0]) if array.shape else 0
        if expected is not None and length != expected:
            problems.append(
                f"field {label} declares {length} samples, the store recorded {expected}"
            )
    if splits and total is not None and sizes and sum(sizes.values()) != total:
        problems.append(f"split sizes {sizes} do not add up to num_samples {total}")
    return problems


MAX_CHUNKS = 2**26
"""The most chunks a field may declare (64 Mi: 64 TiB in 1 MiB chunks); more is refused before
anything is sized by it (a loader's epoch plan holds one entry per chunk)."""


def _checksummed(array: zarr.Array) -> bool:
    text = json.dumps(field_record(array).get("codecs", []))
    return '"crc32c"' in text.replace('"index_codecs"', "")


def _check_sizes(found: Mapping[str, zarr.Array]) -> list[str]:
    """Every field's declared shape and chunks are sane integers within :data:`MAX_CHUNKS`."""
    problems = []
    for label, array in sorted(found.items()):
        shape, chunks = tuple(array.shape), tuple(array.chunks)
        if not shape or any(not isinstance(s, int) or s < 0 for s in shape):
            problems.append(f"field {label}: declared shape {list(shape)} is not a field's")
            continue
        if len(chunks) != len(shape) or any(not isinstance(c, int) or c < 1 for c in chunks):
            problems.append(f"field {label}: declared chunks {list(chunks)} are not valid")
            continue
        count = -(-shape[0] // chunks[0])
        if count > MAX_CHUNKS:
            problems.append(
                f"field {label} declares {shape[0]} samples in {count} chunks, more than the "
                f"{MAX_CHUNKS} gpuds reads per field"
            )
    return problems


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_layout(found: Mapping[str, zarr.Array], info: Mapping[str, Any]) -> list[str]:
    """``splits``, ``split_sizes`` and ``num_samples`` are well-formed and match the groups."""
    splits = info.get("splits", [])
    sizes = info.get("split_sizes", {})
    total = info.get("num_samples")
    if not isinstance(splits, list) or not all(isinstance(s, str) and s for s in splits):
        return [f"'splits' {_short(splits)} is not a list of split names"]
    if not isinstance(sizes, dict) or not all(_is_count(v) for v in sizes.values()):
        return [f"'split_sizes' {_short(sizes)} is not a mapping of split names to counts"]
    if total is not None and not _is_count(total):
        return [f"'num_samples' {_short(total)} is not a count"]
    groups = {label.split("/")[0] for label in found if "/" in label}
    root = [label for label in found if "/" not in label]
    problems = []
    kinds = info.get("fields")
    if isinstance(kinds, dict) and kinds:
        # Every split (or the root) holds exactly the fields the store lists: a field whose
        # metadata zarr cannot read is skipped by zarr with a warning, never silently here.
        for part in sorted(groups) if splits else [""]:
            names = {
                label.split("/", 1)[1] if part else label
                for label in found
                if (label.startswith(f"{part}/") if part else "/" not in label)
            }
            for name in sorted(set(kinds) - names):
                where = f"{part}/{name}" if part else name
                problems.append(f"field {where} is listed but cannot be read (missing or damaged)")
    if splits:
        for split in sorted(set(splits) - groups):
            problems.append(f"split {split!r} is listed but holds no fields")
        for split in sorted(groups - set(splits)):
            problems.append(f"group {split!r} holds fields but is not a listed split")
        if root:
            problems.append(f"a split store with fields at its root ({', '.join(root)})")
    elif groups:
        problems.append(f"fields in groups {sorted(groups)} of a store that lists no splits")
    return problems


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
