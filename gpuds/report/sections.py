"""The sections of a dataset card as HTML, from a :class:`~gpuds.report.gather.Card` and its
figures: overview, fields, samples, distributions, preprocessing, compression, history."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gpuds.inspection import PORTABILITY
from gpuds.report import figures
from gpuds.report.figures import Png, split_colour
from gpuds.report.gather import Card
from gpuds.report.history import before_after, operations, pooled, timeline
from gpuds.report.page import Cell, esc, figure, image, num, table
from gpuds.report.scan import FieldSummary, histogram_panels

__all__ = ["FIGURES", "make_figures", "render_sections", "statistics_note"]

FIGURES = ("samples", "classes", "values", "histogram", "compression", "decode")
"""The kinds of figure a card draws; ``--png`` names each file ``<kind>-<field>.png``."""
TOP_VALUES = 12
"""Values of a category field drawn (the most frequent)."""


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _rate(gbps: float | None) -> str:
    """A bench rate: rounded to 4 decimals by the bench, so 0 means below 0.0001 GB/s."""
    if gbps is None:
        return "-"
    return f"{gbps:.3g} GB/s" if gbps > 0 else "< 0.0001 GB/s"


def _ratio(value: float | None) -> str:
    return f"{value:.3f}×" if value else "-"


def _split_name(split: str) -> str:
    return split or "all"


def _chip(split: str, card: Card) -> str:
    colour = split_colour(split, card.splits)
    return f'<span class="chip" style="background:{colour}"></span>{esc(_split_name(split))}'


def field_totals(card: Card) -> dict[str, dict[str, Any]]:
    """Per field name, its inspect reports over the splits: summed sizes and the first's
    description."""
    out: dict[str, dict[str, Any]] = {}
    # Described by its largest split (the chunking of a small split is capped by its length).
    reports = sorted(card.inspect["fields"], key=lambda r: -(r["shape"][0] if r["shape"] else 0))
    for report in reports:
        total = out.setdefault(report["name"], {**report, "logical_bytes": 0, "stored_bytes": 0})
        total["logical_bytes"] += report["logical_bytes"]
        total["stored_bytes"] += report["stored_bytes"]
    for total in out.values():
        stored = total["stored_bytes"]
        total["ratio"] = round(total["logical_bytes"] / stored, 3) if stored else None
    return out


def statistics_note(card: Card) -> str:
    """How the statistics were read: exactly, or from a seeded sample of chunks (how many)."""
    parts = list(card.scan.summaries.values())
    read = sum(s.coverage.samples for s in parts)
    total = sum(s.coverage.length for s in parts)
    sampled = [s for s in parts if not s.coverage.exact]
    if not sampled:
        return (
            f"exact: streamed through every chunk of every field ({card.scan.chunks_read:,} "
            f"chunk reads), one chunk in memory at a time"
        )
    named = ", ".join(
        f"{s.split + '/' if s.split else ''}{s.name} ({s.coverage.samples:,} of "
        f"{s.coverage.length:,} samples, {s.coverage.chunks:,} of {s.coverage.nchunks:,} chunks)"
        for s in sampled[:6]
    )
    more = f" and {len(sampled) - 6} more" if len(sampled) > 6 else ""
    return (
        f"sampled: a field of a split larger than {card.budget_mb:g} MiB is read on a seeded "
        f"sample of its chunks (seed {card.seed}), the others whole; {read:,} of {total:,} "
        f"field samples read. Sampled: {named}{more}"
    )


# -- figures ---------------------------------------------------------------------------------


def make_figures(card: Card, grids: bool) -> dict[str, tuple[Png, str]]:
    """Every figure of the card by file stem (``<kind>-<field>``), with its alt text; with
    ``grids``, the sample grids as figures too (the page shows their rows as they are)."""
    out: dict[str, tuple[Png, str]] = {}
    for grid in card.grids if grids else []:
        png = figures.sample_grid(grid.field, grid.rows, grid.how)
        out[f"samples-{grid.field}"] = (png, f"samples of {grid.field}")
    for name in card.names:
        kind = card.kinds[name]
        summaries = card.scan.of(name)
        if kind == "label":
            classes = list(card.attrs[name].get("classes") or [])
            parts = [(s.split, s.counts) for s in summaries if s.counts is not None]
            if classes and parts:
                keep = _top(parts, len(classes), 40)
                png = figures.class_counts(
                    name,
                    [classes[k] for k in keep],
                    [(s, c[keep]) for s, c in parts],
                    len(classes),
                )
                out[f"classes-{name}"] = (png, f"class counts of {name} per split")
        elif kind == "category":
            vocabulary = list(card.attrs[name].get("vocabulary") or [])
            parts = [(s.split, s.counts) for s in summaries if s.counts is not None]
            most = max((int(c.max()) for _, c in parts if len(c)), default=0)
            # A category whose every value occurs once identifies its samples: nothing to draw.
            if vocabulary and parts and most > 1:
                keep = _top(parts, len(vocabulary), TOP_VALUES)
                png = figures.class_counts(
                    name,
                    [str(vocabulary[k]) for k in keep],
                    [(s, c[keep]) for s, c in parts],
                    len(vocabulary),
                )
                out[f"values-{name}"] = (png, f"most frequent values of {name} per split")
        elif name in card.scan.edges and any(s.histograms for s in summaries):
            first = summaries[0]
            unit = card.attrs[name].get("unit")
            xlabel = "value as stored" + (f" ({unit} since 1970-01-01)" if unit else "")
            channels = first.sample_shape[-1] if first.sample_shape else 1
            png = figures.histograms(
                name,
                card.scan.edges[name],
                [(s.split, s.histograms, s.coverage.samples) for s in summaries],
                channels if histogram_panels(first.kind, first.sample_shape) > 1 else 1,
                xlabel,
            )
            out[f"histogram-{name}"] = (png, f"histogram of {name} per split")
    totals = field_totals(card)
    rows = [
        {
            "name": n,
            "ratio": totals[n]["ratio"],
            "stored": totals[n]["stored_bytes"],
            "logical": totals[n]["logical_bytes"],
        }
        for n in card.names
        if n in totals
    ]
    if rows:
        out["compression-fields"] = (figures.compression(rows), "compression ratio per field")
    if card.bench is not None:
        decode = _decode_rows(card.bench)
        if decode:
            out["decode-fields"] = (figures.decode_rates(decode), "decode rate per field")
    return out


def _top(parts: list[tuple[str, Any]], size: int, limit: int) -> np.ndarray:
    """Indices of the ``limit`` largest totals (all of them, in order, when few enough)."""
    totals = np.sum([c for _, c in parts], axis=0) if parts else np.zeros(size)
    if size <= limit:
        return np.arange(size)
    return np.sort(np.argsort(-totals, kind="stable")[:limit])


def _decode_rows(bench: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per measured field: its decode rate, and its read+decode rate with its bound."""
    rows = []
    for name, measured in bench["fields"].items():
        by = {r["metric"]: r for r in measured}
        decode, both = by.get("decode"), by.get("read_decode")
        if decode is None or not decode["value"]:
            continue
        rows.append(
            {
                "field": name,
                "value": decode["value"],
                "read_decode": both["value"] if both else None,
                "percent_of_bound": both.get("percent_of_bound") if both else None,
            }
        )
    return rows


