"""``gpuds inspect``: what a store holds, how well it compressed, where it came from."""

from __future__ import annotations

from typing import Annotated

import typer

from gpuds.cli import options, render
from gpuds.cli.console import print_json
from gpuds.cli.progress import RichProgress


def inspect(
    store: Annotated[str, typer.Argument(help="The store to describe: a path or a URL.")],
    verify: Annotated[
        bool,
        typer.Option(
            "--verify", help="Read and decode every chunk; check presence, integrity, fingerprint."
        ),
    ] = False,
    storage_option: options.StorageOptions = None,
    quiet: options.Quiet = False,
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
    from gpuds import api
    from gpuds.storage import parse_storage_options

    with RichProgress(quiet or as_json) as progress:
        report = api.inspect(
            store,
            verify=verify,
            progress=progress,
            storage_options=parse_storage_options(storage_option or []),
        )
    if as_json:
        print_json(report)
    else:
        render.inspect(report)
    if report["problems"]:
        render.problems(report)
        raise typer.Exit(1)
