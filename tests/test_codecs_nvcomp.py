"""The nvCOMP codec: orchestration on the CPU through a test double, real nvCOMP on a GPU.

The CPU tests replace ``nvidia.nvcomp`` and ``cupy`` with tests/nvcomp_double.py (a double that
mirrors nvCOMP's documented behaviour and, where the docs leave ``buffer_sizes`` open, runs under
both readings). They check what gpuds does around nvCOMP: one batched call per batch, the
numcodecs.lz4 framing, the byte shuffle, the size checks (headers, nvCOMP's size query, output
capacities), alignment, threads and streams, the import errors. The double produces the
portable bitstreams with the reference libraries, so a round trip through it says nothing about
nvCOMP's bitstreams: tests are named for the orchestration they check. The ``gpu`` tests at the
end verify nvCOMP itself, and skip without a device.
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

from .nvcomp_double import FakeCupy, install, make_nvcomp

GOLDEN = Path(__file__).parent / "golden"
FIXTURES = json.loads((GOLDEN / "manifest.json").read_text())["fixtures"]
REFERENCE = {"zstd": Zstd, "gzip": GZip, "lz4": LZ4}
PORTABLE = ("zstd", "lz4", "gzip")


@pytest.fixture(params=["capacity", "decoded"], ids=["sizes=capacity", "sizes=decoded"])
def double(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> types.SimpleNamespace:
    """nvCOMP and CuPy replaced by the test double; ``calls``/``transfers`` count the traffic.
    Every test runs under both readings of ``buffer_sizes`` after ``decode(out=...)``."""
    nvcomp, cupy = install(monkeypatch, nvmod)
    nvcomp.Codec.BUFFER_SIZES = request.param
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


def _decode(codec: NvcompChunkCodec, entry: str, payloads: list[bytes], sizes: list[int],
            keys: list[str]) -> bytes:  # fmt: skip
    """Decode through one of the three entry points; the chunks concatenated."""
    if entry == "host":
        return b"".join(d.tobytes() for d in codec.decode(payloads, sizes, keys))
    if entry == "to_device":
        return bytes(codec.decode_to_device(payloads, sizes, keys).tobytes())
    return bytes(codec.decode_device(*_shard(payloads), sizes, keys).tobytes())


ENTRIES = ["host", "to_device", "device"]


# -- batching and transfers (double) ------------------------------------------------------------


@pytest.mark.parametrize("name", PORTABLE)
@pytest.mark.parametrize(("itemsize", "shuffle"), [(1, False), (2, True), (4, False), (8, True)])
def test_a_batch_is_one_nvcomp_call_and_one_transfer_each_way(
    double: types.SimpleNamespace, name: str, itemsize: int, shuffle: bool
):
    codec = NvcompChunkCodec(CodecConfig(name, None, shuffle), itemsize)
    chunks = _chunks(itemsize)
    payloads = codec.encode(chunks)
    assert double.calls["encode"] == 1 and double.transfers == {"to_device": 1}
    keys = [f"c/{i}" for i in range(len(chunks))]
    decoded = codec.decode(payloads, [c.size for c in chunks], keys)
    assert double.calls["decode"] == 1
    assert double.transfers == {"to_device": 2, "to_host": 1}
    assert [d.tobytes() for d in decoded] == [c.tobytes() for c in chunks]


@pytest.mark.parametrize("name", PORTABLE)
@pytest.mark.parametrize(("itemsize", "shuffle"), [(1, False), (4, True)])
def test_gpu_encode_frames_and_shuffles_as_numcodecs_decodes(
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


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("name", PORTABLE)
@pytest.mark.parametrize(("itemsize", "shuffle"), [(1, False), (8, True)])
def test_each_entry_point_strips_the_framing_unshuffles_and_lays_out_numcodecs_chunks(
    double: types.SimpleNamespace, name: str, itemsize: int, shuffle: bool, entry: str
):
    codec = NvcompChunkCodec(CodecConfig(name, 5, shuffle), itemsize)
    chunks = _chunks(itemsize)
    payloads = [_reference_encode(name, c, shuffle, itemsize) for c in chunks]
    sizes, keys = [c.size for c in chunks], [f"k/{i}" for i in range(len(chunks))]
    assert _decode(codec, entry, payloads, sizes, keys) == b"".join(c.tobytes() for c in chunks)
    assert double.calls["decode"] == 1
    # lz4's prefix is framing: nvCOMP measures every block (zstd and gzip declare their size)
    assert double.calls["size"] == (len(chunks) if name == "lz4" else 0)


@pytest.mark.parametrize("case", FIXTURES, ids=lambda case: str(case["file"]))
def test_golden_fixtures_pass_the_gpu_paths_checks_framing_and_unshuffle(
    double: types.SimpleNamespace, case: dict[str, Any]
):
    raw = (GOLDEN / case["raw"]).read_bytes()
    payload = (GOLDEN / case["file"]).read_bytes()
    codec = NvcompChunkCodec(
        CodecConfig(case["codec"], case["level"], case["shuffle"]), case["itemsize"]
    )
    for entry in ENTRIES:
        assert _decode(codec, entry, [payload], [len(raw)], [case["file"]]) == raw


@pytest.mark.parametrize("align", [4, 8, 16])  # 16: the documented maximum
@pytest.mark.parametrize("entry", ["to_device", "device"])
def test_every_entry_nvcomp_sees_meets_its_alignment(
    double: types.SimpleNamespace, align: int, entry: str
):
    double.nvcomp.Codec.ALIGNMENT = align  # the double refuses a misaligned entry
    codec = NvcompChunkCodec(CodecConfig("zstd", None, True), 2)
    chunks = _chunks(2)
    payloads = codec.encode(chunks)
    sizes = [c.size for c in chunks]
    got = _decode(codec, entry, payloads, sizes, ["a", "b", "c", "d"])
    assert got == b"".join(c.tobytes() for c in chunks)


def test_a_non_contiguous_device_buffer_is_made_contiguous(double: types.SimpleNamespace):
    codec = NvcompChunkCodec(CodecConfig("gzip", None, False), 1)
    chunks = _chunks(1)
    buffer, offsets, lengths = _shard(codec.encode(chunks))
    strided = np.zeros(2 * buffer.size, dtype=np.uint8)
    strided[::2] = buffer
    out = codec.decode_device(
        strided[::2], offsets, lengths, [c.size for c in chunks], list("abcd")
    )
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
    errors: list[BaseException] = []

    def work() -> None:
        try:
            payloads = codec.encode([_raw(100, 1)])
            codec.decode(payloads, [100], ["k"])
        except BaseException as e:  # the double refuses a codec shared between threads
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    work()
    assert not errors
    assert len(double.nvcomp.Codec.instances) == 5


def test_a_new_current_stream_gets_a_codec_made_for_it(double: types.SimpleNamespace):
    codec = NvcompChunkCodec(CodecConfig("zstd", None, False), 1)
    first, second = double.cupy.cuda.Stream(), double.cupy.cuda.Stream()
    for stream in (first, second, first):
        with stream:
            codec.encode([_raw(100, 1)])
    made = [c.kwargs["cuda_stream"] for c in double.nvcomp.Codec.instances]
    assert made == [first.ptr, second.ptr, first.ptr]
    assert all(e["codec_stream"] == e["current_stream"] for e in double.nvcomp.Codec.log)


def test_empty_batches_touch_nothing(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    codec = NvcompChunkCodec(CodecConfig("zstd"), 4)
    assert codec.encode([]) == [] and codec.decode([], [], []) == []


def test_empty_batches_never_reach_nvcomp_which_refuses_them(double: types.SimpleNamespace):
    codec = NvcompChunkCodec(CodecConfig("lz4"), 1)
    assert codec.decode_to_device([], [], []).size == 0
    assert codec.decode_device(np.zeros(8, np.uint8), [], [], [], []).size == 0
    assert double.calls == {} and not double.nvcomp.Codec.instances
    with pytest.raises(ValueError, match="empty sizes table"):
        double.nvcomp.as_arrays(np.zeros(8, np.uint8), [], [])


def test_the_double_refuses_what_nvcomps_docs_say_is_refused(double: types.SimpleNamespace):
    """Guards the double's honesty: the refusals the code is tested against stay in it."""
    nv = double.nvcomp
    buffer = double.cupy.empty(64, dtype=np.uint8)
    with pytest.raises(ValueError, match="empty sizes table"):
        nv.as_arrays(buffer, [], [])
    with pytest.raises(ValueError, match="empty list of sources"):
        nv.as_arrays([])
    with pytest.raises(ValueError, match="contiguous"):
        nv.as_arrays(buffer[::2], [0], [8])
    codec = nv.Codec(algorithm="Zstd", bitstream_kind=nv.BitstreamKind.RAW)
    assert codec.get_required_decompression_alignment() == 16
    frame = np.frombuffer(bytes(Zstd().encode(_raw(100, 1))), dtype=np.uint8)
    source = double.cupy.asarray(np.concatenate([np.zeros(16, np.uint8), frame]))
    with pytest.raises(ValueError, match="not aligned to 16"):
        codec.decode(nv.as_arrays(source, [8], [frame.size]))
    good = nv.as_arrays(source, [16], [frame.size])
    with pytest.raises(ValueError, match="too small"):
        codec.decode(good, out=nv.as_arrays(double.cupy.empty(96, dtype=np.uint8), [0], [96]))
    out = nv.as_arrays(double.cupy.empty(128, dtype=np.uint8), [0], [128])
    expected = {"capacity": [128], "decoded": [100]}[nv.Codec.BUFFER_SIZES]
    assert codec.decode(good, out=out).buffer_sizes == expected
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _catch(errors, codec.decode, good))
    thread.start()
    thread.join()
    assert [type(e) for e in errors] == [RuntimeError]


