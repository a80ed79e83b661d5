"""`gpuds bench --tune`: the sweep, the recommendation by --codec auto's rule, a working command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import gpuds
from gpuds import bench
from gpuds.codecs.auto import pick
from gpuds.codecs.cpu import CpuChunkCodec


def test_tune_recommends_a_command_that_works(cli, tmp_path: Path):
    np.save(tmp_path / "x.npy", np.cumsum(np.ones((4000, 32), dtype=np.float32), axis=0))
    gpuds.ingest([tmp_path / "x.npy"], tmp_path / "raw.zarr")
    result = cli("bench", "--tune", tmp_path / "raw.zarr", "--quick", "--json", tmp_path / "t.json")
    assert result.code == 0, result.err
    tuned = json.loads((tmp_path / "t.json").read_text())
    assert len(tuned["rows"]) == len(bench.TUNE_CODECS) * len(bench.TUNE_CHUNK_MB)
    assert tuned["command"] in result.out.replace("\n", "")
    args = tuned["command"].split()[1:]
    args[args.index("OUT.zarr")] = str(tmp_path / "tuned.zarr")
    done = cli(*args, "-q")
    assert done.code == 0, done.err
    assert gpuds.inspect(str(tmp_path / "tuned.zarr"), verify=True)["problems"] == []


def test_tune_recommends_what_the_auto_rule_picks(tmp_path: Path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.poisson(3, size=(20000, 8)).astype(np.int32))
    gpuds.ingest([tmp_path / "x.npy"], tmp_path / "raw.zarr")
    tuned = bench.tune(str(tmp_path / "raw.zarr"), quick=True, repeats=1)
    rows = tuned["rows"]
    assert [(r["codec"], r["level"], r["chunk_mb"]) for r in rows] == [
        (codec, level, mb) for codec, level in bench.TUNE_CODECS for mb in bench.TUNE_CHUNK_MB
    ]
    assert all(r["ratio"] > 1 and r["decode_gbps"] > 0 and r["shuffle"] for r in rows)
    index = pick(rows, name_key="codec")
    assert index is not None and tuned["recommended"] == rows[index]
    best = rows[index]
    assert tuned["command"].endswith(
        f"--codec {best['codec']} --level {best['level']} --chunk-mb {best['chunk_mb']:g}"
    )
    assert tuned["environment"]["gpu"] is None and tuned["schema"] == "gpuds.bench/1/tune"


def test_tune_on_incompressible_data_recommends_no_codec(tmp_path: Path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.integers(0, 256, size=(4000, 256), dtype=np.uint8))
    gpuds.ingest([tmp_path / "x.npy"], tmp_path / "raw.zarr")
    tuned = bench.tune(str(tmp_path / "raw.zarr"), quick=True, repeats=1)
    assert tuned["recommended"] is None
    assert tuned["command"].endswith("--codec none")


def test_tune_stops_on_a_codec_that_does_not_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    np.save(tmp_path / "x.npy", np.arange(8000, dtype=np.int64).reshape(1000, 8))
    gpuds.ingest([tmp_path / "x.npy"], tmp_path / "raw.zarr")
    real = CpuChunkCodec.decode

    def corrupt(self: CpuChunkCodec, *args: object, **kwargs: object) -> list[np.ndarray]:
        out = real(self, *args, **kwargs)  # type: ignore[arg-type]
        out[-1] = out[-1].copy()
        out[-1][-1] ^= 0x01
        return out

    monkeypatch.setattr(CpuChunkCodec, "decode", corrupt)
    with pytest.raises(bench.BenchError, match="zstd level 1 did not round-trip 'x'"):
        bench.tune(str(tmp_path / "raw.zarr"), quick=True, repeats=1)
