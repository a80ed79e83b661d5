"""The command line's progress: notes on stderr, each once, none when quiet."""

from __future__ import annotations

import pytest

from gpuds.cli.progress import RichProgress


def test_a_note_shows_once_per_run(capsys: pytest.CaptureFixture[str]):
    with RichProgress(quiet=False) as progress:
        for _ in range(3):
            progress.note("using the CPU: no CUDA device is visible")
        progress.note("")
        progress.note("skipped a.png")
    assert capsys.readouterr().err.splitlines() == [
        "using the CPU: no CUDA device is visible",
        "skipped a.png",
    ]


def test_quiet_shows_no_note(capsys: pytest.CaptureFixture[str]):
    with RichProgress(quiet=True) as progress:
        progress.start("writing", 2)
        progress.advance(2)
        progress.note("skipped a.png")
    assert capsys.readouterr().err == ""
