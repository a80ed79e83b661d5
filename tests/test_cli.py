"""The command line as a whole: version, help with examples, usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

import gpuds

from .conftest import only_line

COMMANDS = ["ingest", "inspect", "preprocess", "compress", "bench", "env"]


def test_version(cli):
    result = cli("--version")
    assert result.code == 0 and result.out.strip() == f"gpuds {gpuds.__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(cli, command: str):
    result = cli(command, "--help")
    assert result.code == 0
    assert "Examples" in result.out and f"gpuds {command}" in result.out


def test_top_level_help_lists_every_command(cli):
    result = cli("--help")
    assert result.code == 0
    for command in COMMANDS:
        assert command in result.out


def test_unknown_command_and_option_are_usage_errors(cli):
    assert cli("frobnicate").code == 2
    assert cli("inspect", "--frobnicate").code == 2


def test_console_script_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "gpuds", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == f"gpuds {gpuds.__version__}"


def test_debug_shows_the_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "gpuds", "--debug", "inspect", str(tmp_path / "missing.zarr")],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_a_misspelt_command_suggests_the_right_one(cli):
    result = cli("inspct", "x.zarr")
    assert result.code == 2 and "Did you mean 'inspect'" in result.err


def test_an_error_the_user_can_fix_is_one_line(cli, tmp_path):
    result = cli("inspect", tmp_path / "missing.zarr")
    assert result.code == 1
    assert only_line(result.err).startswith("error: ")


@pytest.mark.parametrize("error", [RuntimeError("boom"), OSError(5, "Input/output error")])
def test_anything_else_is_a_bug_and_says_so(cli, monkeypatch: pytest.MonkeyPatch, error):
    import gpuds.api

    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(gpuds.api, "inspect", fail)
    result = cli("inspect", "x.zarr")
    assert result.code == 1
    line = only_line(result.err)
    assert line.startswith(f"internal error: {type(error).__name__}: ")
    assert "rerun with --debug" in line


def test_the_version_alone_and_among_options_print_the_same(cli):
    assert cli("--version").out == cli("--debug", "--version").out == f"gpuds {gpuds.__version__}\n"
