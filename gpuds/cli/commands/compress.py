"""``gpuds compress``: a store to sharded Zarr v3 with standard bitstreams."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpuds.cli import options, render
from gpuds.cli.console import print_json
from gpuds.cli.progress import RichProgress


def compress(
    source: Annotated[
        str, typer.Argument(help="The store to read (from ingest or preprocess): path or URL.")
    ],
    out: Annotated[
        str, typer.Option("-o", "--out", help="The sharded store to create (path or URL).")
    ],
    codec: Annotated[
        options.Codec,
        typer.Option(
            "--codec",
            help="zstd, lz4, gzip: standard bitstreams any zarr-python reads; none: raw; auto: "
            "try zstd 3, lz4 and gzip 5 with and without byte shuffle on a sample of each field "
            "and keep the best ratio, gzip only when it is 10% better (it decodes several times "
            "slower): the same pick on any machine. gdeflate, bitcomp, ans, cascaded: nvCOMP only.",
        ),
    ] = "zstd",
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
        options.Device, typer.Option("--device", help="Where chunks are encoded: auto, cpu, cuda.")
    ] = "auto",
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Read everything back with zarr-python and compare with the input first.",
        ),
    ] = True,
    overwrite: options.Overwrite = False,
    storage_option: options.StorageOptions = None,
    scheduler: options.Scheduler = None,
    quiet: options.Quiet = False,
    as_json: options.JsonSummary = False,
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

        gpuds compress prep.zarr -o data.zarr --scheduler processes:4   # 4 worker processes
    """
    from gpuds import api
    from gpuds.config import parse_names
    from gpuds.storage import parse_storage_options

    settings = api.FieldSettings(api.CodecConfig(codec.value, level, shuffle), chunk_mb, shard_mb)
    settings, per_field = (
        api.load_compress_config(config, settings) if config is not None else (settings, {})
    )
    with RichProgress(quiet or as_json) as progress:
        summary = api.compress(
            source,
            out,
            settings=settings,
            per_field=per_field,
            fields=parse_names(fields) if fields else None,
            device=device.value,
            verify=verify,
            overwrite=overwrite,
            progress=progress,
            storage_options=parse_storage_options(storage_option or []),
            scheduler=scheduler,
        )
    if as_json:
        print_json(summary)
    else:
        render.compress(summary)
