"""A bench report for people: a Markdown table to paste into an issue, and a PNG chart of the
decode rates against their bound. (The JSON report is the dict itself; the CLI renders the
terminal table.)"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from gpuds.errors import ConfigError

__all__ = ["BAR_COLOUR", "BOUND_COLOUR", "markdown", "plot"]

BAR_COLOUR = "#1f77b4"
"""The colour of the plot's bars."""
BOUND_COLOUR = "#d62728"
"""The colour of the plot's bound line."""


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
    """Write a PNG bar chart of the CPU decode rate per codec and field, with the bound drawn in.

    One bar (:data:`BAR_COLOUR`) per measured ``codec`` section decode row, on a log scale that
    starts a decade below the slowest rate, so that every bar stays visible; the bound is a
    horizontal line (:data:`BOUND_COLOUR`). Needs matplotlib (``pip install 'gpuds[plot]'``).

    Examples
    --------
    See :mod:`gpuds.bench`.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ConfigError("--plot needs matplotlib: pip install 'gpuds[plot]'") from e
    rows = [
        r for r in report["rows"]
        if r["section"] == "codec" and r["metric"] == "decode" and r["value"] is not None
    ]  # fmt: skip
    if not rows:
        raise ConfigError("nothing to plot: no decode measurement in the report")
    labels = [f"{r['codec']}\n{r['field']}" for r in rows]
    values = [r["value"] for r in rows]
    bound = next((r["bound"] for r in rows if r["bound"] is not None), None)
    # A Figure of its own, not pyplot: no global backend switch, no figure left open.
    fig = Figure(figsize=(max(6.0, 0.6 * len(rows)), 4.5), dpi=100)
    ax = fig.subplots()
    ax.bar(range(len(rows)), values, color=BAR_COLOUR, width=0.6)
    if bound is not None:
        ax.axhline(
            bound, color=BOUND_COLOUR, linewidth=2, label=f"bound: memory copy {bound:.1f} GB/s"
        )
        ax.legend(loc="upper right")
    ax.set_xticks(range(len(rows)), labels, rotation=90, fontsize=7)
    ax.set_ylabel("decode GB/s (uncompressed, log scale)")
    env = report["environment"]
    ax.set_title(f"gpuds bench: decode on {env['cpu']} ({env['cores']} cores)", fontsize=9)
    # Rates span orders of magnitude (gzip ~0.1 GB/s, lz4 and the memory copy ~10): on a linear
    # axis the slow codecs' bars would be a pixel high. Bars rise from a decade below the slowest.
    floor = 10 ** math.floor(math.log10(min(values) / 10))
    ax.set_yscale("log")
    ax.set_ylim(floor, max([*values, bound or 0]) * 3)
    fig.tight_layout()
    fig.savefig(path, format="png")
