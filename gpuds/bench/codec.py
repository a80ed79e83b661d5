"""The ``codec`` section: ratio, encode and decode rate per field x codec x device, data already in
memory, every round trip compared with its input. The bound is the memory copy rate.

On the CPU, chunks are encoded and decoded as gpuds writes and reads them (each stored chunk
carries its crc32c, checked before decoding); on the GPU, one batched nvCOMP call on
device-resident chunks, synchronised before the clock is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpuds.backend import Backend
from gpuds.bench.data import raw_chunks
from gpuds.bench.harness import SKIPPED_NO_GPU, BenchError, measure, row, set_bound, timed
from gpuds.codecs import CodecConfig
from gpuds.codecs.checksum import append_crc32c, strip_crc32c
from gpuds.codecs.cpu import CpuChunkCodec

__all__ = ["CODECS", "codec_rows"]

CODECS = ("zstd", "lz4", "gzip", "none")
"""The codecs the section can measure: those with a CPU implementation (``--codecs``)."""

Check = Callable[[list[np.ndarray], str], None]


def codec_rows(
    name: str,
    values: np.ndarray,
    codecs: Sequence[str],
    repeats: int,
    backend: Backend,
    memcpy_gbps: float | None,
    limit_bytes: int,
) -> list[dict[str, Any]]:
    """The rows of field ``name``: for each codec, CPU encode and decode, then GPU encode and
    decode (skipped without a GPU), on 1 MiB chunks of up to ``limit_bytes`` of ``values``.

    Raises :class:`~gpuds.bench.harness.BenchError` when a codec does not round-trip.
    """
    raw = raw_chunks(values, limit_bytes)
    rows: list[dict[str, Any]] = []
    for codec_name in codecs:
        rows += _one_codec(name, raw, values.dtype, codec_name, repeats, backend, memcpy_gbps)
    return rows


def _one_codec(
    name: str,
    raw: list[np.ndarray],
    dtype: np.dtype[Any],
    codec_name: str,
    repeats: int,
    backend: Backend,
    memcpy_gbps: float | None,
) -> list[dict[str, Any]]:
    itemsize = dtype.itemsize
    config = CodecConfig(codec_name, None, itemsize > 1)
    label = f"{codec_name}{'+shuffle' if config.shuffle and codec_name != 'none' else ''}"
    cpu = CpuChunkCodec(config, itemsize)
    logical = sum(r.nbytes for r in raw)
    sizes = [r.nbytes for r in raw]
    keys = [f"{name} chunk {i}" for i in range(len(raw))]

    # As gpuds writes and reads chunks: each stored chunk carries its crc32c, checked first.
    def encode() -> list[bytes]:
        return [append_crc32c(p) for p in cpu.encode(raw)]

    def decode_checked() -> list[np.ndarray]:
        bodies = [strip_crc32c(p, k) for p, k in zip(payloads, keys, strict=True)]
        return cpu.decode(bodies, sizes, keys)

    payloads = encode()
    stored = sum(len(p) for p in payloads)

    def check(decoded: list[np.ndarray], who: str) -> None:
        for got, want in zip(decoded, raw, strict=True):
            if got.nbytes != want.nbytes or not np.array_equal(got, want):
                raise BenchError(
                    f"{who} codec {label} did not round-trip field {name!r}: the decoded bytes "
                    "differ from the input; no speed is reported for a corrupting codec"
                )

    check(decode_checked(), "cpu")
    common: dict[str, Any] = {
        "field": name,
        "codec": label,
        "ratio": round(logical / stored, 4) if stored else None,
    }
    results: list[list[np.ndarray]] = []

    def decode() -> None:
        results.append(decode_checked())

    enc_times = timed(encode, repeats)
    dec_times = timed(decode, repeats)
    for decoded in results:
        check(decoded, "cpu")
    enc = row("codec", f"{label} encode {name}", "encode", "GB/s", nbytes=logical, times=enc_times)
    dec = row("codec", f"{label} decode {name}", "decode", "GB/s", nbytes=logical, times=dec_times)
    rows = [enc, dec]
    for metric in ("encode", "decode"):
        gpu_row = row("codec", f"{label} {metric} {name}", metric, "GB/s", device="cuda")
        if not backend.is_gpu:
            gpu_row["status"] = SKIPPED_NO_GPU
        elif codec_name == "none":
            gpu_row["status"] = "not applicable"
        else:
            _gpu_codec(gpu_row, config, dtype, raw, repeats, backend, check)
        rows.append(gpu_row)
    for r in rows:
        r.update(common)
        if r["device"] == "cpu":
            set_bound(r, memcpy_gbps, "memory copy")
    return rows


def _gpu_codec(
    gpu_row: dict[str, Any],
    config: CodecConfig,
    dtype: np.dtype[Any],
    raw: list[np.ndarray],
    repeats: int,
    backend: Backend,
    check: Check,
) -> None:
    """Measure ``gpu_row`` (its ``metric``: encode or decode): nvCOMP on device-resident chunks,
    one batched call, synchronised."""
    from gpuds.codecs.nvcomp import NvcompChunkCodec

    cp = backend.xp
    gpu = NvcompChunkCodec(config, dtype.itemsize, dtype)
    payloads = gpu.encode(raw)
    lengths = [len(p) for p in payloads]
    device = cp.asarray(np.frombuffer(b"".join(payloads), dtype=np.uint8))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
    sizes = [r.nbytes for r in raw]
    keys = [f"chunk {i}" for i in range(len(raw))]
    out = cp.asnumpy(gpu.decode_device(device, offsets, lengths, sizes, keys))
    check(
        [out[a:b] for a, b in zip(np.cumsum([0, *sizes[:-1]]), np.cumsum(sizes), strict=True)],
        "gpu",
    )
    sync = cp.cuda.get_current_stream().synchronize
    if gpu_row["metric"] == "encode":
        times = timed(lambda: gpu.encode(raw), repeats, sync)
    else:
        times = timed(
            lambda: gpu.decode_device(device, offsets, lengths, sizes, keys), repeats, sync
        )
    measure(gpu_row, times, nbytes=sum(sizes))