def _catch(errors: list[BaseException], fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except BaseException as e:
        errors.append(e)


def test_mismatched_lengths_are_refused(double: types.SimpleNamespace):
    codec = NvcompChunkCodec(CodecConfig("zstd"), 1)
    with pytest.raises(ValueError, match="one length"):
        codec.decode([b"x"], [1, 2], ["a"])


# -- size checks (double, under both readings of buffer_sizes) ----------------------------------


def _batch_with(bad: bytes, name: str, size: int) -> tuple[list[bytes], list[int], list[str]]:
    good = [_reference_encode(name, _raw(800, 1, seed), False, 1) for seed in (1, 2)]
    return [good[0], bad, good[1]], [800, size, 800], ["c/0", "c/7", "c/2"]


@pytest.mark.parametrize("entry", ENTRIES)
def test_lying_lz4_prefix_is_refused_before_decoding(double: types.SimpleNamespace, entry: str):
    codec = NvcompChunkCodec(CodecConfig("lz4", None, False), 1)
    payload = bytearray(LZ4().encode(_raw(1000, 1)))
    payload[:4] = (10**9).to_bytes(4, "little")
    payloads, sizes, keys = _batch_with(bytes(payload), "lz4", 1000)
    with pytest.raises(CorruptChunkError, match="corrupt chunk c/7: its lz4 size prefix says"):
        _decode(codec, entry, payloads, sizes, keys)
    assert double.calls["decode"] == 0


@pytest.mark.parametrize("actual", [600, 1400])
@pytest.mark.parametrize("entry", ENTRIES)
def test_lz4_block_of_another_size_is_refused_by_nvcomps_size_query(
    double: types.SimpleNamespace, actual: int, entry: str
):
    """A truthful prefix around a block of another size: only nvCOMP can tell, and gpuds asks
    it before decoding (``buffer_sizes`` may report capacities, which would hide a short one)."""
    codec = NvcompChunkCodec(CodecConfig("lz4", None, False), 1)
    block = bytes(LZ4().encode(_raw(actual, 1)))[4:]
    payloads, sizes, keys = _batch_with((1000).to_bytes(4, "little") + block, "lz4", 1000)
    with pytest.raises(
        CorruptChunkError, match=f"corrupt chunk c/7: nvCOMP finds it decodes to {actual} bytes"
    ):
        _decode(codec, entry, payloads, sizes, keys)
    assert double.calls["decode"] == 0


@pytest.mark.parametrize(
    ("name", "match"),
    [("zstd", "its zstd frame header says 999 bytes"), ("gzip", "its gzip trailer says 999 bytes")],
)
@pytest.mark.parametrize("entry", ENTRIES)
def test_zstd_and_gzip_declared_sizes_are_checked_first(
    double: types.SimpleNamespace, name: str, match: str, entry: str
):
    codec = NvcompChunkCodec(CodecConfig(name, None, False), 1)
    payloads, sizes, keys = _batch_with(_reference_encode(name, _raw(999, 1), False, 1), name, 1000)
    with pytest.raises(CorruptChunkError, match=f"corrupt chunk c/7: {match}, expected 1000"):
        _decode(codec, entry, payloads, sizes, keys)
    assert double.calls["decode"] == 0


def test_a_zstd_frame_without_its_size_is_measured_by_nvcomp(double: types.SimpleNamespace):
    codec = NvcompChunkCodec(CodecConfig("zstd", None, False), 1)
    encoded = bytes(Zstd().encode(_raw(1000, 1)))
    descriptor = encoded[4]
    assert descriptor & 0x23 == 0x20  # single segment, no dictionary: the size follows
    size_bytes = (1, 2, 4, 8)[descriptor >> 6]
    # the same frame without Frame_Content_Size: not single-segment, a 1 KiB Window_Descriptor
    frame = encoded[:4] + bytes([descriptor & 0x1F, 0x00]) + encoded[5 + size_bytes :]
    assert bytes(Zstd().decode(frame)) == _raw(1000, 1).tobytes()
    with pytest.raises(CorruptChunkError, match="corrupt chunk k: nvCOMP cannot read its decoded"):
        codec.decode([frame], [1000], ["k"])


@pytest.mark.parametrize(
    ("name", "bad", "match"),
    [
        ("zstd", b"not a zstd frame at all", "not a zstd frame"),
        ("gzip", b"\x1f\x8b" + bytes(26) + (1000).to_bytes(4, "little"), "cannot decode"),
        ("gzip", b"PK", "not a gzip member"),
        ("lz4", (1000).to_bytes(4, "little") + b"\xff" * 9, "cannot read its decoded size"),
        ("lz4", b"\x01\x02", "shorter than the 4-byte lz4 size prefix"),
    ],
    ids=["zstd-magic", "gzip-deflate", "gzip-magic", "lz4-block", "lz4-short"],
)
@pytest.mark.parametrize("entry", ENTRIES)
def test_garbage_is_a_corrupt_chunk_naming_its_key(
    double: types.SimpleNamespace, name: str, bad: bytes, match: str, entry: str
):
    codec = NvcompChunkCodec(CodecConfig(name, None, False), 1)
    payloads, sizes, keys = _batch_with(bad, name, 1000)
    with pytest.raises(CorruptChunkError, match=f"corrupt chunk c/7: .*{match}"):
        _decode(codec, entry, payloads, sizes, keys)


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


@pytest.mark.parametrize("entry", ENTRIES)
def test_none_is_a_size_checked_pass_through(double: types.SimpleNamespace, entry: str):
    codec = NvcompChunkCodec(CodecConfig("none", None, True), 4)
    chunks = _chunks(4)
    payloads = codec.encode(chunks)
    assert payloads == [c.tobytes() for c in chunks]
    sizes = [c.size for c in chunks]
    assert _decode(codec, entry, payloads, sizes, list("abcd")) == b"".join(payloads)
    with pytest.raises(CorruptChunkError, match="corrupt chunk b: its length says 148 bytes"):
        _decode(codec, entry, payloads, [sizes[0], sizes[1] + 1, *sizes[2:]], list("abcd"))
    assert double.calls == {}


# -- the nvCOMP-only codecs (double's stand-in bitstreams) --------------------------------------


@pytest.mark.parametrize(
    ("name", "dtype", "shuffle", "data_type"),
    [
        ("gdeflate", "float32", True, None),
        ("bitcomp", "int16", False, "<i2"),
        ("bitcomp", "float64", True, "|u1"),
        ("ans", "float16", False, "<f2"),
        ("cascaded", ">i8", False, "<i8"),
    ],
)
@pytest.mark.parametrize("entry", ENTRIES)
def test_nvcomp_only_codecs_pass_their_options_and_are_measured_before_decoding(
    double: types.SimpleNamespace,
    name: str,
    dtype: str,
    shuffle: bool,
    data_type: str | None,
    entry: str,
):
    itemsize = np.dtype(dtype).itemsize
    codec = NvcompChunkCodec(CodecConfig(name, None, shuffle), itemsize, dtype)
    chunks = _chunks(itemsize)
    payloads = codec.encode(chunks)
    sizes, keys = [c.size for c in chunks], [f"k/{i}" for i in range(len(chunks))]
    assert _decode(codec, entry, payloads, sizes, keys) == b"".join(c.tobytes() for c in chunks)
    made = {c.kwargs.get("data_type") for c in double.nvcomp.Codec.instances}
    assert made == {data_type}
    assert double.calls["size"] == len(chunks)  # no header gpuds reads: nvCOMP's size query
    wrong = [*sizes[:1], sizes[1] + itemsize, *sizes[2:]]
    with pytest.raises(CorruptChunkError, match="corrupt chunk k/1: nvCOMP finds it decodes to"):
        _decode(codec, entry, payloads, wrong, keys)


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
    nv = make_nvcomp()
    nv.Codec(
        algorithm=nvmod.NVCOMP_ALGORITHMS[name], bitstream_kind=nv.BitstreamKind.RAW, **options
    )


@pytest.mark.parametrize(
    ("name", "level", "match"),
    [
        ("gzip", 10, "gzip levels are 0 to 9, got 10"),
        ("gdeflate", 6, "gdeflate levels are 0 to 5, got 6"),
        ("cascaded", -1, "cascaded levels are 0 or more, got -1"),
        ("ans", 1, "codec ans takes no level, got 1"),
        ("bitcomp", 0, "codec bitcomp takes no level, got 0"),
    ],
)
def test_invalid_levels_are_config_errors_before_any_gpu_work(name: str, level: int, match: str):
    with pytest.raises(ConfigError, match=match):
        CodecConfig(name, level, True)


def test_dtype_must_match_itemsize():
    with pytest.raises(ConfigError, match="dtype of 4 bytes"):
        NvcompChunkCodec(CodecConfig("bitcomp"), 4, "float64")


def test_a_recorded_data_type_wins_over_the_fields_dtype():
    config = CodecConfig("cascaded", 1, False, "|u1")  # as read from a stored chain
    codec = NvcompChunkCodec(config, 4, "int32")
    assert codec.nvcomp_options == {"compression_level": 1, "data_type": "|u1"}


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
    """Pins the size checks on real nvCOMP: its size query (lz4, nvCOMP-only formats) and the
    ``out=`` capacity, whatever ``buffer_sizes`` reports."""
    codec = NvcompChunkCodec(CodecConfig(name, None, False), 1)
    good, bad = codec.encode([_raw(4000, 1, 1), _raw(int(4000 * factor), 1, 2)])
    if name == "lz4":  # a truthful prefix around a block of another size
        bad = (4000).to_bytes(4, "little") + bad[4:]
    with pytest.raises(CorruptChunkError, match="corrupt chunk c/1"):
        codec.decode([good, bad], [4000, 4000], ["c/0", "c/1"])
