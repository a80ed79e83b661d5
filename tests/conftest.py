"""Shared helpers: run the CLI, hash inputs, read a store with plain zarr-python."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpuds.backend import probe_cuda
from gpuds.cli import main


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run ``gpuds ARGS...`` in-process; returns exit code, stdout and stderr."""

    def run(*args: str | Path) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def tree_hash(path: Path) -> str:
    """Hash of every file's relative path and bytes under ``path`` (or of the file itself)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        digest.update(str(f.relative_to(path.parent)).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


_PLAIN_READER = textwrap.dedent(
    """
    import sys, numpy as np, zarr
    group = zarr.open_group(sys.argv[1], mode="r")
    arrays = {}
    def walk(g, prefix):
        for name, arr in g.arrays():
            arrays[prefix + name] = arr[...]
        for name, sub in g.groups():
            walk(sub, prefix + name + "/")
    walk(group, "")
    assert not any(m == "gpuds" or m.startswith("gpuds.") for m in sys.modules), "gpuds imported"
    np.savez(sys.argv[2], **{k.replace("/", "__"): v for k, v in arrays.items()})
    """
)


def plain_zarr_read(store: Path, tmp_path: Path) -> dict[str, np.ndarray]:
    """Read every array of ``store`` with plain zarr-python in a subprocess without gpuds."""
    out = tmp_path / "plain-read.npz"
    subprocess.run(
        [sys.executable, "-c", _PLAIN_READER, str(store), str(out)],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    with np.load(out) as data:
        return {k.replace("__", "/"): data[k] for k in data.files}


def only_line(text: str) -> str:
    """The single non-empty line of ``text`` (fails if there are more)."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {lines!r}"
    return lines[0]


@functools.cache
def _cupy() -> tuple[Any, str]:
    cp, reason, _ = probe_cuda()
    return cp, reason


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request: pytest.FixtureRequest) -> Any:
    """The array module: NumPy always, CuPy (marked `gpu`) when a device is usable."""
    if request.param == "numpy":
        return np
    cp, reason = _cupy()
    if cp is None:
        pytest.skip(f"no usable GPU: {reason}")
    return cp


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick start's dataset (10 images a class): made, ingested, preprocessed with
    configs/image-classification.yaml (train/val splits) and compressed, as the examples use it."""
    import gpuds

    root = Path(__file__).parent.parent
    tmp = tmp_path_factory.mktemp("sample-store")
    data = tmp / "sample"
    subprocess.run(
        [sys.executable, str(root / "scripts" / "make_sample.py"), str(data), "--per-class", "10"],
        check=True, capture_output=True,
    )  # fmt: skip
    gpuds.ingest([data / "images", data / "meta.csv", data / "embeddings.npy"], tmp / "raw.zarr")
    config = gpuds.load_config(root / "configs" / "image-classification.yaml")
    gpuds.preprocess(tmp / "raw.zarr", tmp / "prep.zarr", config=config, device="cpu")
    gpuds.compress(tmp / "prep.zarr", tmp / "data.zarr")
    return tmp / "data.zarr"


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """``device="cuda"`` (and ``auto``) on the CPU through the CuPy and nvCOMP test doubles, for
    every part of gpuds (orchestration only: this is not GPU verification); returns the
    ``(nvcomp, cupy)`` doubles. ``device="cpu"`` stays the CPU."""
    from . import nvcomp_double

    return nvcomp_double.install_gpu(monkeypatch)


@pytest.fixture(scope="session")
def s3_endpoint() -> Any:
    """A real S3 API server (moto's ``ThreadedMotoServer``) on a free port of 127.0.0.1 for the
    session; stopped at its end."""
    pytest.importorskip("moto.server", reason="moto[server] is in the test extra")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


class S3:
    """A fresh bucket on the test S3 server, with the environment pointing at it."""

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.url = f"s3://{bucket}"

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def keys(self, prefix: str = "") -> list[str]:
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def upload(self, local: Path, prefix: str) -> str:
        """Upload a file or a folder's files under ``prefix``; return its URL."""
        client = self.client()
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        for f in files:
            rel = f.name if local.is_file() else f.relative_to(local).as_posix()
            client.put_object(Bucket=self.bucket, Key=f"{prefix}/{rel}", Body=f.read_bytes())
        return f"{self.url}/{prefix}"


_BUCKETS = iter(range(10**6))


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """A new bucket on the session's S3 server, and the standard AWS variables set for this test
    only (the instance-metadata endpoint on a closed local port: no request ever leaves
    127.0.0.1)."""
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    bucket = S3(s3_endpoint, f"gpuds-test-{os.getpid()}-{next(_BUCKETS)}")
    bucket.client().create_bucket(Bucket=bucket.bucket)
    return bucket


def private_names_used(package: Path) -> list[str]:
    """``file: name`` for every other module's ``_private`` name a package's modules import or
    reach as an attribute (a package that uses only public names returns ``[]``)."""
    import ast

    found = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
            else:
                continue
            found += [f"{path.name}: {n}" for n in names if n[:1] == "_" and n[:2] != "__"]
    return found


@pytest.fixture(scope="session")
def dask_cluster() -> Any:
    """``dask_cluster(n)``: the address of a Dask ``LocalCluster`` of ``n`` single-threaded worker
    processes, started at its first use and shared by the session's tests (which must not kill its
    workers: a fault test starts its own), all stopped at the end."""
    pytest.importorskip("distributed")
    from gpuds.execution import local_cluster

    clusters: dict[int, Any] = {}

    def address(workers: int) -> str:
        if workers not in clusters:
            clusters[workers] = local_cluster(workers)
        return str(clusters[workers].scheduler_address)

    yield address
    for cluster in clusters.values():
        cluster.close()


def store_snapshot(path: Path) -> dict[str, bytes]:
    """Every object of a local store by relative path, with the root attributes that record
    *when* and *how long* (``created``, the history's times and seconds) taken out: two runs that
    wrote the same store give equal snapshots."""
    found: dict[str, bytes] = {}
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = str(f.relative_to(path))
        data = f.read_bytes()
        if rel == "zarr.json":
            meta = json.loads(data)
            info = meta.get("attributes", {}).get("gpuds", {})
            info.pop("created", None)
            for entry in info.get("history", []):
                for key in ("created", "started", "finished", "seconds", "time", "scheduler"):
                    entry.pop(key, None)
            data = json.dumps(meta, sort_keys=True).encode()
        found[rel] = data
    return found


def assert_same_store(a: Path, b: Path) -> None:
    """``a`` and ``b`` hold the same objects with the same bytes (but for timing attributes)."""
    left, right = store_snapshot(a), store_snapshot(b)
    assert sorted(left) == sorted(right), set(left) ^ set(right)
    differ = [k for k in left if left[k] != right[k]]
    assert not differ, f"objects differ: {differ[:10]}"
