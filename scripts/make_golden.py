"""Regenerate the golden codec fixtures in tests/golden/ (run only when the format changes).

Each fixture is a chunk encoded by the reference CPU libraries (numcodecs, the code zarr-python
itself uses) next to its raw bytes. tests/test_codecs_golden.py decodes every fixture with the
gpuds codec layer (CPU, and nvCOMP on a GPU) and checks that gpuds' own CPU encoder still writes
the same bytes: any drift of the format fails the build.

    python scripts/make_golden.py tests/golden
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numcodecs
import numpy as np
from numcodecs import LZ4, GZip, Shuffle, Zstd

CASES = {
    "uint8-ramp": np.arange(4096, dtype=np.uint8) % 251,
    "int16-walk": np.cumsum(np.random.default_rng(1).integers(-3, 4, 2048)).astype("<i2"),
    "float32-smooth": np.sin(np.linspace(0, 20, 1024)).astype("<f4"),
    "float64-noise": np.random.default_rng(2).normal(size=512).astype("<f8"),
}
CODECS = {
    "zstd": Zstd(level=3),
    "gzip": GZip(level=5),
    "lz4": LZ4(acceleration=1),
}


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for case, values in CASES.items():
        raw = values.view(np.uint8).tobytes()
        (out / f"{case}.raw").write_bytes(raw)
        for name, codec in CODECS.items():
            for shuffle in (False, True):
                if shuffle and values.dtype.itemsize == 1:
                    continue
                data = Shuffle(values.dtype.itemsize).encode(raw) if shuffle else raw
                payload = bytes(codec.encode(data))
                file = f"{case}.{name}{'.shuffle' if shuffle else ''}"
                (out / file).write_bytes(payload)
                manifest.append(
                    {
                        "case": case,
                        "codec": name,
                        "level": {"zstd": 3, "gzip": 5, "lz4": 1}[name],
                        "shuffle": shuffle,
                        "itemsize": values.dtype.itemsize,
                        "file": file,
                        "raw": f"{case}.raw",
                    }
                )
    (out / "manifest.json").write_text(
        json.dumps({"numcodecs": numcodecs.__version__, "fixtures": manifest}, indent=1) + "\n"
    )
    print(f"wrote {len(manifest)} fixtures to {out}")


if __name__ == "__main__":
    main()
