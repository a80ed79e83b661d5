"""Device resolution: `auto` never crashes for lack of a GPU, `cuda` fails cleanly before work."""

from __future__ import annotations

import subprocess
import sys
import types
from typing import Any

import numpy as np
import pytest

from gpuds import backend
from gpuds.errors import ConfigError, DeviceError

from .conftest import only_line


def _cupy_usable() -> tuple[bool, str]:
    cp, reason, _ = backend.probe_cuda()
    return cp is not None, reason


def _cupy_importable() -> bool:
    try:
        import cupy  # noqa: F401
    except Exception:
        return False
    return True


class _NoDeviceCupy(types.ModuleType):
    """Test double of CuPy on a machine without a driver: imports, then fails on first use."""

    __version__ = "0.0-double"

    def __init__(self) -> None:
        super().__init__("cupy")
        runtime = types.SimpleNamespace(getDeviceCount=self._fail)
        self.cuda = types.SimpleNamespace(runtime=runtime)

    @staticmethod
    def _fail() -> Any:
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")


def test_cpu_is_numpy():
    b = backend.resolve("cpu")
    assert b.name == "cpu" and b.xp is np and not b.is_gpu


def test_unknown_device_is_a_config_error():
    with pytest.raises(ConfigError, match="auto, cpu, cuda"):
        backend.resolve("tpu")


def test_auto_falls_back_when_cupy_is_unimportable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    b = backend.resolve("auto")
    assert b.name == "cpu" and b.xp is np
    assert b.reason == "CuPy is not installed (pip install 'gpuds[gpu-cu12]' or '[gpu-cu13]')"
    assert b.notice == f"using the CPU: {b.reason}"


def test_cuda_fails_when_cupy_is_unimportable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(DeviceError, match="--device cuda was requested but CuPy is not installed"):
        backend.resolve("cuda")


def test_auto_falls_back_when_no_driver(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "cupy", _NoDeviceCupy())
    b = backend.resolve("auto")
    assert b.name == "cpu"
    # One short line: CUDA's error name, not its sentence (it shows in every GPU test's skip).
    assert b.reason == "no usable CUDA device (cudaErrorInsufficientDriver)"
    with pytest.raises(DeviceError) as info:
        backend.resolve("cuda")
    assert str(info.value) == (
        "--device cuda was requested but no usable CUDA device (cudaErrorInsufficientDriver); "
        "use --device cpu or auto"
    )


def test_only_an_auto_fallback_has_a_notice(monkeypatch: pytest.MonkeyPatch):
    assert backend.resolve("cpu").notice == ""
    gpu = backend.Backend("cuda", np, requested="auto", info={"gpu": "double"})
    assert gpu.notice == ""
    monkeypatch.setitem(sys.modules, "cupy", _NoDeviceCupy())
    assert backend.resolve("auto").notice == (
        "using the CPU: no usable CUDA device (cudaErrorInsufficientDriver)"
    )


def test_import_gpuds_without_cupy():
    code = (
        "import sys; sys.modules['cupy'] = None; import gpuds, gpuds.cli; "
        "assert gpuds.resolve_device('auto').name == 'cpu'; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_array_module_and_transfers_on_cpu():
    b = backend.resolve("cpu")
    x = np.arange(3)
    assert backend.array_module(x) is np
    assert backend.to_device(x, b) is x
    assert backend.to_host(x) is x
    backend.synchronize(b)


def test_cli_env_auto_prints_one_reason_line(cli, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    result = cli("env", "--json")
    assert result.code == 0
    assert result.json()["device"] == "cpu"
    assert only_line(result.err).startswith("using the CPU: CuPy is not installed")


def test_cli_env_cuda_exits_1_with_one_line(cli, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "cupy", _NoDeviceCupy())
    result = cli("env", "--device", "cuda")
    assert result.code == 1
    assert result.out == ""
    assert only_line(result.err).startswith("error: --device cuda was requested but no usable")


@pytest.mark.skipif(not _cupy_importable(), reason="CuPy is not installed (CI installs gpu-cu13)")
def test_real_cupy_without_gpu_falls_back_and_cuda_fails():
    usable, _ = _cupy_usable()
    if usable:
        pytest.skip("a GPU is usable here; this test is about machines without one")
    auto = subprocess.run(
        [sys.executable, "-m", "gpuds", "env", "--json"], capture_output=True, text=True
    )
    assert auto.returncode == 0, auto.stderr
    assert only_line(auto.stderr).startswith("using the CPU: no usable CUDA device")
    cuda = subprocess.run(
        [sys.executable, "-m", "gpuds", "env", "--device", "cuda"], capture_output=True, text=True
    )
    assert cuda.returncode == 1
    assert only_line(cuda.stderr).startswith("error: --device cuda was requested")


@pytest.mark.gpu
def test_cuda_resolves_on_a_gpu():
    usable, reason = _cupy_usable()
    if not usable:
        pytest.skip(f"no usable GPU: {reason}")
    b = backend.resolve("cuda")
    x = backend.to_device(np.arange(4), b)
    assert backend.array_module(x) is b.xp
    np.testing.assert_array_equal(backend.to_host(x * 2), np.arange(4) * 2)