# -- sections --------------------------------------------------------------------------------


def render_sections(card: Card, figs: Mapping[str, tuple[Png, str]]) -> list[tuple[str, str, str]]:
    """The card's sections as ``(id, heading, html)``, each only where it applies."""
    sections = [("overview", "Overview", _overview(card)), ("fields", "Fields", _fields(card))]
    samples = _samples(card, figs)
    if samples:
        sections.append(("samples", "Samples", samples))
    sections.append(("distributions", "Distributions", _distributions(card, figs)))
    sections.append(("preprocessing", "Preprocessing", operations(card) + before_after(card)))
    sections.append(("compression", "Compression", _compression(card, figs)))
    sections.append(("history", "History", timeline(card)))
    return sections


def _tile(key: str, value: str, detail: str = "") -> str:
    extra = f'<div class="d">{detail}</div>' if detail else ""
    head = f'<div class="k">{esc(key)}</div><div class="v">{value}</div>'
    return f'<div class="tile">{head}{extra}</div>'


def _overview(card: Card) -> str:
    report = card.inspect
    splits = [s for s in card.splits if s]
    verified = report.get("verify")
    if verified:
        integrity = (
            '<span class="ok">verified</span>'
            if verified.get("ok")
            else '<span class="bad">damaged</span>'
        )
        integrity_text = (
            f"every chunk read and decoded ({verified['chunks_decoded']:,} of "
            f"{verified['chunks']:,}), checksums and content fingerprints checked"
        )
        if report["problems"]:
            integrity_text += (
                ': <span class="bad">' + esc("; ".join(report["problems"])) + "</span>"
            )
    else:
        integrity = "checked"
        integrity_text = (
            "metadata matches the record written with the store; every chunk this card read "
            f"({card.scan.chunks_read:,} chunk reads) passed its crc32c checksum; not every chunk "
            "was verified (<code>gpuds report --verify</code> or <code>gpuds inspect --verify"
            "</code> reads them all)"
        )
    tiles = [
        _tile("samples", f"{report['num_samples']:,}"),
        _tile(
            "splits",
            str(len(splits)) if splits else "none",
            " · ".join(f"{esc(s)} {card.sizes[s]:,}" for s in splits) or "one unsplit set",
        ),
        _tile(
            "fields",
            str(len(card.names)),
            ", ".join(esc(n) for n in card.names[:6]) + (" …" if len(card.names) > 6 else ""),
        ),
        _tile(
            "stored",
            _bytes(report["stored_bytes"]),
            f"of {_bytes(report['logical_bytes'])} uncompressed",
        ),
        _tile("ratio", _ratio(report["ratio"]), "uncompressed ÷ stored"),
        _tile("integrity", integrity, "" if verified else "not every chunk verified"),
    ]
    level = report.get("portability")
    facts = [
        ("store", f"<code>{esc(card.path)}</code>"),
        (
            "written",
            f"{esc(report.get('created'))} by gpuds {esc(report.get('tool_version'))} "
            f"(store format {esc(report.get('format_version'))})",
        ),
        ("samples", f"{report['num_samples']:,}"),
        ("fingerprint", f"<code>{esc(report.get('fingerprint'))}</code>"),
        (
            "portability",
            f"{esc(level)}: every field reads with {esc(PORTABILITY.get(str(level), level))}",
        ),
        ("integrity", integrity_text),
        ("statistics", esc(statistics_note(card))),
    ]
    kv = table(["", ""], [[esc(k), v] for k, v in facts], css="kv").replace(
        "<thead><tr><th></th><th></th></tr></thead>", ""
    )
    total = max(1, sum(card.sizes.values()))
    rows: list[list[Cell]] = [
        [
            _chip(s, card),
            (f"{card.sizes[s]:,}", "num"),
            (f"{100 * card.sizes[s] / total:.1f}%", "num"),
        ]
        for s in card.splits
    ]
    split_table = table(["split", ("samples", "num"), ("share", "num")], rows)
    return f'<div class="tiles">{"".join(tiles)}</div>{kv}<h3>Splits</h3>{split_table}'


