"""scripts/bench_cluster.py: its arithmetic, and a run on a small input (a smoke test of about
10 s: the figures of a 3,000-sample run measure fixed costs, not scaling)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "scripts" / "bench_cluster.py"


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("bench_cluster", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_busy_time_is_the_union_of_the_task_intervals_within_the_call():
    bench = _script()

    def task(*spans: tuple[float, float]) -> dict[str, Any]:
        return {"startstops": [{"action": "compute", "start": a, "stop": b} for a, b in spans]}

    # two workers overlapping on [2, 3], one task running past the end, one before the start
    records = [task((1, 3), (5, 6)), task((2, 4)), task((9, 12)), task((-3, -1))]
    assert bench.busy_seconds(records, 0.0, 10.0) == pytest.approx(3 + 1 + 1)
    assert bench.busy_seconds([], 0.0, 10.0) == 0


def test_amdahl_projection():
    bench = _script()
    assert bench.amdahl(10.0, 0.0, 16) == pytest.approx(16)
    assert bench.amdahl(10.0, 1.0, 1) == pytest.approx(1)
    assert bench.amdahl(10.0, 1.0, 1024) == pytest.approx(10 / (1 + 9 / 1024))


def test_a_quick_run_compares_every_scheduler_and_finds_the_same_bytes():
    pytest.importorskip("distributed")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["identical"] is True and report["quick"] is True
    assert set(report["runs"]) == {"threads", "processes:1", "processes:2"}
    assert all(s > 0 for s in report["startup_seconds"].values())
    assert 0.5 < report["machine_bound"] < 2.5
    for stage in ("preprocess", "compress"):
        figures = report["stages"][stage]
        assert all(t > 0 for t in figures["seconds"].values())
        assert 0 <= figures["serial_seconds_p1"] <= figures["seconds"]["processes:1"]
        projected = [figures["projected_speedup"][str(n)] for n in (16, 128, 1024)]
        assert projected == sorted(projected) and projected[-1] <= 1024
