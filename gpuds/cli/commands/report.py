"""``gpuds report``: a dataset card, one self-contained HTML file that shows what a store holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpuds.cli import options, render
from gpuds.cli.progress import RichProgress


def report(
    store: Annotated[str, typer.Argument(help="The store to describe (any stage).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="The HTML file to write.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT (and the PNG files of --png).")
    ] = False,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="Chooses the samples shown (and sampled chunks).")
    ] = 0,
    per_class: Annotated[
        int, typer.Option("--per-class", min=1, max=64, help="Images shown per class.")
    ] = 8,
    sample_mb: Annotated[
        float,
        typer.Option(
            "--sample-mb",
            min=0.001,
            help="A field of a split larger than this (MiB, uncompressed) is read on a seeded "
            "sample of its chunks of this size for its statistics; smaller ones whole.",
        ),
    ] = 64.0,
    bench: Annotated[
        bool,
        typer.Option("--bench", help="Measure each field's decode rate (the gpuds bench code)."),
    ] = False,
    png: Annotated[
        Path | None,
        typer.Option("--png", help="Also write every figure as a PNG file in this folder."),
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Read and decode every chunk first, and say so.")
    ] = False,
    quiet: options.Quiet = False,
) -> None:
    """Write a dataset card: one HTML file, readable offline in any browser, that shows the store.

    Overview, fields (codecs, ratio, portability), samples (images per class, made viewable
    with the store's fitted statistics; the first rows of other fields), distributions (per
    split: histograms, class counts, missing values), preprocessing (ops, fitted statistics,
    before and after), compression (and with --bench decode rates) and history. Needs
    matplotlib: pip install 'gpuds[plot]'.

    **Examples**

        gpuds report data.zarr -o card.html

        gpuds report data.zarr -o card.html --bench --png figures/ --overwrite
    """
    from gpuds import api

    with RichProgress(quiet) as progress:
        summary = api.report(
            store,
            out,
            overwrite=overwrite,
            seed=seed,
            per_class=per_class,
            sample_mb=sample_mb,
            bench=bench,
            png_dir=png,
            verify=verify,
            progress=progress,
        )
    render.report(summary)
