"""The bench's timing harness: warm-up, synchronised clocks, medians, spreads and bounds."""

from __future__ import annotations

import time

import pytest

from gpuds.bench.harness import measure, row, set_bound, timed
from gpuds.progress import Cancelled, request_cancel


def test_timed_warms_up_once_and_synchronises_inside_each_timed_run():
    calls: list[str] = []

    def fn() -> None:
        calls.append("run")

    def sync() -> None:
        time.sleep(0.01)  # a device still busy: its wait belongs to the measurement
        calls.append("sync")

    times = timed(fn, 3, sync)
    assert calls == ["run"] + ["run", "sync"] * 3
    assert len(times) == 3 and all(t >= 0.01 for t in times)


def test_timed_stops_between_runs_on_a_cancel_request():
    runs: list[int] = []

    def fn() -> None:
        runs.append(1)
        if len(runs) == 2:
            request_cancel()

    with pytest.raises(Cancelled):
        timed(fn, 5)
    assert len(runs) == 2


def test_rows_report_the_median_rate_and_its_spread():
    gbps = row("store", "read", "storage_read", "GB/s", nbytes=6e9, times=[3.0, 1.0, 2.0])
    assert (gbps["value"], gbps["spread"], gbps["repeats"]) == (3.0, [2.0, 6.0], 3)
    per_s = row("loader", "loader", "samples", "samples/s", samples=1000, times=[0.5, 0.25])
    assert (per_s["value"], per_s["spread"]) == (3000.0, [2000.0, 4000.0])
    unmeasured = row("codec", "x", "decode", "GB/s", device="cuda", status="skipped (no GPU)")
    assert (unmeasured["value"], unmeasured["spread"], unmeasured["repeats"]) == (None, None, 0)
    with pytest.raises(ValueError, match="samples"):
        measure(row("loader", "l", "samples", "samples/s"), [1.0])


def test_a_bound_needs_a_value_and_a_positive_ceiling():
    measured = row("codec", "x", "decode", "GB/s", nbytes=3e9, times=[1.0])
    set_bound(measured, 12.0, "memory copy")
    assert (measured["bound"], measured["percent_of_bound"]) == (12.0, 25.0)
    unmeasured = row("codec", "x", "decode", "GB/s")
    set_bound(unmeasured, 12.0, "memory copy")
    assert unmeasured["bound"] is None and unmeasured["bound_basis"] is None
    zero = row("codec", "x", "decode", "GB/s", nbytes=3e9, times=[1.0])
    set_bound(zero, 0.0, "memory copy")
    assert zero["bound"] == 0.0 and zero["percent_of_bound"] is None
