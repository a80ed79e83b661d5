"""What a store holds, how well it compressed, where it came from, and whether it is intact.

:func:`inspect_store` returns a JSON-safe report (schema in docs/inspect.md); the CLI renders it.
With ``verify=True`` every chunk is listed, read and decoded: a missing chunk, a chunk that fails
to decode (bad checksum, truncated, wrong size) and a field whose content no longer matches the
fingerprint recorded when it was written are all reported by field and chunk key.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from gpuds.chunks import FieldChunks, field_label
from gpuds.codecs import registry
from gpuds.digest import ContentDigest
from gpuds.errors import CorruptChunkError, StoreError
from gpuds.progress import NullProgress, Progress
from gpuds.store import (
    ATTR,
    FIELD_ATTR,
    FORMAT_VERSION,
    check_records,
    field_fingerprint,
    iter_fields,
    open_group,
)

__all__ = ["PORTABILITY", "codec_chain", "inspect_store", "portability"]

PORTABILITY = {**registry.PORTABILITY, "unknown": "unknown codec"}
"""The portability levels, from the most portable (the codec registry's, then ``unknown``)."""
# Zarr v3 spec codecs gpuds does not write but other tools do (the ones it writes: the registry).
_OTHER_SPEC_CODECS = {"transpose", "blosc"}
_RANK = list(PORTABILITY)
_MAX_LISTED_OBJECTS = 2**22  # beyond this many declared objects, missing ones are only counted


def codec_chain(array: zarr.Array) -> list[dict[str, Any]]:
    """The array's codecs as ``{"name", "configuration"}`` dicts (v2 arrays are translated)."""
    meta: dict[str, Any] = _json_safe(array.metadata.to_dict())
    if meta.get("zarr_format") == 2:
        chain: list[dict[str, Any]] = []
        for f in meta.get("filters") or []:
            chain.append({"name": f"numcodecs.{f['id']}", "configuration": f})
        comp = meta.get("compressor")
        if comp:
            chain.append({"name": f"numcodecs.{comp['id']}", "configuration": comp})
        return chain
    return list(meta.get("codecs", []))


def _names(chain: list[dict[str, Any]]) -> Iterator[str]:
    for codec in chain:
        yield codec["name"]
        if codec["name"] == "sharding_indexed":
            config = codec.get("configuration", {})
            yield from _names(list(config.get("codecs", [])))
            yield from _names(list(config.get("index_codecs", [])))


def _data_codec_names(chain: list[dict[str, Any]]) -> list[str]:
    """Codec names in order, a shard's inner data codecs after ``sharding_indexed``."""
    names: list[str] = []
    for codec in chain:
        names.append(codec["name"])
        if codec["name"] == "sharding_indexed":
            names += _data_codec_names(list(codec.get("configuration", {}).get("codecs", [])))
    return names


def portability(chain: list[dict[str, Any]]) -> str:
    """The least portable level among the codecs: ``any``, ``zarr-python``, ``gpuds-gpu``, ...

    Examples
    --------
    >>> portability([{"name": "bytes"}, {"name": "zstd"}])
    'any'
    >>> portability([{"name": "numcodecs.shuffle"}, {"name": "zstd"}])
    'zarr-python'
    """
    level = 0
    for name in _names(chain):
        known = registry.portability_of(name)  # the codecs gpuds writes say it themselves
        if known is not None:
            rank = _RANK.index(known)
        elif name in _OTHER_SPEC_CODECS:
            rank = _RANK.index("any")
        elif name.startswith("numcodecs."):
            rank = _RANK.index("zarr-python")
        elif name.startswith("gpuds."):
            rank = _RANK.index("gpuds-gpu")
        else:
            rank = _RANK.index("unknown")
        level = max(level, rank)
    return _RANK[level]


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


_METADATA_KEYS = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}


def _stored_chunk_bytes(array: zarr.Array) -> int:
    """Bytes of the stored chunks (or shards), metadata documents excluded."""
    store = array.store_path.store
    prefix = f"{array.path}/" if array.path else ""

    async def total() -> int:
        size = 0
        async for key in store.list_prefix(prefix):
            if key[len(prefix) :] not in _METADATA_KEYS:
                size += await store.getsize(key)
        return size

    return int(sync(total()))


