"""`gpuds bench`: schema, honest numbers, loud failure on corruption, plot, tune."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from numcodecs import Zstd
from PIL import Image

import gpuds
from gpuds import bench
from gpuds.codecs.cpu import CpuChunkCodec

from .conftest import only_line

SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "bench.schema.json").read_text())


@pytest.fixture(scope="module")
def report() -> dict:
    return bench.bench(quick=True, device="cpu", repeats=2)


def test_report_follows_the_schema(report: dict):
    jsonschema.validate(report, SCHEMA)
    sections = {row["section"] for row in report["rows"]}
    assert sections == {"codec", "store", "loader", "reference"}
    skipped = [row for row in report["rows"] if row["device"] == "cuda"]
    assert skipped and all(
        r["status"] == "skipped (no GPU)" and r["value"] is None for r in skipped
    )
    assert report["environment"]["cores"] and report["environment"]["zarr"]


def test_schema_rejects_a_zero_for_a_skipped_row(report: dict):
    broken = json.loads(json.dumps(report))
    row = next(r for r in broken["rows"] if r["status"].startswith("skipped"))
    row["value"] = 0.0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_decode_rate_agrees_with_an_independent_timing(report: dict):
    row = next(
        r for r in report["rows"]
        if r["section"] == "codec" and r["metric"] == "decode" and r["field"] == "images"
        and r["codec"] == "zstd" and r["device"] == "cpu"
    )  # fmt: skip
    values = bench.sample_data(quick=True)["images"]
    chunks = bench._chunks(values, 8 * 2**20)
    payloads = [Zstd(3).encode(c) for c in chunks]
    start = time.perf_counter()
    for p in payloads:
        Zstd().decode(p)
    single_core = sum(c.nbytes for c in chunks) / (time.perf_counter() - start) / 1e9
    # The bench decodes on all cores and reports a median: within a generous factor of one
    # core's rate, which still catches a unit error (x1000) or an unsynchronised clock.
    assert single_core / 4 < row["value"] < single_core * 4 * (bench.os.cpu_count() or 1)
    assert row["ratio"] == pytest.approx(
        sum(c.nbytes for c in chunks) / sum(map(len, payloads)), rel=0.02
    )


def test_bounds_and_percentages_are_consistent(report: dict):
    for row in report["rows"]:
        if row["bound"] is not None:
            assert row["percent_of_bound"] == pytest.approx(
                100 * row["value"] / row["bound"], abs=0.1
            )
    loader = next(r for r in report["rows"] if r["section"] == "loader")
    assert loader["value"] > 0 and loader["shuffle_quality"]["displacement"] > 0.5


def test_a_corrupting_codec_fails_the_bench(monkeypatch: pytest.MonkeyPatch, cli):
    real = CpuChunkCodec.decode

    def corrupt(self: CpuChunkCodec, *args: object, **kwargs: object) -> list[np.ndarray]:
        out = real(self, *args, **kwargs)  # type: ignore[arg-type]
        out[0] = out[0].copy()
        out[0][0] ^= 0xFF
        return out

    monkeypatch.setattr(CpuChunkCodec, "decode", corrupt)
    # Compressing the sample data (its shuffle trial) or the codec rows: either stops it.
    with pytest.raises(gpuds.GpudsError, match="did not round-trip"):
        bench.bench(quick=True, device="cpu", repeats=1)
    result = cli("bench", "--quick", "--device", "cpu", "--repeats", "1", "-q")
    assert result.code == 1 and "did not round-trip" in only_line(result.err)


@pytest.mark.parametrize("spread", [False, True])
def test_plot_is_a_png_with_one_bar_per_decode_row(report: dict, tmp_path: Path, spread: bool):
    if spread:  # one codec 1,000x slower than the fastest (gzip against lz4): still a visible bar
        report = copy.deepcopy(report)
        decode = [r for r in report["rows"] if r["metric"] == "decode" and r["section"] == "codec"
                  and r["value"] is not None]  # fmt: skip
        decode[-1]["value"] = max(r["value"] for r in decode) / 1000
    drawn = bench.plot(report, tmp_path / "b.png")
    decode_rows = [r for r in report["rows"] if r["metric"] == "decode" and r["section"] == "codec"
                   and r["value"] is not None]  # fmt: skip
    assert drawn["bars"] == len(decode_rows)
    with Image.open(tmp_path / "b.png") as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    bar = np.array([0x1F, 0x77, 0xB4])
    row = np.all(np.abs(pixels[drawn["scan_row"]].astype(int) - bar) < 10, axis=1)
    runs = int(np.sum(row[1:] & ~row[:-1]) + row[0])
    assert runs == len(decode_rows)


def test_cli_writes_json_markdown_and_plot(cli, tmp_path: Path):
    result = cli(
        "bench", "--quick", "--device", "cpu", "--codecs", "lz4", "--repeats", "1",
        "--json", tmp_path / "b.json", "--markdown", tmp_path / "b.md",
        "--plot", tmp_path / "b.png",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "skipped (no GPU)" in result.out and "loader shuffle quality" in result.out
    data = json.loads((tmp_path / "b.json").read_text())
    jsonschema.validate(data, SCHEMA)
    assert data["settings"]["codecs"] == ["lz4"]
    table = (tmp_path / "b.md").read_text()
    assert table.count("\n| ") == len(data["rows"]) + 2  # header, separator, one per row
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_on_a_given_store_and_bad_options(cli, tmp_path: Path):
    np.save(tmp_path / "x.npy", np.cumsum(np.ones((2000, 16), dtype=np.float32), axis=0))
    gpuds.ingest([tmp_path / "x.npy"], tmp_path / "raw.zarr")
    gpuds.compress(tmp_path / "raw.zarr", tmp_path / "c.zarr")
    result = cli(
        "bench", tmp_path / "c.zarr", "--quick", "--device", "cpu", "--json", tmp_path / "b.json"
    )
    assert result.code == 0, result.err
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert {r["field"] for r in rows if r["section"] == "codec"} == {"x"}
    bad = cli("bench", "--codecs", "brotli", "--quick")
    assert bad.code == 1 and "brotli" in only_line(bad.err)
    assert cli("bench", "--tune").code == 1


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
