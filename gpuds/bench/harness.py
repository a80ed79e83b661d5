"""How every bench figure is taken: timed runs, report rows, and the bound a row is read against.

A figure is the median over ``repeats`` timed runs after one untimed warm-up, with the min-max
spread, in decimal GB/s of *uncompressed* bytes or in samples/s. GPU work is synchronised (the
``sync`` callable) before the clock is read. Rows follow docs/bench.schema.json.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from gpuds.errors import GpudsError
from gpuds.progress import check_cancelled

__all__ = ["SCHEMA", "SKIPPED_NO_GPU", "BenchError", "measure", "row", "set_bound", "timed"]

SCHEMA = "gpuds.bench/1"
SKIPPED_NO_GPU = "skipped (no GPU)"


class BenchError(GpudsError, RuntimeError):
    """A measurement could not be trusted (e.g. a codec did not round-trip)."""


def timed(
    fn: Callable[[], Any], repeats: int, sync: Callable[[], None] | None = None
) -> list[float]:
    """Seconds of ``repeats`` runs of ``fn`` after one untimed warm-up.

    ``sync`` (a device synchronisation) runs inside each timed run, before the clock is read.
    A cancel request (Ctrl-C in the CLI) stops between runs.

    Examples
    --------
    >>> times = timed(lambda: sum(range(1000)), repeats=3)
    >>> len(times), all(t > 0 for t in times)
    (3, True)
    """
    fn()
    times = []
    for _ in range(repeats):
        check_cancelled()
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    return times


def measure(
    row: dict[str, Any],
    times: Sequence[float],
    *,
    nbytes: float | None = None,
    samples: float | None = None,
) -> None:
    """Fill ``row``'s ``value`` (median rate), ``spread`` ([min, max]) and ``repeats`` from the
    seconds of its timed runs: ``nbytes`` per run for a GB/s row, ``samples`` for samples/s."""
    row["repeats"] = len(times)
    if not times:
        return
    amount = (nbytes or 0) / 1e9 if row["unit"] == "GB/s" else samples
    if amount is None:
        raise ValueError(f"Expected samples for a {row['unit']} row, got None")
    rates = sorted(amount / t for t in times)
    row["value"] = round(statistics.median(rates), 4)
    row["spread"] = [round(rates[0], 4), round(rates[-1], 4)]


def row(
    section: str,
    name: str,
    metric: str,
    unit: str,
    *,
    nbytes: float | None = None,
    samples: float | None = None,
    times: Sequence[float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One report row (every key of the schema), measured when ``times`` are given.

    Keyword arguments other than ``nbytes``, ``samples`` and ``times`` set row keys
    (``field``, ``codec``, ``device``, ``ratio``, ``cache``, ...).

    Examples
    --------
    >>> r = row("codec", "zstd decode x", "decode", "GB/s", nbytes=2e9, times=[1.0, 2.0, 4.0])
    >>> r["value"], r["spread"], r["repeats"], r["status"]
    (1.0, [0.5, 2.0], 3, 'ok')
    """
    new: dict[str, Any] = {
        "section": section,
        "name": name,
        "metric": metric,
        "unit": unit,
        "value": None,
        "spread": None,
        "repeats": 0,
        "field": None,
        "codec": None,
        "device": "cpu",
        "ratio": None,
        "bound": None,
        "bound_basis": None,
        "percent_of_bound": None,
        "cache": None,
        "status": "ok",
    }
    new.update(extra)
    if times:
        measure(new, times, nbytes=nbytes, samples=samples)
    return new


def set_bound(row: dict[str, Any], bound: float | None, basis: str) -> None:
    """Record the ceiling ``row`` is measured against and its percentage of it (nothing for an
    unmeasured row or an unknown bound).

    Examples
    --------
    >>> r = {"value": 3.0}
    >>> set_bound(r, 12.0, "memory copy")
    >>> r["bound"], r["bound_basis"], r["percent_of_bound"]
    (12.0, 'memory copy', 25.0)
    """
    if bound is None or row["value"] is None:
        return
    row["bound"] = round(bound, 4)
    row["bound_basis"] = basis
    row["percent_of_bound"] = round(100 * row["value"] / bound, 1) if bound > 0 else None