def _kind(card: Card, name: str) -> str:
    kind = card.kinds[name]
    attrs = card.attrs[name]
    if kind == "label":
        return f"label · {len(attrs.get('classes') or [])} classes"
    if kind == "category":
        return f"category · {len(attrs.get('vocabulary') or []):,} values"
    if kind == "mask":
        return f"mask of <code>{esc(attrs.get('mask_of'))}</code>"
    if attrs.get("unit"):
        return f"{esc(kind)} · {esc(attrs['unit'])}"
    return esc(kind)


def _fields(card: Card) -> str:
    totals = field_totals(card)
    rows: list[list[Cell]] = []
    for name in card.names:
        t = totals.get(name)
        if t is None:
            continue
        codecs = [c for c in t["codecs"] if c != "sharding_indexed"]
        layout = f"chunks of {t['chunks'][0]:,}" + (
            f", shards of {t['shards'][0]:,}" if t.get("shards") else ""
        )
        split = f" ({t['split']})" if t["split"] else ""
        rows.append(
            [
                (f"<code>{esc(name)}</code>", "name"),
                _kind(card, name),
                esc(tuple(t["shape"][1:]) if len(t["shape"]) > 1 else "scalar"),
                esc(t["dtype"]),
                f"<code>{esc(' → '.join(codecs))}</code>"
                f'<div class="note">{esc(layout)} samples{esc(split)}</div>',
                (_bytes(t["stored_bytes"]), "num"),
                (_bytes(t["logical_bytes"]), "num"),
                (_ratio(t["ratio"]), "num"),
                esc(t["portability"]),
            ]
        )
    note = (
        '<p class="note">Sizes and ratios summed over the splits; the codec chain is what every '
        "chunk goes through when written, left to right.</p>"
    )
    headers: list[Cell] = [
        "field",
        "kind",
        "sample shape",
        "dtype",
        "codec chain",
        ("stored", "num"),
        ("uncompressed", "num"),
        ("ratio", "num"),
        "portability",
    ]
    return note + table(headers, rows)


