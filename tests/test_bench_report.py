"""Bench reports for people: the Markdown table and the PNG chart, read back as a reader would."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gpuds import bench
from gpuds.backend import resolve
from gpuds.bench.harness import SKIPPED_NO_GPU, row, set_bound
from gpuds.bench.report import (
    BOUND_COLOUR,
    CODEC_COLOURS,
    IO_COLOUR,
    LOADER_COLOUR,
    STORE_COLOUR,
    TEXT_COLOUR,
)
from gpuds.environment import environment
from gpuds.errors import ConfigError

MEMCPY = 12.0
STORE = {"storage_read": 4.0, "decode": 3.0, "read_decode": 2.4, "bound": 3.0, "loader": 1.5}
"""The store and loader rows' rates (GB/s) and their bound."""


def _report(decode_rates: dict[tuple[str, str], tuple[float, float]]) -> dict:
    """A report of one memory copy, a CPU and a (skipped) GPU decode row per (codec, field) at
    (rate GB/s, ratio), the store rows and the loader row, each with its bound."""
    rows = [row("reference", "memory copy (host)", "memcpy", "GB/s", nbytes=MEMCPY * 1e9,
                times=[1.0])]  # fmt: skip
    for (codec, field), (rate, ratio) in decode_rates.items():
        cpu = row("codec", f"{codec} decode {field}", "decode", "GB/s", nbytes=rate * 1e9,
                  times=[1.0, 1.0], field=field, codec=codec, ratio=ratio)  # fmt: skip
        set_bound(cpu, MEMCPY, "memory copy")
        gpu = row("codec", f"{codec} decode {field}", "decode", "GB/s", device="cuda",
                  field=field, codec=codec, ratio=ratio, status=SKIPPED_NO_GPU)  # fmt: skip
        rows += [cpu, gpu]
    storage = row("store", "read stored bytes (page cache)", "storage_read", "GB/s",
                  nbytes=STORE["storage_read"] * 1e9, times=[1.0])  # fmt: skip
    decode = row("store", "decode every chunk in memory", "decode", "GB/s",
                 nbytes=STORE["decode"] * 1e9, times=[1.0], ratio=2.0)  # fmt: skip
    both = row("store", "read+decode (store to host memory)", "read_decode", "GB/s",
               nbytes=STORE["read_decode"] * 1e9, times=[1.0], ratio=2.0)  # fmt: skip
    set_bound(both, STORE["bound"], "min(storage x ratio, decode rate)")
    loader = row("loader", "loader(batch 256)", "samples", "samples/s",
                 samples=STORE["loader"] * 1e9 / 3072, times=[1.0])  # fmt: skip
    loader["gbps"] = STORE["loader"]
    set_bound(loader, STORE["bound"] * 1e9 / 3072, "store read+decode bound, in samples/s")
    rows += [storage, decode, both, loader]
    env = environment(resolve("cpu"))
    return {"created": "2025-01-01T00:00:00+00:00", "environment": env, "rows": rows}


def _mask(pixels: np.ndarray, colour: str, tolerance: int = 10) -> np.ndarray:
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return np.all(np.abs(pixels.astype(int) - rgb) < tolerance, axis=2)


def _blobs(mask: np.ndarray, min_area: int = 20) -> list[tuple[float, float, int, int, int, int]]:
    """Connected regions of ``mask`` (4-neighbours) of at least ``min_area`` pixels, as
    (centre x, centre y, left, right, top, bottom)."""
    seen = np.zeros_like(mask)
    found = []
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        stack, members = [(y0, x0)], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            members.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                inside = 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1]
                if inside and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        if len(members) >= min_area:
            ys, xs = np.array(members).T
            found.append((xs.mean(), ys.mean(), xs.min(), xs.max(), ys.min(), ys.max()))
    return found


RATES = {
    ("zstd", "images"): (3.0, 1.9),
    ("lz4", "images"): (6.0, 1.3),
    ("gzip", "images"): (0.15, 2.4),
    ("zstd", "counts"): (0.6, 19.0),
    ("lz4", "counts"): (1.0, 9.0),
}


