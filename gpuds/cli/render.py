"""What the commands print: their summaries and reports as text for a person.

Each function takes what :mod:`gpuds.api` returned and writes it, results on stdout and what
went wrong or was skipped on stderr; ``--json`` output bypasses this module
(:func:`gpuds.cli.console.print_json`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from gpuds.cli.console import stderr, stdout

__all__ = [
    "bench",
    "compress",
    "env",
    "ingest",
    "inspect",
    "pipeline",
    "preprocess",
    "problems",
    "report",
    "table_decisions",
    "tune",
]

_KINDS = ("numeric", "category", "label", "mask")
_DELIMITER_NAMES = {"\t": "tab", " ": "space", "whitespace": "runs of whitespace"}


def ingest(summary: dict[str, Any]) -> None:
    """Files skipped or ignored, how each table was read, and what was written."""
    for item in summary["skipped"]:
        stderr.print(f"[yellow]skipped {escape(item['path'])}: {escape(item['error'])}[/yellow]")
    if summary["ignored_files"]:
        stderr.print(
            f"[yellow]ignored {len(summary['ignored_files'])} non-image file(s), listed in the "
            "store's attributes[/yellow]"
        )
    for src in summary["sources"]:
        line = table_decisions(src)
        if line is not None:
            stdout.print(escape(line), soft_wrap=True)
    names = ", ".join(f"{n} {tuple(f['shape'])} {f['dtype']}" for n, f in summary["fields"].items())
    stdout.print(
        f"[green]wrote[/green] {escape(summary['output'])}: {summary['samples']} samples "
        f"({escape(names)}) in {summary['seconds']:.1f} s{_ran_on(summary)}"
    )
    if summary["skipped"]:
        stdout.print(f"[yellow]{len(summary['skipped'])} bad file(s) skipped[/yellow]")


def table_decisions(src: dict[str, Any]) -> str | None:
    """One line on how a table source was read: rows, layout and why (CSV), fields by kind."""
    if src.get("format") not in ("csv", "parquet"):
        return None
    decided = src.get("decided") or {}  # stores written before gpuds recorded the reasons lack it

    def why(part: str) -> str:
        return f" ({decided[part]})" if decided.get(part) else ""

    parts = [f"{src.get('rows', '?')} rows"]
    if src.get("compression"):
        parts.append(str(src["compression"]))
    if "delimiter" in src:
        shown = _DELIMITER_NAMES.get(src["delimiter"], repr(src["delimiter"]))
        parts.append(f"delimiter {shown}{why('delimiter')}")
    if src.get("skip_rows"):
        lines = "line" if src["skip_rows"] == 1 else "lines"
        parts.append(f"skipped {src['skip_rows']} {lines}{why('skip_rows')}")
    if "header" in src:
        parts.append(f"header {'yes' if src['header'] else 'no'}{why('header')}")
    kinds: dict[str, list[str]] = src.get("kinds") or {}
    for kind in (*_KINDS, *sorted(set(kinds) - set(_KINDS))):
        names = kinds.get(kind) or []
        if names:
            shown_names = ", ".join(names) if len(names) <= 6 else f"{names[0]} … {names[-1]}"
            parts.append(f"{len(names)} {kind} ({shown_names})")
    return f"{src.get('path')}: " + " · ".join(parts)


def pipeline(config: dict[str, Any]) -> None:
    """A pipeline config as YAML on stdout, ready to save and pass to ``--config``."""
    import yaml

    sys.stdout.write(yaml.safe_dump(config, sort_keys=False))


def preprocess(summary: dict[str, Any]) -> None:
    """Samples in and out, splits, device, and what each op dropped."""
    splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    dropped = [f"{o['op']} dropped {o['dropped']}" for o in summary["ops"] if o.get("dropped")]
    stdout.print(
        f"[green]wrote[/green] {escape(summary['output'])}: {summary['samples_out']} of "
        f"{summary['samples_in']} samples{' (' + splits + ')' if splits else ''} on "
        f"{summary['device']} in {summary['seconds']:.1f} s"
        + (f"; {', '.join(dropped)}" if dropped else "")
        + _ran_on(summary)
    )


def compress(summary: dict[str, Any]) -> None:
    """The ``--codec auto`` trials, the decision per field, and the sizes written."""
    for label, table in summary["auto"].items():
        trial = Table(title=f"--codec auto: {label}", show_edge=False)
        for col in ("codec", "level", "shuffle", "ratio", "speed class", "picked"):
            trial.add_column(col)
        for row in table:
            trial.add_row(
                row["name"], str(row["level"]), str(row["shuffle"]), f"{row['ratio']:.3f}",
                str(row["speed_class"]), "[green]<-[/green]" if row["picked"] else "",
            )  # fmt: skip
        stdout.print(trial)
    for label, decision in summary["decisions"].items():
        stdout.print(f"{escape(label)}: {escape(decision)}")
    stdout.print(
        f"[green]wrote[/green] {escape(summary['output'])}: {_human(summary['stored_bytes'])} "
        f"for {_human(summary['logical_bytes'])} ({summary['ratio'] or 0:.2f}x) on "
        f"{summary['device']} in {summary['seconds']:.1f} s"
        + (", verified with zarr-python" if summary["verified"] else "")
        + _ran_on(summary)
    )


def inspect(report: dict[str, Any]) -> None:
    """The store's status, a table of its fields, and a tree of the details."""
    from gpuds.inspection import PORTABILITY

    tree = Tree(f"[bold]{escape(report['path'])}[/bold]")
    status = "[green]complete[/green]" if report["complete"] else "[red]INCOMPLETE[/red]"
    if not report["gpuds_store"]:
        status = "[red]not a gpuds store[/red]"
    tree.add(
        f"{status} · format {report['format_version']} · gpuds {report['tool_version']} · "
        f"created {report['created']} · {report['num_samples']} samples"
    )
    table = Table(show_edge=False, pad_edge=False)
    for col in (
        "field", "kind", "shape", "dtype", "chunks", "shards", "codecs", "checksum", "stored",
        "ratio",
    ):  # fmt: skip
        table.add_column(col, justify="right" if col in ("stored", "ratio") else "left")
    table.add_column("portable")
    for f in report["fields"]:
        name = f"{f['split']}/{f['name']}" if f["split"] else f["name"]
        table.add_row(
            escape(name),
            escape(_kind(f)),
            "×".join(map(str, f["shape"])),
            f["dtype"],
            "×".join(map(str, f["chunks"])),
            "×".join(map(str, f["shards"])) if f["shards"] else "-",
            escape(_codec_label(f["codecs"])),
            f["checksum"] or "[yellow]none[/yellow]",
            _human(f["stored_bytes"]),
            f"{f['ratio']:.2f}x" if f["ratio"] else "-",
            f["portability"],
        )
    stdout.print(tree)
    stdout.print(table)
    tree = Tree("[bold]details[/bold]")
    total = report["ratio"]
    tree.add(
        f"total: {_human(report['stored_bytes'])} stored for {_human(report['logical_bytes'])} "
        f"({total:.2f}x)"
        if total
        else "total: empty"
    )
    if report["classes"]:
        node = tree.add("classes")
        for field, names in report["classes"].items():
            shown = ", ".join(names[:20]) + (f", … ({len(names)})" if len(names) > 20 else "")
            node.add(f"{escape(field)}: {escape(shown)}")
    if report["stats"]:
        node = tree.add("statistics (fitted)")
        for entry in report["stats"].get("ops", []) if isinstance(report["stats"], dict) else []:
            node.add(escape(f"{entry['op']} (op {entry['index'] + 1}): {_compact(entry['stats'])}"))
    if report["sources"]:
        node = tree.add("sources")
        for src in report["sources"]:
            line = table_decisions(src)
            node.add(escape(f"{src.get('format')}: {line or src.get('path')}"))
    if report["skipped"]:
        tree.add(f"[yellow]{len(report['skipped'])} bad input file(s) skipped at ingest[/yellow]")
    if report["history"]:
        node = tree.add("history")
        for step in report["history"]:
            node.add(
                escape(f"{step.get('time')} {step.get('stage')}: {_compact(step.get('settings'))}")
            )
    if report["fingerprint"]:
        tree.add(f"fingerprint {report['fingerprint']}")
    unchecked = [f for f in report["fields"] if not f["checksum"]]
    if report["fields"] and not unchecked:
        tree.add("checksums: crc32c on every chunk, checked on every read")
    elif unchecked:
        tree.add(
            f"[yellow]checksums: none on {len(unchecked)} field(s)[/yellow] (written before "
            "format 2): reads check only that chunks decode; --verify also checks fingerprints"
        )
    levels = sorted({f["portability"] for f in report["fields"]})
    tree.add("portable: " + "; ".join(f"{lv} = {PORTABILITY.get(lv, lv)}" for lv in levels))
    if "verify" in report:
        v = report["verify"]
        ok = "[green]ok[/green]" if v["ok"] else "[red]FAILED[/red]"
        tree.add(f"verify: {v['chunks_decoded']} of {v['chunks']} chunks decoded, {ok}")
    stdout.print(tree)


