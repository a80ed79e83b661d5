"""PyTorch adapters with the CPU build of torch: DLPack sharing and DataLoader workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import gpuds
from gpuds.torch import GpudsIterableDataset, to_torch

N = 300
# Worker processes start from a fresh server process, not by forking this one: the test process
# runs threads (JAX's, when tests/test_jax.py ran first) that a fork would copy mid-flight.
# It is also the default start method from Python 3.14 on.
WORKERS_CONTEXT = "forkserver"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("torch")
    np.save(tmp / "ids.npy", np.arange(N, dtype=np.int64))
    np.save(tmp / "x.npy", np.random.default_rng(0).normal(size=(N, 4)).astype(np.float32))
    gpuds.ingest([tmp / "ids.npy", tmp / "x.npy"], tmp / "raw.zarr", chunk_mb=0.0005)
    gpuds.compress(
        tmp / "raw.zarr", tmp / "data.zarr", settings=gpuds.FieldSettings(chunk_mb=0.0005)
    )
    return tmp / "data.zarr"


def test_tensors_share_memory_with_the_batch(store: Path):
    batch = next(iter(gpuds.open(str(store)).loader(16, device="cpu")))
    tensors = to_torch(batch)
    assert tensors["x"].dtype == torch.float32 and tensors["ids"].dtype == torch.int64
    assert np.shares_memory(tensors["x"].numpy(), batch["x"])
    batch["x"][0, 0] = 123.0
    assert tensors["x"][0, 0].item() == 123.0


@pytest.mark.parametrize("ranks", [1, 2])
def test_two_worker_dataloader_yields_each_sample_once(store: Path, ranks: int):
    seen = []
    for rank in range(ranks):
        dataset = GpudsIterableDataset(
            str(store), batch_size=8, rank=rank, world_size=ranks, device="cpu", drop_last=False
        )
        dataset.set_epoch(1)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, num_workers=2, multiprocessing_context=WORKERS_CONTEXT
        )
        seen += [int(i) for batch in loader for i in batch["ids"]]
    # N = 300 divides by 2 and by 4 (ranks x workers): nothing is dropped.
    assert sorted(seen) == list(range(N))


def test_epochs_reshuffle_in_workers(store: Path):
    dataset = GpudsIterableDataset(str(store), batch_size=50, device="cpu", fields=["ids"])
    orders = []
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, num_workers=2, multiprocessing_context=WORKERS_CONTEXT
        )
        orders.append(torch.cat([b["ids"] for b in loader]).tolist())
    assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1]


def test_split_selection_and_rank_from_environment(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    config = {"ops": [{"op": "split", "fractions": [0.5, 0.5]}]}
    gpuds.preprocess(store, tmp_path / "p.zarr", config=config)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    dataset = GpudsIterableDataset(
        str(tmp_path / "p.zarr"), split="val", batch_size=10, device="cpu"
    )
    assert (dataset.rank, dataset.world_size) == (1, 2)
    # 150 samples in val, 75 for each rank, all delivered (drop_last=False by default)
    assert sum(len(b["ids"]) for b in dataset) == 75


def test_the_training_example_runs(sample_store: Path):
    import subprocess
    import sys

    root = Path(__file__).parent.parent
    done = subprocess.run(
        [sys.executable, str(root / "examples" / "train_torch.py"), str(sample_store),
         "--epochs", "1", "--batch", "8", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("epoch 0: loss ") and "val accuracy" in done.stdout
