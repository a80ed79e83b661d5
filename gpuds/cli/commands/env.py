"""``gpuds env``: the versions gpuds runs with and the device it would use."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from gpuds.cli import options, render
from gpuds.cli.console import print_json, stderr


def env(
    device: Annotated[
        options.Device,
        typer.Option("--device", help="Device to resolve: cuda fails unless a GPU is usable."),
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show the versions gpuds runs with and the device it would use.

    Run it on a cluster node to check that the GPU, driver, CuPy and nvCOMP are visible.

    **Examples**

        gpuds env

        gpuds env --device cuda     # exit 1 with the reason when no GPU is usable
    """
    from gpuds import api

    backend = api.resolve_device(device.value)
    info = {
        **api.environment(backend),
        "device": backend.name,
        "requested": backend.requested,
        **backend.info,
    }
    if backend.notice:
        stderr.print(f"[yellow]{escape(backend.notice)}[/yellow]")
    if as_json:
        print_json(info)
    else:
        render.env(info)
