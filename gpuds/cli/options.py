"""Options several commands share, and the choices the registries declare.

A choice (``options.Codec``, ``options.Device``, ...) is a :class:`~enum.StrEnum` built from its
registry the first time a command's options are built, not when this module is imported: the
registries import NumPy, zarr or Pillow, and ``gpuds --help`` lists the commands without them.
Commands name a choice as ``options.Codec`` in their annotations, with its default as a string.
``options.Scheduler`` is built the same way, on first use: its help text lives with the executors
(:data:`gpuds.execution.SCHEDULER_HELP`), which ``gpuds --help`` has no need to import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Annotated, Any

import typer

__all__ = ["CHOICES", "JsonSummary", "Overwrite", "Quiet", "StorageOptions"]

Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace OUT if it is an existing Zarr store.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
JsonSummary = Annotated[
    bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")
]
StorageOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--storage-option",
        help="Object-store setting KEY=VALUE for s3://, gs://, az:// paths (repeatable): "
        "endpoint, region, access_key_id, secret_access_key, profile, allow_http, ... They add "
        "to the standard environment variables (AWS_ENDPOINT_URL, AWS_REGION, ...; "
        "docs/storage.md).",
        show_default=False,
    ),
]


def _codecs() -> Iterable[str]:
    from gpuds.codecs import CODEC_NAMES

    return CODEC_NAMES


def _devices() -> Iterable[str]:
    from gpuds.backend import DEVICES

    return DEVICES


def _formats() -> Iterable[str]:
    from gpuds.sources import FORMATS

    return FORMATS


def _modes() -> Iterable[str]:
    from gpuds.sources.images import MODES

    return MODES


def _read_option(name: str) -> Callable[[], Iterable[str]]:
    def values() -> Iterable[str]:
        from gpuds.sources.base import ReadOptions

        return ReadOptions.choices(name)

    return values


CHOICES: dict[str, Callable[[], Iterable[str]]] = {
    "Codec": _codecs,
    "Device": _devices,
    "Format": _formats,
    "Mode": _modes,
    "Fit": _read_option("fit"),
    "Resample": _read_option("resample"),
    "Frames": _read_option("frames"),
}
"""Each choice and where its values come from."""


def _scheduler() -> Any:
    from gpuds.execution import SCHEDULER_HELP

    # A string, checked by the library (gpuds.execution.parse_scheduler): its forms are open
    # (an address, a file), and None lets DASK_SCHEDULER_ADDRESS apply.
    return Annotated[
        str | None,
        typer.Option("--scheduler", help=SCHEDULER_HELP, show_default=False),
    ]


_LAZY: dict[str, Callable[[], Any]] = {"Scheduler": _scheduler}
"""Options built on first use, like the choices, for what their help text needs to import."""


def _choice(name: str) -> Any:
    choice = StrEnum(name, [(value, value) for value in CHOICES[name]()])  # type: ignore[misc]
    return choice


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = _LAZY[name]()
    elif name in CHOICES:
        value = _choice(name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
