"""The codec layer: golden fixtures, size checks, shards, the registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numcodecs import LZ4, GZip, Shuffle, Zstd

from gpuds.codecs import CodecConfig, chunk_codec, zarr_compressors
from gpuds.codecs.base import shuffle_bytes, unshuffle_bytes
from gpuds.codecs.cpu import CpuChunkCodec, zstd_content_size
from gpuds.codecs.shard import EMPTY, encode_shard, read_index
from gpuds.errors import ConfigError, CorruptChunkError

GOLDEN = Path(__file__).parent / "golden"
FIXTURES = json.loads((GOLDEN / "manifest.json").read_text())["fixtures"]
REFERENCE = {"zstd": Zstd, "gzip": GZip, "lz4": LZ4}


def _ids(case: dict[str, object]) -> str:
    return str(case["file"])


@pytest.mark.parametrize("case", FIXTURES, ids=_ids)
def test_golden_fixtures_decode_to_the_committed_bytes(case: dict[str, object]):
    raw = (GOLDEN / str(case["raw"])).read_bytes()
    payload = (GOLDEN / str(case["file"])).read_bytes()
    config = CodecConfig(str(case["codec"]), int(case["level"]), bool(case["shuffle"]))  # type: ignore[call-overload]
    codec = CpuChunkCodec(config, int(case["itemsize"]))  # type: ignore[call-overload]
    (decoded,) = codec.decode([payload], [len(raw)], [str(case["file"])])
    assert decoded.tobytes() == raw


@pytest.mark.parametrize("case", FIXTURES, ids=_ids)
def test_gpuds_encoding_decodes_with_the_reference_library(case: dict[str, object]):
    raw = np.frombuffer((GOLDEN / str(case["raw"])).read_bytes(), dtype=np.uint8)
    itemsize = int(case["itemsize"])  # type: ignore[call-overload]
    config = CodecConfig(str(case["codec"]), int(case["level"]), bool(case["shuffle"]))  # type: ignore[call-overload]
    (payload,) = CpuChunkCodec(config, itemsize).encode([raw])
    data = REFERENCE[str(case["codec"])]().decode(payload)
    if case["shuffle"]:
        data = Shuffle(itemsize).decode(data)
    assert bytes(data) == raw.tobytes()


@pytest.mark.parametrize("itemsize", [2, 4, 8])
def test_shuffle_matches_numcodecs(itemsize: int):
    raw = np.random.default_rng(0).integers(0, 255, 64 * itemsize, dtype=np.uint8)
    expected = np.frombuffer(Shuffle(itemsize).encode(raw), dtype=np.uint8)
    np.testing.assert_array_equal(shuffle_bytes(raw, itemsize), expected)
    np.testing.assert_array_equal(unshuffle_bytes(expected, itemsize), raw)
    with pytest.raises(ValueError, match="whole number"):
        shuffle_bytes(raw[:-1], itemsize)


@pytest.mark.parametrize("name", ["zstd", "gzip", "lz4", "none"])
def test_wrong_size_is_a_corrupt_chunk_before_allocating(name: str):
    codec = CpuChunkCodec(CodecConfig(name, None, False), 1)
    raw = np.arange(1000, dtype=np.uint8)
    (payload,) = codec.encode([raw])
    for expected in (999, 1001):
        with pytest.raises(CorruptChunkError, match="corrupt chunk c/7"):
            codec.decode([payload], [expected], ["c/7"])


def test_zstd_header_lying_about_its_size_is_refused_without_allocating():
    payload = bytearray(Zstd(3).encode(np.zeros(100, dtype=np.uint8)))
    assert zstd_content_size(payload) == 100
    # Frame_Content_Size is the last header byte here (single segment, 1 byte): claim 255.
    payload[5] = 255
    codec = CpuChunkCodec(CodecConfig("zstd", 3, False), 1)
    with pytest.raises(
        CorruptChunkError, match="its zstd frame header says 255 bytes, expected 100"
    ):
        codec.decode([bytes(payload)], [100], ["c/0"])


def test_lz4_prefix_lying_is_refused():
    payload = bytearray(LZ4().encode(np.zeros(100, dtype=np.uint8)))
    payload[0:4] = (2**31).to_bytes(4, "little")
    codec = CpuChunkCodec(CodecConfig("lz4", 1, False), 1)
    with pytest.raises(CorruptChunkError, match="size prefix says 2147483648"):
        codec.decode([bytes(payload)], [100], ["c/0"])


def test_garbage_and_truncation_are_corrupt_chunks():
    codec = CpuChunkCodec(CodecConfig("zstd", 3, True), 4)
    raw = np.arange(256, dtype="<f4").view(np.uint8)
    (payload,) = codec.encode([raw])
    for bad in (payload[: len(payload) // 2], b"\x00" * 40, payload[:3]):
        with pytest.raises(CorruptChunkError, match="corrupt chunk c/1"):
            codec.decode([bad], [raw.nbytes], ["c/1"])


def test_batches_decode_in_order():
    codec = CpuChunkCodec(CodecConfig("zstd", 1, True), 8, threads=2)
    chunks = [np.arange(i, i + 64, dtype="<f8").view(np.uint8) for i in range(10)]
    payloads = codec.encode(chunks)
    decoded = codec.decode(payloads, [c.nbytes for c in chunks], [f"c/{i}" for i in range(10)])
    for d, c in zip(decoded, chunks, strict=True):
        np.testing.assert_array_equal(d, c)


def test_shard_index_round_trip_and_damage():
    shard = encode_shard([b"abc", None, b"defgh"])
    index = read_index(shard, 3, "c/0")
    assert index.tolist() == [[0, 3], [EMPTY, EMPTY], [3, 5]]
    with pytest.raises(CorruptChunkError, match="index checksum mismatch"):
        read_index(shard[:-1] + bytes([shard[-1] ^ 1]), 3, "c/0")
    with pytest.raises(CorruptChunkError, match="shorter than its"):
        read_index(shard[:10], 3, "c/0")
    with pytest.raises(CorruptChunkError, match=r"chunk 2 claims bytes 3\.\.8 of 7"):
        read_index(shard[1:], 3, "c/0")  # a truncated front: the index points past the data


@pytest.mark.parametrize(
    ("name", "data_type"),
    [("gdeflate", None), ("bitcomp", "<i4"), ("ans", "|u1"), ("cascaded", "<i4")],
)
def test_gpu_only_codecs_need_a_gpu_and_record_what_decoding_needs(
    name: str, data_type: str | None
):
    with pytest.raises(ConfigError, match="needs a GPU"):
        chunk_codec(CodecConfig(name), 4)
    config = CodecConfig(name, None, False)
    (nvcomp, checksum) = zarr_compressors(config, 4, np.dtype(">i4"))
    assert checksum.to_dict() == {"name": "crc32c"}
    expected = {"algorithm": name, "level": None}
    if data_type is not None:  # ans takes no 32-bit integers: bytes
        expected["data_type"] = data_type
    assert nvcomp.to_dict() == {"name": "gpuds.nvcomp", "configuration": expected}
    # shuffled bytes are bytes to nvCOMP
    (_shuffle, shuffled, _) = zarr_compressors(CodecConfig(name, None, True), 4, np.dtype("<i4"))
    assert shuffled.to_dict()["configuration"].get("data_type") == (data_type and "|u1")


_NAMES_GPU_CODEC = """
import sys, zarr
arr = zarr.open_array(sys.argv[1], mode="r")
print(type(arr.metadata.codecs[-1]).__name__)
try:
    arr[:]
