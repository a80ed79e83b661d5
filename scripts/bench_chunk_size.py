"""Benchmark: zstd decode rate by chunk size, the figure behind gpuds' 1 MiB default chunks.

    python scripts/bench_chunk_size.py [--mib 64] [--level 3]

Image-like uint8 data (a noisy dark background, as in scripts/make_sample.py) is cut into
chunks of 64 KiB to 4 MiB, each compressed with numcodecs' Zstd (what gpuds writes), and every
chunk is decoded on one thread; the best of 5 passes is reported in GB/s of decoded bytes.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from numcodecs import Zstd

SIZES_KIB = (64, 256, 1024, 4096)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="data size in MiB")
    parser.add_argument("--level", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    raw = np.clip(rng.normal(30, 10, size=args.mib * 2**20), 0, 255).astype(np.uint8)
    codec = Zstd(level=args.level)
    rates = {}
    for kib in SIZES_KIB:
        size = kib * 1024
        payloads = [codec.encode(raw[i : i + size]) for i in range(0, len(raw), size)]
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for payload in payloads:
                codec.decode(payload)
            best = min(best, time.perf_counter() - start)
        rates[f"{kib} KiB"] = round(len(raw) / best / 1e9, 3)
    print(json.dumps({"zstd_level": args.level, "decode_gbps_one_thread": rates}, indent=1))


if __name__ == "__main__":
    main()
