"""The compress stage: a store in, a sharded Zarr v3 store with standard bitstreams out.

For every field the output array is created with zarr-python (so its metadata is exactly what
zarr-python writes: ``sharding_indexed`` with the codec chain inside and a ``crc32c``-protected
index), and then gpuds writes each shard itself, whole and once: it reads the shard's samples,
encodes all the shard's inner chunks in one batch (a thread pool on the CPU, one nvCOMP call on the
GPU), assembles the shard (:mod:`gpuds.codecs.shard`) and writes one file. While one shard is
encoded the next one is read. The bytes are the ones zarr-python itself writes for the same
settings (tested byte for byte), so any reader of the codec chain opens the store.

``verify`` (on by default) then reads every field back with zarr-python, the reference CPU
implementation, and compares it byte for byte with the input: the proof, at write time, that the
store is lossless and readable without gpuds.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BytesCodec

from gpuds.backend import resolve
from gpuds.chunks import FieldChunks, field_label
from gpuds.codecs import GPU_ONLY, ChunkCodec, CodecConfig, chunk_codec, zarr_compressors
from gpuds.codecs.auto import choose as choose_codec
from gpuds.codecs.auto import choose_shuffle
from gpuds.codecs.checksum import append_crc32c
from gpuds.codecs.shard import shard_parts
from gpuds.config import read_mapping
from gpuds.errors import ConfigError, CorruptChunkError
from gpuds.progress import NullProgress, Progress, check_cancelled
from gpuds.store import (
    FIELD_ATTR,
    StoreInfo,
    StoreWriter,
    chunk_samples_for,
    field_fingerprint,
    iter_fields,
    open_store,
    read_info,
)

__all__ = [
    "DEFAULT_SHARD_MB",
    "FieldSettings",
    "compress",
    "load_compress_config",
    "shard_samples",
]

DEFAULT_SHARD_MB = 128.0
"""Target shard size: one file, one request per shard, in the 64-256 MiB band object stores like."""


@dataclass(frozen=True)
class FieldSettings:
    """How one field is compressed; ``to_dict``/``from_dict`` round-trip.

    Examples
    --------
    >>> FieldSettings.from_dict({"codec": "lz4", "shuffle": False}).codec
    CodecConfig(name='lz4', level=None, shuffle=False)
    """

    codec: CodecConfig = field(default_factory=lambda: CodecConfig(shuffle=None))
    chunk_mb: float = 1.0
    shard_mb: float = DEFAULT_SHARD_MB

    def to_dict(self) -> dict[str, Any]:
        return {
            "codec": self.codec.name,
            "level": self.codec.level,
            "shuffle": self.codec.shuffle,
            "chunk_mb": self.chunk_mb,
            "shard_mb": self.shard_mb,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: FieldSettings | None = None) -> FieldSettings:
        base = base or cls()
        valid = ("codec", "level", "shuffle", "chunk_mb", "shard_mb")
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        codec = CodecConfig(
            str(data.get("codec", base.codec.name)),
            data.get("level", base.codec.level if "codec" not in data else None),
            data.get("shuffle", base.codec.shuffle),
        )
        sizes = {}
        for key in ("chunk_mb", "shard_mb"):
            value = data.get(key, getattr(base, key))
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"'{key}' must be a positive number, got {value!r}")
            sizes[key] = float(value)
        return cls(codec, **sizes)


def load_compress_config(
    path: str | Path, base: FieldSettings | None = None
) -> tuple[FieldSettings, dict[str, FieldSettings]]:
    """Read a compress config: defaults for every field plus a ``fields`` table of overrides.

    ::

        codec: zstd          # every key optional; these override the command line's
        level: 3
        shuffle: true
        chunk_mb: 1
        shard_mb: 128
        fields:
          images: {codec: lz4}
          labels: {codec: zstd, level: 9, shuffle: false}
    """
    data = read_mapping(path)
    where = str(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping (codec, level, ..., fields)")
    overrides = data.get("fields", {})
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{where}: 'fields' must map field names to settings")
    try:
        defaults = FieldSettings.from_dict({k: v for k, v in data.items() if k != "fields"}, base)
        per_field = {
            str(name): FieldSettings.from_dict(dict(value), defaults)
            for name, value in overrides.items()
        }
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from e
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: invalid field settings ({e})") from e
    return defaults, per_field


def shard_samples(chunk: int, sample_nbytes: int, shard_mb: float, length: int) -> int:
    """Samples per shard: a power-of-two number of whole chunks within ``shard_mb``, but no more
    chunks than the field has."""
    per_chunk = chunk * max(1, sample_nbytes)
    k = max(1, int(shard_mb * 2**20) // per_chunk)
    k = 1 << (k.bit_length() - 1)
    chunks_needed = max(1, math.ceil(length / chunk))
    k = min(k, 1 << (chunks_needed - 1).bit_length())
    return chunk * k


@dataclass
class _Plan:
    split: str
    name: str
    source: zarr.Array
    settings: FieldSettings
    chunk: int
    shard: int
    input_path: str
    input_version: int

    @property
    def label(self) -> str:
        return f"{self.split}/{self.name}" if self.split else self.name

    @property
    def path(self) -> str:
        return self.label


def compress(
    source: str | Path,
    out: str | Path,
    *,
    settings: FieldSettings | None = None,
    per_field: Mapping[str, FieldSettings] | None = None,
    fields: Sequence[str] | None = None,
    device: str = "auto",
    verify: bool = True,
    overwrite: bool = False,
    progress: Progress | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Compress the store ``source`` into the sharded store ``out``.

    Parameters
    ----------
    source, out
        Local paths or object-store URLs (``s3://bucket/data.zarr``; docs/storage.md).
    settings
        Codec, level, shuffle, chunk and shard size for every field (default: zstd level 3 with
        byte shuffle, 1 MiB chunks, 128 MiB shards).
    per_field
        Overrides by field name (applies in every split).
    fields
        Keep only these fields (default: all).
    device
        ``auto``, ``cpu`` or ``cuda``: where chunks are encoded.
    verify
        Read everything back with zarr-python and compare with the input before committing.
    storage_options
        Object-store settings for ``source`` and ``out`` (endpoint, region, credentials, ...).

    Examples
    --------
    >>> gpuds.compress("prep.zarr", "data.zarr", settings=FieldSettings(CodecConfig("lz4")))
    ... # doctest: +SKIP
    """
    progress = progress or NullProgress()
    started = time.perf_counter()
    settings = settings or FieldSettings()
    per_field = dict(per_field or {})
    group = open_store(source, storage_options=storage_options)
    info_in = read_info(group, parsed=True)
    all_fields = list(iter_fields(group))
    names = {name for _, name, _ in all_fields}
    for name in [*(fields or []), *per_field]:
        if name not in names:
            raise ConfigError(f"no field {name!r} in {source}; fields: {', '.join(sorted(names))}")
    kept = [(s, n, a) for s, n, a in all_fields if fields is None or n in fields]
    decided, trials, decisions = _decide(str(source), kept, settings, per_field)
    plans = []
    version = info_in.format_version
    for split, name, array in kept:
        chosen = decided[name]
        nbytes = int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize
        chunk = chunk_samples_for(nbytes, chosen.chunk_mb, array.shape[0])
        shard = shard_samples(chunk, nbytes, chosen.shard_mb, array.shape[0])
        plans.append(_Plan(split, name, array, chosen, chunk, shard, str(source), version))
    if not plans:
        raise ConfigError(f"{source}: no fields to compress")
    gpu_only = sorted({p.settings.codec.name for p in plans if p.settings.codec.name in GPU_ONLY})
    backend = resolve(device)
    if backend.notice and device == "auto":
        progress.note(backend.notice)
    if gpu_only and not backend.is_gpu:
        raise ConfigError(
            f"codec {', '.join(gpu_only)} is GPU-only (nvCOMP) and needs a GPU to write "
            f"({backend.reason or 'device ' + backend.name}); use --codec zstd, lz4 or gzip, "
            "which any machine can read"
        )
    results: dict[str, dict[str, Any]] = {}
    with StoreWriter(
        out, overwrite=overwrite, inputs=[source], storage_options=storage_options
    ) as writer:
        assert writer.group is not None
        for split in sorted({p.split for p in plans if p.split}):
            writer.group.create_group(split)
        total_shards = sum(max(1, math.ceil(p.source.shape[0] / p.shard)) for p in plans)
        progress.start(f"compress on {backend.name}", total_shards)
        for plan in plans:
            dtype = plan.source.dtype
            codec = chunk_codec(plan.settings.codec, dtype.itemsize, backend.name, dtype)
            results[plan.label] = _write_field(writer, plan, codec, progress)
        if verify:
            progress.start("verify with zarr-python", total_shards)
            for plan in plans:
                _verify_field(writer, plan, progress)
        info = _store_info(
            info_in, source, plans, results, decisions, backend.name, verify, started
        )
        path = writer.commit(info)
    logical = sum(r["logical_bytes"] for r in results.values())
    stored = sum(r["stored_bytes"] for r in results.values())
    return {
        "output": str(path),
        "device": backend.name,
        "fields": results,
        "logical_bytes": logical,
        "stored_bytes": stored,
        "ratio": round(logical / stored, 4) if stored else None,
        "verified": verify,
        "auto": trials,
        "decisions": decisions,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _decide(
    source: str,
    fields: list[tuple[str, str, zarr.Array]],
    settings: FieldSettings,
    per_field: Mapping[str, FieldSettings],
) -> tuple[dict[str, FieldSettings], dict[str, list[dict[str, Any]]], dict[str, str]]:
    """Resolve ``--codec auto`` and the default byte shuffle, once per field name (the same in
    every split), from a sample of the field in its largest split: the settings by field, the
    auto trial tables, and one sentence per decision saying what was decided and why."""
    largest: dict[str, tuple[str, zarr.Array]] = {}
    for split, name, array in fields:
        if name not in largest or array.shape[0] > largest[name][1].shape[0]:
            largest[name] = (split, array)
    decided: dict[str, FieldSettings] = {}
    trials: dict[str, list[dict[str, Any]]] = {}
    decisions: dict[str, str] = {}
    for name, (split, array) in sorted(largest.items()):
        chosen = per_field.get(name, settings)
        itemsize = array.dtype.itemsize
        nbytes = int(np.prod(array.shape[1:], dtype=np.int64)) * itemsize
        chunk = chunk_samples_for(nbytes, chosen.chunk_mb, array.shape[0])
        sample = FieldChunks(array, field_label(source, split, name))
        codec = chosen.codec
        if codec.name == "auto":
            codec, table = choose_codec(sample, chunk)
            trials[name] = table
            picked = next((r for r in table if r["picked"]), None)
            decisions[name] = (
                f"--codec auto picked {_describe(codec)} ({picked['ratio']:.3f}x on the sample)"
                if picked
                else "--codec auto stores it raw: no candidate compresses it by 5% or more"
            )
        elif codec.shuffle is None:
            if itemsize == 1 or codec.name == "none":
                codec = CodecConfig(codec.name, codec.level, False)
            elif codec.name in GPU_ONLY:  # no CPU implementation to try them with
                codec = CodecConfig(codec.name, codec.level, True)
                decisions[name] = "byte shuffle on (nvCOMP-only codecs are not trialled)"
            else:
                trial = choose_shuffle(sample, chunk, codec)
                codec = CodecConfig(codec.name, codec.level, trial["shuffle"])
                decisions[name] = (
                    f"byte shuffle {'on' if trial['shuffle'] else 'off'}: "
                    f"{trial['ratio_shuffle']:.3f}x with it, {trial['ratio_plain']:.3f}x "
                    f"without, on {trial['sample_chunks']} sampled chunks"
                )
        decided[name] = FieldSettings(codec, chosen.chunk_mb, chosen.shard_mb)
    return decided, trials, decisions


def _describe(codec: CodecConfig) -> str:
    level = f" {codec.level}" if codec.level is not None else ""
    return f"{codec.name}{level}{' + byte shuffle' if codec.shuffle else ''}"


def _create_array(writer: StoreWriter, plan: _Plan) -> zarr.Array:
    assert writer.group is not None
    src = plan.source
    dtype = np.dtype(src.dtype).newbyteorder("<") if src.dtype.itemsize > 1 else np.dtype(src.dtype)
    sample = tuple(src.shape[1:])
    attrs: Any = src.attrs.get(FIELD_ATTR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numcodecs.* codecs are flagged as outside the spec
        return writer.group.create_array(
            plan.path,
            shape=src.shape,
            chunks=(plan.chunk, *sample),
            shards=(plan.shard, *sample),
            dtype=dtype,
            fill_value=False if dtype.kind == "b" else 0,
            serializer=BytesCodec(endian="little") if dtype.itemsize > 1 else "auto",
            compressors=zarr_compressors(plan.settings.codec, dtype.itemsize, dtype),
            attributes={FIELD_ATTR: dict(attrs) if isinstance(attrs, Mapping) else {}},
        )


def _shard_regions(plan: _Plan) -> Iterator[tuple[int, int, int]]:
    n = plan.source.shape[0]
    for s, start in enumerate(range(0, n, plan.shard)):
        yield s, start, min(start + plan.shard, n)


def _read(chunks: FieldChunks, start: int, stop: int) -> np.ndarray:
    return chunks.read_range(start, stop)


def _raw_chunks(values: np.ndarray, plan: _Plan, dtype: np.dtype[Any]) -> list[np.ndarray]:
    """The shard's stored inner chunks as raw little-endian bytes; the last is zero-padded."""
    values = np.ascontiguousarray(values, dtype=dtype)
    chunks = []
    for start in range(0, len(values), plan.chunk):
        part = values[start : start + plan.chunk]
        if len(part) < plan.chunk:
            padded = np.zeros((plan.chunk, *values.shape[1:]), dtype=dtype)
            padded[: len(part)] = part
            part = padded
        chunks.append(part.reshape(-1).view(np.uint8))
    return chunks


def _write_field(
    writer: StoreWriter, plan: _Plan, codec: ChunkCodec, progress: Progress
) -> dict[str, Any]:
    array = _create_array(writer, plan)
    per_shard = plan.shard // plan.chunk
    stored_attrs: Any = array.attrs.get(FIELD_ATTR)
    attrs = dict(stored_attrs) if isinstance(stored_attrs, Mapping) else {}
    # Compression does not change the values, so the input's recorded fingerprint stays true
    # (verify proves it byte for byte); a store without one, or from format 1 (whose fingerprints
    # cover the bytes only), is hashed here.
    keep = bool(attrs.get("fingerprint")) and plan.input_version >= 2
    digest = None if keep else hashlib.blake2b(digest_size=16)
    source = FieldChunks(plan.source, field_label(plan.input_path, plan.split, plan.name))
    stored = 0
    started = time.perf_counter()
    regions = list(_shard_regions(plan))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpuds-read") as reader:
        pending: Future[np.ndarray] | None = None
        for i, (s, start, stop) in enumerate(regions):
            check_cancelled()
            values = pending.result() if pending is not None else _read(source, start, stop)
            pending = None
            if i + 1 < len(regions):
                _, nstart, nstop = regions[i + 1]
                pending = reader.submit(_read, source, nstart, nstop)
            values = np.ascontiguousarray(values, dtype=array.dtype)
            if digest is not None:
                digest.update(values.data.cast("B"))
            payloads: list[bytes | None] = [
                append_crc32c(p) for p in codec.encode(_raw_chunks(values, plan, array.dtype))
            ]
            payloads += [None] * (per_shard - len(payloads))
            key = array.metadata.encode_chunk_key((s,) + (0,) * (array.ndim - 1))
            stored += writer.write_object(f"{plan.path}/{key}", shard_parts(payloads))
            progress.advance(1)
    seconds = time.perf_counter() - started
    fingerprint = writer.finish_field(
        array,
        attrs["fingerprint"]
        if digest is None
        else field_fingerprint(digest.digest(), array.dtype, array.shape),
    )
    logical = int(array.nbytes)
    return {
        "codec": plan.settings.to_dict(),
        "chunks": [plan.chunk, *array.shape[1:]],
        "shards": [plan.shard, *array.shape[1:]],
        "codecs": [c["name"] for c in _chain(array)],
        "logical_bytes": logical,
        "stored_bytes": stored,
        "ratio": round(logical / stored, 4) if stored else None,
        "seconds": round(seconds, 4),
        "fingerprint": fingerprint,
    }


def _chain(array: zarr.Array) -> list[dict[str, Any]]:
    from gpuds.inspection import codec_chain

    return codec_chain(array)


def _verify_field(writer: StoreWriter, plan: _Plan, progress: Progress) -> None:
    """Read the written field with plain zarr-python and compare it byte for byte."""
    assert writer.group is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        written = zarr.open_array(writer.group.store, path=plan.path, mode="r")
    source = FieldChunks(plan.source, field_label(plan.input_path, plan.split, plan.name))
    for s, start, stop in _shard_regions(plan):
        check_cancelled()
        expected = source.read_range(start, stop)
        try:
            actual = np.ascontiguousarray(written[start:stop])
        except Exception as e:  # any decode failure means the shard we wrote is unreadable
            raise CorruptChunkError(
                f"verify: field {plan.label} shard {s} does not decode with zarr-python ({e})"
            ) from e
        if (
            actual.shape != expected.shape
            or actual.view(np.uint8).tobytes()
            != expected.astype(actual.dtype, copy=False).view(np.uint8).tobytes()
        ):
            raise CorruptChunkError(
                f"verify: field {plan.label} shard {s} decodes to different values than the "
                "input; nothing was written"
            )
        progress.advance(1)


def _store_info(
    info_in: StoreInfo,
    source: str | Path,
    plans: list[_Plan],
    results: dict[str, dict[str, Any]],
    decisions: dict[str, str],
    device: str,
    verified: bool,
    started: float,
) -> StoreInfo:
    """The output's metadata: the input's, with only the fields kept and one more stage."""
    kept = {p.name for p in plans}
    settings = {
        "device": device,
        "verify": verified,
        "fields": {p.label: results[p.label]["codec"] for p in plans},
        "decisions": decisions,
    }
    return info_in.next_stage(
        "compress",
        source,
        settings,
        started,
        fields={k: v for k, v in info_in.fields.items() if k in kept},
    )
