"""The command line as a whole: version, help with examples, usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

import gpuds

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