def _samples(card: Card, figs: Mapping[str, tuple[Png, str]]) -> str:
    parts = []
    for grid in card.grids:
        rows = [
            [esc(label), image(png, f"{label}: samples of {grid.field}")]
            for label, png in grid.rows
        ]
        parts.append(
            f"<h3><code>{esc(grid.field)}</code></h3>"
            f'<p class="note">{esc(grid.chosen)}. Shown: {esc(grid.how)}.</p>'
            + table(["class" if "per class" in grid.chosen else "samples", ""], rows, css="grid")
            .replace("<thead><tr><th>class</th><th></th></tr></thead>", "")
            .replace("<thead><tr><th>samples</th><th></th></tr></thead>", "")
        )
    if card.first_rows is not None:
        names, rows_ = card.first_rows
        split = card.display_split
        headers = [f"<code>{esc(n)}</code>" for n in names]
        cells = [
            [
                f'<span class="missing">{esc(text)}</span>' if missing else esc(text)
                for text, missing in row
            ]
            for row in rows_
        ]
        parts.append(
            f"<h3>First {len(rows_)} rows of {esc(split or 'the store')}</h3>"
            + table(headers, cells)
        )
    return "".join(parts)


def _stats_rows(card: Card, name: str) -> list[list[Cell]]:
    rows: list[list[Cell]] = []
    for s in card.scan.of(name):
        if s.moments is None or s.ranges is None or s.ranges.min is None or s.ranges.max is None:
            continue
        count, mean, std = pooled([s.moments])
        panels = histogram_panels(s.kind, s.sample_shape)
        if panels > 1:
            labels = figures.CHANNEL_NAMES.get(panels, tuple(str(i) for i in range(panels)))
            channels = [(labels[c], [c]) for c in range(panels)]
        else:
            channels = [("all", list(range(len(count))))]
        for label, members in channels:
            n = count[members]
            total = n.sum()
            if not total:
                continue
            m = float((n * mean[members]).sum() / total)
            var = float((n * (std[members] ** 2 + (mean[members] - m) ** 2)).sum() / total)
            lo = float(np.min(s.ranges.min[members]))
            hi = float(np.max(s.ranges.max[members]))
            std_all = float(np.sqrt(var))
            row: list[Cell] = [_chip(s.split, card)]
            if panels > 1:
                row.append(esc(label))
            row += [
                (f"{s.coverage.samples:,}", "num"),
                (num(m, std_all), "num"),
                (num(std_all), "num"),
                (num(lo), "num"),
                (num(hi), "num"),
            ]
            rows.append(row)
    return rows


