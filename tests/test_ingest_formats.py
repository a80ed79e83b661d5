"""Every reader end to end through the CLI, read back with plain zarr-python (no gpuds import)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from PIL import Image

from .conftest import only_line, plain_zarr_read, tree_hash

ROOT = Path(__file__).parent.parent


def _images(root: Path, n_per_class: int = 3) -> np.ndarray:
    rng = np.random.default_rng(2)
    pixels = []
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            img = rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.png")
            pixels.append(img)
    return np.stack(pixels)


def test_image_folder_with_classes(cli, tmp_path: Path):
    expected = _images(tmp_path / "photos")
    before = tree_hash(tmp_path / "photos")
    out = tmp_path / "out.zarr"
    result = cli("ingest", tmp_path / "photos", "-o", out, "--json")
    assert result.code == 0, result.err
    plain = plain_zarr_read(out, tmp_path)
    np.testing.assert_array_equal(plain["images"], expected)
    np.testing.assert_array_equal(plain["labels"], [0, 0, 0, 1, 1, 1])
    assert plain["labels"].dtype == np.int64
    assert zarr.open_group(out).attrs["gpuds"]["classes"] == {"labels": ["cat", "dog"]}
    assert tree_hash(tmp_path / "photos") == before


def test_mixed_image_sizes_name_two_files_and_resize_fixes_it(cli, tmp_path: Path):
    _images(tmp_path / "photos")
    Image.new("RGB", (9, 7)).save(tmp_path / "photos" / "dog" / "big.png")
    result = cli("ingest", tmp_path / "photos", "-o", tmp_path / "o.zarr")
    assert result.code == 1
    line = only_line(result.err)
    assert "big.png" in line and "--resize" in line
    assert not (tmp_path / "o.zarr").exists()
    fixed = cli("ingest", tmp_path / "photos", "-o", tmp_path / "o.zarr", "--resize", "4x4")
    assert fixed.code == 0, fixed.err
    assert zarr.open_group(tmp_path / "o.zarr")["images"].shape == (7, 4, 4, 3)


def test_corrupt_image_errors_or_is_skipped_and_listed(cli, tmp_path: Path):
    _images(tmp_path / "photos")
    (tmp_path / "photos" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    before = tree_hash(tmp_path / "photos")
    result = cli("ingest", tmp_path / "photos", "-o", tmp_path / "o.zarr")
    assert result.code == 1 and "broken.png" in only_line(result.err)
    assert not (tmp_path / "o.zarr").exists()
    skipped = cli("ingest", tmp_path / "photos", "-o", tmp_path / "o.zarr", "--skip-bad", "--json")
    assert skipped.code == 0, skipped.err
    summary = skipped.json()
    assert summary["samples"] == 6 and len(summary["skipped"]) == 1
    assert "broken.png" in summary["skipped"][0]["path"]
    attrs = zarr.open_group(tmp_path / "o.zarr").attrs["gpuds"]
    assert len(attrs["skipped"]) == 1
    assert tree_hash(tmp_path / "photos") == before


def test_csv_with_strings_missing_values_and_label(cli, tmp_path: Path):
    csv = tmp_path / "t.csv"
    csv.write_text("age,height,city,species\n31,1.8,Oslo,cat\n,1.6,,dog\n45,,Rome,cat\n")
    out = tmp_path / "out.zarr"
    result = cli("ingest", csv, "-o", out, "--label", "species")
    assert result.code == 0, result.err
    plain = plain_zarr_read(out, tmp_path)
    np.testing.assert_array_equal(plain["age"], [31, 0, 45])
    np.testing.assert_array_equal(plain["age.missing"], [False, True, False])
    np.testing.assert_array_equal(plain["height"], [1.8, 1.6, np.nan])
    np.testing.assert_array_equal(plain["city"], [0, -1, 1])
    np.testing.assert_array_equal(plain["labels"], [0, 1, 0])
    group = zarr.open_group(out)
    assert group["city"].attrs["gpuds"]["vocabulary"] == ["Oslo", "Rome"]
    assert group.attrs["gpuds"]["classes"] == {"labels": ["cat", "dog"]}


def test_headerless_csv(cli, tmp_path: Path):
    csv = tmp_path / "t.csv"
    csv.write_text("1,2.5\n3,4.5\n")
    out = tmp_path / "out.zarr"
    assert cli("ingest", csv, "-o", out, "--no-header", "-q").code == 0
    plain = plain_zarr_read(out, tmp_path)
    np.testing.assert_array_equal(plain["col0"], [1, 3])
    np.testing.assert_array_equal(plain["col1"], [2.5, 4.5])


def test_csv_with_duplicate_header_names(cli, tmp_path: Path):
    csv = tmp_path / "t.csv"
    csv.write_text("a,a\nx,y\n")
    result = cli("ingest", csv, "-o", tmp_path / "o.zarr")
    assert result.code == 1
    assert "t.csv" in only_line(result.err)


def test_parquet(cli, tmp_path: Path):
    table = pa.table(
        {
            "x": pa.array([1.5, 2.5, None], pa.float32()),
            "n": pa.array([1, 2, 3], pa.int8()),
            "c": pa.array(["b", "a", "b"]).dictionary_encode(),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    out = tmp_path / "out.zarr"
    assert cli("ingest", tmp_path / "t.parquet", "-o", out, "-q").code == 0
    plain = plain_zarr_read(out, tmp_path)
    assert plain["x"].dtype == np.float32 and plain["n"].dtype == np.int8
    np.testing.assert_array_equal(plain["x"], [1.5, 2.5, np.nan])
    np.testing.assert_array_equal(plain["n"], [1, 2, 3])
    np.testing.assert_array_equal(plain["c"], [1, 0, 1])


def test_hdf5(cli, tmp_path: Path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(9, 2)).astype("f4")
    y = rng.integers(0, 5, 9)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["data/x"] = x
        f["y"] = y
    before = tree_hash(tmp_path / "f.h5")
    out = tmp_path / "out.zarr"
    assert cli("ingest", tmp_path / "f.h5", "-o", out, "-q").code == 0
    plain = plain_zarr_read(out, tmp_path)
    np.testing.assert_array_equal(plain["data.x"], x)
    np.testing.assert_array_equal(plain["y"], y)
    assert tree_hash(tmp_path / "f.h5") == before


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_existing_zarr(cli, tmp_path: Path, zarr_format: int):
    src = zarr.open_group(tmp_path / "in.zarr", mode="w", zarr_format=zarr_format)
    a = np.arange(20, dtype="u2").reshape(10, 2)
    src.create_array("a", shape=a.shape, chunks=(3, 2), dtype=a.dtype)[:] = a
    src.create_group("g").create_array("b", shape=(10,), chunks=(4,), dtype="f8")[:] = np.ones(10)
    before = tree_hash(tmp_path / "in.zarr")
    out = tmp_path / "out.zarr"
    result = cli("ingest", tmp_path / "in.zarr", "-o", out, "-q")
    assert result.code == 0, result.err
    plain = plain_zarr_read(out, tmp_path)
    np.testing.assert_array_equal(plain["a"], a)
    np.testing.assert_array_equal(plain["g.b"], np.ones(10))
    assert tree_hash(tmp_path / "in.zarr") == before


def test_quickstart_sample_ingests_images_table_and_array(cli, tmp_path: Path):
    data = tmp_path / "sample"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_sample.py"), str(data), "--per-class", "4"],
        check=True,
        capture_output=True,
    )
    out = tmp_path / "raw.zarr"
    sources = (data / "images", data / "meta.csv", data / "embeddings.npy")
    result = cli("ingest", *sources, "-o", out, "--json")
    assert result.code == 0, result.err
    assert result.json()["samples"] == 12
    group = zarr.open_group(out)
    files = group["file"].attrs["gpuds"]["vocabulary"]
    # The CSV lists the images in the order gpuds reads them: row i describes image i.
    names = [files[code] for code in group["file"][:]]
    assert names == sorted(names)
    labels = group["labels"][:]
    classes = group.attrs["gpuds"]["classes"]["labels"]
    assert [n.split("/")[0] for n in names] == [classes[k] for k in labels]
    assert cli("inspect", out, "--verify", "-q").code == 0
