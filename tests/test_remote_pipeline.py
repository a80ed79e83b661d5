"""The quick start's pipeline bucket to bucket on a real S3 API server (moto on 127.0.0.1):
every stage reads and writes ``s3://`` URLs, zarr-python reads the result equal to the input,
and a loader epoch from ``gpuds.open("s3://...")`` delivers every sample exactly once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpuds

from .conftest import S3, plain_zarr_read

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def raw_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick start's raw files (4 images a class)."""
    data = tmp_path_factory.mktemp("raw") / "sample"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_sample.py"), str(data), "--per-class", "4"],
        check=True, capture_output=True,
    )  # fmt: skip
    return data


_PLAIN_READER = """
import sys, numpy as np, zarr
url, endpoint, out = sys.argv[1:]
group = zarr.open_group(url, mode="r", storage_options={"endpoint_url": endpoint, "anon": False})
arrays = {}
def walk(g, prefix):
    for name, arr in g.arrays():
        arrays[prefix + name] = arr[...]
    for name, sub in g.groups():
        walk(sub, prefix + name + "/")
walk(group, "")
assert not any(m == "gpuds" or m.startswith("gpuds.") for m in sys.modules), "gpuds imported"
np.savez(out, **{k.replace("/", "__"): v for k, v in arrays.items()})
"""


