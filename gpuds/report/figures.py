"""The figures of a dataset card, drawn with matplotlib into PNG bytes.

Each function takes what the card gathered and returns a :class:`Png` (its bytes and size). The
figures share one look: the split colours of :data:`SPLIT_COLOURS`, values printed on bars,
legible at the size the page shows them. Needs matplotlib (:func:`require_matplotlib`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpuds.errors import ConfigError

__all__ = [
    "ACCENT",
    "DPI",
    "SPLIT_COLOURS",
    "Png",
    "class_counts",
    "compression",
    "decode_rates",
    "histograms",
    "require_matplotlib",
    "sample_grid",
    "split_colour",
]

DPI = 144
"""Pixels per inch of the PNGs; the page shows them at 96 per inch (sharp on dense screens)."""
SPLIT_COLOURS = {"train": "#3b6fb6", "val": "#e08a2c", "test": "#4a9e5c", "": "#3b6fb6"}
"""The colour of each split, in every figure and on the page."""
_MORE_SPLITS = ("#8e5fb0", "#b5534f", "#6b7f8c")
ACCENT = "#3b6fb6"
TEXT = "#2b2f36"
GRID = "#e4e7eb"
CHANNEL_NAMES = {3: ("R", "G", "B"), 4: ("R", "G", "B", "A")}


def require_matplotlib() -> None:
    """Check that matplotlib imports, before any work; else the one-line error naming the fix."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"gpuds report draws its figures with matplotlib, which is not installed ({e}): "
            "pip install 'gpuds[plot]'"
        ) from e


@dataclass(frozen=True)
class Png:
    """A figure: PNG bytes and their size in pixels."""

    data: bytes
    width: int
    height: int


