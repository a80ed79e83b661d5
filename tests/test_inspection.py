"""`gpuds inspect`: the report, its JSON, and `--verify` naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

import gpuds
from gpuds.inspection import portability
from gpuds.store import ATTR

from .conftest import only_line


@pytest.fixture
def store(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    np.save(tmp_path / "img.npy", rng.integers(0, 255, (40, 4, 4, 3), dtype=np.uint8))
    np.save(tmp_path / "val.npy", np.linspace(0, 1, 40, dtype="f4"))
    out = tmp_path / "s.zarr"
    gpuds.ingest([tmp_path / "img.npy", tmp_path / "val.npy"], out, chunk_mb=0.0005)
    return out


def test_report_describes_fields(store: Path):
    report = gpuds.inspect(str(store))
    assert report["problems"] == [] and report["complete"] and report["gpuds_store"]
    by_name = {f["name"]: f for f in report["fields"]}
    img = by_name["img"]
    assert img["shape"] == [40, 4, 4, 3] and img["dtype"] == "uint8"
    assert img["chunks"] == [8, 4, 4, 3] and img["shards"] is None
    assert img["codecs"] == ["bytes", "zstd", "crc32c"] and img["portability"] == "any"
    assert img["checksum"] == "crc32c"
    assert img["logical_bytes"] == 40 * 48
    assert img["stored_bytes"] > 0
    assert img["ratio"] == pytest.approx(img["logical_bytes"] / img["stored_bytes"], rel=1e-3)
    assert report["logical_bytes"] == 40 * 48 + 40 * 4
    json.dumps(report)


def test_cli_table_and_json(cli, store: Path):
    shown = cli("inspect", store)
    assert shown.code == 0, shown.err
    for text in ("complete", "img", "40×4×4×3", "zstd", "any Zarr v3 reader", "ingest"):
        assert text in shown.out
    as_json = cli("inspect", store, "--json")
    assert as_json.code == 0
    assert {f["name"] for f in as_json.json()["fields"]} == {"img", "val"}


def test_verify_passes_on_a_good_store(cli, store: Path):
    result = cli("inspect", store, "--verify", "--json")
    assert result.code == 0, result.err
    verify = result.json()["verify"]
    assert verify == {"chunks": 5 + 1, "chunks_decoded": 6, "ok": True}


def test_verify_names_a_missing_chunk(cli, store: Path):
    (store / "img" / "c" / "2" / "0" / "0" / "0").unlink()
    result = cli("inspect", store, "--verify")
    assert result.code == 1
    assert "missing chunk in " in only_line(result.err)
    assert "field 'img', chunk c/2/0/0/0" in only_line(result.err)


def test_verify_names_a_corrupt_chunk(cli, store: Path):
    chunk = store / "img" / "c" / "1" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    result = cli("inspect", store, "--verify")
    assert result.code == 1
    line = only_line(result.err)
    assert "corrupt chunk in " in line and "field 'img', chunk c/1/0/0/0" in line, line
    assert "crc32c checksum mismatch" in line


def test_verify_names_a_truncated_chunk(cli, store: Path):
    chunk = store / "val" / "c" / "0"
    chunk.write_bytes(chunk.read_bytes()[:7])
    result = cli("inspect", store, "--verify")
    assert result.code == 1
    line = only_line(result.err)
    assert "corrupt chunk in " in line and "field 'val', chunk c/0 (samples 0..39)" in line, line


def test_verify_catches_content_changed_behind_its_back(cli, store: Path):
    arr = zarr.open_group(store, mode="r+")["val"]
    arr[3] = 42.0  # a valid chunk with different content: only the fingerprint can tell
    result = cli("inspect", store, "--verify")
    assert result.code == 1
    assert "field val: content fingerprint" in only_line(result.err)


def test_incomplete_store_is_never_fine(cli, store: Path):
    group = zarr.open_group(store, mode="r+")
    info = dict(group.attrs[ATTR])
    del info["complete"]
    group.attrs[ATTR] = info
    result = cli("inspect", store)
    assert result.code == 1
    assert "INCOMPLETE" in result.out
    assert "incomplete: no completion marker" in only_line(result.err)


def test_plain_zarr_group_is_described_but_flagged(cli, tmp_path: Path):
    group = zarr.open_group(tmp_path / "plain.zarr", mode="w", zarr_format=2)
    group.create_array("a", shape=(10,), chunks=(5,), dtype="i4")[:] = np.arange(10)
    result = cli("inspect", tmp_path / "plain.zarr", "--json")
    assert result.code == 1
    report = result.json()
    assert report["fields"][0]["name"] == "a"
    assert "not a gpuds store" in only_line(result.err)


def test_not_a_store_at_all(cli, tmp_path: Path):
    result = cli("inspect", tmp_path / "nothing.zarr")
    assert result.code == 1
    assert "nothing.zarr: no such store" in only_line(result.err)


@pytest.mark.parametrize(
    ("chain", "level"),
    [
        ([{"name": "bytes"}, {"name": "gzip"}], "any"),
        ([{"name": "numcodecs.lz4"}], "zarr-python"),
        ([{"name": "gpuds.nvcomp"}, {"name": "numcodecs.shuffle"}], "gpuds-gpu"),
        ([{"name": "mystery"}], "unknown"),
        (
            [
                {
                    "name": "sharding_indexed",
                    "configuration": {
                        "codecs": [{"name": "bytes"}, {"name": "numcodecs.shuffle"}],
                        "index_codecs": [{"name": "bytes"}, {"name": "crc32c"}],
                    },
                }
            ],
            "zarr-python",
        ),
    ],
)
def test_portability_levels(chain: list[dict[str, object]], level: str):
    assert portability(chain) == level


def _documented_keys(section: str) -> set[str]:
    doc = (Path(__file__).parent.parent / "docs" / "inspect.md").read_text()
    table = doc.split(section, 1)[1].split("\n\n", 2)[1]
    return {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}


def test_json_schema_matches_docs(store: Path):
    report = gpuds.inspect(str(store), verify=True)
    assert set(report) == _documented_keys("Top-level keys:")
    optional = {"classes", "unit", "mask_of", "missing_code", "fingerprint", "vocabulary_size"}
    for field in report["fields"]:
        assert set(field) - optional == _documented_keys("Each entry of `fields`:")
