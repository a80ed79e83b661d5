"""Bench reports for people: the Markdown table and the PNG chart, read back as a reader would."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gpuds import bench
from gpuds.backend import resolve
from gpuds.bench.harness import SKIPPED_NO_GPU, row, set_bound
from gpuds.bench.report import BAR_COLOUR, BOUND_COLOUR
from gpuds.environment import environment
from gpuds.errors import ConfigError

MEMCPY = 12.0


def _report(decode_rates: dict[tuple[str, str], float]) -> dict:
    """A report of one memory copy and a CPU and a (skipped) GPU decode row per (codec, field)."""
    rows = [row("reference", "memory copy (host)", "memcpy", "GB/s", nbytes=MEMCPY * 1e9,
                times=[1.0])]  # fmt: skip
    for (codec, field), rate in decode_rates.items():
        cpu = row("codec", f"{codec} decode {field}", "decode", "GB/s", nbytes=rate * 1e9,
                  times=[1.0, 1.0], field=field, codec=codec, ratio=2.0)  # fmt: skip
        set_bound(cpu, MEMCPY, "memory copy")
        gpu = row("codec", f"{codec} decode {field}", "decode", "GB/s", device="cuda",
                  field=field, codec=codec, ratio=2.0, status=SKIPPED_NO_GPU)  # fmt: skip
        rows += [cpu, gpu]
    env = environment(resolve("cpu"))
    return {"created": "2025-01-01T00:00:00+00:00", "environment": env, "rows": rows}


def _mask(pixels: np.ndarray, colour: str) -> np.ndarray:
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return np.all(np.abs(pixels.astype(int) - rgb) < 10, axis=2)


def _runs(line: np.ndarray) -> int:
    """Separate stretches of True in a 1-D mask."""
    return int(np.sum(line[1:] & ~line[:-1]) + line[0])


RATES = {
    ("zstd", "images"): 3.0,
    ("lz4", "images"): 6.0,
    ("gzip", "images"): 0.15,
    ("zstd", "counts"): 0.6,
    ("lz4", "counts"): 1.0,
}


@pytest.mark.parametrize(
    "rates",
    [RATES, {**RATES, ("gzip", "counts"): 0.006}],  # a bar 1,000x below the fastest
    ids=["typical", "spread"],
)
def test_plot_draws_one_visible_bar_per_decode_row_below_the_bound(tmp_path: Path, rates: dict):
    assert bench.plot(_report(rates), tmp_path / "b.png") is None
    with Image.open(tmp_path / "b.png") as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    bars = _mask(pixels, BAR_COLOUR)
    counts = np.array([_runs(line) for line in bars])
    # A band of pixel rows crosses every bar, and no row crosses more: one bar per decode row,
    # the shortest still many pixels high.
    assert counts.max() == len(rates)
    assert np.sum(counts == len(rates)) >= 10
    # Left to right in report order, taller for a faster rate (the axis is monotonic).
    columns = np.flatnonzero(bars.any(axis=0))
    groups = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
    assert len(groups) == len(rates)
    tops = [int(np.flatnonzero(bars[:, g].any(axis=1))[0]) for g in groups]
    order = np.argsort(list(rates.values()), kind="stable")
    assert all(tops[a] > tops[b] for a, b in pairwise(order))
    # The bound: a horizontal line from the left of the axes (the legend, upper right, may
    # hide its end), above every bar.
    bound = _mask(pixels, BOUND_COLOUR)
    line = np.flatnonzero(bound.sum(axis=1) > 0.3 * (columns[-1] - columns[0]))
    assert line.size and line.max() < min(tops)
    assert np.flatnonzero(bound[line[0]])[0] < columns[0]


def test_plot_without_a_decode_measurement_is_an_error(tmp_path: Path):
    report = _report({})
    with pytest.raises(ConfigError, match="nothing to plot"):
        bench.plot(report, tmp_path / "b.png")
    assert not (tmp_path / "b.png").exists()


def test_markdown_has_one_table_line_per_row():
    report = _report(RATES)
    text = bench.markdown(report)
    lines = text.splitlines()
    assert lines[0].startswith("**gpuds bench** (2025-01-01T00:00:00+00:00): ")
    assert f"{report['environment']['cores']} cores, GPU none" in lines[0]
    table = [line for line in lines if line.startswith("| ")]
    assert len(table) == len(report["rows"]) + 2
    cells = [c.strip() for c in table[3].strip("|").split("|")]
    assert cells == ["codec", "zstd decode images", "cpu", "3.000 GB/s", "3.000-3.000", "2.0",
                     "12.000", "25%", "ok"]  # fmt: skip
    skipped = [c.strip() for c in table[4].strip("|").split("|")]
    assert skipped[2:] == ["cuda", "-", "-", "2.0", "-", "-", SKIPPED_NO_GPU]
