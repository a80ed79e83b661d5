"""``kill -9`` at random points of ``gpuds compress`` into a bucket (a real S3 API server on
127.0.0.1), alternating two inputs with ``--overwrite``: after every kill the store is refused,
or is one input whole, never a mix; a rerun always succeeds and leaves no stray object."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gpuds
from gpuds.errors import StoreError

from .conftest import S3
from .test_store_remote import _refused

TRIALS = 32


def _make_input(tmp_path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    folder = tmp_path / f"input{seed}"
    folder.mkdir()
    np.save(folder / "x.npy", rng.integers(0, 8, (3000, 24, 24), dtype=np.uint8))
    np.save(folder / "y.npy", rng.normal(size=(3000, 16)).astype("f4"))
    out = tmp_path / f"in{seed}.zarr"
    gpuds.ingest([folder / "x.npy", folder / "y.npy"], out, chunk_mb=0.05)
    return out


def _command(source: Path, url: str) -> list[str]:
    return [
        sys.executable, "-m", "gpuds", "compress", str(source), "-o", url, "--overwrite",
        "--chunk-mb", "0.05", "--shard-mb", "0.1", "--codec", "zstd", "--no-shuffle", "--quiet",
    ]  # fmt: skip


def _wait_for_claim(s3: S3, process: subprocess.Popen[bytes]) -> float:
    """Wait until the run has put its incomplete mark at the root; return when it had."""
    client = s3.client()
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline and process.poll() is None:
        root = client.get_object(Bucket=s3.bucket, Key="data.zarr/zarr.json")["Body"].read()
        if b"gpuds.incomplete" in root:
            return time.perf_counter()
        time.sleep(0.01)
    return time.perf_counter()


@pytest.mark.slow
def test_kill_9_at_random_points_of_a_compress_to_a_bucket(s3: S3, tmp_path: Path):
    inputs = [_make_input(tmp_path, 1), _make_input(tmp_path, 2)]
    wants = [
        {n: a[...] for n, a in gpuds.open(str(p)).arrays.items()} for p in inputs
    ]  # fmt: skip
    fingerprints = [gpuds.read_info(gpuds.open_store(p))["fingerprint"] for p in inputs]
    url = f"{s3.url}/data.zarr"
    subprocess.run(_command(inputs[0], url), check=True, capture_output=True)
    expected_keys = s3.keys("data.zarr/")
    # How long the writing lasts once the run has claimed the store (after Python's start).
    process = subprocess.Popen(_command(inputs[1], url))
    claimed = _wait_for_claim(s3, process)
    process.wait()
    writing = time.perf_counter() - claimed
    rng = random.Random(13)
    outcomes = {"refused": 0, "whole": 0}
    for trial in range(TRIALS):
        source = inputs[trial % 2]
        process = subprocess.Popen(
            _command(source, url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if trial % 8 == 0:  # anywhere, mostly before the claim
            time.sleep(rng.uniform(0.0, 1.0))
        else:  # while it writes: data, metadata, the root
            _wait_for_claim(s3, process)
            time.sleep(rng.uniform(0.0, writing * 1.1))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        try:
            ds = gpuds.open(url)
        except StoreError:
            _refused(url)
            outcomes["refused"] += 1
        else:  # the kill came after the commit, or before the claim: one input, whole
            outcomes["whole"] += 1
            which = fingerprints.index(gpuds.read_info(gpuds.open_store(url))["fingerprint"])
            for name, want in wants[which].items():
                np.testing.assert_array_equal(ds.arrays[name][...], want)
        if trial % 4 == 3:  # a rerun takes over and cleans up
            subprocess.run(_command(source, url), check=True, capture_output=True)
            assert s3.keys("data.zarr/") == expected_keys, f"stray objects after trial {trial}"
            for name, want in wants[trial % 2].items():
                np.testing.assert_array_equal(gpuds.open(url).arrays[name][...], want)
    assert outcomes["refused"] >= TRIALS // 2, outcomes  # the kills did land mid-write