except Exception as e:
    print(type(e).__name__, e)
"""


def test_plain_zarr_python_names_gpu_only_codecs_and_explains(tmp_path: Path):
    import os
    import subprocess
    import sys

    import zarr

    from gpuds.codecs.zarr_nvcomp import NvcompCodec

    zarr.create_array(
        tmp_path / "n.zarr", shape=(4,), chunks=(4,), dtype="f4",
        compressors=[NvcompCodec(algorithm="cascaded")],
    )  # fmt: skip
    os.makedirs(tmp_path / "n.zarr" / "c")
    (tmp_path / "n.zarr" / "c" / "0").write_bytes(b"written by nvCOMP on a GPU")
    done = subprocess.run(
        [sys.executable, "-c", _NAMES_GPU_CODEC, str(tmp_path / "n.zarr")],
        capture_output=True, text=True, check=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    name, error = done.stdout.strip().splitlines()
    assert name == "NvcompCodec"
    assert error.startswith("DeviceError") and "gpuds.nvcomp (cascaded)" in error
    assert "--codec zstd" in error


def test_codec_config_round_trip_and_validation():
    config = CodecConfig("gzip", 7, False)
    assert CodecConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="Expected a codec"):
        CodecConfig("brotli")
    with pytest.raises(ConfigError, match="unknown key"):
        CodecConfig.from_dict({"name": "zstd", "lvl": 3})
