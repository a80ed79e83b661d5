"""``python -m gpuds`` runs the command line."""

from gpuds.cli import run

run()
