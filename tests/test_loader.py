"""The loader on the CPU path: coverage, ranks, determinism, resume, values, damage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import gpuds
from gpuds.errors import ConfigError, CorruptChunkError, DeviceError
from gpuds.loader import EpochPlan, shuffle_quality

N = 1000


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("loader")
    rng = np.random.default_rng(0)
    np.save(tmp / "ids.npy", np.arange(N, dtype=np.int64))
    np.save(tmp / "x.npy", rng.normal(size=(N, 3, 2)).astype(np.float32))
    np.save(tmp / "y.npy", (np.arange(N) % 7).astype(np.int16))
    gpuds.ingest([tmp / "ids.npy", tmp / "x.npy", tmp / "y.npy"], tmp / "raw.zarr")
    # Small chunks and shards: many units, several shards, a partial last chunk.
    settings = gpuds.FieldSettings(chunk_mb=0.0004, shard_mb=0.003)
    gpuds.compress(tmp / "raw.zarr", tmp / "data.zarr", settings=settings)
    return tmp / "data.zarr"


def _epoch(loader: gpuds.Loader) -> list[dict[str, np.ndarray]]:
    return list(loader)


def _ids(batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([b["ids"] for b in batches]) if batches else np.empty(0, np.int64)


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("batch_size", [32, 1000, 7])
def test_every_sample_exactly_once_per_epoch(
    store: Path, shuffle: bool, drop_last: bool, batch_size: int
):
    loader = gpuds.open(str(store)).loader(
        batch_size, shuffle=shuffle, drop_last=drop_last, seed=3, device="cpu"
    )
    batches = _epoch(loader)
    ids = _ids(batches)
    assert len(batches) == len(loader)
    assert all(len(b["ids"]) == batch_size for b in batches[:-1])
    if drop_last:
        assert len(ids) == (N // batch_size) * batch_size
        assert len(set(ids.tolist())) == len(ids)
    else:
        assert sorted(ids.tolist()) == list(range(N))
    if not shuffle:
        assert (np.diff(ids) == 1).all()


@pytest.mark.parametrize("world_size", [2, 3, 7])
@pytest.mark.parametrize("remainder", ["drop", "pad"])
def test_ranks_are_disjoint_equal_and_change_with_the_epoch(
    store: Path, world_size: int, remainder: str
):
    ds = gpuds.open(str(store))
    per_epoch = []
    for epoch in (0, 1):
        streams = []
        for rank in range(world_size):
            loader = ds.loader(
                10, fields=["ids"], rank=rank, world_size=world_size, drop_last=False,
                remainder=remainder, device="cpu",
            )  # fmt: skip
            loader.set_epoch(epoch)
            streams.append(_ids(_epoch(loader)))
        lengths = {len(s) for s in streams}
        assert len(lengths) == 1, "every rank gets the same number of samples"
        everything = np.concatenate(streams)
        if remainder == "drop":
            assert len(everything) == N - N % world_size
            assert len(set(everything.tolist())) == len(everything), "ranks are disjoint"
        else:
            assert set(everything.tolist()) == set(range(N))
            assert len(everything) == world_size * -(-N // world_size)
        per_epoch.append(streams[0])
    assert not np.array_equal(per_epoch[0], per_epoch[1]), "rank 0's share changes per epoch"


def test_same_seed_and_epoch_same_order_other_epoch_differs(store: Path):
    ds = gpuds.open(str(store))
    a, b = ds.loader(50, seed=5, device="cpu"), ds.loader(50, seed=5, device="cpu")
    first = _ids(_epoch(a))
    np.testing.assert_array_equal(first, _ids(_epoch(b)))
    a.set_epoch(1)
    assert not np.array_equal(first, _ids(_epoch(a)))
    assert not np.array_equal(first, _ids(_epoch(ds.loader(50, seed=6, device="cpu"))))


def test_values_and_dtypes_match_the_store_and_stay_aligned(store: Path):
    import zarr

    group = zarr.open_group(store)
    x, y = group["x"][...], group["y"][...]
    for batch in gpuds.open(str(store)).loader(64, drop_last=False, device="cpu"):
        assert batch["x"].dtype == np.float32 and batch["y"].dtype == np.int16
        np.testing.assert_array_equal(batch["x"], x[batch["ids"]])
        np.testing.assert_array_equal(batch["y"], y[batch["ids"]])


def test_batches_kept_by_the_caller_are_never_overwritten(store: Path):
    # Batches are views of window arrays: later windows and epochs must never write into them.
    import zarr

    x = zarr.open_group(store)["x"][...]
    loader = gpuds.open(str(store)).loader(16, seed=2, shuffle_window=2, device="cpu")
    kept = _epoch(loader)
    want = loader.plan().stream()[: 16 * len(kept)]  # drop_last: the final 8 are not delivered
    for epoch in (1, 2):  # many more windows than the loader holds at once
        loader.set_epoch(epoch)
        for _ in loader:
            pass
    assert len(loader.plan().windows) > 3 * (loader.prefetch + 2)
    np.testing.assert_array_equal(_ids(kept), want)
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in kept]), x[want])


def test_memory_is_bounded_by_prefetch_and_window(tmp_path: Path):
    import tracemalloc

    n, width = 16384, 64  # 256 bytes a sample, 4 MiB in all
    np.save(tmp_path / "v.npy", np.arange(n * width, dtype=np.float32).reshape(n, width))
    gpuds.ingest([tmp_path / "v.npy"], tmp_path / "raw.zarr")
    settings = gpuds.FieldSettings(chunk_mb=0.016, shard_mb=0.5)  # units of 64 samples
    gpuds.compress(tmp_path / "raw.zarr", tmp_path / "data.zarr", settings=settings)
    loader = gpuds.open(str(tmp_path / "data.zarr")).loader(32, device="cpu", workers=2)
    window_bytes = loader.unit * loader.shuffle_window * width * 4
    assert window_bytes * 8 < n * width * 4  # the epoch is much more than a few windows

    def peak(keep: bool) -> int:
        kept = []
        tracemalloc.start()
        try:
            for batch in loader:
                if keep:
                    kept.append(batch)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    # Stated bound (docs/loader.md): (prefetch + 2) windows, plus a batch and small change.
    assert peak(keep=False) <= (loader.prefetch + 2) * window_bytes + 512 * 1024
    assert peak(keep=True) >= n * width * 4  # kept batches keep their windows: it is measured


def test_only_requested_fields(store: Path):
    batch = next(iter(gpuds.open(str(store)).loader(8, fields=["y"], device="cpu")))
    assert list(batch) == ["y"]


@pytest.mark.parametrize("world_size", [1, 3])
def test_resume_mid_epoch_gives_the_remaining_batches(store: Path, world_size: int):
    ds = gpuds.open(str(store))

    def make() -> gpuds.Loader:
        loader = ds.loader(24, seed=9, rank=world_size - 1, world_size=world_size, device="cpu")
        loader.set_epoch(2)
        return loader

    full = _epoch(make())
    interrupted = make()
    it = iter(interrupted)
    head = [next(it) for _ in range(5)]
    state = interrupted.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    rest = _epoch(resumed)
    assert len(head) + len(rest) == len(full)
    for got, want in zip(head + rest, full, strict=True):
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


def test_resume_refuses_a_different_order(store: Path):
    ds = gpuds.open(str(store))
    state = ds.loader(24, seed=1, device="cpu").state_dict()
    with pytest.raises(ConfigError, match="seed=1"):
        ds.loader(24, seed=2, device="cpu").load_state_dict(state)


def test_shuffle_quality_of_the_default_window():
    plan = EpochPlan(20000, unit=128, window=16, shuffle=True, seed=0, epoch=0)
    quality = shuffle_quality(plan.stream())
    # Stated bounds (docs/loader.md): global mixing like a uniform shuffle, local mixing
    # with fewer than 1 in 200 consecutive samples still neighbours.
    assert quality["displacement"] >= 0.9
    assert quality["neighbours"] <= 0.005
    unshuffled = EpochPlan(20000, unit=128, window=16, shuffle=False, seed=0, epoch=0)
    assert shuffle_quality(unshuffled.stream()) == {"displacement": 0.0, "neighbours": 1.0}


def test_truncated_shard_mid_epoch_is_a_clear_error(store: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    shard = sorted((copy / "x" / "c").rglob("*"), key=lambda p: str(p))
    victim = [p for p in shard if p.is_file()][2]
    victim.write_bytes(victim.read_bytes()[:50])
    loader = gpuds.open(str(copy)).loader(16, shuffle=False, device="cpu")
    with pytest.raises(CorruptChunkError, match=r"copy\.zarr field 'x', shard c/\d+/0/0"):
        _epoch(loader)


def test_bad_arguments(store: Path):
    ds = gpuds.open(str(store))
    with pytest.raises(ConfigError, match="batch_size"):
        ds.loader(0)
    with pytest.raises(ConfigError, match="no field"):
        ds.loader(8, fields=["nope"])
    with pytest.raises(ConfigError, match="rank"):
        ds.loader(8, rank=3, world_size=2)
    with pytest.raises(ConfigError, match="remainder"):
        ds.loader(8, remainder="keep")


def test_device_cuda_without_gpu_fails_before_reading(store: Path, monkeypatch: pytest.MonkeyPatch):
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(DeviceError, match="--device cuda was requested"):
        gpuds.open(str(store)).loader(8, device="cuda")


def test_split_store_and_stats(tmp_path: Path, store: Path):
    config = {
        "ops": [{"op": "split", "fractions": [0.5, 0.5]}, {"op": "standardize", "fields": ["x"]}]
    }
    gpuds.preprocess(store, tmp_path / "p.zarr", config=config)
    ds = gpuds.open(str(tmp_path / "p.zarr"))
    assert ds.splits == ["train", "val"]
    with pytest.raises(ConfigError, match="load one split"):
        ds.loader(8)
    train = ds["train"]
    assert len(train) == 500 and train.fields["x"].shape == (3, 2)
    assert set(train.stats["standardize"]["x"]) >= {"mean", "std"}
    with pytest.raises(KeyError, match="no split 'test'"):
        ds["test"]
    assert sum(len(b["ids"]) for b in train.loader(100, device="cpu")) == 500


@pytest.mark.gpu
def test_cuda_batches_equal_cpu_batches(store: Path):
    from gpuds.backend import probe_cuda

    cp, reason, _ = probe_cuda()
    if cp is None:
        pytest.skip(f"no usable GPU: {reason}")
    ds = gpuds.open(str(store))
    gpu = list(ds.loader(64, seed=2, device="cuda"))
    cpu = list(ds.loader(64, seed=2, device="cpu"))
    for got, want in zip(gpu, cpu, strict=True):
        for name in want:
            assert type(got[name]).__module__.startswith("cupy")
            np.testing.assert_array_equal(cp.asnumpy(got[name]), want[name])


def test_fsspec_urls_read_through_zarr_python(store: Path):
    import fsspec

    fs = fsspec.filesystem("memory")
    for path in store.rglob("*"):
        if path.is_file():
            fs.pipe(f"/loader-test.zarr/{path.relative_to(store)}", path.read_bytes())
    remote = gpuds.open("memory://loader-test.zarr")
    local = gpuds.open(str(store))
    got = list(remote.loader(50, seed=1, device="cpu"))
    want = list(local.loader(50, seed=1, device="cpu"))
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        for name in b:
            np.testing.assert_array_equal(a[name], b[name])