def _plain_zarr(url: str, endpoint: str, tmp_path: Path) -> dict[str, np.ndarray]:
    """Every array of the store read by plain zarr-python in a process without gpuds, through
    its fsspec store (s3fs: another S3 client than gpuds' obstore)."""
    pytest.importorskip("s3fs")
    out = tmp_path / "plain.npz"
    subprocess.run(
        [sys.executable, "-c", _PLAIN_READER, url, endpoint, str(out)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    with np.load(out) as data:
        return {k.replace("__", "/"): data[k] for k in data.files}


def test_the_quick_start_runs_bucket_to_bucket(cli, s3: S3, raw_files: Path, tmp_path: Path):
    images = s3.upload(raw_files / "images", "in/images")
    table = s3.upload(raw_files / "meta.csv", "in")
    array = s3.upload(raw_files / "embeddings.npy", "in")
    raw, prep, data = (f"{s3.url}/out/{n}.zarr" for n in ("raw", "prep", "data"))
    steps = [
        ("ingest", images, f"{table}/meta.csv", f"{array}/embeddings.npy", "-o", raw),
        ("inspect", raw, "--verify"),
        ("preprocess", raw, "-o", prep, "--config", ROOT / "configs/image-classification.yaml"),
        ("inspect", prep, "--verify"),
        ("compress", prep, "-o", data),
        ("inspect", data, "--verify"),
    ]
    for step in steps:
        result = cli(*step, "--quiet")
        assert result.code == 0, (step, result.err)
    # The same commands on local paths give the same content.
    local = tmp_path / "local"
    local.mkdir()
    for step in (
        ("ingest", raw_files / "images", raw_files / "meta.csv", raw_files / "embeddings.npy",
         "-o", local / "raw.zarr"),
        ("preprocess", local / "raw.zarr", "-o", local / "prep.zarr",
         "--config", ROOT / "configs/image-classification.yaml"),
        ("compress", local / "prep.zarr", "-o", local / "data.zarr"),
    ):  # fmt: skip
        assert cli(*step, "--quiet").code == 0
    for name in ("raw", "prep", "data"):
        remote = gpuds.read_info(gpuds.open_store(f"{s3.url}/out/{name}.zarr"))
        here = gpuds.read_info(gpuds.open_store(local / f"{name}.zarr"))
        assert remote["fingerprint"] == here["fingerprint"], name
    got = _plain_zarr(data, s3.endpoint, tmp_path)
    want = plain_zarr_read(local / "data.zarr", tmp_path)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_a_loader_epoch_from_a_bucket_delivers_every_sample_once(s3: S3, tmp_path: Path):
    rng = np.random.default_rng(0)
    ids = rng.permutation(1000).astype("i8")
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "x.npy", rng.normal(size=(1000, 4)).astype("f4"))
    raw = f"{s3.url}/raw.zarr"
    gpuds.ingest([tmp_path / "ids.npy", tmp_path / "x.npy"], raw, chunk_mb=0.002)
    url = f"{s3.url}/data.zarr"
    gpuds.compress(raw, url, settings=gpuds.api.FieldSettings(shard_mb=0.004, chunk_mb=0.002))
    ds = gpuds.open(url)
    assert ds.path == url and len(ds) == 1000
    batches = list(ds.loader(64, seed=5, device="cpu"))
    got = np.concatenate([b["ids"] for b in batches])
    assert len(got) == 1000 and np.array_equal(np.sort(got), np.arange(1000))
    order = np.argsort(ids)
    delivered = np.concatenate([b["x"] for b in batches])
    np.testing.assert_array_equal(delivered, np.load(tmp_path / "x.npy")[order[got]])


def test_every_reader_reads_from_a_bucket(s3: S3, tmp_path: Path):
    """Sources in a bucket give the store the same files give locally: npy, npz, CSV (gzip),
    Parquet and Zarr by ranged requests, an image folder by prefix, HDF5 from a local copy."""
    import gzip

    import h5py
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(1)
    n = 12
    local = tmp_path / "files"
    (local / "images" / "a").mkdir(parents=True)
    (local / "images" / "b").mkdir(parents=True)
    for i in range(n):
        pixels = rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(local / "images" / "ab"[i % 2] / f"{i:02d}.png")
    np.save(local / "v.npy", rng.normal(size=(n, 3)))
    np.savez(local / "z.npz", p=np.arange(n), q=rng.normal(size=(n, 2)))
    rows = "".join(f"{i},{i * 0.5}\n" for i in range(n))
    (local / "t.csv.gz").write_bytes(gzip.compress(f"k,w\n{rows}".encode()))
    pq.write_table(pa.table({"r": np.arange(n) * 2.0}), local / "t.parquet")
    with h5py.File(local / "h.h5", "w") as f:
        f["d"] = rng.normal(size=(n, 2))
    gpuds.ingest([local / "v.npy"], tmp_path / "src.zarr")
    names = ["images", "v.npy", "z.npz", "t.csv.gz", "t.parquet", "h.h5", "src.zarr"]
    urls = []
    for name in names:
        path = tmp_path / name if name == "src.zarr" else local / name
        urls.append(
            s3.upload(path, f"in/{name}") if path.is_dir() else s3.upload(path, "in") + f"/{name}"
        )
    for name, url in zip(names, urls, strict=True):
        here = tmp_path / "src.zarr" if name == "src.zarr" else local / name
        remote = gpuds.ingest([url], f"{s3.url}/out/{name}.zarr")
        mine = gpuds.ingest([here], tmp_path / f"out-{name}.zarr")
        want = gpuds.read_info(gpuds.open_store(mine["output"]))["fingerprint"]
        got = gpuds.read_info(gpuds.open_store(remote["output"]))["fingerprint"]
        assert got == want, name
        assert remote["sources"][0]["path"] == url
        copied = [line for line in remote["notes"] if "temporary local copy" in line]
        assert bool(copied) == (name == "h.h5"), (name, remote["notes"])


def test_bench_and_tune_take_a_url(s3: S3, tmp_path: Path):
    np.save(tmp_path / "x.npy", np.random.default_rng(2).normal(size=(2000, 8)).astype("f4"))
    raw = f"{s3.url}/raw.zarr"
    gpuds.ingest([tmp_path / "x.npy"], raw)
    options = {"region": "us-east-1"}
    report = gpuds.api.tune(raw, quick=True, storage_options=options)
    assert report["store"] == raw and report["recommended"] is not None
    report = gpuds.api.bench(
        raw, quick=True, codecs=["zstd"], device="cpu", storage_options=options
    )
    sections = {row["section"] for row in report["rows"]}
    assert {"store", "loader"} <= sections
