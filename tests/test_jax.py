"""JAX adapters on the CPU build of jaxlib: DLPack sharing, 64-bit fields, process shares."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="JAX is not installed: pip install 'gpuds[jax]'")

import gpuds  # noqa: E402
import gpuds.jax as gjax  # noqa: E402
from gpuds.errors import ConfigError  # noqa: E402

N = 600


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("jax")
    rng = np.random.default_rng(0)
    np.save(tmp / "ids.npy", np.arange(N, dtype=np.int64))
    np.save(tmp / "x.npy", rng.normal(size=(N, 16)).astype(np.float32))  # 64 bytes a sample
    np.save(tmp / "big.npy", np.arange(N, dtype=np.int64) * 2**40)  # does not fit in int32
    gpuds.ingest([tmp / "ids.npy", tmp / "x.npy", tmp / "big.npy"], tmp / "raw.zarr")
    gpuds.compress(
        tmp / "raw.zarr", tmp / "data.zarr", settings=gpuds.FieldSettings(chunk_mb=0.004)
    )
    return tmp / "data.zarr"


def test_arrays_equal_the_batch_and_share_its_memory_when_aligned(store: Path):
    loader = gpuds.open(str(store)).loader(32, fields=["ids", "x"], device="cpu")
    for batch in loader:
        arrays = gjax.to_jax(batch)
        assert isinstance(arrays["x"], jax.Array)
        np.testing.assert_array_equal(np.asarray(arrays["x"]), batch["x"])
        np.testing.assert_array_equal(np.asarray(arrays["ids"]), batch["ids"])
        # 32 samples of 64 bytes start every batch on a 64-byte boundary: XLA takes the memory.
        assert batch["x"].ctypes.data % 64 == 0
        assert arrays["x"].unsafe_buffer_pointer() == batch["x"].ctypes.data


def test_64_bit_integers_are_narrowed_only_when_they_fit(store: Path):
    assert not jax.config.read("jax_enable_x64")  # JAX's default, which the checks are about
    batch = next(iter(gpuds.open(str(store)).loader(50, device="cpu")))
    ids = gjax.to_jax({"ids": batch["ids"]})["ids"]
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(np.asarray(ids), batch["ids"])
    # JAX alone would wrap these to 0: gpuds refuses, naming the field and what to do.
    with pytest.raises(ConfigError, match=r"field 'big' is int64 .*jax_enable_x64"):
        gjax.to_jax({"big": batch["big"]})
    with jax.enable_x64(True):
        big = gjax.to_jax({"big": batch["big"]})["big"]
        assert big.dtype == np.int64
        np.testing.assert_array_equal(np.asarray(big), batch["big"])


def test_batches_cover_the_epoch_and_ranks_come_from_jax_processes(
    store: Path, monkeypatch: pytest.MonkeyPatch
):
    ds = gpuds.open(str(store))
    single = gjax.loader(ds, 40, fields=["ids"], device="cpu", drop_last=False)
    assert (single.rank, single.world_size) == (0, 1)
    ids = np.concatenate([np.asarray(b["ids"]) for b in gjax.batches(single)])
    assert sorted(ids.tolist()) == list(range(N))
    monkeypatch.setattr(jax, "process_count", lambda: 3)
    shares = []
    for rank in range(3):
        monkeypatch.setattr(jax, "process_index", lambda rank=rank: rank)
        share = gjax.loader(ds, 40, fields=["ids"], device="cpu")
        assert (share.rank, share.world_size) == (rank, 3)
        shares.append(np.concatenate([np.asarray(b["ids"]) for b in gjax.batches(share)]))
    assert len({len(s) for s in shares}) == 1
    assert len(set(np.concatenate(shares).tolist())) == sum(len(s) for s in shares)


def test_the_jax_training_example_runs(sample_store: Path):
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "examples" / "train_jax.py"), str(sample_store),
         "--epochs", "3", "--batch", "8"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    losses = [float(line.split("loss ")[1].split(",")[0]) for line in lines]
    assert len(losses) == 3 and losses[-1] < losses[0], done.stdout  # it learns
    assert "val accuracy" in lines[-1]


@pytest.mark.gpu
def test_cuda_batches_stay_on_the_device(store: Path):
    from gpuds.backend import probe_cuda

    cp, reason, _ = probe_cuda()
    if cp is None:
        pytest.skip(f"no usable GPU: {reason}")
    if not any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("JAX has no GPU backend here: pip install 'jax[cuda12]' or 'jax[cuda13]'")
    ds = gpuds.open(str(store))
    for got, want in zip(
        gjax.batches(ds.loader(32, fields=["x"], device="cuda")),
        ds.loader(32, fields=["x"], device="cpu"),
        strict=True,
    ):
        assert got["x"].devices().pop().platform == "gpu"
        np.testing.assert_array_equal(np.asarray(got["x"]), want["x"])