def _class_table(card: Card, name: str) -> str:
    classes = list(card.attrs[name].get("classes") or [])
    summaries = [s for s in card.scan.of(name) if s.counts is not None]
    rows: list[list[Cell]] = []
    for k, cls in enumerate(classes):
        counts = [int(s.counts[k]) for s in summaries if s.counts is not None]
        rows.append(
            [
                f"{esc(cls)}",
                (str(k), "num"),
                *[(f"{c:,}", "num") for c in counts],
                (f"{sum(counts):,}", "num"),
            ]
        )
    headers: list[Cell] = [
        "class",
        ("label", "num"),
        *[(esc(_split_name(s.split)), "num") for s in summaries],
        ("total", "num"),
    ]
    out = table(headers, rows)
    bad = sum(s.out_of_range for s in summaries)
    if bad:
        out += f'<p class="bad">{bad:,} label values lie outside the {len(classes)} classes.</p>'
    return out


def _coverage(summaries: list[FieldSummary]) -> str:
    sampled = [s for s in summaries if not s.coverage.exact]
    if not sampled:
        return "Every sample counted."
    return (
        "Counted on a seeded sample of chunks: "
        + ", ".join(
            f"{_split_name(s.split)} {s.coverage.samples:,} of {s.coverage.length:,} samples"
            for s in sampled
        )
        + "."
    )


def _distributions(card: Card, figs: Mapping[str, tuple[Png, str]]) -> str:
    parts = []
    for name in card.names:
        kind = card.kinds[name]
        summaries = card.scan.of(name)
        if f"classes-{name}" in figs:
            png, alt = figs[f"classes-{name}"]
            parts.append(
                f"<h3>Classes of <code>{esc(name)}</code></h3>"
                + _pair(figure(png, alt, esc(_coverage(summaries))), _class_table(card, name))
            )
        elif f"values-{name}" in figs:
            png, alt = figs[f"values-{name}"]
            size = len(card.attrs[name].get("vocabulary") or [])
            parts.append(
                f"<h3>Values of <code>{esc(name)}</code></h3>"
                + figure(png, alt, esc(f"{size:,} distinct values. {_coverage(summaries)}"))
            )
        elif kind == "category":
            size = len(card.attrs[name].get("vocabulary") or [])
            parts.append(
                f'<h3>Values of <code>{esc(name)}</code></h3><p class="note">{size:,} distinct '
                f"values, none held by more than one sample (an identifier): nothing to draw. "
                f"{esc(_coverage(summaries))}</p>"
            )
        elif f"histogram-{name}" in figs:
            png, alt = figs[f"histogram-{name}"]
            first = summaries[0]
            what = (
                "one histogram per channel"
                if histogram_panels(kind, first.sample_shape) > 1
                else "all values of a sample together"
                if first.sample_shape
                else ""
            )
            caption = (
                f"Share of the values per bin in each split{', ' + what if what else ''}; the "
                f"splits share the bins. {_coverage(summaries)}"
            )
            panels = histogram_panels(kind, first.sample_shape)
            headers: list[Cell] = [
                "split",
                *(["channel"] if panels > 1 else []),
                ("samples read", "num"),
                ("mean", "num"),
                ("std", "num"),
                ("min", "num"),
                ("max", "num"),
            ]
            stats = table(headers, _stats_rows(card, name))
            shown = figure(png, alt, esc(caption))
            parts.append(
                f"<h3><code>{esc(name)}</code></h3>"
                + (shown + stats if panels > 1 else _pair(shown, stats))
            )
    parts.append("<h3>Missing values</h3>" + _missing(card))
    return "".join(parts)


def _pair(left: str, right: str) -> str:
    """Two blocks side by side (one above the other on a narrow screen)."""
    return f'<div class="pair"><div>{left}</div><div>{right}</div></div>'


