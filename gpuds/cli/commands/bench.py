"""``gpuds bench``: codecs, the store, the loader and references, measured side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gpuds.cli import options, render
from gpuds.cli.progress import RichProgress
from gpuds.errors import ConfigError


def bench(
    store: Annotated[
        str | None,
        typer.Argument(
            help="Store to measure (a path or a URL); without it, documented sample data is "
            "generated."
        ),
    ] = None,
    device: Annotated[
        options.Device,
        typer.Option("--device", help="auto, cpu or cuda (GPU rows skip without a GPU)."),
    ] = "auto",
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
        typer.Option(
            "--plot",
            help="Write a PNG chart: decode rate against ratio, with the bounds (gpuds[plot]).",
        ),
    ] = None,
    storage_option: options.StorageOptions = None,
    quiet: options.Quiet = False,
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
    from gpuds import api
    from gpuds.config import parse_names
    from gpuds.storage import parse_storage_options

    storage_options = parse_storage_options(storage_option or [])

    if tune:
        if store is None:
            raise ConfigError("--tune needs a STORE to sample")
        with RichProgress(quiet) as progress:
            report = api.tune(
                store, quick=quick, progress=progress, storage_options=storage_options
            )
        render.tune(report, store)
    else:
        with RichProgress(quiet) as progress:
            report = api.bench(
                store,
                device=device.value,
                codecs=parse_names(codecs),
                repeats=repeats,
                quick=quick,
                step_ms=step_ms,
                progress=progress,
                storage_options=storage_options,
            )
        render.bench(report)
        if markdown_file is not None:
            from gpuds.bench import markdown

            markdown_file.write_text(markdown(report))
        if plot_file is not None:
            from gpuds.bench import plot

            plot(report, plot_file)
    if json_file is not None:
        json_file.write_text(json.dumps(report, indent=1) + "\n")
