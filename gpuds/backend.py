"""The one place that decides between NumPy (CPU) and CuPy (CUDA).

``resolve(device)`` turns ``"auto" | "cpu" | "cuda"`` into a :class:`Backend` once, at the start of
a command. Everything else receives arrays and asks :func:`array_module` which module they belong
to, so array code is written once for both. CuPy is imported lazily, here only, so ``import gpuds``
works without it.

- ``auto`` never fails for lack of a GPU: CuPy missing, no device, or a driver too old all give the
  CPU backend; :attr:`Backend.reason` says why in a few words and :attr:`Backend.notice` is the
  one line the command line shows for it (once per run, never inside another message).
- ``cuda`` without a usable GPU raises :class:`~gpuds.errors.DeviceError` before any work starts.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

import numpy as np

from gpuds.errors import ConfigError, DeviceError

__all__ = [
    "DEVICES",
    "Backend",
    "array_module",
    "probe_cuda",
    "resolve",
    "synchronize",
    "to_device",
    "to_host",
]

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Backend:
    """The resolved device: its name, its array module, and why it was chosen.

    Examples
    --------
    >>> b = resolve("cpu")
    >>> b.name, b.xp.__name__
    ('cpu', 'numpy')
    """

    name: Literal["cpu", "cuda"]
    xp: ModuleType
    requested: str
    reason: str = ""
    """Why the CPU was chosen, in a few words (empty on the GPU)."""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def is_gpu(self) -> bool:
        return self.name == "cuda"

    @property
    def notice(self) -> str:
        """The line to show the user when ``auto`` fell back to the CPU, else ``""``.

        Examples
        --------
        >>> Backend("cpu", np, requested="auto", reason="no CUDA device is visible").notice
        'using the CPU: no CUDA device is visible'
        >>> resolve("cpu").notice
        ''
        """
        if self.is_gpu or self.requested != "auto" or not self.reason:
            return ""
        return f"using the CPU: {self.reason}"


def _import_cupy() -> ModuleType:
    return importlib.import_module("cupy")


def _cause(error: BaseException) -> str:
    """An exception in a few words: CUDA's ``cudaErrorName: sentence`` gives the name alone."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    name, colon, _ = first.partition(":")
    return name if colon and name.isidentifier() else first


def probe_cuda() -> tuple[ModuleType | None, str, dict[str, Any]]:
    """Try to use a CUDA device through CuPy.

    Returns ``(cupy, "", info)`` when a device is usable, else ``(None, reason, {})`` where the
    reason is one short line. The probe allocates a few bytes on the device: importing CuPy
    succeeds on machines with no driver, so only touching the device tells the truth.
    """
    try:
        cp = _import_cupy()
    except ImportError:
        return None, "CuPy is not installed (pip install 'gpuds[gpu-cu12]' or '[gpu-cu13]')", {}
    except Exception as e:  # a broken CuPy install must not crash `auto`
        return None, f"CuPy failed to import ({_cause(e)})", {}
    try:
        count = int(cp.cuda.runtime.getDeviceCount())
        if count < 1:
            return None, "no CUDA device is visible", {}
        cp.zeros(1, dtype=cp.uint8).sum()
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = props.get("name", b"")
        info = {
            "gpu": name.decode() if isinstance(name, bytes) else str(name),
            "device_count": count,
            "driver": int(cp.cuda.runtime.driverGetVersion()),
            "cuda_runtime": int(cp.cuda.runtime.runtimeGetVersion()),
            "cupy": str(cp.__version__),
        }
    except Exception as e:  # CUDARuntimeError and friends; their message names the cause
        return None, f"no usable CUDA device ({_cause(e)})", {}
    return cp, "", info


def resolve(device: str = "auto") -> Backend:
    """Resolve ``"auto" | "cpu" | "cuda"`` to a backend.

    Parameters
    ----------
    device
        ``"cpu"`` always gives NumPy. ``"cuda"`` gives CuPy or raises
        :class:`~gpuds.errors.DeviceError`. ``"auto"`` gives CuPy when a device is usable, else
        NumPy with :attr:`Backend.reason` saying why.

    Examples
    --------
    >>> resolve("cpu").xp is np
    True
    """
    if device not in DEVICES:
        raise ConfigError(f"Expected device to be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return Backend("cpu", np, requested=device, reason="requested with --device cpu")
    cp, reason, info = probe_cuda()
    if cp is not None:
        return Backend("cuda", cp, requested=device, info=info)
    if device == "cuda":
        raise DeviceError(f"--device cuda was requested but {reason}; use --device cpu or auto")
    return Backend("cpu", np, requested=device, reason=reason)


def array_module(x: Any) -> ModuleType:
    """NumPy or CuPy, whichever ``x`` belongs to (never imports CuPy for a NumPy array)."""
    if isinstance(x, np.ndarray | np.generic):
        return np
    module = type(x).__module__.split(".")[0]
    if module == "cupy":
        return _import_cupy()
    return np


def to_device(x: Any, backend: Backend) -> Any:
    """Place a host array on the backend's device (no copy on the CPU)."""
    if backend.is_gpu:
        return backend.xp.asarray(x)
    return np.asarray(x)


def to_host(x: Any) -> np.ndarray:
    """Return a NumPy array, copying from the device if needed."""
    if isinstance(x, np.ndarray):
        return x
    get = getattr(x, "get", None)
    if get is not None:
        return np.asarray(get())
    return np.asarray(x)


def synchronize(backend: Backend) -> None:
    """Wait for queued device work (no-op on the CPU); call it before reading a clock."""
    if backend.is_gpu:
        backend.xp.cuda.get_current_stream().synchronize()
