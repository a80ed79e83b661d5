"""``gpuds inspect``: what a store holds, how well it compressed, where it came from."""

from __future__ import annotations

from typing import Annotated

import typer

from gpuds.cli import options, render
from gpuds.cli.console import print_json
from gpuds.cli.progress import RichProgress


def inspect(
    store: Annotated[str, typer.Argument(help="Path of the store to describe.")],
    verify: Annotated[
        bool,
        typer.Option(
            "--verify", help="Read and decode every chunk; check presence, integrity, fingerprint."
        ),
    ] = False,
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

    with RichProgress(quiet or as_json) as progress:
        report = api.inspect(store, verify=verify, progress=progress)
    if as_json:
        print_json(report)
    else:
        render.inspect(report)
    if report["problems"]:
        render.problems(report)
        raise typer.Exit(1)
