"""Peak resident memory of preprocess stays within ``memory_mb`` plus a constant; how the
budget sizes blocks and shuffle buckets.

Each case runs in a fresh interpreter and reads ``ru_maxrss``: resident memory as the kernel
counts it (NumPy buffers, zarr's and the codecs' C buffers, file pages mapped into the process,
what the allocator keeps), most of which traced Python allocations miss. The stores are four
times the budget, so a stage that holds the dataset, a bucket twice or a few unbudgeted blocks
goes over.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gpuds
from gpuds.config import PipelineConfig
from gpuds.ops.shuffle import BUCKET_SHARE, bucket_count

MEMORY_MB = 16
OVERHEAD_MB = 16
"""What docs/preprocess.md allows above ``memory_mb`` besides the imports: codec buffers,
zarr's threads and what the allocator keeps."""

_RUN = """
import json, resource, sys
import gpuds, gpuds.preprocess

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

raw, out, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
baseline = peak()
summary = gpuds.preprocess(raw, out, config=config, device="cpu")
print(json.dumps({"baseline": baseline, "peak": peak(), "summary": summary}))
"""


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """64 MiB of float32 images and 32 MiB of uint8 images, each with int64 labels."""
    root = tmp_path_factory.mktemp("memory")
    rng = np.random.default_rng(0)
    made = {}
    for name, dtype, n in (("float32", np.float32, 5461), ("uint8", np.uint8, 10923)):
        src = root / name
        src.mkdir()
        if dtype == np.float32:
            images = rng.random((n, 32, 32, 3), dtype=np.float32)
        else:
            images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        np.save(src / "images.npy", images)
        np.save(src / "labels.npy", rng.integers(0, 10, n))
        made[name] = root / f"{name}.zarr"
        gpuds.ingest([src / "images.npy", src / "labels.npy"], made[name])
    return made


def _run(raw: Path, out: Path, config: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", _RUN, str(raw), str(out), json.dumps(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


SPLIT = {"op": "split", "fractions": [0.8, 0.1, 0.1]}
STANDARDIZE = {"op": "standardize", "fields": ["images"], "per": "channel"}


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
@pytest.mark.parametrize(
    ("store", "ops"),
    [
        ("float32", [{"op": "shuffle"}]),
        ("float32", [SPLIT]),
        ("float32", [{"op": "shuffle"}, SPLIT, STANDARDIZE]),
        # float64 temporaries of uint8 values: 8 bytes for every byte of the block.
        ("uint8", [SPLIT, STANDARDIZE]),
    ],
    ids=["shuffle", "split", "shuffle-split-standardize", "uint8-standardize"],
)
def test_peak_resident_memory_stays_within_the_budget(
    stores: dict[str, Path], tmp_path: Path, store: str, ops: list[dict[str, Any]]
):
    raw = stores[store]
    run = _run(raw, tmp_path / "out.zarr", {"ops": ops, "memory_mb": MEMORY_MB})
    grown = (run["peak"] - run["baseline"]) / 2**20
    stored = sum(f.stat().st_size for f in raw.rglob("*") if f.is_file()) / 2**20
    assert stored > 2 * MEMORY_MB, "the store must be larger than the budget"
    assert grown <= MEMORY_MB + OVERHEAD_MB, (
        f"peak resident memory grew {grown:.1f} MiB over the imports for a "
        f"{stored:.0f} MiB store; the budget is {MEMORY_MB} + {OVERHEAD_MB} MiB"
    )
    summary = run["summary"]
    assert summary["samples_out"] == summary["samples_in"]
    if SPLIT in ops:
        n = summary["samples_in"]
        assert sorted(summary["splits"].values()) == sorted([n - 2 * (n // 10), n // 10, n // 10])


@pytest.mark.parametrize(
    ("given", "memory_mb", "block_mb"),
    [({}, 512.0, 64.0), ({"memory_mb": 16}, 16.0, 2.0), ({"memory_mb": 4096}, 4096.0, 64.0)],
)
def test_block_mb_follows_memory_mb_and_round_trips(
    given: dict[str, Any], memory_mb: float, block_mb: float
):
    config = PipelineConfig.from_dict({"ops": [{"op": "shuffle"}], **given})
    assert (config.memory_mb, config.block_mb) == (memory_mb, block_mb)
    assert PipelineConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("samples", [1, 50, 1000, 10_000, 10**6])
@pytest.mark.parametrize("memory_bytes", [2**16, 2**24, 2**29])
def test_buckets_are_the_fewest_that_fit_six_deviations_above_their_mean(
    samples: int, memory_bytes: int
):
    sample_nbytes = 1000
    cap = BUCKET_SHARE * memory_bytes / sample_nbytes

    def fits(buckets: int) -> bool:
        mean = samples / buckets
        return mean + 6 * math.sqrt(mean) <= cap

    buckets = bucket_count(samples, sample_nbytes, memory_bytes)
    assert buckets >= 1 and buckets <= samples
    assert fits(buckets) or buckets == samples
    assert buckets == 1 or not fits(buckets - 1)