def problems(report: dict[str, Any]) -> None:
    """Each problem ``inspect`` found, as an error line on stderr."""
    for problem in report["problems"]:
        stderr.print(f"[red]error:[/red] {escape(report['path'])}: {escape(problem)}")


def bench(report: dict[str, Any]) -> None:
    """The environment, one row per measurement with its bound, and the loader's shuffle quality."""
    env = report["environment"]
    stdout.print(
        f"[bold]gpuds bench[/bold] on {escape(str(env['cpu']))} ({env['cores']} cores), GPU "
        f"{escape(str(env['gpu'] or 'none'))}; zarr {env['zarr']}, numcodecs {env['numcodecs']}"
    )
    table = Table(show_edge=False)
    for col in ("section", "measurement", "device", "value", "spread", "ratio", "% of bound"):
        table.add_column(
            col, justify="right" if col in ("value", "ratio", "% of bound") else "left"
        )
    for row in report["rows"]:
        if row["value"] is None:
            value, spread = f"[dim]{escape(row['status'])}[/dim]", ""
        else:
            value = f"{row['value']:,.3f} {row['unit']}"
            spread = f"{row['spread'][0]:,.2f}-{row['spread'][1]:,.2f}"
        pct = f"{row['percent_of_bound']:.0f}% of {row['bound']:,.2f}" if row["bound"] else ""
        table.add_row(
            row["section"], escape(row["name"]), row["device"], value, spread,
            f"{row['ratio']:.2f}x" if row["ratio"] else "", pct,
        )  # fmt: skip
    stdout.print(table)
    loader = next((r for r in report["rows"] if r["section"] == "loader"), None)
    if loader and loader.get("shuffle_quality"):
        quality = loader["shuffle_quality"]
        stdout.print(
            f"loader shuffle quality: displacement {quality['displacement']:.3f} (1 = uniform), "
            f"neighbours {quality['neighbours']:.4f} (0 = none kept together)"
        )
    stdout.print(f"{len(report['rows'])} rows in {report['seconds']:.1f} s")


