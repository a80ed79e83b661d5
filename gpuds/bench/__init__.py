"""``gpuds bench``: throughput a user can trust, measured side by side in one run.

Every figure is a median over ``repeats`` timed runs after one untimed warm-up, with the
min-max spread; throughputs are decimal GB/s of *uncompressed* bytes (or samples/s). GPU work
is synchronised before the clock is read. Every round trip is checked for equality: a codec that
corrupts data stops the bench with an error instead of a speed. Rows that need a GPU on a machine
without one have ``status: "skipped (no GPU)"`` and no value. docs/bench.md has the schema.

Modules: :mod:`~gpuds.bench.harness` (timing, rows, bounds), :mod:`~gpuds.bench.data` (sample
data, sampling a store), one per section (:mod:`~gpuds.bench.codec`, :mod:`~gpuds.bench.store`,
:mod:`~gpuds.bench.loader`, :mod:`~gpuds.bench.reference`), :mod:`~gpuds.bench.run` (the whole
bench), :mod:`~gpuds.bench.tuning` (``--tune``) and :mod:`~gpuds.bench.report` (Markdown, plot).

>>> from pathlib import Path
>>> from gpuds import bench
>>> report = bench.bench(quick=True, device="cpu")                   # doctest: +SKIP
>>> sorted({row["section"] for row in report["rows"]})                # doctest: +SKIP
['codec', 'loader', 'reference', 'store']
>>> Path("bench.md").write_text(bench.markdown(report))              # doctest: +SKIP
>>> bench.plot(report, "bench.png")                                  # doctest: +SKIP
>>> bench.tune("data.zarr", quick=True)["command"]                   # doctest: +SKIP
'gpuds compress data.zarr -o OUT.zarr --codec zstd --level 9 --chunk-mb 4'
"""

from __future__ import annotations

from gpuds.bench.data import sample_data
from gpuds.bench.harness import SCHEMA, BenchError
from gpuds.bench.report import markdown, plot
from gpuds.bench.run import bench
from gpuds.bench.tuning import TUNE_CHUNK_MB, TUNE_CODECS, tune

__all__ = [
    "SCHEMA",
    "TUNE_CHUNK_MB",
    "TUNE_CODECS",
    "BenchError",
    "bench",
    "markdown",
    "plot",
    "sample_data",
    "tune",
]
