"""The codec registry: every ``--codec`` name, declared once, in its own module.

:data:`MODULES` lists the codec modules in the order gpuds presents them; each module holds a
``CODECS`` tuple of :class:`~gpuds.codecs.spec.CodecSpec`. Everything that names codecs asks here:
:class:`~gpuds.codecs.base.CodecConfig`'s validation, the CLI's ``--codec`` choices,
``--codec auto``'s candidates and speed classes, bench and tune, ``gpuds inspect``'s portability,
the reader's recognition of a stored chain, and the docs' codec tables (:func:`markdown_table`,
printed by ``python -m gpuds.codecs``, checked against docs/compress.md and README.md by
tests/test_codecs_registry.py). Adding a codec
is one module plus one line in :data:`MODULES` (docs/DEVELOPING.md).

Examples
--------
>>> names()
('zstd', 'lz4', 'gzip', 'gdeflate', 'bitcomp', 'ans', 'cascaded', 'none')
>>> get("lz4").zarr_name, get("lz4").default_level
('numcodecs.lz4', 1)
>>> portable(), gpu_only()
(('zstd', 'lz4', 'gzip', 'none'), ('gdeflate', 'bitcomp', 'ans', 'cascaded'))
>>> [(spec.name, spec.speed_class) for spec in auto_candidates()]
[('zstd', 0), ('lz4', 0), ('gzip', 1)]
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from gpuds.codecs.spec import PORTABILITY, SHUFFLE_NAME, CodecSpec
from gpuds.errors import ConfigError

__all__ = [
    "AUTO",
    "MODULES",
    "PORTABILITY",
    "SHUFFLE_NAME",
    "CodecSpec",
    "auto_candidates",
    "choices",
    "get",
    "gpu_only",
    "markdown_table",
    "names",
    "portability_of",
    "portable",
    "readme_table",
    "recognize",
    "specs",
]

MODULES = ("zstd", "lz4", "gzip", "nvcomp_only", "none")
"""The codec modules of :mod:`gpuds.codecs`, in the order gpuds presents their codecs."""

AUTO = "auto"
"""Not a codec: ``--codec auto`` picks one of :func:`auto_candidates` per field."""

_FRAMING = {"bytes": "any", "crc32c": "any", "sharding_indexed": "any", SHUFFLE_NAME: "zarr-python"}


def _load() -> dict[str, CodecSpec]:
    found: dict[str, CodecSpec] = {}
    for module in MODULES:
        for spec in importlib.import_module(f"gpuds.codecs.{module}").CODECS:
            if spec.name in found or spec.name == AUTO:
                raise RuntimeError(f"codec {spec.name!r} is registered twice")
            if spec.portability not in PORTABILITY:
                raise RuntimeError(f"codec {spec.name!r}: unknown portability {spec.portability!r}")
            found[spec.name] = spec
    return found


_SPECS = _load()


def specs() -> tuple[CodecSpec, ...]:
    """Every registered codec, in presentation order."""
    return tuple(_SPECS.values())


def names() -> tuple[str, ...]:
    """Every codec name (``auto`` is not one: see :func:`choices`)."""
    return tuple(_SPECS)


def choices() -> tuple[str, ...]:
    """What ``--codec`` accepts: :func:`names` and ``auto``."""
    return (*_SPECS, AUTO)


def get(name: str) -> CodecSpec:
    """The codec called ``name``; a :class:`~gpuds.errors.ConfigError` listing them otherwise."""
    spec = _SPECS.get(name)
    if spec is None and name == AUTO:
        raise ConfigError("auto is not a codec: compress resolves it to one per field first")
    if spec is None:
        raise ConfigError(f"Expected a codec in {', '.join(choices())}, got {name!r}")
    return spec


def portable() -> tuple[str, ...]:
    """Codecs a CPU decodes: stores any machine reads."""
    return tuple(s.name for s in _SPECS.values() if s.cpu is not None)


def gpu_only() -> tuple[str, ...]:
    """Codecs only nvCOMP encodes and decodes: writing and reading them needs a GPU."""
    return tuple(s.name for s in _SPECS.values() if s.cpu is None)


def auto_candidates() -> tuple[CodecSpec, ...]:
    """The codecs ``--codec auto`` tries (each at its default level), in tie-break order."""
    return tuple(s for s in _SPECS.values() if s.speed_class is not None)


def recognize(codecs: Sequence[Mapping[str, Any]]) -> tuple[CodecSpec, dict[str, Any]] | None:
    """The codec whose chain ``codecs`` (after ``bytes [numcodecs.shuffle]``, before ``crc32c``)
    is, with the settings decoding needs; None when no registered codec writes it."""
    for spec in _SPECS.values():
        settings = spec.recognize(codecs)
        if settings is not None:
            return spec, settings
    return None


def portability_of(zarr_name: str) -> str | None:
    """The portability level of a Zarr codec gpuds writes (None for others)."""
    if zarr_name in _FRAMING:
        return _FRAMING[zarr_name]
    levels = {s.portability for s in _SPECS.values() if s.zarr_name == zarr_name}
    return levels.pop() if len(levels) == 1 else None


def _level_cell(spec: CodecSpec) -> str:
    word = "acceleration" if spec.level_word == "accelerations" else "level"
    if spec.levels is None:
        return "no level"
    low, high = spec.levels
    span = f"{low} to {high}" if high is not None else f"{low} or more"
    default = f", default {spec.default_level}" if spec.default_level is not None else ""
    return f"{word} {span}{default}"


def _chain_cell(spec: CodecSpec) -> str:
    if spec.stores_raw:
        return "nothing"
    note = f" ({spec.chain_note})" if spec.chain_note else ""
    return f"`[{SHUFFLE_NAME}] {spec.zarr_name}`{note}"


_PORTABLE_CELL = {
    "any": "any Zarr v3 reader (with `--no-shuffle`)",
    "zarr-python": "zarr-python",
    "gpuds-gpu": "gpuds with a GPU",
}


def markdown_table() -> str:
    """docs/compress.md's codec table, one row per codec and one for ``auto``.

    Examples
    --------
    >>> print(markdown_table().splitlines()[2])
    | `zstd` | `[numcodecs.shuffle] zstd` | level -131072 to 22, default 3 | Zstd, RAW bitstream (no level on the GPU) | numcodecs | any Zarr v3 reader (with `--no-shuffle`) |
    """  # noqa: E501
    rows = [
        "| `--codec` | Zarr v3 chain after `bytes` (then `crc32c`) | levels | GPU (nvCOMP) | CPU "
        "| read by |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for spec in _SPECS.values():
        gpu = spec.gpu.note if spec.gpu else ("copied as is" if spec.stores_raw else "-")
        cpu = spec.cpu or "none: refused without a GPU"
        portable = "any Zarr v3 reader" if spec.stores_raw else _PORTABLE_CELL[spec.portability]
        rows.append(
            f"| `{spec.name}` | {_chain_cell(spec)} | {_level_cell(spec)} | {gpu} | {cpu} "
            f"| {portable} |"
        )
    tried = ", ".join(f"{s.name} {s.default_level}" for s in auto_candidates())
    rows.append(
        f"| `{AUTO}` | one of the above per field: tries {tried}, or `none` | no level | "
        "as picked | as picked | as picked |"
    )
    return "\n".join(rows)


def readme_table() -> str:
    """README.md's short codec table.

    Examples
    --------
    >>> print(readme_table().splitlines()[2])
    | `zstd` | `[numcodecs.shuffle] zstd` | any Zarr v3 reader (with `--no-shuffle`) |
    """
    rows = [
        "| `--codec` | chain (each ends with the `crc32c` checksum) | read by |",
        "| --- | --- | --- |",
    ]
    for spec in _SPECS.values():
        portable = "any Zarr v3 reader" if spec.stores_raw else _PORTABLE_CELL[spec.portability]
        rows.append(f"| `{spec.name}` | {_chain_cell(spec)} | {portable} |")
    rows.append(f"| `{AUTO}` | one of the above per field | as picked |")
    return "\n".join(rows)
