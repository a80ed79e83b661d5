"""The loader's GPU path driven by TEST DOUBLES of CuPy and nvCOMP on the CPU.

This checks the orchestration only: which bytes go to the "device" in how many copies, that
each window's chunks are decoded by one batched call, that partial units and light fields are
handled, and that the batches equal the CPU path's. It is NOT GPU verification: real CuPy and
nvCOMP never run here (see the `gpu`-marked tests and scripts/gpu-check.sh for that).
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gpuds
import gpuds.codecs.nvcomp as nvcomp_module

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


def test_batches_equal_the_cpu_path_with_one_copy_and_one_decode_per_window(
    store: Path, fake_gpu: tuple[Any, Any]
):
    nvcomp, cupy = fake_gpu
    ds = gpuds.open(str(store))
    # One worker: the doubles count calls with plain (not thread-safe) counters.
    gpu = ds.loader(64, seed=4, drop_last=False, shuffle_window=3, device="cuda", workers=1)
    assert isinstance(gpu._gpu_codecs["x"], nvcomp_module.NvcompChunkCodec)
    batches = list(gpu)
    windows = len(gpu.plan().windows)
    # x (32 bytes a sample) sets the unit and decodes on the "device"; ids (8 bytes a sample,
    # longer chunks) is a light field: decoded on the host, one copy per window.
    assert set(gpu._gpu_codecs) == {"x"}
    assert nvcomp.Codec.calls["decode"] == windows
    # Per window: x's payloads in one copy, ids' decoded values (already in delivery order) in
    # one copy, the index of the few header bytes the codec checks (which come back: 1 small
    # copy per window), and x's delivery order for its one gather. Batches are views of the
    # windows. The decoded data never goes back to the host.
    assert cupy.transfers["to_device"] == 4 * windows
    assert cupy.transfers["to_host"] == windows
    cpu = list(ds.loader(64, seed=4, drop_last=False, shuffle_window=3, device="cpu"))
    assert len(cpu) == len(batches)
    for got, want in zip(batches, cpu, strict=True):
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    assert sorted(np.concatenate([b["ids"] for b in batches]).tolist()) == list(range(N))


@pytest.mark.parametrize("field", ["ids", "x"])
def test_a_damaged_chunk_on_the_gpu_path_names_it(
    store: Path, tmp_path: Path, fake_gpu: Any, field: str
):
    import shutil

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


def test_double_is_not_a_gpu():
    assert isinstance(nvcomp_double.FakeCupy(), types.ModuleType)
    cp, reason, _ = gpuds.backend.probe_cuda()
    assert cp is None or "double" not in str(cp), reason
