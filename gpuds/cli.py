"""The ``gpuds`` command line: each command is its options, its help, and one call into the API.

This is the only module that prints, draws progress, or exits. Errors the user can fix
(:class:`~gpuds.errors.GpudsError`) become one red line on stderr and exit code 1; usage errors
exit 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import platform
import signal
import sys
import warnings
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.tree import Tree

import gpuds
from gpuds import api
from gpuds.codecs import CodecConfig
from gpuds.compress import FieldSettings, load_compress_config
from gpuds.config import PipelineConfig, load_config
from gpuds.errors import Cancelled, ConfigError, GpudsError
from gpuds.inspection import PORTABILITY
from gpuds.progress import cancel_pending, request_cancel
from gpuds.sources.base import ReadOptions, parse_size
from gpuds.store import DEFAULT_CHUNK_MB

app = typer.Typer(
    name="gpuds",
    help="Build compressed, GPU-ready datasets: ingest raw data into Zarr v3, preprocess it, "
    "compress it, inspect it, benchmark it.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Piped output (not a terminal) gets room for the inspect table instead of Rich's 80 columns.
stdout = Console(width=None if Console().is_terminal else 140)
stderr = Console(stderr=True, soft_wrap=True)
_state: dict[str, bool] = {"debug": False}


# Options several commands share, declared once.
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace OUT if it is an existing Zarr store.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
JsonSummary = Annotated[
    bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")
]


class Format(StrEnum):
    npy = "npy"
    npz = "npz"
    images = "images"
    csv = "csv"
    parquet = "parquet"
    hdf5 = "hdf5"
    zarr = "zarr"


class Mode(StrEnum):
    RGB = "RGB"
    RGBA = "RGBA"
    L = "L"


class Fit(StrEnum):
    stretch = "stretch"
    crop = "crop"
    pad = "pad"


class Resample(StrEnum):
    nearest = "nearest"
    bilinear = "bilinear"
    bicubic = "bicubic"
    lanczos = "lanczos"


class Frames(StrEnum):
    first = "first"
    all = "all"


class Codec(StrEnum):
    zstd = "zstd"
    lz4 = "lz4"
    gzip = "gzip"
    none = "none"
    auto = "auto"
    gdeflate = "gdeflate"
    bitcomp = "bitcomp"
    ans = "ans"
    cascaded = "cascaded"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class RichProgress:
    """Progress events drawn as a Rich bar on stderr (nothing when quiet or not a terminal)."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and stderr.is_terminal
        self.quiet = quiet
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        if self.enabled:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=stderr,
                transient=False,
            )
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def start(self, description: str, total: int | None) -> None:
        if self._bar is not None:
            if self._task is not None:
                self._bar.update(self._task, visible=True)
            self._task = self._bar.add_task(description, total=total)

    def advance(self, amount: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, amount)

    def note(self, message: str) -> None:
        if not self.quiet:
            stderr.print(f"[yellow]{escape(message)}[/yellow]")


