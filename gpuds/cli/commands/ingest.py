"""``gpuds ingest``: raw files to a chunked Zarr v3 store."""

from __future__ import annotations

from typing import Annotated

import typer

from gpuds.cli import options, render
from gpuds.cli.console import print_json
from gpuds.cli.progress import RichProgress


def ingest(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Files or folders (local, or s3://, gs://, az:// URLs: a folder is a prefix) to "
            "read; their fields are combined sample by sample."
        ),
    ],
    out: Annotated[
        str,
        typer.Option("-o", "--out", help="The store to create (a .zarr folder, or a URL)."),
    ],
    fmt: Annotated[
        options.Format | None,
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
        options.Mode, typer.Option("--mode", help="Pixel mode every image is converted to.")
    ] = "RGB",
    resize: Annotated[
        str | None,
        typer.Option("--resize", help="Resize every image to HxW (e.g. 224x224), see --fit."),
    ] = None,
    fit: Annotated[
        options.Fit,
        typer.Option(
            "--fit",
            help="With --resize: stretch (ignore aspect), crop (cover, then centre-crop) or "
            "pad (fit inside, centre on black).",
        ),
    ] = "stretch",
    resample: Annotated[
        options.Resample, typer.Option("--filter", help="Resampling filter used by --resize.")
    ] = "bilinear",
    frames: Annotated[
        options.Frames | None,
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
    ] = 1.0,
    overwrite: options.Overwrite = False,
    storage_option: options.StorageOptions = None,
    scheduler: options.Scheduler = None,
    quiet: options.Quiet = False,
    as_json: options.JsonSummary = False,
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

        gpuds ingest s3://bucket/photos/ -o s3://bucket/raw.zarr

        gpuds ingest photos/ -o raw.zarr --scheduler tcp://node1:8786   # a Dask cluster
    """
    from gpuds import api
    from gpuds.storage import parse_storage_options

    read_options = api.ReadOptions.from_text(
        fields=fields,
        resize=resize,
        header=header,
        delimiter=delimiter,
        skip_rows=skip_rows,
        label=label,
        mode=mode.value,
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
            options=read_options,
            chunk_mb=chunk_mb,
            overwrite=overwrite,
            progress=progress,
            storage_options=parse_storage_options(storage_option or []),
            scheduler=scheduler,
        )
    if as_json:
        print_json(summary)
    else:
        render.ingest(summary)
