"""Fuzz the chunk service and the metadata readers with random and mutated inputs.

Inputs: random and mutated chunk payloads (with and without a valid crc32c, headers that lie
about sizes, decompression bombs, other codecs' streams), random shard indexes (with and without
a valid CRC: offsets and sizes out of range, huge, overlapping, half empty), and mutated
``zarr.json`` documents of a field and of the root (empty, truncated, garbage, wrong types, huge
or negative shapes, wrong dtypes, unknown codecs, bad chunk and shard shapes), either edited alone
or edited together with the record the store keeps of them (so that they get past the
cross-check and reach the readers behind it).

For every input: ``gpuds.open`` and one loader epoch per split, every chunk read straight through
:class:`~gpuds.chunks.FieldChunks`, ``gpuds.inspect(verify=True)`` and ``gpuds inspect --verify``
never crash, hang or raise anything but a :class:`~gpuds.GpudsError` with a one-line message;
``inspect`` reports a problem unless the data still reads back exactly as written. Inputs that
declare huge sizes run in subprocesses under an address-space limit.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import pytest
import zarr

import gpuds
from gpuds import CodecConfig, FieldSettings, GpudsError
from gpuds.chunks import FieldChunks
from gpuds.store import iter_fields

N = 200
BATCH = 50
FIELDS = ("f", "ids", "u", "x")
EMPTY = 2**64 - 1
TRIAL_SECONDS = 5.0
SUBPROCESS_SECONDS = 10.0
ADDRESS_SPACE = 2 * 2**30


@dataclass(frozen=True)
class Bases:
    stores: dict[str, Path]
    original: dict[str, np.ndarray]
    splits: dict[str, np.ndarray]

    def want(self, split: str) -> dict[str, np.ndarray]:
        if not split:
            return self.original
        return {name: values[self.splits[split]] for name, values in self.original.items()}


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> Bases:
    root = tmp_path_factory.mktemp("integrity-fuzz")
    rng = np.random.default_rng(20)
    original = {
        "ids": np.arange(N, dtype=np.int64),
        "x": rng.integers(-1000, 1000, (N, 6)).astype(np.int16),
        "f": np.cumsum(rng.normal(size=(N, 4)), axis=0).astype(np.float32),
        "u": rng.integers(0, 8, (N, 2, 5)).astype(np.uint8),
    }
    src = root / "src"
    src.mkdir()
    for name, values in original.items():
        np.save(src / f"{name}.npy", values)
    stores = {"raw": root / "raw.zarr"}
    gpuds.ingest(sorted(src.iterdir()), stores["raw"], chunk_mb=0.0005)
    for codec, shuffle in [("zstd", True), ("lz4", False), ("gzip", True), ("none", False)]:
        name = f"{codec}-{'shuffle' if shuffle else 'plain'}"
        stores[name] = root / f"{name}.zarr"
        settings = FieldSettings(CodecConfig(codec, None, shuffle), chunk_mb=0.0005, shard_mb=0.002)
        gpuds.compress(stores["raw"], stores[name], settings=settings, device="cpu")
    config = {"ops": [{"op": "split", "fractions": {"train": 0.6, "val": 0.4}}], "seed": 1}
    gpuds.preprocess(stores["raw"], root / "split-raw.zarr", config=config, device="cpu")
    stores["split"] = root / "split.zarr"
    settings = FieldSettings(CodecConfig("zstd", None, False), chunk_mb=0.0005, shard_mb=0.002)
    gpuds.compress(root / "split-raw.zarr", stores["split"], settings=settings, device="cpu")
    group = zarr.open_group(stores["split"], mode="r")
    splits = {name: np.asarray(group[f"{name}/ids"][...]) for name in ("train", "val")}
    return Bases(stores, original, splits)


# -- the property ---------------------------------------------------------------------------


def _one_line(error: BaseException, what: str) -> None:
    text = str(error).strip()
    assert text and "\n" not in text, (
        f"{what}: {type(error).__name__} message not one line: {text!r}"
    )


def _epochs(store: Path, what: str) -> dict[str, dict[str, np.ndarray]] | None:
    """Open and run one loader epoch per split; None when a GpudsError stopped it."""
    try:
        dataset = gpuds.open(str(store))
        parts = {split: dataset[split] for split in dataset.splits} or {"": dataset}
        got = {}
        for split, part in parts.items():
            batches = list(part.loader(BATCH, shuffle=False, device="cpu"))
            got[split] = {
                name: np.concatenate([np.asarray(b[name]) for b in batches]) for name in part.arrays
            }
        return got
    except GpudsError as e:
        _one_line(e, what)
        return None
    except Exception as e:
        raise AssertionError(f"{what}: loader raised {type(e).__name__}: {e}") from e


def _chunk_service(store: Path, what: str) -> None:
    """Every chunk of every field read straight through FieldChunks: a GpudsError or values of
    the declared shape and dtype."""
    try:
        group = gpuds.open_store(str(store))
    except GpudsError as e:
        _one_line(e, what)
        return
    arrays = [(f"{s}/{n}" if s else n, a) for s, n, a in iter_fields(group)]
    for label, array in arrays:
        try:
            chunks = FieldChunks(array, f"{store} field '{label}'")
            for index in range(chunks.nchunks):
                try:
                    values = chunks.read(index)
                except GpudsError as e:
                    _one_line(e, what)
                    continue
                assert values.shape == (chunks.chunk, *chunks.sample_shape), what
                assert values.dtype == chunks.dtype, what
        except GpudsError as e:
            _one_line(e, what)
        except AssertionError:
            raise
        except Exception as e:
            raise AssertionError(f"{what}: FieldChunks raised {type(e).__name__}: {e}") from e


def _inspect(store: Path, what: str) -> list[str]:
    try:
        problems = list(gpuds.inspect(str(store), verify=True)["problems"])
    except GpudsError as e:
        _one_line(e, what)
        return [str(e)]
    except Exception as e:
        raise AssertionError(f"{what}: inspect raised {type(e).__name__}: {e}") from e
    assert all(p.strip() and "\n" not in p.strip() for p in problems), (what, problems)
    return problems


def _check(store: Path, bases: Bases, cli: Any, what: str) -> bool:
    """The fuzz property for one input (``cli``: also ``gpuds inspect --verify``, in-process);
    True when inspect reported a problem."""
    started = time.monotonic()
    delivered = _epochs(store, what)
    _chunk_service(store, what)
    problems = _inspect(store, what)
    if not problems:  # fine only if the data is still exactly what was written
        assert delivered is not None, f"{what}: inspect finds no problem, the loader fails"
        for split, got in delivered.items():
            want = bases.want(split)
            assert sorted(got) == sorted(want), what
            for name, values in want.items():
                assert got[name].dtype == values.dtype, f"{what}: {name} dtype {got[name].dtype}"
                assert got[name].tobytes() == values.tobytes(), f"{what}: wrong values in {name}"
    if cli is not None:
        result = cli("inspect", "--verify", store)
        assert result.code == (1 if problems else 0), (what, result.code, result.err)
        lines = [line for line in result.err.splitlines() if line.strip()]
        assert all(line.startswith("error: ") for line in lines), (what, lines)
    elapsed = time.monotonic() - started
    assert elapsed < TRIAL_SECONDS, f"{what}: took {elapsed:.1f} s"
    return bool(problems)


# -- stored bytes ---------------------------------------------------------------------------


def _crc(data: bytes) -> bytes:
    return google_crc32c.value(data).to_bytes(4, "little")


def _meta(store: Path, field: str) -> dict[str, Any]:
    return dict(json.loads((store / field / "zarr.json").read_text()))


def _per_shard(meta: dict[str, Any]) -> int | None:
    codec = meta["codecs"][0]
    if codec["name"] != "sharding_indexed":
        return None
    shard = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
    return int(shard // codec["configuration"]["chunk_shape"][0])


def _chunk_nbytes(meta: dict[str, Any]) -> int:
    codec = meta["codecs"][0]
    shape = (
        codec["configuration"]["chunk_shape"]
        if codec["name"] == "sharding_indexed"
        else meta["chunk_grid"]["configuration"]["chunk_shape"]
    )
    return int(np.prod(shape)) * np.dtype(meta["data_type"]).itemsize


def _read_shard(data: bytes, per_shard: int) -> tuple[list[bytes | None], np.ndarray]:
    index = np.frombuffer(data[-(16 * per_shard + 4) : -4], dtype="<u8").reshape(-1, 2)
    payloads = [
        None if offset == EMPTY else data[offset : offset + nbytes]
        for offset, nbytes in index.tolist()
    ]
    return payloads, index


def _write_index(body: bytes, index: np.ndarray, valid_crc: bool = True) -> bytes:
    raw = np.ascontiguousarray(index, dtype="<u8").tobytes()
    crc = _crc(raw) if valid_crc else os.urandom(4)
    return body + raw + crc


def _join_shard(payloads: list[bytes | None]) -> bytes:
    index = np.full((len(payloads), 2), EMPTY, dtype="<u8")
    body = b""
    for i, payload in enumerate(payloads):
        if payload is not None:
            index[i] = (len(body), len(payload))
            body += payload
    return _write_index(body, index)


def _objects(store: Path) -> list[tuple[str, Path]]:
    splits = [""] if (store / FIELDS[0]).is_dir() else ["train", "val"]
    return [
        (f"{split}/{field}" if split else field, path)
        for split in splits
        for field in FIELDS
        for path in sorted((store / split / field / "c").rglob("*"))
        if path.is_file()
    ]


def _copy(source: Path, target: Path) -> Path:
    """A copy of a store whose files are hard links: edit them only through :func:`_rewrite`."""
    shutil.copytree(source, target, copy_function=os.link)
    return target


def _rewrite(path: Path, data: bytes | str) -> None:
    """Replace a file of a :func:`_copy` without touching the store it was copied from."""
    path.unlink()
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)


@contextmanager
def _replaced(path: Path, data: bytes) -> Iterator[None]:
    original = path.read_bytes()
    _rewrite(path, data)
    try:
        yield
    finally:
        _rewrite(path, original)


def _zstd_header(content_size: int) -> bytes:
    """A zstd frame header (single segment, 8-byte content size) declaring ``content_size``."""
    return (0xFD2FB528).to_bytes(4, "little") + bytes([0xE0]) + content_size.to_bytes(8, "little")


def _zstd_rle_bomb(blocks: int) -> bytes:
    """A zstd frame without a content size whose RLE blocks expand to 128 KiB each."""
    header = (0xFD2FB528).to_bytes(4, "little") + bytes([0x00, 0x58])
    block = (0 | (1 << 1) | (128 * 1024 << 3)).to_bytes(3, "little") + b"\x07"
    last = (1 | (1 << 1) | (128 * 1024 << 3)).to_bytes(3, "little") + b"\x07"
    return header + block * (blocks - 1) + last


_GZIP_BOMB = gzip.compress(bytes(4_000_000), compresslevel=9)[:4096]
"""The first 4 KiB of a gzip member of 4 MB of zeros (fits in a chunk's payload limit)."""


def _fuzzed_payload(rng: random.Random, stored: bytes, chunk_nbytes: int) -> tuple[str, bytes]:
    """A replacement for one stored chunk (its encoded bytes and crc32c)."""
    body = stored[:-4]
    noise = rng.randbytes(rng.randrange(0, 2 * chunk_nbytes + 16))
    kind = rng.choice(
        ["random", "random+crc", "mutated+crc", "mutated+crc", "exact+crc", "header+crc", "empty"]
    )
    if kind == "random":
        return kind, noise
    if kind == "random+crc":
        return kind, noise + _crc(noise)
    if kind == "exact+crc":  # decodes as codec "none": valid, but not the data written
        data = rng.randbytes(chunk_nbytes)
        return kind, data + _crc(data)
    if kind == "empty":
        return kind, rng.choice([b"", _crc(b""), b"\0\0\0"])
    if kind == "mutated+crc":
        edited = bytearray(body)
        for _ in range(rng.randint(1, 8)):
            op = rng.choice(["flip", "insert", "delete", "truncate"])
            at = rng.randrange(len(edited) + 1)
            if op == "flip" and at < len(edited):
                edited[at] ^= 1 << rng.randrange(8)
            elif op == "insert":
                edited[at:at] = rng.randbytes(rng.randint(1, 16))
            elif op == "delete":
                del edited[at : at + rng.randint(1, 16)]
            else:
                del edited[at:]
        return kind, bytes(edited) + _crc(bytes(edited))
    header = rng.choice(
        [
            _zstd_header(2**40),
            _zstd_header(2**62),
            _zstd_header(chunk_nbytes),  # the right size, then garbage
            _zstd_header(0),
            _zstd_rle_bomb(1000),
            (2**32 - 1).to_bytes(4, "little"),  # lz4 size prefix
            (2**31).to_bytes(4, "little"),
            chunk_nbytes.to_bytes(4, "little"),
            _GZIP_BOMB,
            gzip.compress(bytes(chunk_nbytes * 3)),  # too long a member
            gzip.compress(rng.randbytes(chunk_nbytes))[:-4] + (2**31).to_bytes(4, "little"),
        ]
    )
    data = header + rng.randbytes(rng.randrange(0, 64))
    return kind, data + _crc(data)


# -- chunk payloads and shard indexes -------------------------------------------------------


def test_random_and_mutated_chunk_payloads(bases: Bases, cli: Any):
    rng = random.Random(11)
    names = sorted(bases.stores)
    reported = 0
    trials = 60
    for trial in range(trials):
        store = bases.stores[rng.choice(names)]
        field, path = rng.choice(_objects(store))
        meta = _meta(store, field)
        per_shard = _per_shard(meta)
        original = path.read_bytes()
        if per_shard is None:
            kind, data = _fuzzed_payload(rng, original, _chunk_nbytes(meta))
            where = f"chunk {path.relative_to(store)}"
        else:
            payloads, _ = _read_shard(original, per_shard)
            inner = rng.choice([i for i, p in enumerate(payloads) if p is not None])
            kind, payloads[inner] = _fuzzed_payload(
                rng, payloads[inner] or b"", _chunk_nbytes(meta)
            )
            data = _join_shard(payloads)
            where = f"shard {path.relative_to(store)} inner chunk {inner}"
        with _replaced(path, data):
            what = f"trial {trial}: {kind} payload in {where}"
            reported += _check(store, bases, cli if trial % 5 == 0 else None, what)
    assert reported >= 0.9 * trials, reported


def _fuzzed_index(rng: random.Random, index: np.ndarray, data_end: int) -> np.ndarray:
    fuzzed = index.copy()
    for i in range(len(fuzzed)):
        offset = rng.randrange(data_end + 1)
        fuzzed[i] = rng.choice(
            [
                tuple(index[i]),
                (EMPTY, EMPTY),
                (EMPTY, rng.randrange(data_end + 1)),
                (rng.randrange(data_end + 1), EMPTY),
                (offset, rng.randrange(data_end - offset + 1)),  # in range
                (offset, 0),
                (offset, min(4, data_end - offset)),
                (rng.randrange(2**64), rng.randrange(2**64)),
                (0, 2**62),
                (2**62, 8),
                (2**64 - 2, 1),
                (data_end, 2**64 - data_end),  # offset + size wraps around 2**64
                tuple(index[rng.randrange(len(index))]),  # overlapping / duplicate
            ]
        )
    return fuzzed


def test_random_shard_indexes(bases: Bases, cli: Any):
    rng = random.Random(12)
    names = sorted(n for n in bases.stores if n != "raw")
    reported = 0
    trials = 40
    for trial in range(trials):
        store = bases.stores[rng.choice(names)]
        field, path = rng.choice(_objects(store))
        per_shard = _per_shard(_meta(store, field))
        assert per_shard is not None
        original = path.read_bytes()
        size = 16 * per_shard + 4
        body = original[:-size]
        _, index = _read_shard(original, per_shard)
        kind = rng.choice(["random bytes", "random bytes, valid crc", "fuzzed entries"] + [""] * 3)
        if kind == "random bytes":
            data = body + rng.randbytes(size)
        elif kind == "random bytes, valid crc":
            raw = rng.randbytes(size - 4)
            data = body + raw + _crc(raw)
        else:
            kind = "fuzzed entries, valid crc"
            data = _write_index(body, _fuzzed_index(rng, index, len(body)))
        with _replaced(path, data):
            what = f"trial {trial}: {kind} as index of {path}"
            reported += _check(store, bases, cli if trial % 5 == 0 else None, what)
    assert reported >= 0.8 * trials, reported


# -- metadata -------------------------------------------------------------------------------


Mutation = Callable[[dict[str, Any]], None]


def _set(*keys: Any, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return mutate


def _drop(key: str) -> Mutation:
    return lambda doc: doc.pop(key)


def _in_codecs(old: str, new: str) -> Mutation:
    """Replace text in the JSON of the codec chain (inner chains included)."""

    def mutate(doc: dict[str, Any]) -> None:
        doc["codecs"] = json.loads(json.dumps(doc["codecs"]).replace(old, new))

    return mutate


def _sharding(key: str, value: Any) -> Mutation:
    return lambda doc: doc["codecs"][0]["configuration"].__setitem__(key, value)


def _shape0(value: Any) -> Mutation:
    return lambda doc: doc["shape"].__setitem__(0, value)


def _chunk0(value: Any) -> Mutation:
    return lambda doc: doc["chunk_grid"]["configuration"]["chunk_shape"].__setitem__(0, value)


def _inner_chunk0(value: Any) -> Mutation:
    return lambda doc: doc["codecs"][0]["configuration"]["chunk_shape"].__setitem__(0, value)


def _inner_chunk0_times_shard(factor: int) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        _inner_chunk0(factor * doc["chunk_grid"]["configuration"]["chunk_shape"][0])(doc)

    return mutate


def _similar_dtype(doc: dict[str, Any]) -> None:
    """The same size, another meaning: what issue 10 saw believed (uint8 -> int8)."""
    doc["data_type"] = {"int16": "uint16", "uint8": "int8"}[doc["data_type"]]


# (name, mutation, which fields): applied to the sharded "x" (int16) of the zstd store and to
# the unsharded "u" (uint8) of the ingest store.
FIELD_MUTATIONS: list[tuple[str, Mutation, str]] = [
    ("shape 1000", _shape0(1000), "both"),
    ("shape 0", _shape0(0), "both"),
    ("shape -5", _shape0(-5), "both"),
    ("shape 1.5", _shape0(1.5), "both"),
    ("shape string", _shape0("200"), "both"),
    ("shape rank 1", _set("shape", value=[200]), "both"),
    ("shape null", _set("shape", value=None), "both"),
    ("dtype of the same size", _similar_dtype, "both"),
    ("dtype float32", _set("data_type", value="float32"), "both"),
    ("dtype bogus", _set("data_type", value="bogus"), "both"),
    ("dtype object", _set("data_type", value={"name": "x"}), "both"),
    ("chunk 0", _chunk0(0), "both"),
    ("chunk -1", _chunk0(-1), "both"),
    ("chunk 7", _chunk0(7), "both"),
    ("chunk 64", _chunk0(64), "both"),
    ("chunk rank", _set("chunk_grid", "configuration", "chunk_shape", value=[32]), "both"),
    ("chunk grid unknown", _set("chunk_grid", "name", value="rectilinear"), "both"),
    ("key encoding v2", _set("chunk_key_encoding", value={"name": "v2"}), "both"),
    (
        "key separator .",
        _set("chunk_key_encoding", "configuration", value={"separator": "."}),
        "both",
    ),
    ("unknown codec", _in_codecs('"crc32c"', '"crc99"'), "both"),
    ("zstd -> gzip", _in_codecs('"zstd"', '"gzip"'), "both"),
    ("lz4 -> zstd", _in_codecs('"numcodecs.lz4"', '"zstd"'), "both"),
    ("no crc32c", _in_codecs(', {"name": "crc32c"}', ""), "both"),
    ("codecs empty", _set("codecs", value=[]), "both"),
    ("codecs null", _set("codecs", value=None), "both"),
    ("no codecs", _drop("codecs"), "both"),
    ("fill NaN", _set("fill_value", value="NaN"), "both"),
    ("fill huge", _set("fill_value", value=2**70), "both"),
    ("node group", _set("node_type", value="group"), "both"),
    ("zarr_format 2", _set("zarr_format", value=2), "both"),
    ("storage transformer", _set("storage_transformers", value=[{"name": "x"}]), "both"),
    ("endian big", _in_codecs('"little"', '"big"'), "both"),
    ("inner chunk 48", _inner_chunk0(48), "sharded"),
    ("inner chunk 0", _inner_chunk0(0), "sharded"),
    ("inner chunk -32", _inner_chunk0(-32), "sharded"),
    ("inner chunk = shard", _inner_chunk0_times_shard(1), "sharded"),
    ("inner chunk 2x shard", _inner_chunk0_times_shard(2), "sharded"),
    ("index at start", _sharding("index_location", "start"), "sharded"),
    ("index no crc", _sharding("index_codecs", [{"name": "bytes"}]), "sharded"),
    ("shuffle elementsize 3", _in_codecs('"elementsize": 2', '"elementsize": 3'), "sharded"),
]


def _field_cases() -> Iterator[Any]:
    """Each mutation edited alone (caught by the cross-check with the record, whatever it is:
    once, on the sharded field) and edited with its record (on both fields)."""
    for name, mutation, where in FIELD_MUTATIONS:
        for store, field, recorded in [
            ("zstd-shuffle", "x", False),
            ("zstd-shuffle", "x", True),
            ("raw", "u", True),
        ]:
            if where == "sharded" and store == "raw":
                continue
            marks: list[Any] = []
            yield pytest.param(
                store,
                field,
                mutation,
                recorded,
                id=f"{store}-{field}-{name}{'-recorded' if recorded else ''}",
                marks=marks,
            )


def _edit_field(store: Path, field: str, mutate: Callable[..., None], recorded: bool) -> bool:
    """Apply ``mutate`` to the field's zarr.json (and to the root's record of it); False when
    it changed nothing."""
    path = store / field / "zarr.json"
    doc = json.loads(path.read_text())
    before = copy.deepcopy(doc)
    mutate(doc)
    if doc == before:
        return False
    _rewrite(path, json.dumps(doc))
    if recorded:
        root = json.loads((store / "zarr.json").read_text())
        info = root["attributes"]["gpuds"]
        info["arrays"][field] = {k: v for k, v in doc.items() if k != "attributes"}
        _rewrite(store / "zarr.json", json.dumps(root))
    return True


@pytest.mark.parametrize(("store", "field", "mutation", "recorded"), list(_field_cases()))
def test_mutated_field_metadata(
    bases: Bases, tmp_path: Path, cli: Any, store: str, field: str, mutation: Any, recorded: bool
):
    copy_ = _copy(bases.stores[store], tmp_path / "s.zarr")
    if not _edit_field(copy_, field, mutation, recorded):
        pytest.skip("the mutation does not apply to this field")
    # The command line too where the edited metadata reaches the report it renders.
    reported = _check(copy_, bases, cli if recorded and store != "raw" else None, "zarr.json")
    # Edited alone, it disagrees with the record; edited with it, it may still read the same
    # (e.g. an unknown storage transformer, which zarr-python ignores): _check compared values.
    assert reported or recorded


_GARBAGE = {
    "empty": lambda text: b"",
    "truncated": lambda text: text[: len(text) // 2],
    "one byte short": lambda text: text.rstrip()[:-1],
    "garbage": lambda text: b"\xff\xfe\x00garbage\x80",
    "not utf-8": lambda text: text.replace(b'"', b'"\xff', 1),
    "null": lambda text: b"null",
    "a list": lambda text: b"[1, 2]",
    "a number": lambda text: b"1e999",
    "deep nesting": lambda text: b"[" * 100_000 + b"]" * 100_000,
    "duplicated": lambda text: text + text,
}


@pytest.mark.parametrize("damage", sorted(_GARBAGE))
@pytest.mark.parametrize("which", ["root", "x", "train"])
def test_unreadable_zarr_json(bases: Bases, tmp_path: Path, cli: Any, which: str, damage: str):
    source = bases.stores["split" if which == "train" else "zstd-shuffle"]
    store = _copy(source, tmp_path / "s.zarr")
    path = store / "zarr.json" if which == "root" else store / which / "zarr.json"
    _rewrite(path, _GARBAGE[damage](path.read_bytes()))
    assert _check(store, bases, cli, f"{which} zarr.json: {damage}")  # always a problem


def _attr(**changes: Any) -> Mutation:
    """Change the store's ``gpuds`` attribute."""
    return lambda root: root["attributes"]["gpuds"].update(changes)


def _record(field: str, value: Any) -> Mutation:
    """Replace the store's record of a field (``arrays``)."""
    return lambda root: root["attributes"]["gpuds"]["arrays"].__setitem__(field, value)


def _edit_record(field: str, **changes: Any) -> Mutation:
    return lambda root: root["attributes"]["gpuds"]["arrays"][field].update(changes)


# (which stores, mutation of the root zarr.json)
ROOT_MUTATIONS: list[Any] = [
    pytest.param("both", _attr(complete=False), id="complete false"),
    pytest.param("both", _attr(complete="true"), id="complete string"),
    pytest.param("both", lambda root: root["attributes"]["gpuds"].pop("complete"), id="no mark"),
    pytest.param("both", _attr(format_version=99), id="format 99"),
    pytest.param("both", _attr(format_version="2"), id="format string"),
    pytest.param("both", _attr(format_version=1.5), id="format float"),
    pytest.param("both", _attr(format_version=None), id="format null"),
    pytest.param("both", lambda root: root["attributes"]["gpuds"].pop("arrays"), id="no record"),
    pytest.param("both", _attr(arrays=[1]), id="arrays a list"),
    pytest.param("both", _attr(arrays={}), id="arrays empty"),
    pytest.param("flat", _record("x", None), id="record null"),
    pytest.param("flat", _record("x", "x"), id="record string"),
    pytest.param("flat", _edit_record("x", data_type="int8"), id="record dtype"),
    pytest.param("flat", _edit_record("x", shape=[2**40, 6]), id="record shape"),
    pytest.param("both", _record("zz", {"shape": [1]}), id="record extra"),
    pytest.param("both", _attr(num_samples=1000), id="num_samples 1000"),
    pytest.param("both", _attr(num_samples=-1), id="num_samples -1"),
    pytest.param("both", _attr(num_samples=True), id="num_samples bool"),
    pytest.param("split", _attr(split_sizes={"train": 10, "val": 190}), id="split sizes wrong"),
    pytest.param("split", _attr(split_sizes={"train": -120, "val": 320}), id="split size < 0"),
    pytest.param("split", _attr(split_sizes=[120, 80]), id="split sizes list"),
    pytest.param(
        "split",
        _attr(split_sizes={"train": "120", "val": 80}),
        id="split size string",
    ),
    pytest.param(
        "split",
        _attr(splits=["train", "val", "test"]),
        id="splits one more",
    ),
    pytest.param("split", _attr(splits=["train", "val", 3]), id="splits non-string"),
    pytest.param("flat", _attr(splits=["train"]), id="splits on a flat store"),
    pytest.param("both", _attr(splits="train"), id="splits a string"),
    pytest.param("both", lambda root: root["attributes"].update(gpuds=[1]), id="gpuds a list"),
    pytest.param("both", lambda root: root.update(attributes=None), id="attributes null"),
    pytest.param("both", lambda root: root.update(attributes=[1]), id="attributes a list"),
    pytest.param("both", lambda root: root.update(node_type="array"), id="node array"),
    pytest.param("both", lambda root: root.update(zarr_format=2), id="zarr_format 2"),
    pytest.param("both", lambda root: root.update(zarr_format=None), id="zarr_format null"),
]


@pytest.mark.parametrize("kind", ["flat", "split"])
@pytest.mark.parametrize(("applies", "mutation"), ROOT_MUTATIONS)
def test_mutated_root_metadata(
    bases: Bases, tmp_path: Path, cli: Any, kind: str, applies: str, mutation: Any
):
    if applies not in ("both", kind):
        pytest.skip(f"applies to {applies} stores")
    store = _copy(bases.stores["split" if kind == "split" else "zstd-shuffle"], tmp_path / "s.zarr")
    root = json.loads((store / "zarr.json").read_text())
    mutation(root)
    _rewrite(store / "zarr.json", json.dumps(root))
    assert _check(store, bases, cli, "root zarr.json")


# -- huge declared sizes, in subprocesses under an address-space limit ----------------------


def _huge(
    store: Path,
    fields: list[str],
    *,
    shape0: int | None = None,
    chunk0: int | None = None,
    sample: int | None = None,
    recorded: bool = True,
) -> None:
    """Declare huge sizes in the fields' zarr.json (and, ``recorded``, in the store's record of
    them and its sample count, so that they get past the cross-check)."""
    root = json.loads((store / "zarr.json").read_text())
    info = root["attributes"]["gpuds"]
    for field in fields:
        path = store / field / "zarr.json"
        doc = json.loads(path.read_text())
        sharding = doc["codecs"][0]["configuration"] if _per_shard(doc) else None
        if shape0 is not None:
            doc["shape"][0] = shape0
        if chunk0 is not None:
            doc["chunk_grid"]["configuration"]["chunk_shape"][0] = chunk0
            if sharding:
                sharding["chunk_shape"][0] = chunk0
        if sample is not None:
            doc["shape"][1] = doc["chunk_grid"]["configuration"]["chunk_shape"][1] = sample
            if sharding:
                sharding["chunk_shape"][1] = sample
        _rewrite(path, json.dumps(doc))
        if recorded:
            info["arrays"][field] = {k: v for k, v in doc.items() if k != "attributes"}
    if recorded and shape0 is not None:
        info["num_samples"] = shape0
    _rewrite(store / "zarr.json", json.dumps(root))


def _num_samples(store: Path, value: int) -> None:
    root = json.loads((store / "zarr.json").read_text())
    root["attributes"]["gpuds"]["num_samples"] = value
    _rewrite(store / "zarr.json", json.dumps(root))


# name: (base store, how to make it huge, marks)
HUGE: dict[str, tuple[str, Callable[[Path], None], Any]] = {
    "one field 2**40, edited only": (
        "raw",
        lambda s: _huge(s, ["x"], shape0=2**40, recorded=False),
        [],
    ),
    "one field 2**62, edited only": (
        "zstd-shuffle",
        lambda s: _huge(s, ["f"], shape0=2**62, recorded=False),
        [],
    ),
    "all fields 2**40, recorded": (
        "zstd-shuffle",
        lambda s: _huge(s, list(FIELDS), shape0=2**40),
        [],
    ),
    "all fields 2**64, recorded": (
        "raw",
        lambda s: _huge(s, list(FIELDS), shape0=2**64),
        [],
    ),
    "chunks of 2**40 samples, recorded": ("raw", lambda s: _huge(s, ["x"], chunk0=2**40), []),
    "shards of 2**40 samples, recorded": (
        "zstd-shuffle",
        lambda s: _huge(s, ["x"], chunk0=2**40),
        [],
    ),
    "samples of 2**30 values, recorded": (
        "zstd-shuffle",
        lambda s: _huge(s, ["u"], sample=2**30),
        [],
    ),
    "num_samples 2**62": ("zstd-shuffle", lambda s: _num_samples(s, 2**62), []),
}

_LOADER_SCRIPT = textwrap.dedent(
    """
    import json, signal, sys, time
    import gpuds

    def too_long(*args):
        raise TimeoutError("still running after %s s" % sys.argv[1])

    signal.signal(signal.SIGALRM, too_long)
    for path in sys.argv[2:]:
        started = time.monotonic()
        signal.alarm(int(sys.argv[1]))
        try:
            dataset = gpuds.open(path)
            for part in [dataset[s] for s in dataset.splits] or [dataset]:
                for batch in part.loader(50, device="cpu"):
                    pass
            outcome = ["delivered", ""]
        except gpuds.GpudsError as e:
            outcome = ["GpudsError", str(e)]
        except BaseException as e:
            outcome = [type(e).__name__, str(e)[:1000]]
        finally:
            signal.alarm(0)
        print(json.dumps([path, *outcome, time.monotonic() - started]), flush=True)
    """
)


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _run_limited(args: list[str], timeout: float) -> tuple[int | None, str, str]:
    """Run ``args`` under the address-space limit: exit code (None: killed at ``timeout``),
    stdout and stderr."""
    env = dict(os.environ, MALLOC_ARENA_MAX="2")  # per-thread malloc arenas eat address space
    try:
        done = subprocess.run(
            args,
            capture_output=True,
            text=True,
            env=env,
            preexec_fn=_limit_address_space,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        return None, "", err
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def huge_results(
    bases: Bases, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], Any]:
    """Every huge case, made once: ``gpuds inspect --verify`` in a subprocess each, and one
    subprocess running a loader epoch of each in turn (each bounded by an alarm)."""
    root = tmp_path_factory.mktemp("huge")
    stores = {}
    for i, (name, (base, make, _)) in enumerate(HUGE.items()):
        stores[name] = _copy(bases.stores[base], root / f"{i}.zarr")
        make(stores[name])
    seconds = int(SUBPROCESS_SECONDS)
    loader = [sys.executable, "-c", _LOADER_SCRIPT, str(seconds), *map(str, stores.values())]
    with ThreadPoolExecutor(max_workers=3) as pool:
        epochs = pool.submit(_run_limited, loader, SUBPROCESS_SECONDS * len(stores))
        inspected = {
            name: pool.submit(
                _run_limited,
                [sys.executable, "-m", "gpuds", "inspect", "--verify", str(store)],
                SUBPROCESS_SECONDS,
            )
            for name, store in stores.items()
        }
        results: dict[tuple[str, str], Any] = {
            (name, "inspect"): future.result() for name, future in inspected.items()
        }
        code, out, err = epochs.result()
    lines = [json.loads(line) for line in out.splitlines()]
    by_path = {line[0]: line[1:] for line in lines}
    for name, store in stores.items():
        results[(name, "loader")] = by_path.get(str(store), [f"no result (exit {code})", err, 0])
    return results


@pytest.mark.parametrize("name", [pytest.param(n, marks=HUGE[n][2]) for n in HUGE])
def test_huge_declared_sizes_cli_inspect_fails_fast_with_one_line(
    huge_results: dict[Any, Any], name: str
):
    code, _, err = huge_results[(name, "inspect")]
    assert code is not None, f"still running after {SUBPROCESS_SECONDS} s: {err[-500:]}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and lines, f"exit {code}: {err[-2000:]}"
    assert all(line.startswith("error: ") for line in lines), lines[-20:]


@pytest.mark.parametrize("name", [pytest.param(n, marks=HUGE[n][2]) for n in HUGE])
def test_huge_declared_sizes_loader_fails_fast_with_one_line(
    huge_results: dict[Any, Any], name: str
):
    outcome, message, seconds = huge_results[(name, "loader")]
    assert outcome == "GpudsError", f"{outcome}: {message}"
    assert message.strip() and "\n" not in message.strip(), message
    assert seconds < TRIAL_SECONDS, seconds