def _version(value: bool) -> None:
    if value:
        stdout.print(f"gpuds {gpuds.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    """Build compressed, GPU-ready datasets.

    Stages read a source and write a new store; nothing ever modifies its input.
    """
    _state["debug"] = debug


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


@app.command()
def ingest(
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="Files or folders to read; their fields are combined sample by sample."
        ),
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="The store to create (a .zarr folder).")],
    fmt: Annotated[
        Format | None,
        typer.Option("--format", help="Reader for every source; detected per source by default."),
    ] = None,
    fields: Annotated[
        str | None,
        typer.Option(
            "--fields",
            "--columns",
            help="Comma-separated fields to keep (columns, datasets, npz members, arrays).",
        ),
    ] = None,
    label: Annotated[
        str | None,
        typer.Option("--label", help="Table column to store as the 'labels' field."),
    ] = None,
    header: Annotated[
        bool | None,
        typer.Option(
            "--header/--no-header",
            help="Whether the CSV's first row (after --skip-rows) holds the column names. "
            "Default: guess (yes unless it holds a number).",
            show_default=False,
        ),
    ] = None,
    delimiter: Annotated[
        str | None,
        typer.Option(
            "--delimiter",
            help="CSV delimiter: one character, 'tab' or 'whitespace' (runs of spaces and tabs). "
            "Default: sniffed among , ; tab, else whitespace.",
            show_default=False,
        ),
    ] = None,
    skip_rows: Annotated[
        int | None,
        typer.Option(
            "--skip-rows",
            help="Lines to skip at the top of a CSV (titles, metadata) before the header or data. "
            "Default: 1 when line 1 is metadata (numbers that do not fit the rows below), else 0.",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[
        Mode, typer.Option("--mode", help="Pixel mode every image is converted to.")
    ] = Mode.RGB,
    resize: Annotated[
        str | None,
        typer.Option("--resize", help="Resize every image to HxW (e.g. 224x224), see --fit."),
    ] = None,
    fit: Annotated[
        Fit,
        typer.Option(
            "--fit",
            help="With --resize: stretch (ignore aspect), crop (cover, then centre-crop) or "
            "pad (fit inside, centre on black).",
        ),
    ] = Fit.stretch,
    resample: Annotated[
        Resample, typer.Option("--filter", help="Resampling filter used by --resize.")
    ] = Resample.bilinear,
    frames: Annotated[
        Frames | None,
        typer.Option(
            "--frames",
            help="Multi-frame images (multi-page TIFF, animated PNG/WebP, MPO): first reads "
            "frame 0, all makes one sample per frame. Without it they are refused.",
            show_default=False,
        ),
    ] = None,
    skip_bad: Annotated[
        bool,
        typer.Option(
            "--skip-bad",
            help="Skip unreadable images, listed in the store's attributes (one folder only).",
        ),
    ] = False,
    chunk_mb: Annotated[
        float,
        typer.Option("--chunk-mb", help="Target chunk size in MiB (chunks hold whole samples)."),
    ] = DEFAULT_CHUNK_MB,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: JsonSummary = False,
) -> None:
    """Read raw data into a chunked Zarr v3 store.

    Formats: .npy/.npz arrays, image folders (one subfolder per class, or flat), CSV/Parquet
    tables, HDF5 files and existing Zarr v2/v3 stores. The store is built under a temporary name
    and appears at OUT only when complete.

    **Examples**

        gpuds ingest photos/ -o raw.zarr --resize 224x224 --fit crop

        gpuds ingest features.npy meta.csv -o raw.zarr --label species

        gpuds ingest readings.csv.gz -o raw.zarr --skip-rows 2 --no-header --delimiter ';'

        gpuds ingest run.h5 -o raw.zarr --fields data.x,data.y --json
    """
    options = ReadOptions(
        fields=tuple(f.strip() for f in fields.split(",") if f.strip()) if fields else None,
        header=header,
        delimiter=delimiter,
        skip_rows=skip_rows,
        label=label,
        mode=mode.value,
        resize=parse_size(resize) if resize else None,
        fit=fit.value,
        resample=resample.value,
        frames=frames.value if frames else None,
        skip_bad=skip_bad,
    )
    with RichProgress(quiet or as_json) as progress:
        summary = api.ingest(
            sources,
            out,
            fmt=fmt.value if fmt else None,
            options=options,
            chunk_mb=chunk_mb,
            overwrite=overwrite,
            progress=progress,
        )
    if as_json:
        _print_json(summary)
        return
    for item in summary["skipped"]:
        stderr.print(f"[yellow]skipped {escape(item['path'])}: {escape(item['error'])}[/yellow]")
    if summary["ignored_files"]:
        stderr.print(
            f"[yellow]ignored {len(summary['ignored_files'])} non-image file(s), listed in the "
            "store's attributes[/yellow]"
        )
    for src in summary["sources"]:
        line = _table_decisions(src)
        if line is not None:
            stdout.print(escape(line), soft_wrap=True)
    names = ", ".join(f"{n} {tuple(f['shape'])} {f['dtype']}" for n, f in summary["fields"].items())
    stdout.print(
        f"[green]wrote[/green] {escape(summary['output'])}: {summary['samples']} samples "
        f"({escape(names)}) in {summary['seconds']:.1f} s"
    )
    if summary["skipped"]:
        stdout.print(f"[yellow]{len(summary['skipped'])} bad file(s) skipped[/yellow]")


_KINDS = ("numeric", "category", "label", "mask")
_DELIMITER_NAMES = {"\t": "tab", " ": "space", "whitespace": "runs of whitespace"}


def _table_decisions(src: dict[str, Any]) -> str | None:
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


def _render_inspect(report: dict[str, Any]) -> None:
    title = f"[bold]{escape(report['path'])}[/bold]"
    tree = Tree(title)
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
            line = _table_decisions(src)
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


@app.command()
def inspect(
    store: Annotated[str, typer.Argument(help="Path of the store to describe.")],
    verify: Annotated[
        bool,
        typer.Option(
            "--verify", help="Read and decode every chunk; check presence, integrity, fingerprint."
        ),
    ] = False,
    quiet: Quiet = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (schema in docs/inspect.md).")
    ] = False,
) -> None:
    """Show what a store holds, how well it compressed, and where it came from.

    Exits 1 when the store is incomplete, not a gpuds store, or (with --verify) damaged, naming
    the field and chunk.

    **Examples**

        gpuds inspect raw.zarr

        gpuds inspect raw.zarr --verify --json > report.json
    """
    with RichProgress(quiet or as_json) as progress:
        report = api.inspect(store, verify=verify, progress=progress)
    if as_json:
        _print_json(report)
    else:
        _render_inspect(report)
    if report["problems"]:
        for problem in report["problems"]:
            stderr.print(f"[red]error:[/red] {escape(report['path'])}: {escape(problem)}")
        raise typer.Exit(1)


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _shortcut_config(
    seed: int,
    shuffle: bool,
    split: str | None,
    stratify: str | None,
    cast: list[str],
    standardize: str | None,
    normalize: str | None,
    drop_invalid: str | None,
) -> dict[str, Any]:
    """The config the command-line shortcuts stand for, in a fixed, documented order."""
    ops: list[dict[str, Any]] = []
    if drop_invalid is not None:
        ops.append(
            {"op": "drop_invalid", **({"fields": _names(drop_invalid)} if drop_invalid else {})}
        )
    if shuffle:
        ops.append({"op": "shuffle"})
    if split:
        try:
            fractions = [float(f) for f in split.split(",")]
        except ValueError as e:
            raise ConfigError(f"--split: expected fractions like 0.8,0.1,0.1, got {split!r}") from e
        ops.append(
            {"op": "split", "fractions": fractions, **({"stratify": stratify} if stratify else {})}
        )
    elif stratify:
        raise ConfigError("--stratify needs --split")
    for item in cast:
        field, _, dtype = item.partition("=")
        if not field or not dtype:
            raise ConfigError(f"--cast: expected FIELD=DTYPE (e.g. images=float32), got {item!r}")
        ops.append({"op": "cast", "fields": _names(field), "dtype": dtype})
    if standardize:
        ops.append({"op": "standardize", "fields": _names(standardize), "per": "channel"})
    if normalize:
        ops.append({"op": "normalize", "fields": _names(normalize), "per": "channel"})
    return {"seed": seed, "ops": ops}


@app.command()
def preprocess(
    source: Annotated[Path, typer.Argument(help="The store to read (from gpuds ingest).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="The store to create.")],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Pipeline config, .yaml or .toml (see configs/)."),
    ] = None,
    device: Annotated[
        Device, typer.Option("--device", help="Where ops run: auto (GPU if usable), cpu, cuda.")
    ] = Device.auto,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of every random op (overrides the config's).")
    ] = None,
    shuffle: Annotated[
        bool, typer.Option("--shuffle", help="Shortcut: shuffle the whole dataset.")
    ] = False,
    split: Annotated[
        str | None,
        typer.Option("--split", help="Shortcut: train,val[,test] fractions, e.g. 0.8,0.1,0.1."),
    ] = None,
    stratify: Annotated[
        str | None, typer.Option("--stratify", help="Shortcut: keep class shares in --split.")
    ] = None,
    cast: Annotated[
        list[str] | None,
        typer.Option("--cast", help="Shortcut: FIELD=DTYPE, e.g. images=float32 (repeatable)."),
    ] = None,
    standardize: Annotated[
        str | None,
        typer.Option("--standardize", help="Shortcut: z-score these fields per channel."),
    ] = None,
    normalize: Annotated[
        str | None,
        typer.Option("--normalize", help="Shortcut: min-max these fields to [0, 1] per channel."),
    ] = None,
    drop_invalid: Annotated[
        str | None,
        typer.Option(
            "--drop-invalid", help="Shortcut: drop samples with NaN/inf/missing in these fields."
        ),
    ] = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the resolved config as YAML and stop.")
    ] = False,
    memory_mb: Annotated[
        float | None,
        typer.Option(
            "--memory-mb",
            help="Memory budget of the run in MiB (blocks, shuffle buckets, write buffers; "
            "default 512, overrides the config's): peak resident memory stays within it plus "
            "about 100 MiB (docs/preprocess.md).",
            show_default=False,
        ),
    ] = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: JsonSummary = False,
) -> None:
    """Clean, normalise, cast, resize, shuffle and split a store, on the GPU or the CPU.

    Ops run in the order of the config. Statistics are fitted in streaming passes over the whole
    dataset (after a split: over the train split only) and stored in the output with every
    setting and seed, so the same config on the same input gives identical arrays.

    Shortcuts build a config in this order: drop-invalid, shuffle, split, cast, standardize,
    normalize. Use --print-config to see it, and a config file for anything else.

    **Examples**

        gpuds preprocess raw.zarr -o prep.zarr --config configs/image-classification.yaml

        gpuds preprocess raw.zarr -o prep.zarr --shuffle --split 0.8,0.1,0.1 \\
            --stratify labels --cast images=float32 --standardize images

        gpuds preprocess raw.zarr -o prep.zarr --split 0.9,0.1 --print-config > my.yaml
    """
    shortcuts = _shortcut_config(
        seed or 0, shuffle, split, stratify, cast or [], standardize, normalize, drop_invalid
    )
    if config is not None:
        if shortcuts["ops"]:
            raise ConfigError("give either --config or shortcut options (--split, ...), not both")
        pipeline = load_config(config)
        if seed is not None:
            pipeline.seed = seed
    elif not shortcuts["ops"]:
        raise ConfigError("nothing to do: pass --config FILE or shortcuts like --split 0.8,0.2")
    else:
        pipeline = PipelineConfig.from_dict(shortcuts, "shortcuts")
    if memory_mb is not None:
        pipeline = pipeline.with_memory(memory_mb)
    if print_config:
        sys.stdout.write(yaml.safe_dump(pipeline.to_dict(), sort_keys=False))
        return
    with RichProgress(quiet or as_json) as progress:
        summary = api.preprocess(
            source,
            out,
            config=pipeline,
            device=device.value,
            overwrite=overwrite,
            progress=progress,
        )
    if as_json:
        _print_json(summary)
        return
    splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    dropped = [f"{o['op']} dropped {o['dropped']}" for o in summary["ops"] if o.get("dropped")]
    stdout.print(
        f"[green]wrote[/green] {escape(summary['output'])}: {summary['samples_out']} of "
        f"{summary['samples_in']} samples{' (' + splits + ')' if splits else ''} on "
        f"{summary['device']} in {summary['seconds']:.1f} s"
        + (f"; {', '.join(dropped)}" if dropped else "")
    )


@app.command()
def compress(
    source: Annotated[Path, typer.Argument(help="The store to read (from ingest or preprocess).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="The sharded store to create.")],
    codec: Annotated[
        Codec,
        typer.Option(
            "--codec",
            help="zstd, lz4, gzip: standard bitstreams any zarr-python reads; none: raw; auto: "
            "try zstd 3, lz4 and gzip 5 with and without byte shuffle on a sample of each field "
            "and keep the best ratio, gzip only when it is 10% better (it decodes several times "
            "slower): the same pick on any machine. gdeflate, bitcomp, ans, cascaded: nvCOMP only.",
        ),
    ] = Codec.zstd,
    level: Annotated[
        int | None,
        typer.Option(
            "--level",
            help="Compression level: zstd -131072..22 (default 3; negative = faster), gzip 0..9 "
            "(default 5), lz4 acceleration 1..65537 (default 1; higher = faster, lower ratio).",
        ),
    ] = None,
    shuffle: Annotated[
        bool | None,
        typer.Option(
            "--shuffle/--no-shuffle",
            help="Byte shuffle before compressing multi-byte dtypes. Default: decided per field "
            "by compressing a sample both ways (the smaller wins). It often pays on numbers "
            "(zstd 1.09 -> 1.21 on model weights) and can cost on images, and numcodecs.shuffle "
            "is not a Zarr v3 spec codec: --no-shuffle keeps the store readable by ANY Zarr v3 "
            "reader.",
            show_default=False,
        ),
    ] = None,
    chunk_mb: Annotated[
        float, typer.Option("--chunk-mb", help="Target chunk size in MiB (whole samples).")
    ] = 1.0,
    shard_mb: Annotated[
        float, typer.Option("--shard-mb", help="Target shard (file) size in MiB.")
    ] = 128.0,
    fields: Annotated[
        str | None, typer.Option("--fields", help="Comma-separated fields to keep (default all).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Per-field settings, .yaml or .toml (see docs)."),
    ] = None,
    device: Annotated[
        Device, typer.Option("--device", help="Where chunks are encoded: auto, cpu, cuda.")
    ] = Device.auto,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Read everything back with zarr-python and compare with the input first.",
        ),
    ] = True,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: JsonSummary = False,
) -> None:
    """Compress a store into sharded Zarr v3 with standard bitstreams.

    Chunks hold whole samples; shards (one file each) group chunks so a loader reads a shard with
    one request and decodes its chunks in one batch. The output is read back and compared with
    the input before it appears (--no-verify skips that).

    **Examples**

        gpuds compress prep.zarr -o data.zarr

        gpuds compress prep.zarr -o data.zarr --codec lz4 --chunk-mb 4 --shard-mb 256

        gpuds compress prep.zarr -o data.zarr --codec auto --json

        gpuds compress prep.zarr -o portable.zarr --no-shuffle   # any Zarr v3 reader
    """
    base = FieldSettings(CodecConfig(codec.value, level, shuffle), chunk_mb, shard_mb)
    per_field: dict[str, FieldSettings] = {}
    if config is not None:
        base, per_field = load_compress_config(config, base)
    with RichProgress(quiet or as_json) as progress:
        summary = api.compress(
            source,
            out,
            settings=base,
            per_field=per_field,
            fields=_names(fields) if fields else None,
            device=device.value,
            verify=verify,
            overwrite=overwrite,
            progress=progress,
        )
    if as_json:
        _print_json(summary)
        return
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
    )


@app.command()
def bench(
    store: Annotated[
        str | None,
        typer.Argument(help="Store to measure; without it, documented sample data is generated."),
    ] = None,
    device: Annotated[
        Device, typer.Option("--device", help="auto, cpu or cuda (GPU rows skip without a GPU).")
    ] = Device.auto,
    codecs: Annotated[
        str, typer.Option("--codecs", help="Comma-separated codecs of the codec section.")
    ] = "zstd,lz4,gzip",
    repeats: Annotated[
        int, typer.Option("--repeats", min=1, help="Timed runs per measurement (median reported).")
    ] = 3,
    quick: Annotated[
        bool, typer.Option("--quick", help="Small data and 2 repeats: under a minute on 2 cores.")
    ] = False,
    step_ms: Annotated[
        float, typer.Option("--step-ms", min=0, help="Simulated training step per loader batch.")
    ] = 0.0,
    tune: Annotated[
        bool,
        typer.Option(
            "--tune", help="Sweep codec x level x chunk size on STORE and recommend a command."
        ),
    ] = False,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON (docs/bench.md).")
    ] = None,
    markdown_file: Annotated[
        Path | None, typer.Option("--markdown", help="Write the report as a Markdown table.")
    ] = None,
    plot_file: Annotated[
        Path | None,
        typer.Option("--plot", help="Write a PNG bar chart (needs matplotlib: gpuds[plot])."),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Measure codecs, the store, the loader and references, side by side, with their bounds.

    Medians over --repeats after a warm-up, in decimal GB/s of uncompressed bytes (or samples/s),
    each next to the ceiling it is measured against and its percentage of it. Every round trip is
    checked: a codec that corrupts data fails the bench instead of reporting a speed. Rows that
    need a GPU say "skipped (no GPU)" on a machine without one.

    **Examples**

        gpuds bench --quick

        gpuds bench data.zarr --json bench.json --markdown bench.md --plot bench.png

        gpuds bench --tune data.zarr
    """
    from gpuds import bench as bench_module

    if tune:
        if store is None:
            raise ConfigError("--tune needs a STORE to sample")
        with RichProgress(quiet) as progress:
            report = bench_module.tune(store, quick=quick, progress=progress)
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
        stdout.print(
            f"rule: {report['rule']}\nrecommended: [bold]{escape(report['command'])}[/bold]"
        )
    else:
        names = _names(codecs)
        with RichProgress(quiet) as progress:
            report = bench_module.bench(
                store, device=device.value, codecs=names, repeats=repeats, quick=quick,
                step_ms=step_ms, progress=progress,
            )  # fmt: skip
        _render_bench(report)
        if markdown_file is not None:
            markdown_file.write_text(bench_module.markdown(report))
        if plot_file is not None:
            bench_module.plot(report, plot_file)
    if json_file is not None:
        json_file.write_text(json.dumps(report, indent=1) + "\n")


def _render_bench(report: dict[str, Any]) -> None:
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


@app.command()
def env(
    device: Annotated[
        Device,
        typer.Option("--device", help="Device to resolve: cuda fails unless a GPU is usable."),
    ] = Device.auto,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show the versions gpuds runs with and the device it would use.

    Run it on a cluster node to check that the GPU, driver, CuPy and nvCOMP are visible.

    **Examples**

        gpuds env

        gpuds env --device cuda     # exit 1 with the reason when no GPU is usable
    """
    backend = api.resolve_device(device.value)
    info = _environment()
    info.update({"device": backend.name, "requested": backend.requested, **backend.info})
    if backend.reason and backend.requested == "auto":
        stderr.print(f"[yellow]{escape(backend.reason)}[/yellow]")
    if as_json:
        _print_json(info)
        return
    table = Table(show_header=False, show_edge=False)
    for key, value in info.items():
        table.add_row(key, escape(str(value)))
    stdout.print(table)


def _environment() -> dict[str, Any]:
    from importlib import metadata

    versions: dict[str, Any] = {
        "gpuds": gpuds.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for dist in (
        "numpy",
        "zarr",
        "numcodecs",
        "cupy-cuda12x",
        "cupy-cuda13x",
        "nvidia-nvcomp-cu12",
        "nvidia-nvcomp-cu13",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


class _Interrupted(BaseException):
    """A second Ctrl-C (or SIGTERM): stop at once. Not a KeyboardInterrupt, which Typer turns
    into a silent exit; a BaseException, so that no ``except Exception`` in a stage stops it."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # The first signal asks the stage to stop at its next safe point, where it removes its
    # partial output. A second one while that request still waits (a long write or decode)
    # stops at once, but only once: the clean-up that follows must run to its end, so any later
    # signal, or one arriving after the stage took the request, is ignored.
    if not _state["cancelling"]:
        _state["cancelling"] = True
        request_cancel()
    elif cancel_pending() and not _state["interrupted"]:
        _state["interrupted"] = True
        raise _Interrupted


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gpuds`` console script; returns the exit code."""
    # gpuds reports each codec's portability itself (`inspect`); zarr's generic warning about
    # numcodecs.* codecs would only repeat it, at every open.
    warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    _state["cancelling"] = _state["interrupted"] = False
    try:
        app(args=argv, prog_name="gpuds")
    except (Cancelled, _Interrupted):
        stderr.print("[red]interrupted[/red]: the partial output was removed")
        return 130
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except GpudsError as e:
        if _state["debug"]:
            raise
        stderr.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
        return 1
    except OSError as e:
        if _state["debug"]:
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        message = e.strerror or str(e)
        stderr.print(f"[red]error:[/red] {escape(where)}{escape(message)}", soft_wrap=True)
        return 1
    except Exception as e:
        if _state["debug"]:
            raise
        stderr.print(
            f"[red]internal error:[/red] {type(e).__name__}: {escape(str(e))} "
            "(rerun with --debug for the traceback and please report it)",
            soft_wrap=True,
        )
        return 1
    return 0


def run() -> None:
    """Console-script wrapper."""
    code = main()
    # The run is over: a signal arriving while the interpreter shuts down must not turn the exit
    # code into a kill (Python restores the default handlers late in its shutdown, not SIG_IGN).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(code)