def split_colour(split: str, order: Sequence[str] = ()) -> str:
    """The colour of ``split`` (a name outside train/val/test gets one by its place)."""
    if split in SPLIT_COLOURS:
        return SPLIT_COLOURS[split]
    place = list(order).index(split) if split in order else 0
    return _MORE_SPLITS[place % len(_MORE_SPLITS)]


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A Figure of its own, not pyplot: no global backend switch, no figure left open.
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _margins(
    fig: Any, left: float, bottom: float, top: float, right: float = 0.15, wspace: float = 0.0
) -> None:
    """Fixed margins in inches (tight_layout measures every text: slower than drawing)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=wspace,
    )


def _label_inches(labels: Sequence[str], size: float = 8.5) -> float:
    """About how wide the longest of ``labels`` is at ``size`` points."""
    return max((len(str(t)) for t in labels), default=1) * size * 0.6 / 72


def _png(fig: Any) -> Png:
    buffer = io.BytesIO()
    # No "Software" text chunk: the same figure gives the same bytes whatever the version.
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    width, height = (round(float(v)) for v in fig.get_size_inches() * DPI)
    return Png(buffer.getvalue(), width, height)


def _style(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#9aa3ad")
    ax.tick_params(labelsize=8.5, colors=TEXT)
    ax.set_axisbelow(True)


def histograms(
    field: str,
    edges: Sequence[np.ndarray],
    parts: Sequence[tuple[str, Sequence[np.ndarray], int]],
    channels: int,
    xlabel: str,
) -> Png:
    """One panel per channel (``len(edges)``), each split's histogram laid over the others as
    the share of its values per bin; ``parts`` is ``(split, counts per panel, samples read)``."""
    panels = len(edges)
    fig = _figure(2.9 * panels + 0.6 if panels > 1 else 5.2, 2.5)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    names = CHANNEL_NAMES.get(channels, tuple(f"channel {i}" for i in range(channels)))
    order = [split for split, _, _ in parts]
    for panel, ax in enumerate(axes):
        bins = edges[panel]
        for split, counts, samples in parts:
            total = counts[panel].sum()
            if not total:
                continue
            share = counts[panel] / total
            label = f"{split or 'all'} ({samples:,} samples)"
            colour = split_colour(split, order)
            ax.stairs(share, bins, color=colour, linewidth=1.6, label=label)
            ax.stairs(share, bins, color=colour, alpha=0.12, fill=True)
        _style(ax)
        ax.grid(True, axis="y", color=GRID, linewidth=0.7)
        title = f"{field} · {names[panel]}" if panels > 1 else field
        ax.set_title(title, fontsize=10, color=TEXT, loc="left")
        ax.set_xlabel(xlabel, fontsize=8.5, color=TEXT)
        if panel == 0:
            ax.set_ylabel("share of values", fontsize=8.5, color=TEXT)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        # Above the panels, never over the bars.
        fig.legend(handles, labels, loc="upper right", ncols=len(parts), fontsize=8, frameon=False)
    _margins(fig, left=0.75, bottom=0.5, top=0.6 if handles else 0.3, wspace=0.32)
    return _png(fig)


def class_counts(
    field: str, names: Sequence[str], parts: Sequence[tuple[str, np.ndarray]], total_classes: int
) -> Png:
    """Grouped bars: per class (``names``), one bar per split (``parts``: split and counts in
    the order of ``names``), each count written on its bar."""
    classes = len(names)
    splits = len(parts)
    fig = _figure(min(11.0, max(5.2, 0.5 + classes * (0.32 + 0.26 * splits))), 2.8)
    ax = fig.subplots()
    width = 0.8 / max(1, splits)
    x = np.arange(classes)
    top = max((int(c.max()) for _, c in parts if len(c)), default=1)
    order = [split for split, _ in parts]
    for i, (split, counts) in enumerate(parts):
        offset = (i - (splits - 1) / 2) * width
        bars = ax.bar(
            x + offset, counts, width * 0.92, color=split_colour(split, order), label=split or "all"
        )
        if classes * splits <= 60:
            ax.bar_label(
                bars,
                labels=[f"{int(c):,}" if c else "" for c in counts],
                fontsize=7,
                padding=1.5,
                color=TEXT,
            )
    _style(ax)
    ax.grid(True, axis="y", color=GRID, linewidth=0.7)
    ax.set_xticks(
        x,
        [_short(n) for n in names],
        fontsize=8.5,
        rotation=30 if classes > 8 else 0,
        ha="right" if classes > 8 else "center",
    )
    ax.set_ylim(0, top * 1.28 + 1)
    ax.set_ylabel("samples", fontsize=8.5, color=TEXT)
    more = f" (the {classes} most frequent of {total_classes})" if total_classes > classes else ""
    ax.set_title(f"{field}{more}", fontsize=10, color=TEXT, loc="left")
    if splits > 1:
        ax.legend(fontsize=8, frameon=False, ncols=splits, loc="upper right")
    rotated = classes > 8
    below = 0.45 + (_label_inches([_short(n) for n in names]) * 0.55 if rotated else 0.0)
    fig.set_size_inches(fig.get_size_inches()[0], 2.4 + below)
    _margins(fig, left=0.65, bottom=below, top=0.3)
    return _png(fig)


def compression(rows: Sequence[Mapping[str, Any]]) -> Png:
    """Horizontal bars: the compression ratio of each field (``name``, ``ratio``, ``stored``,
    ``logical`` in bytes), the value written, and a line at 1x (no gain)."""
    fig = _figure(7.2, 0.7 + 0.34 * len(rows))
    ax = fig.subplots()
    ys = np.arange(len(rows))[::-1]
    ratios = [r["ratio"] or 0.0 for r in rows]
    top = max([*ratios, 1.0])
    ax.barh(ys, ratios, height=0.62, color=ACCENT)
    ax.axvline(1.0, color="#b5534f", linewidth=1.2, linestyle="--")
    for y, r in zip(ys, rows, strict=True):
        text = (
            f"{r['ratio']:.2f}×  ({_bytes(r['stored'])} of {_bytes(r['logical'])})"
            if r["ratio"]
            else "empty"
        )
        # Right of the bar and of the 1x line, which would cross the text of a bar below 1x.
        ax.text(
            max(r["ratio"] or 0, 1.0) + top * 0.012, y, text, va="center", fontsize=8, color=TEXT
        )
    ax.set_yticks(ys, [r["name"] for r in rows], fontsize=8.5)
    ax.set_xlim(0, top * 1.55)
    ax.set_xlabel(
        "compression ratio (uncompressed ÷ stored; dashed: 1×, no gain)", fontsize=8.5, color=TEXT
    )
    _style(ax)
    _margins(fig, left=_label_inches([r["name"] for r in rows]) + 0.3, bottom=0.5, top=0.1)
    return _png(fig)


def decode_rates(rows: Sequence[Mapping[str, Any]]) -> Png:
    """Horizontal bars on a log scale: each field's decode rate in GB/s (``field``, ``value``),
    with its read+decode rate and bound written beside it (``read_decode``, ``bound``,
    ``percent_of_bound``, which may be None)."""
    import math

    fig = _figure(7.2, 0.8 + 0.34 * len(rows))
    ax = fig.subplots()
    ys = np.arange(len(rows))[::-1]
    values = [r["value"] for r in rows]
    # Rates span decades (a few-KiB field is all fixed costs): bars rise from a decade below.
    floor = 10 ** math.floor(math.log10(min(values) / 3))
    ax.barh(ys, [v - floor for v in values], left=floor, height=0.62, color="#4a9e5c")
    for y, r in zip(ys, rows, strict=True):
        text = f"{r['value']:.3g} GB/s"
        if r.get("read_decode"):
            text += f"; read+decode {r['read_decode']:.3g}"
            if r.get("percent_of_bound") is not None:
                text += f", {r['percent_of_bound']:.0f}% of its bound"
        ax.text(r["value"] * 1.08, y, text, va="center", fontsize=8, color=TEXT)
    ax.set_xscale("log")
    ax.set_xlim(floor, max(values) * 10 ** (math.log10(max(values) / floor) * 0.9 + 0.5))
    ax.set_yticks(ys, [str(r["field"]) for r in rows], fontsize=8.5)
    ax.set_xlabel(
        "decode in memory, GB/s of uncompressed bytes (log scale)", fontsize=8.5, color=TEXT
    )
    _style(ax)
    _margins(fig, left=_label_inches([str(r["field"]) for r in rows]) + 0.3, bottom=0.5, top=0.1)
    return _png(fig)


def sample_grid(field: str, rows: Sequence[tuple[str, bytes]], how: str) -> Png:
    """The sample rows of an image field (label text, row PNG) in one figure, for ``--png``."""
    from PIL import Image

    images = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for _, png in rows]
    width = max(i.shape[1] for i in images)
    height_px = sum(i.shape[0] for i in images)
    fig = _figure((width + 190) / DPI * 1.5, (height_px + 12 * len(images) + 60) / DPI * 1.5)
    axes = fig.subplots(len(images), 1, squeeze=False)[:, 0]
    for ax, (label, _), image in zip(axes, rows, images, strict=True):
        padded = np.full((image.shape[0], width, 3), 255, dtype=np.uint8)
        padded[:, : image.shape[1]] = image
        ax.imshow(padded, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9, color=TEXT)
    fig.suptitle(f"{field}: {how}", fontsize=9, color=TEXT)
    fig.tight_layout(pad=0.6)
    return _png(fig)


def _short(text: str, limit: int = 18) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
