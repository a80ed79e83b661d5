"""The gpuds store: layout, metadata, and safe (atomic) writes. See docs/FORMAT.md.

A store is a Zarr v3 group. Samples lie along axis 0; each *field* is an array; all fields of a
dataset have the same length. A split dataset holds its fields in subgroups ``train/``, ``val/``,
``test/``; an unsplit one at the root. The group attribute ``gpuds`` holds the dataset's metadata,
and ``complete: true`` is written last.

Writes never expose a half-written store: :class:`StoreWriter` builds the store under a hidden
temporary sibling (``.NAME.partial-PID-RANDOM``) and renames it into place only after everything,
completion marker included, is on disk. An existing output is replaced only with
``overwrite=True``, and only if it is a Zarr store (a folder of the user's data is never deleted).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BytesCodec, ZstdCodec

from gpuds import __version__
from gpuds.errors import IncompleteStoreError, StoreError, StoreExistsError
from gpuds.progress import check_cancelled

__all__ = [
    "ATTR",
    "DEFAULT_CHUNK_MB",
    "FIELD_ATTR",
    "FORMAT_VERSION",
    "SUPPORTED_DTYPES",
    "FieldWriter",
    "StoreWriter",
    "chunk_samples",
    "chunk_samples_for",
    "dataset_fingerprint",
    "iter_fields",
    "open_store",
    "read_info",
    "utc_now",
]

FORMAT_VERSION = 1
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
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)-[0-9a-f]+$")


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


def chunk_samples_for(sample_nbytes: int, chunk_mb: float, length: int) -> int:
    """:func:`chunk_samples`, but never longer than the dataset (rounded up to a power of two):
    a chunk longer than the data would only store padding."""
    return min(chunk_samples(sample_nbytes, chunk_mb), 1 << max(0, length - 1).bit_length())


def _is_url(path: str) -> bool:
    return "://" in path


def _is_zarr_store(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in _ZARR_MARKERS)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _within(a: Path, b: Path) -> bool:
    """True when ``a`` is ``b`` or lies inside it."""
    return a == b or b in a.parents


class FieldWriter:
    """Appends blocks of samples to one array, writing whole chunks only.

    It also hashes every byte it writes (BLAKE2b, C order), which gives the field's content
    fingerprint at no extra read.
    """

    def __init__(self, array: zarr.Array, chunk: int) -> None:
        self.array = array
        self.chunk = chunk
        self.count = 0
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self._hash = hashlib.blake2b(digest_size=16)

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.array.dtype)
        if block.shape[1:] != self.array.shape[1:]:
            raise StoreError(
                f"field {self.array.path!r}: expected samples of shape {self.array.shape[1:]}, "
                f"got {block.shape[1:]}"
            )
        self._hash.update(block.data.cast("B"))
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
        rest = data[n:]
        self._pending = [rest] if len(rest) else []
        self._pending_len = len(rest)

    def finish(self) -> str:
        """Write what is left, trim the array to the samples written, return the fingerprint."""
        self._flush(final=True)
        if self.array.shape[0] != self.count:
            self.array.resize((self.count, *self.array.shape[1:]))
        return "blake2b:" + self._hash.hexdigest()


@dataclass
class _Target:
    path: Path
    tmp: Path


class StoreWriter:
    """Build a store under a temporary sibling and commit it atomically.

    Parameters
    ----------
    out
        Local path of the store to create.
    overwrite
        Replace an existing Zarr store at ``out``. Without it an existing path is an error.
    inputs
        Paths the stage reads: ``out`` may not be one of them, inside one, or contain one.

    Examples
    --------
    >>> with StoreWriter(tmp / "a.zarr") as w:                    # doctest: +SKIP
    ...     f = w.create_field("x", np.dtype("f4"), (), length=10, chunk=4)
    ...     f.append(np.arange(10, dtype="f4"))
    ...     w.commit({"fields": {"x": {"kind": "array"}}}, fingerprints={"x": f.finish()})
    """

    def __init__(self, out: str | Path, *, overwrite: bool = False, inputs: Sequence[Path] = ()):
        if _is_url(str(out)):
            raise StoreError(
                f"{out}: gpuds writes stores to local paths only; write locally, then upload"
            )
        path = Path(out).expanduser().absolute()
        for src in inputs:
            src_abs = Path(src).expanduser().absolute()
            if _within(path, src_abs) or _within(src_abs, path):
                raise StoreError(
                    f"output {path} overlaps the input {src_abs}; choose an output outside it"
                )
        if path.exists() or path.is_symlink():
            if not overwrite:
                raise StoreExistsError(f"{path} already exists; pass --overwrite to replace it")
            if not _is_zarr_store(path):
                raise StoreExistsError(
                    f"{path} exists and is not a Zarr store; refusing to replace it even with "
                    "--overwrite (remove it yourself if you mean it)"
                )
        if not path.parent.is_dir():
            raise StoreError(f"{path.parent}: output folder does not exist")
        tmp = path.parent / f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        self._target = _Target(path, tmp)
        self._committed = False
        self.group: zarr.Group | None = None

    @property
    def path(self) -> Path:
        return self._target.path

    @property
    def partial_path(self) -> Path:
        """Where the store is being built (renamed to :attr:`path` by :meth:`commit`)."""
        return self._target.tmp

    def __enter__(self) -> StoreWriter:
        self._remove_stale_partials()
        try:
            self.group = zarr.open_group(self._target.tmp, mode="w-", zarr_format=3)
        except OSError as e:
            raise StoreError(f"cannot create {self._target.tmp}: {e.strerror or e}") from e
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._committed:
            shutil.rmtree(self._target.tmp, ignore_errors=True)

    def _remove_stale_partials(self) -> None:
        """Delete this output's partial stores left by killed runs (whose PID is gone)."""
        for entry in self._target.path.parent.iterdir():
            match = _PARTIAL.match(entry.name)
            if (
                match
                and match["name"] == self._target.path.name
                and not _pid_alive(int(match["pid"]))
            ):
                shutil.rmtree(entry, ignore_errors=True)

    def create_field(
        self,
        name: str,
        dtype: np.dtype[Any],
        sample_shape: tuple[int, ...],
        *,
        length: int,
        chunk: int,
        attrs: Mapping[str, Any] | None = None,
        compressors: Any = "default",
    ) -> FieldWriter:
        """Create the array ``name`` (``"x"`` or ``"train/x"``) and return a writer for it."""
        assert self.group is not None, "use StoreWriter as a context manager"
        if compressors == "default":
            compressors = ZstdCodec(level=1, checksum=True)
        array = self.group.create_array(
            name,
            shape=(max(length, 0), *sample_shape),
            chunks=(chunk, *sample_shape) if sample_shape else (chunk,),
            dtype=dtype,
            fill_value=0 if dtype.kind != "b" else False,
            serializer=BytesCodec(endian="little") if dtype.itemsize > 1 else "auto",
            compressors=compressors,
            config={"write_empty_chunks": True},
            attributes={FIELD_ATTR: dict(attrs or {})},
        )
        return FieldWriter(array, chunk)

    def workdir(self, name: str) -> Path:
        """A scratch folder inside the partial store, removed before the commit (or with it).

        Its name starts with ``__``, which Zarr reserves, so it can never clash with a field.
        """
        path = self._target.tmp / "__gpuds_work" / name
        path.parent.mkdir(exist_ok=True)
        return path

    def commit(self, info: dict[str, Any]) -> Path:
        """Write the ``gpuds`` attribute with ``complete: true`` last, then move into place."""
        assert self.group is not None, "use StoreWriter as a context manager"
        check_cancelled()
        shutil.rmtree(self._target.tmp / "__gpuds_work", ignore_errors=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "tool_version": __version__,
            "created": utc_now(),
            **info,
            "complete": True,
        }
        self.group.attrs.put({ATTR: meta})
        target = self._target
        old: Path | None = None
        if target.path.exists() or target.path.is_symlink():
            old = target.path.parent / f".{target.path.name}.replaced-{secrets.token_hex(4)}"
            os.rename(target.path, old)
        os.rename(target.tmp, target.path)
        self._committed = True
        if old is not None:
            if old.is_symlink() or old.is_file():
                old.unlink()
            else:
                shutil.rmtree(old, ignore_errors=True)
        return target.path


