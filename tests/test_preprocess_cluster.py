"""preprocess on a Dask cluster: the same bytes whatever runs the tasks, and faults."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gpuds
from gpuds.errors import SourceError
from tests.conftest import assert_same_store

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[1]


def _raw(folder: Path, n: int = 1500, seed: int = 0) -> Path:
    """Images with duplicates, labels, and a float feature with NaNs: every kind of op has
    something to do, over many blocks of the small block size the tests use."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, size=(n, 8, 8, 3), dtype=np.uint8)
    images[100:140] = images[0:40]  # duplicates to drop
    feature = rng.normal(10, 3, size=(n, 4))
    feature[::37, 1] = np.nan
    np.save(folder / "images.npy", images)
    np.save(folder / "labels.npy", rng.integers(0, 4, size=n))
    np.save(folder / "feature.npy", feature)
    out = folder / "raw.zarr"
    gpuds.ingest(
        [folder / "images.npy", folder / "labels.npy", folder / "feature.npy"], out, chunk_mb=0.01
    )
    return out


CONFIGS: dict[str, dict[str, Any]] = {
    "image-classification": {
        "ops": [
            {"op": "dedupe", "fields": ["images"]},
            {"op": "shuffle"},
            {
                "op": "split",
                "fractions": {"train": 0.8, "val": 0.1, "test": 0.1},
                "stratify": "labels",
            },
            {"op": "center_crop", "fields": ["images"], "size": [6, 6]},
            {"op": "cast", "fields": ["images"], "dtype": "float32"},
            {"op": "standardize", "fields": ["images"], "per": "channel"},
        ],
    },
    "drops after the split, medians, clipping": {
        "ops": [
            {"op": "split", "fractions": [0.7, 0.3]},
            {"op": "fill_missing", "fields": ["feature"], "strategy": "median"},
            {"op": "clip", "fields": ["feature"], "lower": 1, "upper": 99},
            {"op": "sample", "fraction": 0.9, "stratify": "labels"},
            {"op": "dedupe", "fields": ["images"]},
            {"op": "normalize", "fields": ["feature"]},
        ],
    },
    "split carried through a shuffle": {
        "ops": [
            {"op": "split", "fractions": [0.5, 0.5]},
            {"op": "shuffle"},
            {"op": "drop_invalid", "fields": ["feature"]},
            {"op": "fill_missing", "fields": ["feature"], "strategy": "mean"},
        ],
    },
    "no split": {
        "ops": [
            {"op": "shuffle"},
            {"op": "sample", "count": 1000},
            {"op": "standardize", "fields": ["feature"], "per": "channel"},
        ],
    },
}


def _config(ops: dict[str, Any]) -> dict[str, Any]:
    # Small blocks, chunks and memory: many blocks, chunks shared by blocks, two shuffle buckets.
    return {**ops, "seed": 3, "block_mb": 0.05, "chunk_mb": 0.004, "memory_mb": 0.4}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _raw(tmp_path_factory.mktemp("raw"))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_same_bytes_whatever_the_scheduler(
    name: str, raw: Path, tmp_path: Path, dask_cluster: Any
):
    config = _config(CONFIGS[name])
    reference = gpuds.preprocess(raw, tmp_path / "threads.zarr", config=config)
    assert reference["scheduler"] == "threads"
    assert reference["samples_out"] > 0
    shuffles = [e["stats"] for e in reference["stats"]["ops"] if "buckets" in e["stats"]]
    assert all(s["buckets"] >= 2 for s in shuffles), "the shuffle should use several buckets"
    for workers in (1, 2, 3):
        out = tmp_path / f"dask-{workers}.zarr"
        summary = gpuds.preprocess(raw, out, config=config, scheduler=dask_cluster(workers))
        assert_same_store(tmp_path / "threads.zarr", out)
        assert summary["ops"] == reference["ops"] and summary["splits"] == reference["splits"]
    gpuds.inspect(tmp_path / "threads.zarr", verify=True)  # fingerprints hold


