"""Benchmark: `gpuds compress` on the CPU against zarr-python's own write, same data, same run.

    python scripts/bench_compress.py [--mb 256] [--codec zstd] [--level 3] [--repeats 3]

Both sides write the same sharded Zarr v3 layout (1 MiB chunks, 128 MiB shards), the same codec
chain (byte shuffle + codec) at the same level, from the same values:
- zarr-python: `zarr.create_array(..., shards=..., compressors=...)` then `arr[:] = values`
  (the values already in memory);
- gpuds: `gpuds.compress(src, out, verify=False)` from an uncompressed store of the same values
  (so gpuds also pays for reading its input; `--verify` adds the read-back check, timed apart).
Throughput is logical (uncompressed) bytes per second, decimal GB; the best of the repeats after
one warm-up is reported, with the output sizes. On a GPU host the nvCOMP rows need gpuds' GPU
path (`--device cuda`); here they are reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import zarr

import gpuds
from gpuds.backend import probe_cuda
from gpuds.codecs import CodecConfig, zarr_compressors
from gpuds.compress import FieldSettings


def _values(mb: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    n = mb * 2**20 // (4 * 256)
    # A smooth float32 signal with noise: compressible, like activations or sensor data.
    base = np.cumsum(rng.normal(0, 0.01, size=(n, 256)), axis=0)
    return (base + rng.normal(0, 0.001, size=(n, 256))).astype(np.float32)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != "zarr.json")


def _nvcomp_rows(values: np.ndarray, codec: CodecConfig, chunk: int) -> dict[str, float]:
    """nvCOMP encode and decode GB/s of the same chunks (device-resident data, one batched call
    per direction, timed with CUDA synchronisation), checked against the input."""
    import cupy as cp

    from gpuds.codecs.nvcomp import NvcompChunkCodec

    gpu = NvcompChunkCodec(codec, values.dtype.itemsize, values.dtype)
    raw = [values[i : i + chunk].reshape(-1).view(np.uint8) for i in range(0, len(values), chunk)]
    raw = [r for r in raw if r.nbytes == raw[0].nbytes]
    payloads = gpu.encode(raw)  # warm-up, and the payloads to decode
    start = time.perf_counter()
    payloads = gpu.encode(raw)
    cp.cuda.get_current_stream().synchronize()
    encode_s = time.perf_counter() - start
    lengths = [len(p) for p in payloads]
    device = cp.asarray(np.frombuffer(b"".join(payloads), dtype=np.uint8))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
    sizes = [r.nbytes for r in raw]
    keys = [f"c/{i}" for i in range(len(raw))]
    gpu.decode_device(device, offsets, lengths, sizes, keys)
    start = time.perf_counter()
    out = gpu.decode_device(device, offsets, lengths, sizes, keys)
    cp.cuda.get_current_stream().synchronize()
    decode_s = time.perf_counter() - start
    if cp.asnumpy(out).tobytes() != b"".join(r.tobytes() for r in raw):
        raise AssertionError("nvCOMP round trip differs from the input")
    total = sum(sizes)
    return {
        "encode_gbps": round(total / encode_s / 1e9, 3),
        "decode_gbps": round(total / decode_s / 1e9, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--codec", default="zstd", choices=["zstd", "lz4", "gzip"])
    parser.add_argument("--level", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3")
    work = Path(tempfile.mkdtemp(prefix="gpuds-bench-"))
    try:
        values = _values(args.mb)
        np.save(work / "x.npy", values)
        gpuds.ingest([work / "x.npy"], work / "ingested.zarr")
        raw = FieldSettings(CodecConfig("none", None, False))
        gpuds.compress(work / "ingested.zarr", work / "raw.zarr", settings=raw, verify=False)
        codec = CodecConfig(args.codec, args.level, True)
        settings = FieldSettings(codec, chunk_mb=1.0, shard_mb=128.0)
        logical = values.nbytes
        layout = zarr.open_group(work / "raw.zarr")["x"]
        chunk = gpuds.compress(
            work / "raw.zarr", work / "probe.zarr", settings=settings, verify=False
        )["fields"]["x"]
        shutil.rmtree(work / "probe.zarr")
        results: dict[str, list[float]] = {"zarr-python": [], "gpuds": [], "gpuds+verify": []}
        sizes = {}
        for i in range(args.repeats + 1):
            for name in results:
                out = work / f"{name}.zarr"
                shutil.rmtree(out, ignore_errors=True)
                start = time.perf_counter()
                if name == "zarr-python":
                    arr = zarr.create_array(
                        out,
                        shape=values.shape,
                        chunks=tuple(chunk["chunks"]),
                        shards=tuple(chunk["shards"]),
                        dtype=values.dtype,
                        compressors=zarr_compressors(codec, 4),
                        fill_value=0,
                    )
                    arr[:] = values
                else:
                    gpuds.compress(
                        work / "raw.zarr", out, settings=settings, verify=name == "gpuds+verify"
                    )
                seconds = time.perf_counter() - start
                if i > 0:  # the first round warms caches and thread pools
                    results[name].append(seconds)
                sizes[name] = _dir_bytes(out)
        cp, reason, _ = probe_cuda()
        gpu_rows = _nvcomp_rows(values, codec, chunk["chunks"][0]) if cp is not None else None
        report = {
            "data": f"float32 {values.shape}, {logical / 1e6:.0f} MB",
            "codec": codec.to_dict(),
            "chunks": chunk["chunks"],
            "shards": chunk["shards"],
            "cores": os.cpu_count(),
            "rows": {
                name: {
                    "best_s": round(min(t), 4),
                    "gbps": round(logical / min(t) / 1e9, 3),
                    "stored_bytes": sizes[name],
                    "ratio": round(logical / sizes[name], 4),
                }
                for name, t in results.items()
            },
            "nvcomp": gpu_rows if gpu_rows is not None else f"skipped (no GPU: {reason})",
            "input_layout": {"chunks": list(layout.chunks), "shards": list(layout.shards or [])},
        }
        rows = report["rows"]
        report["gpuds_vs_zarr_speed"] = round(
            rows["gpuds"]["gbps"] / rows["zarr-python"]["gbps"], 3
        )
        report["gpuds_vs_zarr_size"] = round(
            rows["gpuds"]["stored_bytes"] / rows["zarr-python"]["stored_bytes"], 4
        )
        print(json.dumps(report, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