def report(summary: dict[str, Any]) -> None:
    """The card written: its size and sections, how its statistics were read, the PNG files."""
    stats = summary["statistics"]
    how = (
        "exact (every chunk read)"
        if stats["exact"]
        else f"sampled ({stats['samples_read']:,} of {stats['samples']:,} field samples, seed "
        f"{stats['seed']}; fields over {stats['sample_mb']:g} MiB read on a sample of chunks)"
    )
    stdout.print(
        f"[green]wrote[/green] {escape(summary['output'])} ({_human(summary['bytes'])}): "
        f"{', '.join(summary['sections'])}; {summary['figures']} figures; statistics {how}; "
        f"{summary['seconds']:.1f} s",
        soft_wrap=True,
    )
    if summary["png"]:
        folder = str(Path(summary["png"][0]).parent)
        stdout.print(f"figures as PNG in {escape(folder)}: {len(summary['png'])} files")


def tune(report: dict[str, Any], store: str) -> None:
    """The sweep of ``bench --tune``, its rule and the command it recommends."""
    table = Table(title=f"gpuds bench --tune {escape(store)}", show_edge=False)
    for col in ("codec", "level", "chunk MiB", "ratio", "decode GB/s"):
        table.add_column(col, justify="right" if col != "codec" else "left")
    for row in report["rows"]:
        mark = "[bold green]" if row is report["recommended"] else ""
        table.add_row(
            f"{mark}{row['codec']}", str(row["level"]), f"{row['chunk_mb']:g}",
            f"{row['ratio']:.3f}", f"{row['decode_gbps']:.2f}",
        )  # fmt: skip
    stdout.print(table)
    stdout.print(f"rule: {report['rule']}\nrecommended: [bold]{escape(report['command'])}[/bold]")


def env(info: dict[str, Any]) -> None:
    """Versions and device, one per line; what is absent (a package, the GPU) is left out."""
    table = Table(show_header=False, show_edge=False)
    for key, value in info.items():
        if value is not None:
            table.add_row(key, escape(str(value)))
    stdout.print(table)


def _ran_on(summary: dict[str, Any]) -> str:
    """Where a stage's tasks ran (``--scheduler``), unless in this process."""
    where = summary.get("scheduler")
    return f"; ran on {escape(str(where))}" if where and where != "threads" else ""


def _kind(field: dict[str, Any]) -> str:
    if "vocabulary_size" in field:
        size = field["vocabulary_size"]
        return f"{field['kind']} ({size} value{'s' * (size != 1)})"
    return str(field.get("kind", "array"))


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _compact(value: Any, limit: int = 400) -> str:
    """One readable line for nested settings or statistics (the full text is in --json)."""

    def shorten(v: Any) -> Any:
        if isinstance(v, float):
            return float(f"{v:.4g}")
        if isinstance(v, list):
            items = [shorten(x) for x in v[:8]]
            return [*items, f"... {len(v)} in all"] if len(v) > 8 else items
        if isinstance(v, dict):
            return {k: shorten(x) for k, x in v.items()}
        return v

    text = json.dumps(shorten(value), separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 20] + " ... (see --json)"


def _codec_label(names: list[str]) -> str:
    """``["sharding_indexed", "bytes", "numcodecs.shuffle", "zstd", "crc32c"]`` →
    ``shard(shuffle+zstd)`` (the checksum has a column of its own)."""
    short = [n.removeprefix("numcodecs.") for n in names if n not in ("bytes", "crc32c")]
    if short and short[0] == "sharding_indexed":
        return f"shard({'+'.join(short[1:]) or 'raw'})"
    return "+".join(short) or "raw"
