"""A bench report for people: a Markdown table to paste into an issue, and a PNG chart of the
trade-off between compression ratio and decode rate, with the bounds drawn in. (The JSON report
is the dict itself; the CLI renders the terminal table.)"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

from gpuds.errors import ConfigError

__all__ = [
    "BOUND_COLOUR",
    "CODEC_COLOURS",
    "IO_COLOUR",
    "LOADER_COLOUR",
    "OTHER_COLOUR",
    "STORE_COLOUR",
    "TEXT_COLOUR",
    "markdown",
    "plot",
]

CODEC_COLOURS = {"zstd": "#1f77b4", "lz4": "#2ca02c", "gzip": "#ff7f0e", "none": "#7f7f7f"}
"""The colour of each codec's points in the plot (by the name before ``+shuffle``)."""
OTHER_COLOUR = "#9467bd"
"""The colour of a codec :data:`CODEC_COLOURS` does not name (the nvCOMP-only ones)."""
BOUND_COLOUR = "#d62728"
"""The memory copy line: the bound of CPU decoding."""
IO_COLOUR = "#8c564b"
"""The diagonal lines: a transfer rate (storage read, host-to-device copy) times the ratio."""
STORE_COLOUR = "#17becf"
"""The bars of the store rows."""
LOADER_COLOUR = "#bcbd22"
"""The bar of the loader row."""
TEXT_COLOUR = "#333333"
"""Labels and values."""


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table, for pasting into an issue: a line naming the machine and
    the versions, then one table line per row.

    Examples
    --------
    >>> env = {"cpu": "EPYC", "cores": 2, "gpu": None, "gpuds": "0.1", "zarr": "3",
    ...        "numcodecs": "0", "numpy": "2"}
    >>> row = {"section": "reference", "name": "memory copy (host)", "device": "cpu",
    ...        "value": 11.2, "unit": "GB/s", "spread": [10.9, 11.5], "ratio": None,
    ...        "bound": None, "percent_of_bound": None, "status": "ok"}
    >>> print(markdown({"created": "today", "environment": env, "rows": [row]}))
    **gpuds bench** (today): EPYC, 2 cores, GPU none; gpuds 0.1, zarr 3, numcodecs 0, numpy 2
    <BLANKLINE>
    | section | measurement | device | value | spread | ratio | bound | % of bound | status |
    | --- | --- | --- | --- | --- | --- | --- | --- | --- |
    | reference | memory copy (host) | cpu | 11.200 GB/s | 10.900-11.500 | - | - | - | ok |
    <BLANKLINE>
    """
    env = report["environment"]
    lines = [
        f"**gpuds bench** ({report['created']}): {env['cpu']}, {env['cores']} cores, "
        f"GPU {env['gpu'] or 'none'}; gpuds {env['gpuds']}, zarr {env['zarr']}, "
        f"numcodecs {env['numcodecs']}, numpy {env['numpy']}",
        "",
        "| section | measurement | device | value | spread | ratio | bound | % of bound | status |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["rows"]:
        value = f"{row['value']:,.3f} {row['unit']}" if row["value"] is not None else "-"
        spread = f"{row['spread'][0]:,.3f}-{row['spread'][1]:,.3f}" if row["spread"] else "-"
        bound = f"{row['bound']:,.3f}" if row["bound"] is not None else "-"
        pct = f"{row['percent_of_bound']:.0f}%" if row["percent_of_bound"] is not None else "-"
        lines.append(
            f"| {row['section']} | {row['name']} | {row['device']} | {value} | {spread} | "
            f"{row['ratio'] if row['ratio'] is not None else '-'} | {bound} | {pct} | "
            f"{row['status']} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: str | Path) -> None:
    """Write a PNG chart of what the bench found: decode rate against compression ratio.

    The upper panels, one per field, put one point per measured ``codec`` decode row at
    (ratio, decode GB/s) on log axes, coloured by codec (:data:`CODEC_COLOURS`; a triangle for
    a GPU row) and labelled with the codec and its rate. The bounds are lines: the memory copy
    rate (horizontal, :data:`BOUND_COLOUR`), the ceiling of CPU decoding; and, where the report
    measured them, the storage read rate times the ratio (diagonal, :data:`IO_COLOUR`), what
    reading compressed bytes can deliver, and the host-to-device copy rate times the ratio, the
    GPU's bound. A point under the diagonal is limited by decoding, one above it by reading: a
    higher ratio moves the diagonal up. The lower panel shows the ``store`` and ``loader`` rows
    as bars (:data:`STORE_COLOUR`, :data:`LOADER_COLOUR`) in GB/s, each with its bound as a
    black mark and its value and percentage of the bound printed. Rows without a value (no GPU)
    are named in a note. Needs matplotlib (``pip install 'gpuds[plot]'``).

    Examples
    --------
    See :mod:`gpuds.bench`.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ConfigError("--plot needs matplotlib: pip install 'gpuds[plot]'") from e
    rows = report["rows"]
    points = [
        r for r in rows
        if r["section"] == "codec" and r["metric"] == "decode" and r["value"] and r["ratio"]
    ]  # fmt: skip
    if not points:
        raise ConfigError("nothing to plot: no decode measurement in the report")
    fields = list(dict.fromkeys(r["field"] for r in points))
    bars = _bar_rows(rows)
    memcpy = _value(rows, "reference", "memcpy")
    storage = _value(rows, "store", "storage_read")
    h2d = _value(rows, "reference", "h2d")

    columns = min(len(fields), 4)
    grid_rows = -(-len(fields) // columns)
    bar_height = 0.6 + 0.4 * len(bars) if bars else 0.0
    width = max(9.0, 3.4 * columns + 1.2)
    height = 3.5 * grid_rows + bar_height + 1.6
    # A Figure of its own, not pyplot: no global backend switch, no figure left open.
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)  # labels are placed by their drawn size: a renderer from the start
    fig.subplots_adjust(left=0.07, right=0.98, top=1 - 0.95 / height, bottom=0.45 / height + 0.03)
    outer = fig.add_gridspec(
        2 if bars else 1, 1, height_ratios=[3.5 * grid_rows, bar_height] if bars else [1],
        hspace=0.5 / grid_rows if bars else 0.0,
    )  # fmt: skip
    panels = outer[0].subgridspec(grid_rows, columns, wspace=0.08, hspace=0.42)
    lowest = min(r["value"] for r in points)
    highest = max([r["value"] for r in points] + [memcpy or 0])
    ylim = (10 ** math.floor(math.log10(lowest / 2)), 10 ** math.ceil(math.log10(highest * 1.5)))
    shared = None
    for i, name in enumerate(fields):
        ax = fig.add_subplot(panels[i // columns, i % columns], sharey=shared)
        shared = shared or ax
        mine = [r for r in points if r["field"] == name]
        _trade_off_panel(ax, name, mine, memcpy, storage, h2d, ylim)
        if i % columns:
            ax.tick_params(labelleft=False)
        else:
            ax.set_ylabel("decode GB/s (uncompressed)", fontsize=10)
    env = report["environment"]
    fig.suptitle(
        f"gpuds bench: decode rate against compression ratio ({env['cpu']}, {env['cores']} "
        f"cores, GPU {env['gpu'] or 'none'})",
        fontsize=13, x=0.5, y=1 - 0.12 / height, va="top",
    )  # fmt: skip
    explain = textwrap.fill(
        "one point per codec and device (● CPU, ▲ GPU), labelled with its decode rate; data "
        "reaches memory at most at the lower of its point and the diagonal line",
        width=int(width * 72 / 5.4),
    )
    fig.text(0.5, 1 - 0.42 / height, explain, ha="center", va="top", fontsize=9.5,
             color=TEXT_COLOUR)  # fmt: skip
    if bars:
        _bound_bars(fig.add_subplot(outer[1]), bars)
    skipped = sorted({r["status"] for r in rows if r["value"] is None and r["status"] != "ok"})
    if skipped:
        fig.text(0.01, 0.005, "not shown: rows " + "; ".join(skipped), fontsize=9,
                 color=TEXT_COLOUR, va="bottom")  # fmt: skip
    fig.savefig(path, format="png")


def _value(rows: list[dict[str, Any]], section: str, metric: str) -> float | None:
    return next(
        (r["value"] for r in rows if r["section"] == section and r["metric"] == metric), None
    )


def _bar_rows(rows: list[dict[str, Any]]) -> list[tuple[str, float, float | None, str]]:
    """The store and loader rows with a value, as (label, GB/s, bound GB/s, value text)."""
    out = []
    for r in rows:
        if r["section"] not in ("store", "loader") or not r["value"]:
            continue
        if r["unit"] == "GB/s":
            gbps, text = r["value"], f"{r['value']:.3g} GB/s"
            bound = r["bound"]
        else:  # the loader: samples/s, with its GB/s equivalent
            gbps = r.get("gbps") or 0.0
            text = f"{r['value']:,.0f} samples/s ({gbps:.3g} GB/s)"
            bound = r["bound"] * gbps / r["value"] if r["bound"] and gbps else None
        if not gbps:
            continue
        if r["percent_of_bound"] is not None and bound:
            text += f", {r['percent_of_bound']:.0f}% of its bound {bound:.3g} GB/s"
        name = r["name"] if r["section"] == "loader" else f"store, {r['name']}"
        out.append((name, gbps, bound, text))
    return out


def _codec_colour(codec: str) -> str:
    return CODEC_COLOURS.get(codec.split("+")[0], OTHER_COLOUR)


def _trade_off_panel(
    ax: Any,
    field: str,
    rows: list[dict[str, Any]],
    memcpy: float | None,
    storage: float | None,
    h2d: float | None,
    ylim: tuple[float, float],
) -> None:
    """One field: its codecs' (ratio, decode rate) points, labelled, and the bound lines."""
    ratios = [r["ratio"] for r in rows]
    lo, hi = min(ratios), max(ratios)
    # At least a factor of 3 wide, centred on the points (log), so that labels have room.
    centre = math.sqrt(lo * hi)
    half = max(math.sqrt(hi / lo), math.sqrt(3.0)) * 1.35
    xlim = (centre / half, centre * half)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_title(field, fontsize=11)
    ax.set_xlabel("compression ratio", fontsize=10)
    ax.xaxis.set_major_locator(_ratio_locator())
    ax.xaxis.set_major_formatter(_ratio_formatter())
    ax.xaxis.set_minor_formatter(_ratio_formatter(minor=True))
    ax.tick_params(labelsize=9)
    ax.grid(True, which="major", color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    xs = [xlim[0], xlim[1]]
    notes = []
    if memcpy:
        ax.axhline(memcpy, color=BOUND_COLOUR, linewidth=1.6, linestyle="--")
        note = ax.annotate(
            f"memory copy {memcpy:.3g} GB/s", (0.02, memcpy), xycoords=("axes fraction", "data"),
            xytext=(0, 3), textcoords="offset points", fontsize=8.5, color=BOUND_COLOUR,
        )  # fmt: skip
        notes.append(note)
    for rate, name in ((storage, "storage read"), (h2d, "host-to-device")):
        if rate:
            ax.plot(xs, [rate * x for x in xs], color=IO_COLOUR, linewidth=1.4, linestyle="-.")
            notes.append(_line_label(ax, rate, f"{name} {rate:.3g} GB/s × ratio", xlim, ylim))
    renderer = ax.figure.canvas.get_renderer()
    markers = [n.get_window_extent(renderer) for n in notes if n is not None]
    for r in rows:
        marker = "^" if r["device"] == "cuda" else "o"
        (point,) = ax.plot(
            [r["ratio"]], [r["value"]], marker=marker, markersize=10, linestyle="none",
            color=_codec_colour(r["codec"]), markeredgecolor="white", markeredgewidth=0.8,
        )  # fmt: skip
        markers.append(point.get_window_extent(renderer))
    placed: list[Any] = []
    for r in sorted(rows, key=lambda r: -r["value"]):
        gpu = " (GPU)" if r["device"] == "cuda" else ""
        text = f"{r['codec']}{gpu}\n{r['value']:.3g} GB/s"
        placed.append(_place_label(ax, renderer, r["ratio"], r["value"], text, markers, placed))


def _line_label(
    ax: Any, rate: float, text: str, xlim: tuple[float, float], ylim: tuple[float, float]
) -> Any:
    """Write ``text`` along the line ``y = rate * x``, near the left end of its visible part."""
    first = max(xlim[0], ylim[0] / rate)
    last = min(xlim[1], ylim[1] / rate)
    if first >= last:
        return None
    x = first * (last / first) ** 0.06
    a, b = ax.transData.transform([(x, rate * x), (x * 2, rate * x * 2)])
    angle = math.degrees(math.atan2(b[1] - a[1], b[0] - a[0]))
    label = ax.annotate(
        text, (x, rate * x), xytext=(0, 3), textcoords="offset points", rotation=angle,
        rotation_mode="anchor", fontsize=8.5, color=IO_COLOUR,
    )  # fmt: skip
    renderer = ax.figure.canvas.get_renderer()
    box, extent = ax.get_window_extent(renderer), label.get_window_extent(renderer)
    if extent.x1 <= box.x1 and extent.y1 <= box.y1:
        return label
    # The visible part of the line is too short for its text: name it in a corner instead.
    label.remove()
    return ax.annotate(
        f"diagonal: {text}", (0.98, 0.03), xycoords="axes fraction", ha="right", fontsize=8.5,
        color=IO_COLOUR,
    )  # fmt: skip


_SIDES = [  # offset direction (points) and alignment, in the order they are tried
    (1, 0, "left", "center"), (-1, 0, "right", "center"), (0, 1, "center", "bottom"),
    (0, -1, "center", "top"), (1, 1, "left", "bottom"), (1, -1, "left", "top"),
    (-1, 1, "right", "bottom"), (-1, -1, "right", "top"),
]  # fmt: skip


def _place_label(
    ax: Any, renderer: Any, x: float, y: float, text: str, markers: list[Any], placed: list[Any]
) -> Any:
    """Write ``text`` beside the point (x, y): the first place, near then farther, where it stays
    inside the axes and covers no marker and no earlier label; else the least covering one."""
    box = ax.get_window_extent(renderer)
    obstacles = markers + [p.get_window_extent(renderer) for p in placed]
    best: tuple[float, tuple[float, float, str, str]] | None = None
    for distance in (9, 20, 34):
        for dx, dy, ha, va in _SIDES:
            label = ax.annotate(
                text, (x, y), xytext=(dx * distance, dy * distance * 0.8),
                textcoords="offset points", ha=ha, va=va, fontsize=9, color=TEXT_COLOUR,
                linespacing=1.05,
            )  # fmt: skip
            extent = label.get_window_extent(renderer)
            label.remove()
            outside = max(0.0, box.x0 - extent.x0) + max(0.0, extent.x1 - box.x1)
            outside += max(0.0, box.y0 - extent.y0) + max(0.0, extent.y1 - box.y1)
            cover = sum(_overlap(extent, o) for o in obstacles) + 1e3 * outside
            option = (dx * distance, dy * distance * 0.8, ha, va)
            if best is None or cover < best[0]:
                best = (cover, option)
            if cover == 0:
                break
        if best is not None and best[0] == 0:
            break
    assert best is not None
    off_x, off_y, ha, va = best[1]
    far = abs(off_x) > 10 or abs(off_y) > 10
    return ax.annotate(
        text, (x, y), xytext=(off_x, off_y), textcoords="offset points", ha=ha, va=va, fontsize=9,
        color=TEXT_COLOUR, linespacing=1.05,
        arrowprops={"arrowstyle": "-", "color": "#999999", "linewidth": 0.7} if far else None,
    )  # fmt: skip


def _overlap(a: Any, b: Any) -> float:
    """Area shared by two display boxes."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _ratio_locator() -> Any:
    from matplotlib.ticker import LogLocator

    return LogLocator(base=10, subs=(1.0, 2.0, 5.0))


def _ratio_formatter(minor: bool = False) -> Any:
    from matplotlib.ticker import FuncFormatter

    def text(value: float, _: Any) -> str:
        return "" if minor else f"{value:g}×"

    return FuncFormatter(text)


def _bound_bars(ax: Any, bars: list[tuple[str, float, float | None, str]]) -> None:
    """The store and loader rows as horizontal bars, each with its bound as a black mark and
    its name and values written beside it."""
    ys = list(range(len(bars)))[::-1]
    top = max(max(b[1] for b in bars), max((b[2] or 0) for b in bars))
    for y, (name, gbps, bound, text) in zip(ys, bars, strict=True):
        colour = LOADER_COLOUR if name.startswith("loader") else STORE_COLOUR
        ax.barh(y, gbps, height=0.62, color=colour)
        if bound:
            ax.plot([bound, bound], [y - 0.42, y + 0.42], color="black", linewidth=2.2)
        ax.text(max(gbps, bound or 0) + top * 0.012, y, f"{name}: {text}", va="center",
                fontsize=9, color=TEXT_COLOUR)  # fmt: skip
    ax.set_yticks([])
    ax.set_ylim(-0.6, len(bars) - 0.4)
    ax.set_xlim(0, top * 2.4)
    ax.set_xlabel("GB/s of uncompressed bytes (black mark: the row's bound)", fontsize=10)
    ax.tick_params(axis="x", labelsize=9)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title("the store and the loader against their bounds", fontsize=11, loc="left")
