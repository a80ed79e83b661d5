"""``gpuds preprocess``: clean, normalise, cast, resize, shuffle and split a store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpuds.cli import options, render
from gpuds.cli.console import print_json
from gpuds.cli.progress import RichProgress


def preprocess(
    source: Annotated[
        str, typer.Argument(help="The store to read (from gpuds ingest): a path or a URL.")
    ],
    out: Annotated[str, typer.Option("-o", "--out", help="The store to create (path or URL).")],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Pipeline config, .yaml or .toml (see configs/)."),
    ] = None,
    device: Annotated[
        options.Device,
        typer.Option("--device", help="Where ops run: auto (GPU if usable), cpu, cuda."),
    ] = "auto",
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
    overwrite: options.Overwrite = False,
    storage_option: options.StorageOptions = None,
    scheduler: options.Scheduler = None,
    quiet: options.Quiet = False,
    as_json: options.JsonSummary = False,
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

        gpuds preprocess raw.zarr -o prep.zarr -c my.yaml --scheduler $SCHEDULER_FILE
    """
    from gpuds import api
    from gpuds.storage import parse_storage_options

    shortcuts = api.Shortcuts(
        shuffle=shuffle,
        split=split,
        stratify=stratify,
        cast=tuple(cast or ()),
        standardize=standardize,
        normalize=normalize,
        drop_invalid=drop_invalid,
    )
    pipeline = api.pipeline_config(config, shortcuts, seed=seed, memory_mb=memory_mb)
    if print_config:
        render.pipeline(pipeline.to_dict())
        return
    with RichProgress(quiet or as_json) as progress:
        summary = api.preprocess(
            source,
            out,
            config=pipeline,
            device=device.value,
            overwrite=overwrite,
            progress=progress,
            storage_options=parse_storage_options(storage_option or []),
            scheduler=scheduler,
        )
    if as_json:
        print_json(summary)
    else:
        render.preprocess(summary)