def test_the_pipeline_reads_what_it_was_given(raw: Path, tmp_path: Path, dask_cluster: Any):
    """Not only the same bytes: the right ones. Every output sample is an input sample moved
    (the index says from where), dedupe dropped exactly the copies, the split is exact."""
    import zarr

    config = _config(
        {
            "ops": [
                {"op": "dedupe", "fields": ["images"]},
                {"op": "shuffle"},
                {"op": "split", "fractions": [0.8, 0.2]},
            ]
        }
    )
    gpuds.preprocess(raw, tmp_path / "p.zarr", config=config, scheduler=dask_cluster(2))
    images = np.load(raw.parent / "images.npy")
    group = zarr.open_group(tmp_path / "p.zarr", mode="r")
    seen = [group[s]["images"][...] for s in ("train", "val")]
    assert [len(s) for s in seen] == [1168, 292]  # 1460 unique, 80/20
    rows = {r.tobytes() for r in images.reshape(len(images), -1)}
    out = np.concatenate(seen).reshape(1460, -1)
    assert len({r.tobytes() for r in out}) == 1460 and all(r.tobytes() in rows for r in out)
    assert not np.array_equal(seen[0][:50], images[:50]), "shuffled"


def test_a_killed_worker_changes_nothing(raw: Path, tmp_path: Path):
    config = _config(CONFIGS["image-classification"])
    gpuds.preprocess(raw, tmp_path / "threads.zarr", config=config)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        pids = list(client.run(os.getpid).values())
        killed = threading.Event()

        class KillOnce:
            def start(self, description: str, total: int | None) -> None:
                pass

            def advance(self, amount: int) -> None:
                if not killed.is_set():
                    killed.set()
                    os.kill(pids[0], signal.SIGKILL)

            def note(self, message: str) -> None:
                pass

        gpuds.preprocess(
            raw,
            tmp_path / "dask.zarr",
            config=config,
            scheduler=cluster.scheduler_address,
            progress=KillOnce(),
        )
    assert killed.is_set()
    assert_same_store(tmp_path / "threads.zarr", tmp_path / "dask.zarr")


def test_a_task_that_fails_on_bad_data_fails_the_stage_and_leaves_nothing(
    tmp_path: Path, dask_cluster: Any
):
    values = np.ones((300, 2))
    values[250, 1] = np.inf
    np.save(tmp_path / "x.npy", values)
    gpuds.ingest([tmp_path / "x.npy"], tmp_path / "raw.zarr")
    out = tmp_path / "out" / "p.zarr"
    out.parent.mkdir()
    config = {"ops": [{"op": "standardize", "fields": ["x"]}], "block_mb": 0.001}
    with pytest.raises(SourceError, match="field 'x' holds ±inf values"):
        gpuds.preprocess(tmp_path / "raw.zarr", out, config=config, scheduler=dask_cluster(2))
    assert list(out.parent.iterdir()) == []


@pytest.mark.gpu
def test_one_worker_per_gpu_writes_what_one_gpu_writes(raw: Path, tmp_path: Path):
    """``--scheduler cuda``: each worker runs its tasks on its own GPU; the output equals the one
    a single GPU in this process writes. Unverified here: no machine of this project has a GPU."""
    from gpuds.backend import probe_cuda

    cp, reason, _ = probe_cuda()
    if cp is None:
        pytest.skip(f"no usable GPU: {reason}")
    pytest.importorskip("dask_cuda", reason="dask-cuda is in the GPU extras")
    config = _config(CONFIGS["image-classification"])
    gpuds.preprocess(raw, tmp_path / "one.zarr", config=config, device="cuda")
    gpuds.preprocess(raw, tmp_path / "all.zarr", config=config, device="cuda", scheduler="cuda")
    assert_same_store(tmp_path / "one.zarr", tmp_path / "all.zarr")


