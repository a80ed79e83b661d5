"""The nvCOMP codec: orchestration on the CPU through a test double, real nvCOMP on a GPU.

The CPU tests replace ``nvidia.nvcomp`` and ``cupy`` with tests/nvcomp_double.py (a double that
mimics nvCOMP's documented behaviour). They check what gpuds does around nvCOMP: one batched call
per batch, the numcodecs.lz4 framing, the size checks, alignment, the byte shuffle, the import
errors. They do not verify nvCOMP: the ``gpu`` tests at the end do, and skip without a device.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numcodecs import LZ4, GZip, Shuffle, Zstd

from gpuds import backend
from gpuds.codecs import nvcomp as nvmod
from gpuds.codecs.base import CodecConfig
from gpuds.codecs.nvcomp import MAX_CHUNK_BYTES, NvcompChunkCodec
from gpuds.errors import ConfigError, CorruptChunkError, DeviceError

from .nvcomp_double import FakeCupy, NotEmulated, install

GOLDEN = Path(__file__).parent / "golden"
FIXTURES = json.loads((GOLDEN / "manifest.json").read_text())["fixtures"]
REFERENCE = {"zstd": Zstd, "gzip": GZip, "lz4": LZ4}
PORTABLE = ("zstd", "lz4", "gzip")


@pytest.fixture
def double(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """nvCOMP and CuPy replaced by the test double; ``calls``/``transfers`` count the traffic."""
    nvcomp, cupy = install(monkeypatch, nvmod)
    return types.SimpleNamespace(
        nvcomp=nvcomp, cupy=cupy, calls=nvcomp.Codec.calls, transfers=cupy.transfers
    )


def _raw(nbytes: int, itemsize: int, seed: int = 0) -> np.ndarray:
    """Compressible raw chunk bytes: a random walk of ``itemsize``-byte integers."""
    walk = np.cumsum(np.random.default_rng(seed).integers(-3, 4, nbytes // itemsize))
    dtype = "|u1" if itemsize == 1 else f"<i{itemsize}"
    return walk.astype(dtype).view(np.uint8)


def _chunks(itemsize: int) -> list[np.ndarray]:
    # sizes that are not multiples of the alignment exercise output padding and compaction
    return [_raw(n * itemsize, itemsize, seed) for seed, n in enumerate((1000, 37, 4096, 3))]


def _reference_decode(name: str, payload: bytes, shuffle: bool, itemsize: int) -> bytes:
    data = REFERENCE[name]().decode(payload)
    return bytes(Shuffle(itemsize).decode(data) if shuffle and itemsize > 1 else data)


def _reference_encode(name: str, raw: np.ndarray, shuffle: bool, itemsize: int) -> bytes:
    data = Shuffle(itemsize).encode(raw) if shuffle and itemsize > 1 else raw
    return bytes(REFERENCE[name]().encode(data))


def _shard(payloads: list[bytes], lead: int = 3) -> tuple[np.ndarray, list[int], list[int]]:
    """Payloads back to back after ``lead`` junk bytes (so offsets are misaligned), like a shard."""
    offsets, position = [], lead
    for p in payloads:
        offsets.append(position)
        position += len(p)
    buffer = np.frombuffer(b"\xee" * lead + b"".join(payloads), dtype=np.uint8)
    return buffer, offsets, [len(p) for p in payloads]


# -- round trips and batching (double) ----------------------------------------------------------


@pytest.mark.parametrize("name", PORTABLE)
@pytest.mark.parametrize(("itemsize", "shuffle"), [(1, False), (2, True), (4, False), (8, True)])
def test_round_trip_is_one_call_and_one_transfer_each_way(
    double: types.SimpleNamespace, name: str, itemsize: int, shuffle: bool
):
    codec = NvcompChunkCodec(CodecConfig(name, None, shuffle), itemsize)
    chunks = _chunks(itemsize)
    payloads = codec.encode(chunks)
    assert double.calls == {"encode": 1} and double.transfers == {"to_device": 1}
    keys = [f"c/{i}" for i in range(len(chunks))]
    decoded = codec.decode(payloads, [c.size for c in chunks], keys)
    assert double.calls == {"encode": 1, "decode": 1}
    assert double.transfers == {"to_device": 2, "to_host": 1}
    assert [d.tobytes() for d in decoded] == [c.tobytes() for c in chunks]


@pytest.mark.parametrize("name", PORTABLE)
@pytest.mark.parametrize(("itemsize", "shuffle"), [(1, False), (4, True)])
def test_payloads_are_what_numcodecs_decodes(
    double: types.SimpleNamespace, name: str, itemsize: int, shuffle: bool
):
    chunks = _chunks(itemsize)
    payloads = NvcompChunkCodec(CodecConfig(name, None, shuffle), itemsize).encode(chunks)
    for chunk, payload in zip(chunks, payloads, strict=True):
        assert _reference_decode(name, payload, shuffle, itemsize) == chunk.tobytes()


def test_lz4_payload_is_exactly_numcodecs_lz4_framing(double: types.SimpleNamespace):
    raw = _raw(5000, 1)
    (payload,) = NvcompChunkCodec(CodecConfig("lz4", None, False), 1).encode([raw])
    assert payload[:4] == (5000).to_bytes(4, "little")
    assert payload == bytes(LZ4().encode(raw))


@pytest.mark.parametrize("name", PORTABLE)
@pytest.mark.parametrize(("itemsize", "shuffle"), [(1, False), (8, True)])
def test_decodes_numcodecs_payloads_from_host_and_device(
    double: types.SimpleNamespace, name: str, itemsize: int, shuffle: bool
):
    codec = NvcompChunkCodec(CodecConfig(name, 5, shuffle), itemsize)
    chunks = _chunks(itemsize)
    payloads = [_reference_encode(name, c, shuffle, itemsize) for c in chunks]
    sizes, keys = [c.size for c in chunks], [f"k/{i}" for i in range(len(chunks))]
    decoded = codec.decode(payloads, sizes, keys)
    assert [d.tobytes() for d in decoded] == [c.tobytes() for c in chunks]
    buffer, offsets, lengths = _shard(payloads)
    out = codec.decode_device(buffer, offsets, lengths, sizes, keys)
    assert out.tobytes() == b"".join(c.tobytes() for c in chunks)
    assert double.calls == {"decode": 2}


@pytest.mark.parametrize("case", FIXTURES, ids=lambda case: str(case["file"]))
def test_golden_fixtures_decode_through_the_gpu_path(
    double: types.SimpleNamespace, case: dict[str, Any]
):
    raw = (GOLDEN / case["raw"]).read_bytes()
    payload = (GOLDEN / case["file"]).read_bytes()
    codec = NvcompChunkCodec(
        CodecConfig(case["codec"], case["level"], case["shuffle"]), case["itemsize"]
    )
    (decoded,) = codec.decode([payload], [len(raw)], [case["file"]])
    assert decoded.tobytes() == raw
    buffer, offsets, lengths = _shard([payload], lead=1)
    assert codec.decode_device(buffer, offsets, lengths, [len(raw)], ["k"]).tobytes() == raw


def test_misaligned_device_payloads_are_repacked(double: types.SimpleNamespace):
    double.nvcomp.Codec.ALIGNMENT = 16
    codec = NvcompChunkCodec(CodecConfig("zstd", None, True), 2)
    chunks = _chunks(2)
    buffer, offsets, lengths = _shard(codec.encode(chunks), lead=5)
    sizes = [c.size for c in chunks]
    out = codec.decode_device(buffer, offsets, lengths, sizes, ["a", "b", "c", "d"])
    assert out.tobytes() == b"".join(c.tobytes() for c in chunks)


def test_codec_is_raw_with_the_chunk_limit_as_uncomp_chunk_size(double: types.SimpleNamespace):
    NvcompChunkCodec(CodecConfig("lz4", None, True), 4).encode(_chunks(4))
    (made,) = double.nvcomp.Codec.instances
    assert made.kwargs == {
        "algorithm": "LZ4",
        "bitstream_kind": double.nvcomp.BitstreamKind.RAW,
        "uncomp_chunk_size": 16 << 20,
        "device_id": 0,
        "cuda_stream": 0,
    }


def test_each_thread_gets_its_own_nvcomp_codec(double: types.SimpleNamespace):
    codec = NvcompChunkCodec(CodecConfig("zstd", None, False), 1)
    threads = [threading.Thread(target=codec.encode, args=([_raw(100, 1)],)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codec.encode([_raw(100, 1)])
    assert len(double.nvcomp.Codec.instances) == 3


def test_empty_batches_touch_nothing(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    codec = NvcompChunkCodec(CodecConfig("zstd"), 4)
    assert codec.encode([]) == [] and codec.decode([], [], []) == []


def test_mismatched_lengths_are_refused(double: types.SimpleNamespace):
    codec = NvcompChunkCodec(CodecConfig("zstd"), 1)
    with pytest.raises(ValueError, match="one length"):
        codec.decode([b"x"], [1, 2], ["a"])


# -- size checks (double) -------------------------------------------------------------------------


def _batch_with(bad: bytes, name: str, size: int) -> tuple[list[bytes], list[int], list[str]]:
    good = [_reference_encode(name, _raw(800, 1, seed), False, 1) for seed in (1, 2)]
    return [good[0], bad, good[1]], [800, size, 800], ["c/0", "c/7", "c/2"]


@pytest.mark.parametrize("device", [False, True])
def test_lying_lz4_prefix_is_refused_before_decoding(double: types.SimpleNamespace, device: bool):
    codec = NvcompChunkCodec(CodecConfig("lz4", None, False), 1)
    payload = bytearray(LZ4().encode(_raw(1000, 1)))
    payload[:4] = (10**9).to_bytes(4, "little")
    payloads, sizes, keys = _batch_with(bytes(payload), "lz4", 1000)
    with pytest.raises(CorruptChunkError, match="corrupt chunk c/7: its lz4 size prefix claims"):
        if device:
            codec.decode_device(*_shard(payloads), sizes, keys)
        else:
            codec.decode(payloads, sizes, keys)
    assert double.calls["decode"] == 0


@pytest.mark.parametrize(
    ("actual", "match"), [(600, "decoded to 600 bytes"), (1400, "cannot decode")]
)
@pytest.mark.parametrize("device", [False, True])
def test_lz4_block_of_another_size_is_a_corrupt_chunk(
    double: types.SimpleNamespace, actual: int, match: str, device: bool
):
    codec = NvcompChunkCodec(CodecConfig("lz4", None, False), 1)
    block = bytes(LZ4().encode(_raw(actual, 1)))[4:]
    payloads, sizes, keys = _batch_with((1000).to_bytes(4, "little") + block, "lz4", 1000)
    with pytest.raises(CorruptChunkError, match=f"corrupt chunk c/7: .*{match}"):
        if device:
            codec.decode_device(*_shard(payloads), sizes, keys)
        else:
            codec.decode(payloads, sizes, keys)


@pytest.mark.parametrize(
    ("name", "match"),
    [("zstd", "its zstd frame claims 999 bytes"), ("gzip", "its gzip trailer claims 999 bytes")],
)
@pytest.mark.parametrize("device", [False, True])
def test_zstd_and_gzip_declared_sizes_are_checked_first(
    double: types.SimpleNamespace, name: str, match: str, device: bool
):
    codec = NvcompChunkCodec(CodecConfig(name, None, False), 1)
    payloads, sizes, keys = _batch_with(_reference_encode(name, _raw(999, 1), False, 1), name, 1000)
    with pytest.raises(CorruptChunkError, match=f"corrupt chunk c/7: {match}, expected 1000"):
        if device:
            codec.decode_device(*_shard(payloads), sizes, keys)
        else:
            codec.decode(payloads, sizes, keys)
    assert double.calls["decode"] == 0


@pytest.mark.parametrize(
    ("name", "bad", "match"),
    [
        ("zstd", b"not a zstd frame at all", "not a zstd frame"),
        ("gzip", b"\x1f\x8b" + bytes(26) + (1000).to_bytes(4, "little"), "cannot decode"),
        ("gzip", b"PK", "not a gzip member"),
        ("lz4", (1000).to_bytes(4, "little") + b"\xff" * 9, "cannot decode"),
        ("lz4", b"\x01\x02", "too short"),
    ],
    ids=["zstd-magic", "gzip-deflate", "gzip-magic", "lz4-block", "lz4-short"],
)
def test_garbage_is_a_corrupt_chunk_naming_its_key(
    double: types.SimpleNamespace, name: str, bad: bytes, match: str
):
    codec = NvcompChunkCodec(CodecConfig(name, None, False), 1)
    payloads, sizes, keys = _batch_with(bad, name, 1000)
    with pytest.raises(CorruptChunkError, match=f"corrupt chunk c/7: .*{match}"):
        codec.decode(payloads, sizes, keys)


def test_device_ranges_outside_the_buffer_are_corrupt(double: types.SimpleNamespace):
    codec = NvcompChunkCodec(CodecConfig("zstd"), 1)
    buffer = np.zeros(100, dtype=np.uint8)
    with pytest.raises(CorruptChunkError, match=r"corrupt chunk s/1: bytes 90\.\.130 lie outside"):
        codec.decode_device(buffer, [0, 90], [10, 40], [10, 10], ["s/0", "s/1"])


def test_chunk_over_the_gpu_limit_is_refused_before_nvcomp(double: types.SimpleNamespace):
    codec = NvcompChunkCodec(CodecConfig("lz4", None, False), 1)
    with pytest.raises(ConfigError, match="exceeds the 16777216-byte limit of lz4"):
        codec.encode([np.zeros(MAX_CHUNK_BYTES["lz4"] + 1, dtype=np.uint8)])
    assert double.calls == {}


def test_expected_size_over_nvcomp_decode_limit_is_a_device_error(double: types.SimpleNamespace):
    codec = NvcompChunkCodec(CodecConfig("ans", None, False), 1)
    with pytest.raises(DeviceError, match="decode it on the CPU"):
        codec.decode([b"x"], [1 << 26], ["k"])


def test_none_is_a_size_checked_pass_through(double: types.SimpleNamespace):
    codec = NvcompChunkCodec(CodecConfig("none", None, True), 4)
    chunks = _chunks(4)
    payloads = codec.encode(chunks)
    assert payloads == [c.tobytes() for c in chunks]
    sizes = [c.size for c in chunks]
    out = codec.decode_device(*_shard(payloads), sizes, list("abcd"))
    assert out.tobytes() == b"".join(payloads)
    with pytest.raises(CorruptChunkError, match="corrupt chunk b: 148 bytes, expected 149"):
        codec.decode(payloads, [sizes[0], sizes[1] + 1, *sizes[2:]], list("abcd"))
    assert double.calls == {}


# -- options (no double needed) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "level", "shuffle", "dtype", "options"),
    [
        ("zstd", 19, True, "float32", {}),
        ("lz4", 1, True, "float32", {}),
        ("gzip", None, True, "float32", {}),
        ("gzip", 0, True, "float32", {"algorithm_type": 0}),
        ("gzip", 1, True, "float32", {"algorithm_type": 2}),
        ("gzip", 6, True, "float32", {"algorithm_type": 4}),
        ("gzip", 9, True, "float32", {"algorithm_type": 5}),
        ("gdeflate", 3, True, "float32", {"algorithm_type": 3}),
        ("cascaded", 2, False, ">i4", {"compression_level": 2, "data_type": "<i4"}),
        ("cascaded", None, False, "float32", {"data_type": "|u1"}),
        ("bitcomp", None, False, "float64", {"data_type": "<f8"}),
        ("bitcomp", None, True, "float64", {"data_type": "|u1"}),
        ("bitcomp", None, False, None, {"data_type": "|u1"}),
        ("ans", None, False, "float16", {"data_type": "<f2"}),
        ("ans", None, False, "float64", {"data_type": "|u1"}),
    ],
)
def test_nvcomp_options_are_documented_ones(
    name: str, level: int | None, shuffle: bool, dtype: str | None, options: dict[str, Any]
):
    itemsize = np.dtype(dtype).itemsize if dtype else 8
    codec = NvcompChunkCodec(CodecConfig(name, level, shuffle), itemsize, dtype)
    assert codec.nvcomp_options == options
    # the double rejects any option nvCOMP 6 does not document for the algorithm
    from .nvcomp_double import make_nvcomp

    nv = make_nvcomp()
    nv.Codec(
        algorithm=nvmod.NVCOMP_ALGORITHMS[name], bitstream_kind=nv.BitstreamKind.RAW, **options
    )


@pytest.mark.parametrize(
    ("name", "level", "match"),
    [
        ("gzip", 10, "gzip levels are 0 to 9, got 10"),
        ("gdeflate", 6, "0..5"),
        ("cascaded", -1, ">= 0"),
        ("ans", 1, "nvCOMP's ans has no level"),
        ("bitcomp", 0, "nvCOMP's bitcomp has no level"),
    ],
)
def test_invalid_levels_are_config_errors(name: str, level: int, match: str):
    with pytest.raises(ConfigError, match=match):
        NvcompChunkCodec(CodecConfig(name, level, True), 4)


def test_dtype_must_match_itemsize():
    with pytest.raises(ConfigError, match="dtype of 4 bytes"):
        NvcompChunkCodec(CodecConfig("bitcomp"), 4, "float64")


def test_nvcomp_only_codecs_reach_nvcomp_with_their_options(double: types.SimpleNamespace):
    codec = NvcompChunkCodec(CodecConfig("cascaded", 1, False), 4, "int32")
    with pytest.raises(NotEmulated):
        codec.encode(_chunks(4))
    (made,) = double.nvcomp.Codec.instances
    assert made.kwargs["algorithm"] == "Cascaded"
    assert made.kwargs["compression_level"] == 1 and made.kwargs["data_type"] == "<i4"


# -- imports -------------------------------------------------------------------------------------


def test_import_needs_neither_cupy_nor_nvcomp():
    # zarr itself imports CuPy when it is installed, so look only at what this module adds
    code = (
        "import sys, zarr, gpuds.codecs.cpu; before = set(sys.modules); "
        "import gpuds.codecs.nvcomp as m; m.NvcompChunkCodec(m.CodecConfig('zstd'), 4); "
        "new = set(sys.modules) - before; "
        "assert not [n for n in new if n.split('.')[0] in ('cupy', 'nvidia')], new"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_cupy_is_an_import_error_with_the_install_hint(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    codec = NvcompChunkCodec(CodecConfig("zstd"), 4)
    with pytest.raises(
        ImportError, match=r"CuPy is not installed.*gpuds\[gpu-cu12\] or gpuds\[gpu-cu13\]"
    ):
        codec.encode([_raw(64, 4)])


def test_missing_nvcomp_is_an_import_error_with_the_install_hint(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(nvmod, "_import_cupy", FakeCupy)
    monkeypatch.setitem(sys.modules, "nvidia", None)
    monkeypatch.setitem(sys.modules, "nvidia.nvcomp", None)
    codec = NvcompChunkCodec(CodecConfig("lz4"), 4)
    with pytest.raises(ImportError, match=r"nvidia.nvcomp\) is not installed.*gpuds\[gpu-cu12\]"):
        codec.encode([_raw(64, 4)])


def test_nvcomp_before_6_is_an_import_error(monkeypatch: pytest.MonkeyPatch):
    old = types.ModuleType("nvidia.nvcomp")
    old.__dict__.update(__version__="5.3.0", Codec=object)
    parent = types.ModuleType("nvidia")
    parent.__dict__["nvcomp"] = old
    monkeypatch.setattr(nvmod, "_import_cupy", FakeCupy)
    monkeypatch.setitem(sys.modules, "nvidia", parent)
    monkeypatch.setitem(sys.modules, "nvidia.nvcomp", old)
    with pytest.raises(ImportError, match=r"needs nvCOMP >= 6, found 5.3.0.*gpu-cu13"):
        NvcompChunkCodec(CodecConfig("zstd"), 1).encode([_raw(64, 1)])


# -- real nvCOMP on a GPU ------------------------------------------------------------------------


@functools.cache
def _gpu_unusable() -> str:
    """Why the real GPU tests cannot run here ("" when they can)."""
    cp, reason, _ = backend.probe_cuda()
    if cp is None:
        return reason
    try:
        nvmod._import_nvcomp()
    except ImportError as e:
        return str(e)
    return ""


@pytest.fixture
def gpu() -> Any:
    reason = _gpu_unusable()
    if reason:
        pytest.skip(f"needs a CUDA device and nvCOMP >= 6: {reason}")
    import cupy

    return cupy


# 1 MiB and 5 MiB chunks are far above nvCOMP's default 64 KiB uncomp_chunk_size: a split chunk
# would not decode with numcodecs as one stream.
GPU_SIZES = (1 << 20, 5 << 20, 4096, 24)


@pytest.mark.gpu
@pytest.mark.parametrize("name", PORTABLE)
@pytest.mark.parametrize(("itemsize", "shuffle"), [(1, False), (4, True)])
def test_gpu_encodes_what_numcodecs_decodes(gpu: Any, name: str, itemsize: int, shuffle: bool):
    chunks = [_raw(n, itemsize, seed) for seed, n in enumerate(GPU_SIZES)]
    payloads = NvcompChunkCodec(CodecConfig(name, None, shuffle), itemsize).encode(chunks)
    for chunk, payload in zip(chunks, payloads, strict=True):
        assert _reference_decode(name, payload, shuffle, itemsize) == chunk.tobytes()


@pytest.mark.gpu
@pytest.mark.parametrize("name", PORTABLE)
@pytest.mark.parametrize(("itemsize", "shuffle"), [(1, False), (8, True)])
def test_gpu_decodes_numcodecs_chunks(gpu: Any, name: str, itemsize: int, shuffle: bool):
    codec = NvcompChunkCodec(CodecConfig(name, None, shuffle), itemsize)
    chunks = [_raw(n, itemsize, seed) for seed, n in enumerate(GPU_SIZES)]
    payloads = [_reference_encode(name, c, shuffle, itemsize) for c in chunks]
    sizes, keys = [c.size for c in chunks], [f"k/{i}" for i in range(len(chunks))]
    decoded = codec.decode(payloads, sizes, keys)
    assert [d.tobytes() for d in decoded] == [c.tobytes() for c in chunks]
    buffer, offsets, lengths = _shard(payloads)
    out = codec.decode_device(gpu.asarray(buffer), offsets, lengths, sizes, keys)
    assert gpu.asnumpy(out).tobytes() == b"".join(c.tobytes() for c in chunks)


@pytest.mark.gpu
@pytest.mark.parametrize("case", FIXTURES, ids=lambda case: str(case["file"]))
def test_gpu_decodes_golden_fixtures(gpu: Any, case: dict[str, Any]):
    raw = (GOLDEN / case["raw"]).read_bytes()
    payload = (GOLDEN / case["file"]).read_bytes()
    codec = NvcompChunkCodec(
        CodecConfig(case["codec"], case["level"], case["shuffle"]), case["itemsize"]
    )
    (decoded,) = codec.decode([payload], [len(raw)], [case["file"]])
    assert decoded.tobytes() == raw


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("name", "dtype", "shuffle"),
    [
        ("gdeflate", "float32", True),
        ("bitcomp", "int32", False),
        ("bitcomp", "float64", True),
        ("ans", "float16", False),
        ("ans", "float32", True),
        ("cascaded", "int64", False),
        ("cascaded", "uint8", False),
    ],
)
def test_gpu_round_trips_nvcomp_only_codecs(gpu: Any, name: str, dtype: str, shuffle: bool):
    itemsize = np.dtype(dtype).itemsize
    codec = NvcompChunkCodec(CodecConfig(name, None, shuffle), itemsize, dtype)
    chunks = [_raw(n - n % itemsize, itemsize, seed) for seed, n in enumerate(GPU_SIZES)]
    payloads = codec.encode(chunks)
    sizes, keys = [c.size for c in chunks], [f"k/{i}" for i in range(len(chunks))]
    decoded = codec.decode(payloads, sizes, keys)
    assert [d.tobytes() for d in decoded] == [c.tobytes() for c in chunks]


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["lz4", "gdeflate", "cascaded"])
@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_gpu_wrong_decoded_size_is_a_corrupt_chunk(gpu: Any, name: str, factor: float):
    """Pins nvCOMP's behaviour the size checks rely on: ``out=`` capacity and ``buffer_sizes``."""
    codec = NvcompChunkCodec(CodecConfig(name, None, False), 1)
    good, bad = codec.encode([_raw(4000, 1, 1), _raw(int(4000 * factor), 1, 2)])
    if name == "lz4":  # a truthful prefix around a block of another size
        bad = (4000).to_bytes(4, "little") + bad[4:]
    with pytest.raises(CorruptChunkError, match="corrupt chunk c/1"):
        codec.decode([good, bad], [4000, 4000], ["c/0", "c/1"])