def open_store(path: str | Path, *, require_complete: bool = True) -> zarr.Group:
    """Open a store read-only; refuse one that is not a gpuds store or is incomplete.

    Examples
    --------
    >>> g = open_store("data.zarr")                               # doctest: +SKIP
    >>> read_info(g)["format_version"]                            # doctest: +SKIP
    1
    """
    text = str(path)
    if not _is_url(text) and not Path(text).exists():
        raise StoreError(f"{text}: no such store")
    try:
        group = zarr.open_group(text, mode="r")
    except (FileNotFoundError, zarr.errors.NodeTypeValidationError, ValueError) as e:
        raise StoreError(f"{text}: not a Zarr group ({e})") from e
    info = group.attrs.get(ATTR)
    if not isinstance(info, dict):
        raise StoreError(f"{text}: a Zarr group, but not a gpuds store (no '{ATTR}' attribute)")
    if require_complete and info.get("complete") is not True:
        raise IncompleteStoreError(
            f"{text}: incomplete store (no completion marker): it was interrupted or is still "
            "being written; rebuild it"
        )
    version = info.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StoreError(
            f"{text}: store format version {version!r} is newer than this gpuds reads "
            f"({FORMAT_VERSION}); upgrade gpuds"
        )
    return group


def read_info(group: zarr.Group) -> dict[str, Any]:
    """The store's ``gpuds`` attribute (empty for a plain Zarr group)."""
    info = group.attrs.get(ATTR)
    return dict(info) if isinstance(info, dict) else {}


def iter_fields(group: zarr.Group) -> Iterator[tuple[str, str, zarr.Array]]:
    """Yield ``(split, name, array)`` for every field; ``split`` is ``""`` for an unsplit store."""
    for name, array in sorted(group.arrays(), key=lambda kv: kv[0]):
        yield "", name, array
    for split_name, sub in sorted(group.groups(), key=lambda kv: kv[0]):
        for name, array in sorted(sub.arrays(), key=lambda kv: kv[0]):
            yield split_name, name, array
