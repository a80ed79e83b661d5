"""The local chunk cache: least recently used eviction, the limit, reuse by a later run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpuds.cache import ChunkCache
from gpuds.errors import ConfigError


def test_the_least_recently_used_go_first(tmp_path: Path):
    cache = ChunkCache(tmp_path, limit=30)
    for i in range(3):
        cache.put(f"s/{i}", bytes([i]) * 10)
    assert cache.get("s/0") == bytes(10)  # now the most recent
    cache.put("s/3", b"x" * 10)
    assert cache.get("s/1") is None  # the least recently used went
    assert [cache.get(f"s/{i}") is not None for i in (0, 2, 3)] == [True, True, True]
    assert cache.nbytes == 30 == sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())


def test_a_later_run_reuses_the_files_and_evicts_by_their_times(tmp_path: Path):
    first = ChunkCache(tmp_path)
    for i in range(4):
        first.put(f"s/{i}", b"y" * 10)
        os.utime(tmp_path / "s" / str(i), ns=(i * 10**9, i * 10**9))
    (tmp_path / "s" / ".2.123.456").write_bytes(b"half")  # left by a killed writer
    second = ChunkCache(tmp_path, limit=25)  # keeps the two most recently used
    assert second.nbytes == 20
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["2", "3"]


def test_an_entry_larger_than_the_limit_is_not_kept(tmp_path: Path):
    cache = ChunkCache(tmp_path, limit=5)
    cache.put("s/0", b"123456")
    assert cache.get("s/0") is None and cache.nbytes == 0


def test_discard_deletes(tmp_path: Path):
    cache = ChunkCache(tmp_path)
    cache.put("s/0", b"abc")
    cache.discard("s/0")
    assert "s/0" not in cache and not (tmp_path / "s" / "0").exists() and cache.nbytes == 0


@pytest.mark.parametrize("limit", [-1, 1.5, True])
def test_invalid_limits_are_refused(tmp_path: Path, limit: object):
    with pytest.raises(ConfigError, match="cache_limit"):
        ChunkCache(tmp_path, limit=limit)  # type: ignore[arg-type]
