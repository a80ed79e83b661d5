"""`gpuds compress` end to end: every portable codec and dtype, plain zarr reads, damage, errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import zarr

import gpuds
from gpuds.codecs import CodecConfig
from gpuds.codecs.cpu import CpuChunkCodec
from gpuds.compress import FieldSettings, shard_samples
from gpuds.errors import CorruptChunkError

from .conftest import only_line, plain_zarr_read, tree_hash

DTYPES = ["uint8", "int16", "int64", "float16", "float32", "float64"]


def _dataset(tmp_path: Path, n: int = 75) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    src = tmp_path / "src"
    src.mkdir()
    arrays = {}
    for dtype in DTYPES:
        if np.dtype(dtype).kind == "f":
            values = np.cumsum(rng.normal(size=(n, 5)), axis=0).astype(dtype)
        else:
            info = np.iinfo(dtype)
            values = rng.integers(max(info.min, -1000), min(info.max, 1000), (n, 5)).astype(dtype)
        arrays[dtype] = values
        np.save(src / f"{dtype}.npy", values)
    np.save(src / "one.npy", rng.normal(size=(n,)).astype("f4"))
    arrays["one"] = np.load(src / "one.npy")
    raw = tmp_path / "raw.zarr"
    gpuds.ingest(sorted(src.iterdir()), raw, chunk_mb=0.001)
    return raw, arrays


@pytest.mark.parametrize("codec", ["zstd", "lz4", "gzip", "none"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_round_trip_every_portable_codec_and_dtype(tmp_path: Path, codec: str, shuffle: bool):
    raw, arrays = _dataset(tmp_path)
    out = tmp_path / "c.zarr"
    # Tiny chunks and shards: several shards per field, and a partial last chunk and shard.
    settings = FieldSettings(CodecConfig(codec, None, shuffle), chunk_mb=0.0005, shard_mb=0.002)
    summary = gpuds.compress(raw, out, settings=settings, device="cpu")
    assert summary["verified"] is True
    plain = plain_zarr_read(out, tmp_path)
    for name, values in arrays.items():
        assert plain[name].dtype == values.dtype
        np.testing.assert_array_equal(plain[name], values)
    group = zarr.open_group(out)
    arr = group["float32"]
    assert arr.shards is not None and arr.shape[0] % arr.shards[0] != 0
    assert arr.chunks[0] < arr.shards[0]
    report = gpuds.inspect(str(out), verify=True)
    assert report["problems"] == []
    levels = {f["name"]: f["portability"] for f in report["fields"]}
    assert levels["uint8"] == ("zarr-python" if codec == "lz4" else "any")  # 1 byte: no shuffle
    spec_only = codec in ("zstd", "gzip", "none") and (not shuffle or codec == "none")
    assert levels["float32"] == ("any" if spec_only else "zarr-python")


def test_shards_are_byte_identical_to_zarr_pythons_own(tmp_path: Path):
    raw, arrays = _dataset(tmp_path)
    out = tmp_path / "c.zarr"
    gpuds.compress(raw, out, settings=FieldSettings(chunk_mb=0.0005, shard_mb=0.002))
    ours = zarr.open_group(out)["float32"]
    theirs = zarr.create_array(
        tmp_path / "ref.zarr",
        shape=ours.shape,
        chunks=ours.chunks,
        shards=ours.shards,
        dtype=ours.dtype,
        compressors=ours.compressors,
        fill_value=0,
    )
    theirs[:] = arrays["float32"]
    shards = sorted(p.relative_to(out / "float32") for p in (out / "float32" / "c").rglob("*"))
    shards = [p for p in shards if (out / "float32" / p).is_file()]
    assert len(shards) > 1
    for rel in shards:
        assert (out / "float32" / rel).read_bytes() == (tmp_path / "ref.zarr" / rel).read_bytes()


def test_one_sample_and_empty_split(tmp_path: Path):
    np.save(tmp_path / "x.npy", np.arange(2, dtype="f4"))
    gpuds.ingest([tmp_path / "x.npy"], tmp_path / "raw.zarr")
    config = {"ops": [{"op": "split", "fractions": {"train": 0.5, "val": 0.5, "test": 0.0}}]}
    gpuds.preprocess(tmp_path / "raw.zarr", tmp_path / "p.zarr", config=config)
    summary = gpuds.compress(tmp_path / "p.zarr", tmp_path / "c.zarr")
    assert summary["fields"]["test/x"]["stored_bytes"] == 0
    group = zarr.open_group(tmp_path / "c.zarr")
    assert group["train/x"].shape == (1,) and group["test/x"].shape == (0,)
    assert group["train/x"][0] + group["val/x"][0] == 1.0
    assert gpuds.inspect(str(tmp_path / "c.zarr"), verify=True)["problems"] == []


def test_cli_per_field_config_and_provenance(cli, tmp_path: Path):
    raw, _ = _dataset(tmp_path)
    before = tree_hash(raw)
    (tmp_path / "c.yaml").write_text(
        "codec: gzip\nlevel: 6\nfields:\n  float32: {codec: lz4, shuffle: false}\n"
    )
    result = cli("compress", raw, "-o", tmp_path / "c.zarr", "-c", tmp_path / "c.yaml", "--json")
    assert result.code == 0, result.err
    fields = result.json()["fields"]
    assert fields["float32"]["codec"] == {
        "codec": "lz4", "level": None, "shuffle": False, "chunk_mb": 1.0, "shard_mb": 128.0,
    }  # fmt: skip
    assert fields["int16"]["codec"]["codec"] == "gzip" and fields["int16"]["codec"]["level"] == 6
    report = gpuds.inspect(str(tmp_path / "c.zarr"))
    assert report["history"][-1]["stage"] == "compress"
    assert report["history"][-1]["input"]["fingerprint"] == gpuds.inspect(str(raw))["fingerprint"]
    assert report["fingerprint"] == gpuds.inspect(str(raw))["fingerprint"]
    assert tree_hash(raw) == before
    shown = cli("inspect", tmp_path / "c.zarr")
    assert "shard(lz4)" in shown.out and "shard(gzip)" in shown.out


def test_auto_reports_its_trials(cli, tmp_path: Path):
    raw, _ = _dataset(tmp_path)
    result = cli("compress", raw, "-o", tmp_path / "c.zarr", "--codec", "auto", "--json")
    assert result.code == 0, result.err
    summary = result.json()
    table = summary["auto"]["float64"]
    assert {(row["name"], row["shuffle"]) for row in table} == {
        (name, shuffle) for name in ("zstd", "lz4", "gzip") for shuffle in (True, False)
    }
    assert all(row["ratio"] > 0 for row in table)
    assert sum(row["picked"] for row in table) == 1
    assert summary["fields"]["float64"]["codec"]["codec"] in {"zstd", "lz4", "gzip", "none"}


def test_incompressible_data_is_stored_raw_by_auto(tmp_path: Path):
    np.save(
        tmp_path / "r.npy", np.random.default_rng(0).integers(0, 256, (4096, 64), dtype=np.uint8)
    )
    gpuds.ingest([tmp_path / "r.npy"], tmp_path / "raw.zarr")
    summary = gpuds.compress(
        tmp_path / "raw.zarr", tmp_path / "c.zarr", settings=FieldSettings(CodecConfig("auto"))
    )
    assert summary["fields"]["r"]["codec"]["codec"] == "none"


def test_verify_catches_an_encoder_that_loses_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    raw, _ = _dataset(tmp_path)
    real = CpuChunkCodec._encode_one

    def lossy(self: CpuChunkCodec, chunk: np.ndarray) -> bytes:
        damaged = chunk.copy()
        damaged[:1] ^= 1
        return real(self, damaged)

    monkeypatch.setattr(CpuChunkCodec, "_encode_one", lossy)
    with pytest.raises(CorruptChunkError, match="decodes to different values"):
        # shuffle fixed: the default's trial would notice the lossy encoder first
        gpuds.compress(raw, tmp_path / "c.zarr", settings=FieldSettings(CodecConfig("zstd")))
    assert not (tmp_path / "c.zarr").exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "lie"])
def test_damaged_shards_are_named_by_inspect_verify(cli, tmp_path: Path, damage: str):
    raw, _ = _dataset(tmp_path)
    out = tmp_path / "c.zarr"
    gpuds.compress(raw, out, settings=FieldSettings(chunk_mb=0.0005, shard_mb=0.002))
    shard = out / "float32" / "c" / "1" / "0"
    data = bytearray(shard.read_bytes())
    if damage == "flip":
        data[10] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:  # a valid index (CRC recomputed) whose first chunk claims more bytes than it has
        import google_crc32c

        arr = zarr.open_group(out)["float32"]
        size = 16 * (arr.shards[0] // arr.chunks[0]) + 4
        index = np.frombuffer(bytes(data[-size:-4]), dtype="<u8").copy().reshape(-1, 2)
        index[0, 1] += 7
        body = data[:-size]
        data = body + index.tobytes() + google_crc32c.value(index.tobytes()).to_bytes(4, "little")
    shard.write_bytes(bytes(data))
    result = cli("inspect", out, "--verify")
    assert result.code == 1
    line = only_line(result.err)
    assert re.search(r"corrupt (chunk|shard) in \S+c\.zarr field 'float32', shard c/1/0", line), (
        line
    )


def test_gpu_only_codec_without_gpu_is_a_clear_error(cli, tmp_path: Path):
    raw, _ = _dataset(tmp_path)
    result = cli(
        "compress", raw, "-o", tmp_path / "c.zarr", "--codec", "bitcomp", "--device", "cpu"
    )
    assert result.code == 1
    assert "bitcomp is GPU-only" in only_line(result.err)
    assert not (tmp_path / "c.zarr").exists()


def test_bad_inputs(cli, tmp_path: Path):
    raw, _ = _dataset(tmp_path)
    unknown = cli("compress", raw, "-o", tmp_path / "c.zarr", "--fields", "nope")
    assert unknown.code == 1 and "no field 'nope'" in unknown.err
    (tmp_path / "bad.yaml").write_text("codec: zstd\nfields:\n  int16: {levle: 3}\n")
    bad_key = cli(
        "compress", raw, "-o", tmp_path / "c.zarr", "-c", tmp_path / "bad.yaml", "--device", "cpu"
    )
    assert bad_key.code == 1 and "unknown key(s) levle" in only_line(bad_key.err)
    assert cli("compress", raw, "-o", tmp_path / "c.zarr", "--codec", "brotli").code == 2
    assert not (tmp_path / "c.zarr").exists()
    not_store = cli("compress", tmp_path / "src", "-o", tmp_path / "c.zarr")
    assert not_store.code == 1


def test_shard_sizing():
    # 1 KiB samples, 64-sample chunks (64 KiB): a 1 MiB shard holds 16 chunks ...
    assert shard_samples(64, 1024, 1.0, 10_000) == 1024
    # ... but never more chunks than the field has (rounded up to a power of two).
    assert shard_samples(64, 1024, 1.0, 100) == 128
    assert shard_samples(64, 1024, 0.01, 10_000) == 64


def test_fields_keeps_only_those(tmp_path: Path):
    raw, _ = _dataset(tmp_path)
    gpuds.compress(raw, tmp_path / "c.zarr", fields=["int16", "one"])
    assert sorted(n for n, _ in zarr.open_group(tmp_path / "c.zarr").arrays()) == ["int16", "one"]
    assert os.path.exists(tmp_path / "c.zarr" / "zarr.json")
