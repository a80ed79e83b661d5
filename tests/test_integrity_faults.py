"""Fault injection: a damaged store raises CorruptChunkError or delivers exactly what was written.

Small stores are built once per module: one written by ``ingest`` (unsharded chunks) and one per
portable codec written by ``compress`` (sharded; zstd, lz4, gzip and none, byte shuffle on and
off; ints and floats). Each trial of a seeded loop damages one stored object of one of them
(deletes it, flips 1-8 random bits in a shard's payload or index or in a chunk, or truncates it),
reads the store through one reader and puts the object back. The property, for every trial and
every reader (the CPU loader in store order and shuffled, the GPU loader path driven by the
CuPy/nvCOMP test doubles, the loader reading through fsspec, ``inspect(verify=True)``, and
``preprocess``/``compress`` reading the damaged store as their input): the reader raises a
``CorruptChunkError`` naming the damaged field and object, or delivers exactly the original
data; never anything else.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import gpuds
from gpuds import CodecConfig, FieldSettings
from gpuds.errors import CorruptChunkError

N = 300
BATCH = 48
FIELDS = ("f", "ids", "u", "x")
CODECS = [
    (codec, shuffle) for codec in ("zstd", "lz4", "gzip", "none") for shuffle in (True, False)
]
PREPROCESS = {
    "ops": [
        {"op": "shuffle"},
        {"op": "split", "fractions": {"train": 0.8, "val": 0.2}},
        {"op": "standardize", "fields": ["f"]},
    ],
    "seed": 5,
}
RECOMPRESS = FieldSettings(CodecConfig("zstd", None, True), chunk_mb=0.001, shard_mb=0.004)


@dataclass(frozen=True)
class Bases:
    stores: dict[str, Path]
    original: dict[str, np.ndarray]
    splits: dict[str, np.ndarray]  # the ids of each split of the split store

    def want(self, split: str) -> dict[str, np.ndarray]:
        """What a split (or, for ``""``, an unsplit store) holds."""
        if not split:
            return self.original
        return {name: values[self.splits[split]] for name, values in self.original.items()}


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> Bases:
    root = tmp_path_factory.mktemp("integrity-faults")
    rng = np.random.default_rng(10)
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
    raw = root / "raw.zarr"
    # Tiny chunks (32-64 samples) and shards (128-256 samples): several chunks and shards per
    # field, a partial last chunk, and a last shard with empty index entries.
    gpuds.ingest(sorted(src.iterdir()), raw, chunk_mb=0.0005)
    stores = {"raw": raw}
    for codec, shuffle in CODECS:
        name = f"{codec}-{'shuffle' if shuffle else 'plain'}"
        settings = FieldSettings(CodecConfig(codec, None, shuffle), chunk_mb=0.0005, shard_mb=0.002)
        gpuds.compress(raw, root / f"{name}.zarr", settings=settings, device="cpu")
        stores[name] = root / f"{name}.zarr"
    # A split store: errors must name the split too.
    split = {"ops": [{"op": "split", "fractions": {"train": 0.7, "val": 0.3}}], "seed": 2}
    gpuds.preprocess(raw, root / "split-raw.zarr", config=split, device="cpu")
    settings = FieldSettings(CodecConfig("lz4", None, True), chunk_mb=0.0005, shard_mb=0.002)
    gpuds.compress(root / "split-raw.zarr", root / "split.zarr", settings=settings, device="cpu")
    stores["split"] = root / "split.zarr"
    group = zarr.open_group(root / "split.zarr", mode="r")
    splits = {name: np.asarray(group[f"{name}/ids"][...]) for name in ("train", "val")}
    return Bases(stores, original, splits)


# -- damage ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Damage:
    store: Path
    field: str  # "x", or "train/x" in a split store
    key: str  # the damaged object, relative to its field: "c/1/0"
    what: str
    changed: bool  # False when flips cancelled out (the same bit twice)

    @property
    def split(self) -> str:
        return self.field.rpartition("/")[0]

    def __str__(self) -> str:
        return f"{self.store.name} {self.field}/{self.key}: {self.what}"


def _index_nbytes(store: Path, field: str) -> int | None:
    """Size of the shard index of ``field`` (None when its chunks are not sharded)."""
    meta = json.loads((store / field / "zarr.json").read_text())
    codec = meta["codecs"][0]
    if codec["name"] != "sharding_indexed":
        return None
    shard = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
    return 16 * (shard // codec["configuration"]["chunk_shape"][0]) + 4


def _objects(store: Path) -> list[tuple[str, Path]]:
    """``(field, path)`` of every stored chunk or shard."""
    splits = [""] if (store / FIELDS[0]).is_dir() else ["train", "val"]
    return [
        (f"{split}/{field}" if split else field, path)
        for split in splits
        for field in FIELDS
        for path in sorted((store / split / field / "c").rglob("*"))
        if path.is_file()
    ]


@contextmanager
def damaged(store: Path, rng: random.Random) -> Iterator[Damage]:
    """Damage one random stored object of ``store`` for the duration of the block."""
    field, path = rng.choice(_objects(store))
    key = path.relative_to(store / field).as_posix()
    original = path.read_bytes()
    index = _index_nbytes(store, field)
    kind = rng.choice(["delete", "flip", "flip", "truncate"])
    data = bytearray(original)
    if kind == "delete":
        path.unlink()
        what = "deleted"
    elif kind == "truncate":
        data = data[: rng.randrange(len(data))]
        what = f"truncated to {len(data)} of {len(original)} bytes"
    else:
        lo, hi, region = 0, len(data), "chunk"
        if index is not None:
            region = rng.choice(["payload", "index"])
            lo, hi = (0, len(data) - index) if region == "payload" else (len(data) - index, hi)
        flips = [(rng.randrange(lo, hi), rng.randrange(8)) for _ in range(rng.randint(1, 8))]
        for offset, bit in flips:
            data[offset] ^= 1 << bit
        what = f"{region} bits flipped at {flips}"
    if kind != "delete":
        path.write_bytes(bytes(data))
    try:
        yield Damage(store, field, key, what, kind == "delete" or bytes(data) != original)
    finally:
        path.write_bytes(original)


def _assert_names(error: BaseException, damage: Damage, store: str) -> None:
    """The error is one line naming the store, the field and the damaged object."""
    message = str(error)
    assert "\n" not in message.strip(), f"{damage}: message of several lines: {message!r}"
    assert store in message, f"{damage}: store not named in {message!r}"
    assert f"field '{damage.field}'" in message, f"{damage}: field not named in {message!r}"
    assert re.search(rf"\b(chunk|shard) {re.escape(damage.key)}\b", message), (
        f"{damage}: object not named in {message!r}"
    )


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], damage: Any) -> None:
    assert sorted(got) == sorted(want), f"{damage}: fields {sorted(got)}"
    for name, values in want.items():
        assert got[name].dtype == values.dtype, f"{damage}: {name} dtype {got[name].dtype}"
        assert got[name].shape == values.shape, f"{damage}: {name} shape {got[name].shape}"
        assert got[name].tobytes() == values.tobytes(), f"{damage}: wrong values in {name}"


def _raises_or_delivers(
    read: Callable[[], dict[str, np.ndarray]], want: Any, d: Damage, store: str = ""
) -> bool:
    """Run ``read``; True when it raised CorruptChunkError (naming ``store``, by default the
    damaged one), False when it delivered ``want``."""
    try:
        got = read()
    except CorruptChunkError as e:
        _assert_names(e, d, store or str(d.store))
        return True
    except Exception as e:
        raise AssertionError(f"{d}: {type(e).__name__} instead of CorruptChunkError: {e}") from e
    _assert_same(got, want, d)
    return False


def _run_trials(
    bases: Bases, seed: int, trials: int, check: Callable[[Damage], bool], stores: Any = None
) -> None:
    rng = random.Random(seed)
    names = sorted(stores or bases.stores)
    raised = changed = 0
    for _ in range(trials):
        with damaged(bases.stores[rng.choice(names)], rng) as damage:
            raised += check(damage)
            changed += damage.changed
    # Every byte of a stored object is covered by a checksum (a chunk's crc32c or the shard
    # index's), so every change is noticed; this also proves the trials damaged something.
    assert raised == changed >= 0.9 * trials, (raised, changed, trials)


# -- readers --------------------------------------------------------------------------------


def _epoch(
    store: Path | str, split: str = "", *, shuffle: bool, device: str = "cpu"
) -> dict[str, np.ndarray]:
    """One epoch of every field, in store order (a shuffled epoch is sorted back by ``ids``)."""
    dataset = gpuds.open(str(store))
    dataset = dataset[split] if split else dataset
    loader = dataset.loader(BATCH, shuffle=shuffle, seed=3, shuffle_window=2, device=device)
    batches = [{k: np.asarray(v) for k, v in batch.items()} for batch in loader]
    got = {name: np.concatenate([b[name] for b in batches]) for name in FIELDS}
    if shuffle:
        order = np.argsort(got["ids"], kind="stable")  # the split's ids are increasing
        got = {name: values[order] for name, values in got.items()}
    return got


def _outputs(store: Path) -> dict[str, np.ndarray]:
    """Everything a stage's output holds that must not depend on damage it survived: every
    array, and the fingerprint, statistics and splits it recorded (as arrays of their JSON)."""
    group = zarr.open_group(store, mode="r")
    info = group.attrs["gpuds"]
    values = {
        key: np.array(json.dumps(info.get(key), sort_keys=True))
        for key in ("fingerprint", "stats", "splits", "split_sizes", "num_samples")
    }
    for name, array in group.arrays():
        values[name] = np.asarray(array[...])
    for split, sub in group.groups():
        for name, array in sub.arrays():
            values[f"{split}/{name}"] = np.asarray(array[...])
    return values


def _run_stage(stage: str, source: Path, out: Path) -> None:
    if stage == "preprocess":
        gpuds.preprocess(source, out, config=PREPROCESS, device="cpu")
    else:
        gpuds.compress(source, out, settings=RECOMPRESS, device="cpu")


# -- the property, per reader ---------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [False, True], ids=["store-order", "shuffled"])
def test_cpu_loader_raises_or_delivers_the_original(bases: Bases, shuffle: bool):
    def check(damage: Damage) -> bool:
        return _raises_or_delivers(
            lambda: _epoch(damage.store, damage.split, shuffle=shuffle),
            bases.want(damage.split),
            damage,
        )

    _run_trials(bases, seed=1 + shuffle, trials=60, check=check)


def test_gpu_loader_path_raises_or_delivers_the_original(bases: Bases, fake_gpu: Any):
    rng = random.Random(3)

    def check(damage: Damage) -> bool:
        shuffle = rng.random() < 0.5
        return _raises_or_delivers(
            lambda: _epoch(damage.store, damage.split, shuffle=shuffle, device="cuda"),
            bases.want(damage.split),
            damage,
        )

    _run_trials(bases, seed=4, trials=50, check=check)
    assert fake_gpu[0].Codec.calls["decode"] > 0, "no window was decoded by the nvCOMP double"


def test_loader_through_fsspec_raises_or_delivers_the_original(bases: Bases):
    """The chunk service's other source: any zarr-python store (here fsspec's memory file
    system), read with ranged gets."""
    import fsspec

    fs = fsspec.filesystem("memory")
    count = 0

    def check(damage: Damage) -> bool:
        nonlocal count
        count += 1
        url = f"memory://integrity-faults-{count}.zarr"
        for path in damage.store.rglob("*"):
            if path.is_file():
                fs.pipe(f"{url}/{path.relative_to(damage.store).as_posix()}", path.read_bytes())
        try:
            return _raises_or_delivers(
                lambda: _epoch(url, damage.split, shuffle=True),
                bases.want(damage.split),
                damage,
                store=url,
            )
        finally:
            fs.rm(url, recursive=True)

    _run_trials(bases, seed=8, trials=30, check=check)


def test_inspect_verify_reports_every_damage(bases: Bases):
    def check(damage: Damage) -> bool:
        try:
            problems = gpuds.inspect(str(damage.store), verify=True)["problems"]
        except Exception as e:
            raise AssertionError(f"{damage}: inspect raised {type(e).__name__}: {e}") from e
        if not problems:
            # Fine only if nothing readable changed.
            got = _epoch(damage.store, damage.split, shuffle=False)
            _assert_same(got, bases.want(damage.split), damage)
            return False
        assert all("\n" not in p for p in problems), problems
        assert any(
            f"field '{damage.field}'" in p and re.search(rf"\b{re.escape(damage.key)}\b", p)
            for p in problems
        ), f"{damage}: no problem names it: {problems}"
        return True

    _run_trials(bases, seed=5, trials=50, check=check)


@pytest.mark.parametrize("stage", ["preprocess", "compress"])
def test_stages_reading_a_damaged_input_raise_or_write_what_they_would_have(
    bases: Bases, tmp_path: Path, stage: str
):
    # preprocess reads unsplit stores only; compress reads the split one too
    inputs = ["raw", "zstd-shuffle", "lz4-plain", "gzip-shuffle", "none-plain"]
    if stage == "compress":
        inputs.append("split")
    baseline = {}
    for name in inputs:
        _run_stage(stage, bases.stores[name], tmp_path / f"baseline-{name}.zarr")
        baseline[name] = _outputs(tmp_path / f"baseline-{name}.zarr")
    # The comparison below needs a stage that writes the same output from the same input.
    _run_stage(stage, bases.stores["raw"], tmp_path / "again.zarr")
    _assert_same(_outputs(tmp_path / "again.zarr"), baseline["raw"], "a rerun")
    by_path = {bases.stores[name]: name for name in inputs}
    count = 0

    def check(damage: Damage) -> bool:
        nonlocal count
        count += 1
        folder = tmp_path / f"trial-{count}"
        folder.mkdir()
        out = folder / "out.zarr"
        want = baseline[by_path[damage.store]]

        def run() -> dict[str, np.ndarray]:
            _run_stage(stage, damage.store, out)
            return _outputs(out)

        try:
            raised = _raises_or_delivers(run, want, damage)
            if raised:
                leftovers = [p.name for p in folder.iterdir()]
                assert leftovers == [], f"{damage}: {stage} left {leftovers} behind"
            return raised
        finally:
            shutil.rmtree(folder)

    _run_trials(bases, seed=6 + (stage == "compress"), trials=15, check=check, stores=inputs)


# -- the reproductions of issue 10 ----------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_missing_chunk_of_an_ingest_store_makes_the_loader_raise_naming_field_and_chunk(
    tmp_path: Path, request: pytest.FixtureRequest, device: str
):
    if device == "cuda":
        request.getfixturevalue("fake_gpu")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(1, 256, (2000, 16), np.uint8))
    gpuds.ingest([tmp_path / "x.npy"], tmp_path / "raw.zarr", chunk_mb=0.008)  # 512 a chunk
    (tmp_path / "raw.zarr" / "x" / "c" / "1" / "0").unlink()
    loader = gpuds.open(str(tmp_path / "raw.zarr")).loader(100, shuffle=False, device=device)
    with pytest.raises(CorruptChunkError) as caught:
        list(loader)
    message = str(caught.value)
    assert "\n" not in message
    assert re.search(r"missing chunk in \S+raw\.zarr field 'x', chunk c/1/0\b", message), message


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_flipping_one_payload_byte_of_a_compressed_shard_raises_on_the_cpu_loader(
    tmp_path: Path, codec: str
):
    values = np.cumsum(np.random.default_rng(1).normal(size=(2000, 16)), axis=0).astype("f4")
    np.save(tmp_path / "x.npy", values)
    gpuds.ingest([tmp_path / "x.npy"], tmp_path / "raw.zarr")
    settings = FieldSettings(CodecConfig(codec, None, False), chunk_mb=0.008, shard_mb=0.04)
    gpuds.compress(tmp_path / "raw.zarr", tmp_path / "c.zarr", settings=settings, device="cpu")
    shard = tmp_path / "c.zarr" / "x" / "c" / "1" / "0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x10  # inside the payload of an inner chunk (not a frame header)
    shard.write_bytes(bytes(data))
    loader = gpuds.open(str(tmp_path / "c.zarr")).loader(100, shuffle=False, device="cpu")
    with pytest.raises(CorruptChunkError, match="crc32c checksum mismatch") as caught:
        list(loader)
    assert re.search(r"in \S+c\.zarr field 'x', shard c/1/0 inner chunk \d+", str(caught.value))