def _field_report(split: str, name: str, array: zarr.Array) -> dict[str, Any]:
    chain = codec_chain(array)
    attrs = array.attrs.get(FIELD_ATTR)
    field_attrs = dict(attrs) if isinstance(attrs, dict) else {}
    logical = math.prod(int(s) for s in array.shape) * np.dtype(array.dtype).itemsize
    stored = _stored_chunk_bytes(array)
    report: dict[str, Any] = {
        "split": split,
        "name": name,
        "path": array.path,
        "kind": field_attrs.get("kind", "array"),
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "chunks": list(array.chunks),
        "shards": list(array.shards) if array.shards else None,
        "codecs": _data_codec_names(chain),
        "checksum": "crc32c" if _data_codec_names(chain)[-1:] == ["crc32c"] else None,
        "codec_chain": chain,
        "portability": portability(chain),
        "logical_bytes": logical,
        "stored_bytes": stored,
        "ratio": round(logical / stored, 3) if stored else None,
    }
    for key in ("classes", "unit", "mask_of", "missing_code", "fingerprint"):
        if key in field_attrs:
            report[key] = field_attrs[key]
    if "vocabulary" in field_attrs:
        report["vocabulary_size"] = len(field_attrs["vocabulary"])
    return report


def inspect_store(
    path: str,
    *,
    verify: bool = False,
    progress: Progress | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Describe the store at ``path`` (a local path or a URL, docs/storage.md) and optionally
    verify every chunk.

    The report's ``problems`` list is empty exactly when the store is complete, a gpuds store of a
    format this version reads, and (with ``verify``) every chunk is present and intact.

    Examples
    --------
    >>> report = gpuds.inspect("data.zarr", verify=True)          # doctest: +SKIP
    >>> report["problems"]                                        # doctest: +SKIP
    []
    """
    progress = progress or NullProgress()
    group, path = open_group(path, storage_options)
    info_raw = group.attrs.get(ATTR)
    info = dict(info_raw) if isinstance(info_raw, dict) else {}
    problems: list[str] = []
    if not info:
        problems.append(f"not a gpuds store (no '{ATTR}' attribute)")
    elif info.get("complete") is not True:
        problems.append("incomplete: no completion marker (interrupted or still being written)")
    elif not isinstance(info.get("format_version"), int) or info["format_version"] > FORMAT_VERSION:
        problems.append(f"format version {info.get('format_version')!r} is newer than this gpuds")
    fields = [(s, n, a) for s, n, a in iter_fields(group, str(path))]
    # Metadata that disagrees with the record cannot be trusted to size anything by.
    untrusted = check_records(group, info, str(path)) if info.get("complete") is True else []
    problems += untrusted
    reports = [_field_report(s, n, a) for s, n, a in fields]
    lengths: dict[str, set[int]] = {}
    for r in reports:
        lengths.setdefault(r["split"], set()).add(r["shape"][0] if r["shape"] else 0)
    for split, ls in lengths.items():
        if len(ls) > 1:
            problems.append(f"fields of {split or 'the root'} have different lengths {sorted(ls)}")
    logical = sum(r["logical_bytes"] for r in reports)
    stored = sum(r["stored_bytes"] for r in reports)
    report: dict[str, Any] = {
        "path": str(path),
        "gpuds_store": bool(info),
        "complete": info.get("complete") is True,
        "format_version": info.get("format_version"),
        "tool_version": info.get("tool_version"),
        "created": info.get("created"),
        "num_samples": info.get("num_samples"),
        "splits": sorted({r["split"] for r in reports if r["split"]}),
        "fields": reports,
        "logical_bytes": logical,
        "stored_bytes": stored,
        "ratio": round(logical / stored, 3) if stored else None,
        "portability": _RANK[max((_RANK.index(r["portability"]) for r in reports), default=0)],
        "classes": info.get("classes", {}),
        "stats": info.get("stats", {}),
        "fingerprint": info.get("fingerprint"),
        "sources": info.get("sources", []),
        "skipped": info.get("skipped", []),
        "history": info.get("history", []),
        "problems": problems,
    }
    if verify and not untrusted:
        report["verify"] = _verify(str(path), info, fields, progress, problems)
    elif verify:
        report["verify"] = {"chunks": 0, "chunks_decoded": 0, "ok": False}
        problems.append("not verified: the store's metadata cannot be trusted (above)")
    safe: dict[str, Any] = _json_safe(report)
    return safe


def _listed_keys(array: zarr.Array) -> set[str]:
    store = array.store_path.store
    prefix = f"{array.path}/" if array.path else ""

    async def collect() -> set[str]:
        return {k[len(prefix) :] async for k in store.list_prefix(prefix)}

    return sync(collect())


def _verify(
    path: str,
    info: dict[str, Any],
    fields: list[tuple[str, str, zarr.Array]],
    progress: Progress,
    problems: list[str],
) -> dict[str, Any]:
    """Decode every chunk through the chunk service (presence, checksums, sizes) and recompute
    each field's fingerprint; append one problem per damaged chunk, and per field for missing
    ones (the first named, the rest counted)."""
    recorded = info.get("format_version")
    version = recorded if isinstance(recorded, int) else 1
    readers: list[tuple[str, FieldChunks | None, zarr.Array]] = []
    for split, name, array in fields:
        label = f"{split}/{name}" if split else name
        try:
            readers.append((label, FieldChunks(array, field_label(path, split, name)), array))
        except StoreError as e:
            problems.append(str(e))
            readers.append((label, None, array))
    total = sum(r.nchunks for _, r, _ in readers if r is not None)
    progress.start("verify", total)
    checked = 0
    for label, reader, array in readers:
        if reader is None:
            continue
        listed = _listed_keys(array)
        stored_objects = len(listed - _METADATA_KEYS)
        missing = (
            [
                reader.object_key(obj)
                for obj in range(min(reader.nobjects, _MAX_LISTED_OBJECTS))
                if reader.object_key(obj) not in listed
            ]
            if stored_objects < reader.nobjects
            else []
        )
        if reader.nobjects > _MAX_LISTED_OBJECTS and stored_objects < reader.nobjects:
            problems.append(
                f"field {label} declares {reader.nobjects} stored objects but "
                f"{stored_objects} are stored: its shape or chunks were changed; not verified"
            )
            progress.advance(reader.nchunks)
            continue
        kind = "shard" if reader.sharded else "chunk"
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            problems.append(
                f"missing {kind} in {reader.label}, {kind} {missing[0]}{more}: a gpuds store is "
                "dense, so a missing object is damage"
            )
        absent = set(missing)
        # Format 3 hashes the data in pieces; formats 1 and 2 in one run (docs/FORMAT.md).
        digest: Any = (
            ContentDigest(reader.dtype.itemsize * math.prod(array.shape[1:]))
            if version >= 3
            else hashlib.blake2b(digest_size=16)
        )
        seen: set[str] = set()
        ok = not missing
        for index in range(reader.nchunks):
            progress.advance(1)
            if reader.object_key(index // reader.per_shard) in absent:
                continue
            try:
                values = reader.read(index)
            except CorruptChunkError as e:
                ok = False
                message = str(e)
                if message not in seen:  # a damaged shard index fails all its chunks alike
                    seen.add(message)
                    problems.append(message)
                continue
            rows = min(reader.chunk, reader.length - index * reader.chunk)
            part = np.ascontiguousarray(values[:rows])
            digest.update(part if version >= 3 else part.data.cast("B"))
            checked += 1
        attrs = array.attrs.get(FIELD_ATTR)
        expected = attrs.get("fingerprint") if isinstance(attrs, dict) else None
        if ok and expected:
            actual = (
                field_fingerprint(digest.digest(), reader.dtype, array.shape)
                if version >= 2
                else "blake2b:" + digest.hexdigest()
            )
            if actual != expected:
                problems.append(
                    f"field {label}: content fingerprint {actual} differs from the recorded "
                    f"{expected}: the data changed after it was written"
                )
    return {"chunks": total, "chunks_decoded": checked, "ok": not problems}
