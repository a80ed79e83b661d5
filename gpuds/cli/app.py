"""The ``gpuds`` Typer app: its global options, and its commands, each built when it is used.

The commands live one per module in :mod:`gpuds.cli.commands`. ``gpuds --help`` lists them from
their docstrings alone; a command's options, whose choices come from the registries (and with
them NumPy, zarr, Pillow), are built only when that command runs or shows its help.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Annotated, Any, Literal

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from gpuds._version import __version__
from gpuds.cli.console import stdout

__all__ = ["COMMANDS", "app", "state"]

COMMANDS = ("ingest", "inspect", "preprocess", "compress", "report", "bench", "env")
"""The commands in the order ``gpuds --help`` lists them; ``gpuds.cli.commands.<name>.<name>``
is each one's function."""

_MARKUP: Literal["markdown"] = "markdown"

state = {"debug": False}
"""What the global options set for the run (read by :func:`gpuds.cli.entry.main`)."""


def _function(name: str) -> Callable[..., Any]:
    module = importlib.import_module(f"gpuds.cli.commands.{name}")
    function: Callable[..., Any] = getattr(module, name)
    return function


def _build(name: str) -> TyperCommand:
    """The command ``name`` with all its options."""
    single = typer.Typer(rich_markup_mode=_MARKUP, add_completion=False)
    single.command(name=name)(_function(name))
    command = typer.main.get_command(single)
    assert isinstance(command, TyperCommand)
    return command


class _Commands(TyperGroup):
    """The group of commands: each one is listed by its help text, and built with its options
    when the command line resolves to it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in COMMANDS:
            help_text = inspect.getdoc(_function(name))
            self.add_command(TyperCommand(name, help=help_text, rich_markup_mode=_MARKUP))

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        return name, _build(name) if name is not None else command, rest


app = typer.Typer(
    name="gpuds",
    cls=_Commands,
    help="Build compressed, GPU-ready datasets: ingest raw data into Zarr v3, preprocess it, "
    "compress it, inspect it, show it as a dataset card, benchmark it.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=_MARKUP,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        stdout.print(f"gpuds {__version__}")
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
    state["debug"] = debug
