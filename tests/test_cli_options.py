"""The command line's options come from the registries and match the library's defaults."""

from __future__ import annotations

import inspect
import pkgutil

import pytest

import gpuds.cli.commands
from gpuds.backend import DEVICES
from gpuds.cli import options
from gpuds.cli.app import COMMANDS
from gpuds.codecs import CODEC_NAMES
from gpuds.compress import FieldSettings
from gpuds.sources import FORMATS
from gpuds.sources.base import ReadOptions
from gpuds.sources.images import FRAMES, MODES
from gpuds.store import DEFAULT_CHUNK_MB


def _default(command: str, parameter: str) -> object:
    module = __import__(f"gpuds.cli.commands.{command}", fromlist=[command])
    return inspect.signature(getattr(module, command)).parameters[parameter].default


@pytest.mark.parametrize(
    ("choice", "registry"),
    [
        ("Codec", CODEC_NAMES),
        ("Device", DEVICES),
        ("Format", tuple(FORMATS)),
        ("Mode", tuple(MODES)),
        ("Frames", FRAMES),
        ("Fit", ("stretch", "crop", "pad")),
        ("Resample", ("nearest", "bilinear", "bicubic", "lanczos")),
    ],
)
def test_each_choice_is_its_registry(choice: str, registry: tuple[str, ...]):
    assert [c.value for c in getattr(options, choice)] == list(registry)


def test_an_unknown_choice_is_a_usage_error_listing_the_registry(cli, tmp_path):
    result = cli("compress", tmp_path / "in.zarr", "-o", tmp_path / "out.zarr", "--codec", "nope")
    assert result.code == 2
    assert all(f"'{name}'" in result.err for name in CODEC_NAMES)


def test_defaults_are_the_librarys():
    settings = FieldSettings()
    assert _default("ingest", "chunk_mb") == DEFAULT_CHUNK_MB
    assert _default("compress", "chunk_mb") == settings.chunk_mb
    assert _default("compress", "shard_mb") == settings.shard_mb
    assert _default("ingest", "fit") == ReadOptions().fit
    assert _default("ingest", "resample") == ReadOptions().resample
    assert _default("ingest", "mode") == ReadOptions().mode


def test_every_command_module_is_listed_and_holds_its_command():
    modules = {m.name for m in pkgutil.iter_modules(gpuds.cli.commands.__path__)}
    assert modules == set(COMMANDS)
    for name in COMMANDS:
        module = __import__(f"gpuds.cli.commands.{name}", fromlist=[name])
        assert callable(getattr(module, name)) and inspect.getdoc(getattr(module, name))