def test_a_bucket_output_on_a_cluster_is_the_local_one_and_leaves_no_scratch(
    s3: Any, raw: Path, tmp_path: Path, dask_cluster: Any
):
    """The workers write chunks and the pieces of shared chunks straight into the bucket (the
    shuffle's buckets go to TMPDIR, which a local cluster shares); nothing temporary is left."""
    import json

    # The workers were started without this test's AWS_* variables: all comes with the options.
    options = {
        "endpoint": s3.endpoint,
        "access_key_id": "testing",
        "secret_access_key": "testing",
        "region": "us-east-1",
    }
    config = _config(CONFIGS["image-classification"])
    gpuds.preprocess(raw, tmp_path / "local.zarr", config=config)
    url = f"{s3.url}/prep.zarr"
    gpuds.preprocess(raw, url, config=config, scheduler=dask_cluster(2), storage_options=options)
    keys = s3.keys("prep.zarr/")
    assert not [k for k in keys if "__gpuds_work" in k]
    client = s3.client()
    local = sorted(
        str(p.relative_to(tmp_path / "local.zarr"))
        for p in (tmp_path / "local.zarr").rglob("*")
        if p.is_file()
    )
    assert sorted(k.removeprefix("prep.zarr/") for k in keys) == local
    for rel in local:
        if rel == "zarr.json":
            continue
        body = client.get_object(Bucket=s3.bucket, Key=f"prep.zarr/{rel}")["Body"].read()
        assert body == (tmp_path / "local.zarr" / rel).read_bytes(), rel
    root = json.loads(client.get_object(Bucket=s3.bucket, Key="prep.zarr/zarr.json")["Body"].read())
    local_root = json.loads((tmp_path / "local.zarr" / "zarr.json").read_text())
    assert (
        root["attributes"]["gpuds"]["fingerprint"]
        == local_root["attributes"]["gpuds"]["fingerprint"]
    )


def test_the_shuffles_permute_task_can_run_again(tmp_path: Path):
    """A cluster reruns the task of a worker that died, perhaps after it did part of its work:
    the shuffle's permute gives the same files when run again, after a partial run or a whole
    one. (The join of shared chunks only reads its pieces: they are deleted after the pass.)"""
    from gpuds.ops import Block, Spec, make_op
    from gpuds.ops.base import BarrierInput

    values = np.arange(600, dtype=np.float32).reshape(200, 3)
    op = make_op({"op": "shuffle"}, "ops[0]", seed=1)
    at = BarrierInput(tmp_path / "work", 200, 2000.0, False)
    units = op.barrier_begin({"x": Spec(np.dtype("float32"), (3,))}, at)
    assert units >= 2
    scattered = [
        op.barrier_scatter(Block({"x": values[a : a + 50]}, np.arange(a, a + 50), None, key))
        for key, a in enumerate(range(0, 200, 50))
    ]
    (tmp_path / "work" / "bucket-00000" / "x.bin.new").write_bytes(b"left by a dead worker")
    first = [op.barrier_gather(u, scattered) for u in range(units)]
    files = {p: p.read_bytes() for p in (tmp_path / "work").rglob("*.bin")}
    assert [op.barrier_gather(u, scattered) for u in range(units)] == first  # after completion
    assert {p: p.read_bytes() for p in (tmp_path / "work").rglob("*.bin")} == files
    shuffled = np.concatenate([b.fields["x"] for b in op.barrier_end(scattered, first).blocks(64)])
    assert sorted(shuffled[:, 0].tolist()) == values[:, 0].tolist()


def test_a_task_that_cannot_see_the_input_says_why(tmp_path: Path):
    from gpuds.errors import StoreError
    from gpuds.passes import StoreBlocks

    gone = StoreBlocks(str(tmp_path / "gone.zarr"), (), ("", ""), "run", ("x",), 10, 4)
    with pytest.raises(StoreError, match=r"gone.zarr: no such file or folder on .*shared filesyst"):
        gone.read((0, 4), 0)
