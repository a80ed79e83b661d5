"""The version of gpuds, alone in its module: reading it imports nothing else."""

__version__ = "0.1.0"
