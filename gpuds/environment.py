"""Where a run happens: the versions gpuds runs with, the CPU, and the GPU a backend resolved to.

One probe for every place that reports it: ``gpuds env`` and the ``environment`` of a
``gpuds bench`` report (docs/bench.md). Reading it imports nothing heavy: package versions come
from installed metadata, not from importing the packages.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

from gpuds._version import __version__
from gpuds.backend import Backend

__all__ = ["PACKAGES", "cpu_name", "environment"]

PACKAGES: tuple[str, ...] = (
    "numpy",
    "zarr",
    "numcodecs",
    "cupy-cuda12x",
    "cupy-cuda13x",
    "nvidia-nvcomp-cu12",
    "nvidia-nvcomp-cu13",
)
"""The distributions whose versions decide what gpuds can do (None when not installed)."""


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says, else
    ``"unknown"``."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu
            )
    except OSError:  # no /proc (macOS, Windows): platform's answer stands
        pass
    return cpu or "unknown"


def environment(backend: Backend) -> dict[str, Any]:
    """The versions, CPU and GPU a run of gpuds on ``backend`` depends on.

    Keys: ``gpuds``, ``python``, ``platform``, ``cpu``, ``cores``, ``gpu``, ``driver``,
    ``cuda_runtime`` (the last three None on the CPU backend), then one key per
    :data:`PACKAGES` entry with its installed version or None.

    Examples
    --------
    >>> from gpuds.backend import resolve
    >>> env = environment(resolve("cpu"))
    >>> env["gpu"] is None, env["numpy"] is not None
    (True, True)
    """
    env: dict[str, Any] = {
        "gpuds": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "gpu": backend.info.get("gpu"),
        "driver": backend.info.get("driver"),
        "cuda_runtime": backend.info.get("cuda_runtime"),
    }
    for dist in PACKAGES:
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[dist] = None
    return env
