"""``python -m gpuds`` runs the command line."""

from gpuds.cli import run

# Guarded: worker processes that a local Dask cluster spawns import the main module again.
if __name__ == "__main__":
    run()
