"""The loader's GPU path driven by TEST DOUBLES of CuPy and nvCOMP on the CPU.

This checks the orchestration only: which bytes go to the "device" in how many copies, that
each window's chunks are decoded by one batched call on the worker's own stream, with several
workers at once, that partial units, light fields and the nvCOMP-only codecs are handled, and
that the batches equal the CPU path's. It is NOT GPU verification: real CuPy and nvCOMP never run
here (see the `gpu`-marked tests and scripts/gpu-check.sh for that). The double mirrors nvCOMP's
documented behaviour; where the docs leave ``buffer_sizes`` open, tests run under both readings.
"""

from __future__ import annotations

import json
import shutil
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gpuds
from gpuds.codecs.zarr_nvcomp import NvcompCodec

from . import nvcomp_double

N = 1000


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("gpu-double")
    rng = np.random.default_rng(1)
    np.save(tmp / "ids.npy", np.arange(N, dtype=np.int64))
    np.save(tmp / "x.npy", np.cumsum(rng.normal(size=(N, 8)), axis=0).astype(np.float32))
    gpuds.ingest([tmp / "ids.npy", tmp / "x.npy"], tmp / "raw.zarr")
    settings = gpuds.FieldSettings(
        gpuds.CodecConfig("zstd", 3, True), chunk_mb=0.002, shard_mb=0.01
    )
    per_field = {"ids": gpuds.FieldSettings(gpuds.CodecConfig("lz4", None, False), chunk_mb=0.002)}
    gpuds.compress(tmp / "raw.zarr", tmp / "data.zarr", settings=settings, per_field=per_field)
    return tmp / "data.zarr"


def _cpu_batches(store: Path, epoch: int = 0, **options: Any) -> list[dict[str, np.ndarray]]:
    loader = gpuds.open(str(store)).loader(64, device="cpu", **options)
    loader.set_epoch(epoch)
    return list(loader)