@pytest.mark.parametrize(
    "rates",
    [RATES, {**RATES, ("gzip", "counts"): (0.006, 16.0)}],  # a point 1,000x below the fastest
    ids=["typical", "spread"],
)
def test_plot_shows_each_codec_at_its_ratio_and_rate_under_its_bounds(tmp_path: Path, rates: dict):
    report = _report(rates)
    assert bench.plot(report, tmp_path / "b.png") is None
    with Image.open(tmp_path / "b.png") as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    height, width, _ = pixels.shape
    assert width >= 900 and height >= 600  # legible without zooming
    # One point per measured decode row, in its codec's colour, in the panel of its field
    # (left to right in report order); the skipped GPU rows are not drawn.
    fields = list(dict.fromkeys(field for _, field in rates))
    points = []
    for codec in dict.fromkeys(c for c, _ in rates):
        blobs = _blobs(_mask(pixels, CODEC_COLOURS[codec]))
        mine = [(field, rates[(c, field)]) for c, field in rates if c == codec]
        assert len(blobs) == len(mine), codec
        for (field, (rate, ratio)), blob in zip(mine, sorted(blobs), strict=True):
            points.append((fields.index(field), rate, ratio, blob))
    assert [p[0] for p in sorted(points, key=lambda p: p[3][0])] == sorted(p[0] for p in points)
    # Within a panel: further right for a higher ratio, higher up for a faster decode (log axes
    # are monotonic), and a label (text pixels) beside every point.
    text = _mask(pixels, TEXT_COLOUR, tolerance=40)
    for a, b in itertools.permutations(points, 2):
        if a[0] == b[0]:
            assert (a[2] < b[2]) == (a[3][0] < b[3][0])
            assert (a[1] < b[1]) == (a[3][1] > b[3][1])
    for *_, (cx, cy, *_) in points:
        x, y = int(cx), int(cy)
        assert text[max(0, y - 45) : y + 45, max(0, x - 130) : x + 130].sum() > 30
    # The memory copy: a horizontal line across each panel, above every point.
    bound = _mask(pixels, BOUND_COLOUR)
    lines = np.flatnonzero(bound.sum(axis=1) > 0.25 * width)
    assert lines.size and lines.max() < min(p[3][1] for p in points)
    # The storage read rate times the ratio: a rising line in each panel (its pixels higher up
    # further right), the diagonal a point above is not bound by.
    diagonal = _mask(pixels, IO_COLOUR)
    ys, xs = np.nonzero(diagonal[: int(height * 0.7)])
    assert len(xs) > 200
    for panel in range(len(fields)):
        left, right = (
            width * (0.07 + 0.91 * panel / len(fields)),
            width * (0.07 + 0.91 * (panel + 1) / len(fields)),
        )
        inside = (xs > left) & (xs < right)
        assert np.corrcoef(xs[inside], ys[inside])[0, 1] < -0.8
    # The store and loader rows: a bar each, as long as its value, and its bound marked.
    bars = sorted(_blobs(_mask(pixels, STORE_COLOUR), 200), key=lambda b: b[1])
    (loader,) = _blobs(_mask(pixels, LOADER_COLOUR), 200)
    assert len(bars) == 3
    left = bars[0][2]
    lengths = [b[3] - left for b in [*bars, loader]]
    values = [STORE[k] for k in ("storage_read", "decode", "read_decode", "loader")]
    assert np.allclose(np.array(lengths) / lengths[0], np.array(values) / values[0], rtol=0.03)
    black = _mask(pixels, "#000000", tolerance=20)
    for bar in (bars[2], loader):
        band = black[bar[4] : bar[5] + 1, bar[2] + 1 :]
        marks = np.flatnonzero(band.sum(axis=0) >= 0.8 * band.shape[0]) + bar[2] + 1
        assert marks.size
        assert abs((marks.mean() - left) / lengths[0] * values[0] - STORE["bound"]) < 0.05


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
    assert cells == ["codec", "zstd decode images", "cpu", "3.000 GB/s", "3.000-3.000", "1.9",
                     "12.000", "25%", "ok"]  # fmt: skip
    skipped = [c.strip() for c in table[4].strip("|").split("|")]
    assert skipped[2:] == ["cuda", "-", "-", "1.9", "-", "-", SKIPPED_NO_GPU]
