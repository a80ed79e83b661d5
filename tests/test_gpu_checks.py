"""scripts/gpu_checks.py (the GPU checklist) run on the CPU through the CuPy and nvCOMP test
doubles, so that the checklist itself keeps working between visits to a GPU host.

Passing here verifies nothing about a GPU: it shows that every check runs, that the op cases
cover every registered op with valid configs, and that a wrong result makes a line FAIL.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from gpuds.ops import registry

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_checks", ROOT / "scripts" / "gpu_checks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_checks", module)
    spec.loader.exec_module(module)
    return module


checks = _load()


def _gpu(fake_gpu: tuple[Any, Any], tmp_path: Path, device: str = "cuda") -> Any:
    nvcomp, cupy = fake_gpu
    return checks.Gpu(cupy, nvcomp, tmp_path, device=device, on_device=lambda x: True)


@pytest.mark.parametrize("group", ["formats", "nvcomp", "loader", "corrupt"])
def test_every_check_passes_on_the_doubles(
    group: str, fake_gpu: tuple[Any, Any], tmp_path: Path
) -> None:
    lines = list(checks.run_group(group, _gpu(fake_gpu, tmp_path)))
    assert lines
    assert all(line.ok for line in lines), "\n".join(map(str, lines))


def test_the_doubles_readings_are_reported(fake_gpu: tuple[Any, Any], tmp_path: Path) -> None:
    lines = {line.name: line for line in checks.run_group("nvcomp", _gpu(fake_gpu, tmp_path))}
    assert "reports the capacities" in lines["buffer_sizes after decode(out=...)"].detail
    fake_gpu[0].Codec.BUFFER_SIZES = "decoded"
    lines = {line.name: line for line in checks.run_group("nvcomp", _gpu(fake_gpu, tmp_path))}
    assert "reports the decoded sizes" in lines["buffer_sizes after decode(out=...)"].detail
    assert "[16]" in lines["alignment values"].detail


def test_op_cases_cover_every_registered_op() -> None:
    assert set(checks.OP_CASES) == set(registry())
    for name, ops in checks.OP_CASES.items():
        assert name in {op["op"] for op in ops}


@pytest.mark.slow
def test_every_op_case_runs(tmp_path: Path) -> None:
    """The op cases are valid pipelines (NumPy against NumPy here; CuPy on a GPU host)."""
    gpu = checks.Gpu(None, None, tmp_path, device="cpu")
    lines = list(checks.run_group("ops", gpu))
    assert len(lines) == len(registry())
    assert all(line.ok and line.detail.endswith("identical") for line in lines), "\n".join(
        map(str, lines)
    )


def test_compare_fails_on_a_different_value_and_allows_rounding() -> None:
    a = {"x": np.array([1.0, np.nan, 3.0], np.float32), "k": np.arange(3)}
    assert checks.compare(a, dict(a)) == (True, "identical")
    ok, detail = checks.compare(a, {**a, "x": np.array([1.0, np.nan, 3.0000002], np.float32)})
    assert ok and detail.startswith("within")
    ok, detail = checks.compare(a, {**a, "x": np.array([1.0, np.nan, 3.1], np.float32)})
    assert not ok and detail.startswith("x: values differ")
    ok, detail = checks.compare(a, {**a, "k": np.array([0, 1, 3])})
    assert not ok and detail == "k: 1 values differ"
    assert not checks.compare(a, {**a, "x": np.array([1.0, 2.0, 3.0], np.float32)})[0]


def test_a_wrong_decode_makes_a_line_fail(
    fake_gpu: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decode = checks.NvcompChunkCodec.decode

    def backwards(self: Any, payloads: Any, sizes: Any, keys: Any) -> list[np.ndarray]:
        return [chunk[::-1] for chunk in decode(self, payloads, sizes, keys)]

    monkeypatch.setattr(checks.NvcompChunkCodec, "decode", backwards)
    lines = list(checks.run_group("formats", _gpu(fake_gpu, tmp_path)))
    assert not all(line.ok for line in lines)
    assert any(str(line).startswith("FAIL  zstd CPU to GPU") for line in lines)


def test_without_a_gpu_it_says_so_and_checks_nothing() -> None:
    from gpuds.backend import probe_cuda

    if probe_cuda()[0] is not None:
        pytest.skip("a GPU is usable here")
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_checks.py")], capture_output=True, text=True
    )
    assert run.returncode == 2
    assert run.stdout.startswith("gpu_checks: no usable GPU (")
    listed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_checks.py"), "--list"],
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0 and "corrupt: check_corrupt" in listed.stdout
