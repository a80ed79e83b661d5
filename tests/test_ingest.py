"""The ingest stage end to end: CLI and API, combined sources, bad inputs, interruptions."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

import gpuds
from gpuds.errors import ConfigError, SourceError

from .conftest import only_line, plain_zarr_read, tree_hash


@pytest.fixture
def arrays(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 3, 2)).astype("f4")
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "y.npz", a=np.arange(37, dtype="i8"), b=rng.integers(0, 9, (37, 4), "u1"))
    np.savez_compressed(tmp_path / "z.npz", c=np.linspace(0, 1, 37, dtype="f8"))
    return {"x": tmp_path / "x.npy", "y": tmp_path / "y.npz", "z": tmp_path / "z.npz"}


def test_npy_npz_combined_read_back_by_plain_zarr(cli, arrays, tmp_path: Path):
    before = {k: tree_hash(p) for k, p in arrays.items()}
    out = tmp_path / "out.zarr"
    result = cli("ingest", arrays["x"], arrays["y"], arrays["z"], "-o", out, "--json")
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["samples"] == 37
    assert set(summary["fields"]) == {"x", "a", "b", "c"}
    plain = plain_zarr_read(out, tmp_path)
    np.testing.assert_array_equal(plain["x"], np.load(arrays["x"]))
    with np.load(arrays["y"]) as y, np.load(arrays["z"]) as z:
        np.testing.assert_array_equal(plain["a"], y["a"])
        np.testing.assert_array_equal(plain["b"], y["b"])
        np.testing.assert_array_equal(plain["c"], z["c"])
        assert plain["b"].dtype == np.uint8 and plain["a"].dtype == np.int64
    assert {k: tree_hash(p) for k, p in arrays.items()} == before


def test_chunks_hold_whole_samples_within_target(cli, arrays, tmp_path: Path):
    out = tmp_path / "out.zarr"
    assert cli("ingest", arrays["x"], "-o", out, "--chunk-mb", "0.0001", "-q").code == 0
    arr = zarr.open_group(out)["x"]
    # 24 bytes per sample, 104 bytes target: 4 samples (a power of two) per chunk.
    assert arr.chunks == (4, 3, 2)


def test_api_summary_and_provenance(arrays, tmp_path: Path):
    summary = gpuds.ingest([arrays["x"]], tmp_path / "out.zarr", chunk_mb=0.5)
    report = gpuds.inspect(summary["output"])
    assert report["problems"] == []
    assert report["num_samples"] == 37
    (step,) = report["history"]
    assert step["stage"] == "ingest" and step["settings"]["chunk_mb"] == 0.5
    assert report["sources"][0]["format"] == "npy"
    assert report["sources"][0]["bytes"] == arrays["x"].stat().st_size
    assert report["fingerprint"].startswith("blake2b:")


def test_fields_select_across_sources(cli, arrays, tmp_path: Path):
    out = tmp_path / "out.zarr"
    result = cli("ingest", arrays["x"], arrays["y"], "-o", out, "--fields", "b,x", "--json")
    assert result.code == 0, result.err
    assert set(result.json()["fields"]) == {"b", "x"}


def test_fields_unknown_anywhere_is_an_error(cli, arrays, tmp_path: Path):
    result = cli("ingest", arrays["x"], arrays["y"], "-o", tmp_path / "o.zarr", "--fields", "x,q")
    assert result.code == 1
    assert "'q'" in only_line(result.err)
    assert not (tmp_path / "o.zarr").exists()


def test_source_contributing_nothing_is_an_error(cli, arrays, tmp_path: Path):
    result = cli("ingest", arrays["x"], arrays["y"], "-o", tmp_path / "o.zarr", "--fields", "a")
    assert result.code == 1
    assert "x.npy provides none of the --fields" in only_line(result.err)


def test_mismatched_lengths_name_both_sources(cli, arrays, tmp_path: Path):
    np.save(tmp_path / "short.npy", np.zeros(5, "f4"))
    result = cli("ingest", arrays["x"], tmp_path / "short.npy", "-o", tmp_path / "o.zarr")
    assert result.code == 1
    line = only_line(result.err)
    assert "x.npy has 37" in line and "short.npy has 5" in line
    assert not (tmp_path / "o.zarr").exists()


def test_duplicate_field_names_are_an_error(cli, arrays, tmp_path: Path):
    other = tmp_path / "sub"
    other.mkdir()
    np.save(other / "x.npy", np.zeros(37, "f4"))
    result = cli("ingest", arrays["x"], other / "x.npy", "-o", tmp_path / "o.zarr")
    assert result.code == 1
    assert "field 'x' comes from both" in only_line(result.err)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: np.save(p / "bad.npy", np.array([{"a": 1}], dtype=object)), "bad.npy"),
        (lambda p: (p / "bad.npy").write_bytes(b"\x93NUMPY garbage"), "not a readable .npy"),
        (lambda p: np.save(p / "bad.npy", np.float32(3.0)), "0-d array"),
        (lambda p: (p / "bad.npz").write_bytes(b"PK not a zip"), "not a readable .npz"),
        (lambda p: (p / "bad.xyz").write_bytes(b"?"), "pass --format"),
        (lambda p: np.save(p / "bad.npy", np.zeros((0, 3), "f4")), "no samples"),
    ],
)
def test_bad_inputs_fail_cleanly(cli, tmp_path: Path, make, message: str):
    src = tmp_path / "in"
    src.mkdir()
    make(src)
    (bad,) = list(src.iterdir())
    before = tree_hash(src)
    result = cli("ingest", bad, "-o", tmp_path / "o.zarr")
    assert result.code == 1
    line = only_line(result.err)
    assert line.startswith("error: ") and message in line
    assert "Traceback" not in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    assert tree_hash(src) == before


def test_npz_member_declaring_absurd_size_is_refused(tmp_path: Path, cli):
    path = tmp_path / "crafted.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros(4, "f8"))
    header["shape"] = (10**12,)
    with zipfile.ZipFile(path, "w") as zf, zf.open("big.npy", "w") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(np.zeros(4, "f8").tobytes())
    result = cli("ingest", path, "-o", tmp_path / "o.zarr")
    assert result.code == 1
    assert "crafted" in only_line(result.err) and "declares" in result.err


def test_missing_source_and_existing_output(cli, arrays, tmp_path: Path):
    result = cli("ingest", tmp_path / "nope.npy", "-o", tmp_path / "o.zarr")
    assert result.code == 1 and "no such file" in only_line(result.err)
    assert cli("ingest", arrays["x"], "-o", tmp_path / "o.zarr", "-q").code == 0
    again = cli("ingest", arrays["x"], "-o", tmp_path / "o.zarr")
    assert again.code == 1 and "--overwrite" in only_line(again.err)
    assert cli("ingest", arrays["x"], "-o", tmp_path / "o.zarr", "--overwrite", "-q").code == 0


def test_usage_errors_exit_2(cli, arrays, tmp_path: Path):
    assert cli("ingest", arrays["x"]).code == 2
    assert cli("ingest", arrays["x"], "-o", tmp_path / "o.zarr", "--format", "xls").code == 2
    bad_size = cli("ingest", arrays["x"], "-o", tmp_path / "o.zarr", "--resize", "big")
    assert bad_size.code == 1 and "HxW" in bad_size.err


def test_api_raises_typed_errors(arrays, tmp_path: Path):
    with pytest.raises(SourceError):
        gpuds.ingest([], tmp_path / "o.zarr")
    with pytest.raises(ValueError):  # SourceError is also a ValueError
        gpuds.ingest([tmp_path / "missing.npy"], tmp_path / "o.zarr")


def _slow_source(tmp_path: Path) -> Path:
    src = tmp_path / "big.npy"
    rng = np.random.default_rng(0)
    np.save(src, rng.integers(0, 255, size=(20000, 1024), dtype=np.uint8))
    return src


def _start_ingest(src: Path, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gpuds", "ingest", str(src), "-o", str(out), "--chunk-mb", "0.004"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for_partial(parent: Path, proc: subprocess.Popen[bytes]) -> Path:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        partials = [p for p in parent.iterdir() if ".partial-" in p.name]
        if partials and any(partials[0].rglob("c/*")):
            return partials[0]
        assert proc.poll() is None, "ingest finished before it could be interrupted"
        time.sleep(0.01)
    raise AssertionError("no partial store appeared")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_interrupted_ingest_leaves_no_store_and_rerun_works(tmp_path: Path, sig: int):
    src = _slow_source(tmp_path)
    out = tmp_path / "out.zarr"
    proc = _start_ingest(src, out)
    partial = _wait_for_partial(tmp_path, proc)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert not out.exists()
    if sig == signal.SIGTERM:
        assert not partial.exists(), "a polite kill must clean up its partial store"
    rerun = _start_ingest(src, out)
    assert rerun.wait(timeout=120) == 0, rerun.stderr.read() if rerun.stderr else ""
    assert not partial.exists(), "the rerun removes the partial store of the killed run"
    np.testing.assert_array_equal(zarr.open_group(out)["big"][:], np.load(src))
    assert gpuds.inspect(str(out))["problems"] == []


def test_big_endian_arrays_are_stored_native(cli, tmp_path: Path):
    values = np.arange(12, dtype=">i4").reshape(6, 2)
    np.save(tmp_path / "be.npy", values)
    np.savez(tmp_path / "be2.npz", f=values.astype(">f8"))
    out = tmp_path / "o.zarr"
    assert cli("ingest", tmp_path / "be.npy", tmp_path / "be2.npz", "-o", out, "-q").code == 0
    plain = plain_zarr_read(out, tmp_path)
    assert plain["be"].dtype == np.dtype("<i4") and plain["f"].dtype == np.dtype("<f8")
    np.testing.assert_array_equal(plain["be"], values)
    np.testing.assert_array_equal(plain["f"], values)


def test_memory_stays_bounded_by_the_block_not_the_source(tmp_path: Path):
    import tracemalloc

    rows = 64 * 1024
    np.save(tmp_path / "big.npy", np.full((rows, 1024), 7, dtype=np.uint8))  # 64 MiB
    tracemalloc.start()
    try:
        gpuds.ingest([tmp_path / "big.npy"], tmp_path / "o.zarr", block_mb=4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # One 4 MiB block, one chunk per field and zarr's buffers: far below the 64 MiB source.
    assert peak < 24 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert zarr.open_group(tmp_path / "o.zarr")["big"].shape == (rows, 1024)


def test_chunks_never_exceed_the_dataset(cli, tmp_path: Path):
    np.save(tmp_path / "few.npy", np.arange(5, dtype="i4"))
    assert cli("ingest", tmp_path / "few.npy", "-o", tmp_path / "o.zarr", "-q").code == 0
    assert zarr.open_group(tmp_path / "o.zarr")["few"].chunks == (8,)


def test_options_recorded_in_the_history_ingest_the_sources_again(arrays, tmp_path: Path):
    options = gpuds.ReadOptions(fields=("x", "a"), strict_fields=False)
    gpuds.ingest([arrays["x"], arrays["y"]], tmp_path / "a.zarr", options=options)
    first = gpuds.read_info(zarr.open_group(tmp_path / "a.zarr", mode="r"), parsed=True)
    settings = first.history[0]["settings"]
    assert settings["codec"] == {"name": "zstd", "configuration": {"level": 1, "checksum": True}}
    gpuds.ingest([arrays["x"], arrays["y"]], tmp_path / "b.zarr", options=settings["options"])
    again = gpuds.read_info(zarr.open_group(tmp_path / "b.zarr", mode="r"), parsed=True)
    assert again.fingerprint == first.fingerprint and list(again.fields) == ["x", "a"]
    assert again.history[0]["settings"]["options"] == settings["options"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"field": ["x"]}, r"Unknown read option\(s\) field; valid: delimiter, fields"),
        ({"fields": "x"}, r"'fields' to be a list of names, got 'x'"),
        ({"resize": [0, 4]}, r"'resize' to be \[height, width\] or \"HxW\", got \[0, 4\]"),
        ({"resize": "4y4"}, r"Expected a size as HxW"),
        ({"header": "yes"}, r"'header' to be a bool, got 'yes'"),
    ],
)
def test_options_as_a_mapping_are_checked(arrays, tmp_path: Path, options, message: str):
    with pytest.raises(ConfigError, match=message):
        gpuds.ingest([arrays["x"]], tmp_path / "a.zarr", options=options)
    assert not (tmp_path / "a.zarr").exists()


def test_every_format_is_one_registry_line_naming_its_reader(tmp_path: Path):
    from gpuds.sources import FORMATS, detect_format

    assert list(FORMATS) == ["npy", "npz", "images", "csv", "parquet", "hdf5", "zarr"]
    for name, reader in FORMATS.items():
        assert reader.load().format == name
        for suffix in reader.suffixes:
            (tmp_path / f"a{suffix.upper()}").write_bytes(b"")
            assert detect_format(tmp_path / f"a{suffix.upper()}") == name
    (tmp_path / "t.tsv.zst").write_bytes(b"")
    assert detect_format(tmp_path / "t.tsv.zst") == "csv"
    (tmp_path / "x.npy.gz").write_bytes(b"")
    with pytest.raises(SourceError, match=r"cannot tell the format from the suffix '.gz'"):
        detect_format(tmp_path / "x.npy.gz")
    (tmp_path / "old" / "sub").mkdir(parents=True)
    assert detect_format(tmp_path / "old") == "images"
    (tmp_path / "old" / ".zgroup").write_text("{}")
    assert detect_format(tmp_path / "old") == "zarr"