def _assert_same(got: list[dict[str, Any]], want: list[dict[str, np.ndarray]]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert set(a) == set(b)
        for name in b:
            np.testing.assert_array_equal(a[name], b[name])


def test_one_worker_sends_each_window_in_one_copy_and_decodes_it_in_one_call(
    store: Path, fake_gpu: tuple[Any, Any]
):
    nvcomp, cupy = fake_gpu
    options = {"seed": 4, "drop_last": False, "shuffle_window": 3}
    gpu = gpuds.open(str(store)).loader(64, device="cuda", workers=1, **options)
    batches = list(gpu)
    windows = gpu.plan().windows
    # x (32 bytes a sample) sets the unit and decodes on the "device", one batched call a window
    # holding all its units; ids (8 bytes a sample, longer chunks) is a light field: decoded on
    # the host.
    decodes = [entry for entry in nvcomp.Codec.log if entry["op"] == "decode"]
    assert [d["batch"] for d in decodes] == [len(w.units) for w in windows]
    # Per window: x's payloads in one copy (sizes checked on the host before it), ids' decoded
    # values (already in delivery order) in one copy, and x's delivery order for its one
    # gather. Batches are views of the windows; nothing comes back to the host.
    assert cupy.transfers == {"to_device": 3 * len(windows)}
    _assert_same(batches, _cpu_batches(store, **options))
    assert sorted(np.concatenate([b["ids"] for b in batches]).tolist()) == list(range(N))


@pytest.mark.parametrize("reported", ["capacity", "decoded"])
def test_several_workers_decode_windows_at_once_each_on_its_own_stream(
    store: Path, fake_gpu: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch, reported: str
):
    nvcomp, _ = fake_gpu
    nvcomp.Codec.BUFFER_SIZES = reported  # what buffer_sizes says after decode(out=...)
    decode = nvcomp.Codec.decode

    def slow_decode(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.01)  # long enough for the workers' windows to overlap
        return decode(self, *args, **kwargs)

    monkeypatch.setattr(nvcomp.Codec, "decode", slow_decode)
    options = {"seed": 7, "shuffle_window": 2}
    gpu = gpuds.open(str(store)).loader(64, device="cuda", workers=4, prefetch=3, **options)
    for epoch in (0, 1):
        gpu.set_epoch(epoch)
        _assert_same(list(gpu), _cpu_batches(store, epoch=epoch, **options))
    log = [entry for entry in nvcomp.Codec.log if entry["op"] == "decode"]
    assert len(log) == 2 * len(gpu.plan().windows)
    assert len({entry["thread"] for entry in log}) > 1, "the windows never overlapped"
    # Each call ran on its thread's own (non-default) stream, the one its codec was made for;
    # the double refuses a codec used from another thread than its own.
    for entry in log:
        assert entry["codec_stream"] == entry["current_stream"] != 0


@pytest.mark.parametrize("field", ["ids", "x"])
def test_a_damaged_chunk_on_the_gpu_path_names_it(
    store: Path, tmp_path: Path, fake_gpu: Any, field: str
):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    shard = sorted(p for p in (copy / field / "c").rglob("*") if p.is_file())[0]
    data = bytearray(shard.read_bytes())
    if field == "ids":
        data[0:4] = (10**6).to_bytes(4, "little")  # the lz4 size prefix of chunk 0 lies
    else:
        data[5] ^= 0x01  # the zstd frame's content size of chunk 0 no longer matches
    shard.write_bytes(bytes(data))
    with pytest.raises(gpuds.GpudsError, match=rf"corrupt chunk in .*field '{field}', shard c/0"):
        list(gpuds.open(str(copy)).loader(64, shuffle=False, device="cuda"))


# -- the nvCOMP-only codecs ----------------------------------------------------------------


@pytest.fixture
def nvcomp_only_store(tmp_path: Path, fake_gpu: tuple[Any, Any]) -> tuple[Path, np.ndarray]:
    """A store compressed with ``cascaded`` on the "GPU" (the double's stand-in bitstream):
    ``counts`` int32 without shuffle, so nvCOMP's data_type is the field's."""
    counts = np.cumsum(np.random.default_rng(2).integers(0, 3, (N, 4)), axis=0).astype(np.int32)
    np.save(tmp_path / "counts.npy", counts)
    gpuds.ingest([tmp_path / "counts.npy"], tmp_path / "raw.zarr")
    settings = gpuds.FieldSettings(
        gpuds.CodecConfig("cascaded", 2, False), chunk_mb=0.002, shard_mb=0.01
    )
    summary = gpuds.compress(
        tmp_path / "raw.zarr", tmp_path / "c.zarr", settings=settings, device="cuda"
    )
    assert summary["device"] == "cuda" and summary["verified"]
    return tmp_path / "c.zarr", counts


def test_nvcomp_only_store_records_the_data_type_decoding_needs(
    nvcomp_only_store: tuple[Path, np.ndarray],
):
    path, _ = nvcomp_only_store
    meta = json.loads((path / "counts" / "zarr.json").read_text())
    (sharding,) = meta["codecs"]
    inner = [c for c in sharding["configuration"]["codecs"] if c["name"] == "gpuds.nvcomp"]
    assert inner == [
        {
            "name": "gpuds.nvcomp",
            "configuration": {"algorithm": "cascaded", "level": 2, "data_type": "<i4"},
        }
    ]


def test_nvcomp_only_fields_decode_in_batches_never_through_zarr_per_chunk(
    nvcomp_only_store: tuple[Path, np.ndarray],
    fake_gpu: tuple[Any, Any],
    monkeypatch: pytest.MonkeyPatch,
):
    path, counts = nvcomp_only_store
    nvcomp, _ = fake_gpu

    async def per_chunk(*args: Any) -> Any:
        raise AssertionError("zarr-python decoded a gpuds.nvcomp chunk")

    monkeypatch.setattr(NvcompCodec, "_decode_single", per_chunk)
    nvcomp.Codec.log.clear()
    loader = gpuds.open(str(path)).loader(100, shuffle=False, device="cuda", workers=2)
    got = np.concatenate([b["counts"] for b in loader])
    np.testing.assert_array_equal(got, counts)
    decodes = [e for e in nvcomp.Codec.log if e["op"] == "decode"]
    assert len(decodes) == len(loader.plan().windows)
    made = {c.kwargs["algorithm"]: c.kwargs for c in nvcomp.Codec.instances}
    assert made["Cascaded"]["data_type"] == "<i4" and made["Cascaded"]["compression_level"] == 2
    # Host reads (inspect --verify, stages reading their input) batch a shard per call.
    nvcomp.Codec.log.clear()
    reader = gpuds.open(str(path)).arrays["counts"]
    from gpuds.chunks import FieldChunks

    chunks = FieldChunks(reader, "c.zarr 'counts'")
    np.testing.assert_array_equal(chunks.read_range(0, N), counts)
    calls = [e for e in nvcomp.Codec.log if e["op"] == "decode"]
    assert len(calls) == chunks.nobjects and calls[0]["batch"] == chunks.per_shard
    report = gpuds.inspect(str(path), verify=True)
    assert not report["problems"], report["problems"]


def test_the_recorded_data_type_is_the_one_decoding_uses(tmp_path: Path, fake_gpu: Any):
    """A chain without ``data_type`` (stores written before it was recorded) was written with
    bytes (``|u1``): an int32 field of it must be decoded with ``|u1``, not with the ``<i4``
    its dtype would give today. The double refuses a stand-in stream decoded with another
    data_type than it was written with (for Cascaded the docs say the options must match)."""
    import zarr

    from gpuds.chunks import FieldChunks

    values = np.arange(4096, dtype=np.int32).reshape(1024, 4)
    array = zarr.create_array(
        tmp_path / "old.zarr", shape=values.shape, chunks=(256, 4), dtype="<i4",
        compressors=[NvcompCodec(algorithm="cascaded")],
    )  # fmt: skip
    assert array.metadata.to_dict()["codecs"][-1]["configuration"]["data_type"] == "|u1"
    array[...] = values  # encoded chunk by chunk through zarr-python's codec, on the "GPU"
    chunks = FieldChunks(zarr.open_array(tmp_path / "old.zarr", mode="r"), "old.zarr")
    assert chunks.config == gpuds.CodecConfig("cascaded", None, False, "|u1")
    np.testing.assert_array_equal(chunks.read_range(0, 1024), values)


def test_double_is_not_a_gpu():
    assert isinstance(nvcomp_double.FakeCupy(), types.ModuleType)
    cp, reason, _ = gpuds.backend.probe_cuda()
    assert cp is None or "double" not in str(cp), reason
