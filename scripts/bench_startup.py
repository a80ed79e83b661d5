#!/usr/bin/env python3
"""How long ``gpuds --version`` and ``gpuds --help`` take to answer, next to their targets.

Runs the installed ``gpuds`` console script (the one beside this Python, else the one on PATH)
in a fresh subprocess, one untimed warm-up then ``--runs`` timed runs per command, and prints the
median and the range. Wall-clock times on a busy machine run high: compare medians taken on an
idle one. Nothing is asserted; the exit code is 0 whatever the figures.

    .venv/bin/python scripts/bench_startup.py            # 11 runs per command
    .venv/bin/python scripts/bench_startup.py --runs 31
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {"--version": 0.15, "--help": 0.3}
"""Seconds each command should take at most (issue 12)."""


def _gpuds() -> str:
    beside = Path(sys.executable).parent / "gpuds"
    found = str(beside) if beside.exists() else shutil.which("gpuds")
    if found is None:
        sys.exit("error: no gpuds command found; install gpuds (pip install -e .) first")
    return found


def _seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="timed runs per command")
    args = parser.parse_args()
    gpuds = _gpuds()
    print(f"{gpuds}, median of {args.runs} runs after a warm-up")
    print(f"{'command':<16} {'median':>8} {'range':>15} {'target':>8}")
    for option, target in TARGETS.items():
        command = [gpuds, option]
        _seconds(command)
        times = [_seconds(command) for _ in range(args.runs)]
        median = statistics.median(times)
        verdict = "ok" if median <= target else "OVER"
        print(
            f"{'gpuds ' + option:<16} {median:>7.3f}s {min(times):>6.3f}-{max(times):.3f}s "
            f"{target:>7.2f}s  {verdict}"
        )


if __name__ == "__main__":
    main()
