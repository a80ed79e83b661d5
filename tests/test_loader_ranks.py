"""A loader's share: from the arguments, a torch.distributed process group, or the environment;
torch is never imported to find out."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from gpuds.errors import ConfigError
from gpuds.loader import resolve_ranks


def _process_group(rank: int, world_size: int) -> types.ModuleType:
    """Test double of an initialised ``torch.distributed``."""
    dist = types.ModuleType("torch.distributed")
    dist.is_available = lambda: True  # type: ignore[attr-defined]
    dist.is_initialized = lambda: True  # type: ignore[attr-defined]
    dist.get_rank = lambda: rank  # type: ignore[attr-defined]
    dist.get_world_size = lambda: world_size  # type: ignore[attr-defined]
    return dist


def test_torch_is_not_imported_to_find_the_ranks():
    code = (
        "import sys; from gpuds.loader import resolve_ranks; "
        "print(resolve_ranks(None, None), 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["(0,", "1)", "False"]


def test_an_initialised_process_group_gives_the_share(monkeypatch: pytest.MonkeyPatch):
    for var in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(sys.modules, "torch.distributed", _process_group(2, 4))
    assert resolve_ranks(None, None) == (2, 4)
    assert resolve_ranks(1, None) == (1, 4)


def test_the_environment_when_there_is_no_process_group(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delitem(sys.modules, "torch.distributed", raising=False)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert resolve_ranks(None, None) == (3, 8)
    with pytest.raises(ConfigError, match="rank 9, world_size 8"):
        resolve_ranks(9, None)