def _missing(card: Card) -> str:
    rows: list[list[Cell]] = []
    for name in card.names:
        summaries = card.scan.of(name)
        if not summaries or summaries[0].missing is None:
            continue
        kind = card.kinds[name]
        attrs = card.attrs[name]
        if kind == "mask":
            what = f"<code>{esc(attrs.get('mask_of'))}</code> (marked in <code>{esc(name)}</code>)"
            how = "mask is true"
        elif kind == "category":
            what, how = f"<code>{esc(name)}</code>", f"code {esc(attrs.get('missing_code', -1))}"
        else:
            what, how = f"<code>{esc(name)}</code>", "NaN"
        cells: list[Cell] = [what, how]
        for s in summaries:
            text = f"{s.missing:,}"
            if not s.coverage.exact:
                text += f" of {s.coverage.samples:,} read"
            cells.append((f'<span class="missing">{text}</span>' if s.missing else text, "num"))
        rows.append(cells)
    if not rows:
        return (
            '<p class="note">No field can hold a missing value (no floats, categories or '
            "masks).</p>"
        )
    headers: list[Cell] = [
        "field",
        "missing when",
        *[(esc(_split_name(s)), "num") for s in card.splits],
    ]
    note = '<p class="note">Samples with a missing value, per split.</p>'
    return note + table(headers, rows)


def _compression(card: Card, figs: Mapping[str, tuple[Png, str]]) -> str:
    report = card.inspect
    parts = [
        f"<p>{_bytes(report['stored_bytes'])} stored for {_bytes(report['logical_bytes'])} of "
        f"samples: <strong>{_ratio(report['ratio'])}</strong> overall.</p>"
    ]
    if "compression-fields" in figs:
        png, alt = figs["compression-fields"]
        parts.append(figure(png, alt, "Per field, summed over the splits."))
    compress = [e for e in card.info.get("history") or [] if e.get("stage") == "compress"]
    decisions = (compress[-1].get("settings") or {}).get("decisions") if compress else None
    if decisions:
        parts.append(
            "<h3>What compress decided</h3>"
            + table(
                ["field", "decision"],
                [[f"<code>{esc(k)}</code>", esc(v)] for k, v in decisions.items()],
            )
        )
    if card.bench is None:
        parts.append(
            '<p class="note">Decode rates: <code>gpuds report STORE -o card.html --bench</code> '
            "measures them with the code of <code>gpuds bench</code>.</p>"
        )
        return "".join(parts)
    bench = card.bench
    env = bench["environment"]
    parts.append(
        f'<h3>Decode rates</h3><p class="note">Measured by <code>gpuds bench</code>\'s store '
        f"section on each field of the {esc(_split_name(bench['split']))} split alone (its first "
        f"{bench['limit_mb']} MiB at most, page cache warm), median of {bench['repeats']} runs, "
        f"on {esc(env.get('cpu'))} ({esc(env.get('cores'))} cores), CPU; GB/s of uncompressed "
        f"bytes. Memory copy on this machine: {bench['memcpy']['value']:.3g} GB/s.</p>"
    )
    if "decode-fields" in figs:
        png, alt = figs["decode-fields"]
        parts.append(figure(png, alt))
    rows: list[list[Cell]] = []
    for name, measured in bench["fields"].items():
        by = {r["metric"]: r for r in measured}
        decode, both = by.get("decode"), by.get("read_decode")
        if decode is None or both is None or decode["value"] is None:
            status = measured[0]["status"] if measured else "not measured"
            rows.append([f"<code>{esc(name)}</code>", "", "", "", esc(status), ""])
            continue
        pct = both.get("percent_of_bound")
        rows.append(
            [
                f"<code>{esc(name)}</code>",
                (_ratio(decode.get("ratio")), "num"),
                (_rate(decode["value"]), "num"),
                (_rate(both["value"]), "num"),
                (f"{both['bound']:.3g} GB/s" if both.get("bound") else "-", "num"),
                (f"{pct:.0f}%" if pct is not None else "-", "num"),
            ]
        )
    headers: list[Cell] = [
        "field",
        ("ratio of the chunks read", "num"),
        ("decode in memory", "num"),
        ("read + decode", "num"),
        ("its bound", "num"),
        ("% of bound", "num"),
    ]
    parts.append(
        table(headers, rows)
        + '<p class="note">The bound of read + decode is min(storage read × ratio, decode rate). '
        "On a field of a few chunks fixed costs dominate and the figures mean little.</p>"
    )
    return "".join(parts)
