"""The ``gpuds`` command line: the only part of gpuds that prints, draws progress or exits.

Modules: :mod:`~gpuds.cli.entry` (``main``/``run``: exit codes and signals),
:mod:`~gpuds.cli.app` (the Typer app; commands built when used), :mod:`~gpuds.cli.commands`
(one module per command: its options, its help, one call into :mod:`gpuds.api`),
:mod:`~gpuds.cli.options` (shared options; choices from the registries),
:mod:`~gpuds.cli.progress` (the Rich progress bar), :mod:`~gpuds.cli.render` (what commands
print) and :mod:`~gpuds.cli.console`.
"""

from __future__ import annotations

from gpuds.cli.entry import main, run

__all__ = ["main", "run"]
