"""The commit protocol (gpuds.commit, StoreWriter.commit): kill tests at each step of the commit's
window, racing writers, and failed runs (disk full, a second Ctrl-C) that must remove their
partial store."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.storage

import gpuds
from gpuds import commit
from gpuds.errors import StoreError, StoreExistsError
from gpuds.store import StoreInfo, StoreWriter, open_store
from tests.conftest import only_line

OLD = np.zeros(6, "f4")
NEW = np.arange(10, dtype="f4")


def _write(out: Path, values: np.ndarray, **kw: Any) -> Path:
    with StoreWriter(out, **kw) as w:
        f = w.create_field("x", values.dtype, values.shape[1:], length=len(values), chunk=4)
        f.append(values)
        f.finish()
        return w.commit(StoreInfo(num_samples=len(values), fields={"x": "array"}))


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _values(out: Path) -> np.ndarray:
    return np.asarray(open_store(out)["x"][:])


def _exchange_supported(folder: Path) -> bool:
    (folder / "probe-a").mkdir()
    (folder / "probe-b").mkdir()
    try:
        return commit.exchange(folder / "probe-a", folder / "probe-b")
    finally:
        commit.remove(folder / "probe-a")
        commit.remove(folder / "probe-b")


def test_rename_noreplace_refuses_a_file_or_a_folder_in_the_way(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "f").write_text("mine")
    (tmp_path / "file").write_text("mine too")
    for dst in (tmp_path / "folder", tmp_path / "file"):
        with pytest.raises(StoreExistsError, match=f"{dst} already exists"):
            commit.rename_noreplace(src, dst)
    assert src.is_dir() and (tmp_path / "folder" / "f").read_text() == "mine"
    commit.rename_noreplace(src, tmp_path / "dst")
    assert (tmp_path / "dst").is_dir() and not src.exists()


def test_rename_noreplace_without_renameat2_still_refuses_a_non_empty_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # What runs on macOS, on old kernels and on filesystems without RENAME_NOREPLACE (NFS).
    monkeypatch.setattr(commit, "_rename2", lambda src, dst, flags: False)
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "f").touch()
    with pytest.raises(StoreExistsError, match="already exists"):
        commit.rename_noreplace(src, tmp_path / "dst")
    assert src.is_dir() and (tmp_path / "dst" / "f").exists()
    assert commit.exchange(src, tmp_path / "dst") is False


def test_exchange_swaps_two_folders_where_supported(tmp_path: Path):
    if not _exchange_supported(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "in-a").touch()
    assert commit.exchange(a, b)
    assert (b / "in-a").exists() and not list(a.iterdir())
    with pytest.raises(FileNotFoundError):
        commit.exchange(a, tmp_path / "missing")


def test_second_of_two_racing_writers_fails_and_the_first_store_stays(tmp_path: Path):
    out = tmp_path / "a.zarr"
    with StoreWriter(out) as first, StoreWriter(out) as second:
        for writer, values in ((first, OLD), (second, NEW)):
            f = writer.create_field("x", values.dtype, (), length=len(values), chunk=4)
            f.append(values)
            f.finish()
        first.commit(StoreInfo(num_samples=len(OLD), fields={"x": "array"}))
        with pytest.raises(StoreExistsError, match="appeared while this run was writing"):
            second.commit(StoreInfo(num_samples=len(NEW), fields={"x": "array"}))
    np.testing.assert_array_equal(_values(out), OLD)
    assert _hidden(tmp_path) == []


def test_overwrite_that_finds_a_folder_not_a_store_replaces_nothing(tmp_path: Path):
    out = tmp_path / "a.zarr"
    with StoreWriter(out, overwrite=True) as w:
        out.mkdir()
        (out / "photo.jpg").write_bytes(b"precious")
        with pytest.raises(StoreExistsError, match="not a Zarr store"):
            w.commit(StoreInfo())
    assert (out / "photo.jpg").read_bytes() == b"precious"
    assert _hidden(tmp_path) == []


@pytest.mark.parametrize("atomic", [True, False], ids=["exchange", "two-renames"])
def test_overwrite_replaces_the_store_and_leaves_nothing_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, atomic: bool
):
    out = _write(tmp_path / "a.zarr", OLD)
    if not atomic:
        monkeypatch.setattr(commit, "exchange", lambda a, b: False)
    _write(out, NEW, overwrite=True)
    np.testing.assert_array_equal(_values(out), NEW)
    assert _hidden(tmp_path) == []


def test_overwrite_whose_second_rename_fails_puts_the_old_store_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    out = _write(tmp_path / "a.zarr", OLD)
    monkeypatch.setattr(commit, "exchange", lambda a, b: False)
    real = commit.rename_noreplace
    calls: list[Path] = []

    def failing(src: Path, dst: Path) -> None:
        calls.append(src)
        if len(calls) == 2:
            raise OSError(errno.EIO, "injected failure between the two renames")
        real(src, dst)

    monkeypatch.setattr(commit, "rename_noreplace", failing)
    with pytest.raises(OSError, match="injected"):
        _write(out, NEW, overwrite=True)
    np.testing.assert_array_equal(_values(out), OLD)
    assert _hidden(tmp_path) == []


# Writes NEW over the store at argv[1] and dies (os._exit, no clean-up of any kind) at a step
# of the commit: "before" the first move, "between" the two renames, "after" the last move.
_KILLED_WRITER = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from gpuds import commit
    from gpuds.store import StoreInfo, StoreWriter

    out, step, atomic = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    real_rename, real_exchange = commit.rename_noreplace, commit.exchange
    renames = []

    def rename(src, dst):
        renames.append(src)
        if step == "before" and len(renames) == 1 or step == "between" and len(renames) == 2:
            os._exit(9)
        real_rename(src, dst)
        if step == "after" and len(renames) == 2:
            os._exit(9)

    def exchange(a, b):
        if not atomic:
            return False
        if step == "before":
            os._exit(9)
        assert real_exchange(a, b), "RENAME_EXCHANGE unsupported"
        os._exit(9)

    commit.rename_noreplace, commit.exchange = rename, exchange
    with StoreWriter(out, overwrite=True) as w:
        f = w.create_field("x", np.dtype("f4"), (), length=10, chunk=4)
        f.append(np.arange(10, dtype="f4"))
        f.finish()
        w.commit(StoreInfo(num_samples=10, fields={"x": "array"}))
    """
)


@pytest.mark.parametrize(
    ("atomic", "step", "at_path_after_kill", "at_path_after_rerun"),
    [
        (False, "before", OLD, OLD),
        (False, "between", None, OLD),
        (False, "after", NEW, NEW),
        (True, "before", OLD, OLD),
        (True, "after", NEW, NEW),
    ],
    ids=["renames-before", "renames-between", "renames-after", "exchange-before", "exchange-after"],
)
def test_overwrite_killed_in_the_commit_window_loses_no_store(
    tmp_path: Path,
    atomic: bool,
    step: str,
    at_path_after_kill: np.ndarray | None,
    at_path_after_rerun: np.ndarray,
):
    if atomic and not _exchange_supported(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    out = _write(tmp_path / "a.zarr", OLD)
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(out), step, "1" if atomic else "0"],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == 9, killed.stderr
    assert _hidden(tmp_path), "the killed run left its hidden store(s) behind"
    if at_path_after_kill is None:
        assert not out.exists()
        with pytest.raises(StoreError, match="an overwrite was interrupted") as raised:
            gpuds.open(str(out))
        (replaced,) = [p for p in _hidden(tmp_path) if ".replaced-" in p]
        assert f"{tmp_path / replaced}; rerun the command or rename it back" in str(raised.value)
    else:
        np.testing.assert_array_equal(_values(out), at_path_after_kill)
    # The next run writing this output puts things right before it starts.
    StoreWriter(out, overwrite=True)
    assert _hidden(tmp_path) == []
    np.testing.assert_array_equal(_values(out), at_path_after_rerun)


def test_recovery_leaves_the_entries_of_live_runs_and_of_other_outputs(tmp_path: Path):
    out = _write(tmp_path / "a.zarr", OLD)
    live = [tmp_path / f".a.zarr.{kind}-{os.getpid()}-abcd" for kind in ("partial", "replaced")]
    other = tmp_path / ".b.zarr.replaced-99999999-abcd"
    for path in (*live, other):
        path.mkdir()
        (path / "zarr.json").write_text("{}")
    commit.recover(out)
    assert all(p.exists() for p in (*live, other))


def _enospc_on_chunk_writes(monkeypatch: pytest.MonkeyPatch, keys: str) -> None:
    """The first write of a key containing ``keys`` fails with ENOSPC; the writes already in
    flight beside it end later, as on a real disk (zarr runs them concurrently)."""
    real = zarr.storage.LocalStore.set
    failed: list[str] = []

    async def full(self: zarr.storage.LocalStore, key: str, value: Any) -> None:
        if keys in key:
            if not failed:
                failed.append(key)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            await asyncio.sleep(0.2)
        await real(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", full)


@pytest.mark.parametrize("keys", ["/c/", "zarr.json"], ids=["chunk", "first-metadata"])
def test_disk_full_removes_the_partial_and_names_the_output(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: str
):
    src = tmp_path / "x.npy"
    np.save(src, np.arange(8192 * 8, dtype="i8").reshape(-1, 8))
    out = tmp_path / "out.zarr"
    _enospc_on_chunk_writes(monkeypatch, keys)
    result = cli("ingest", src, "-o", out, "--chunk-mb", "0.05", "-q")
    time.sleep(0.4)  # any write still in flight would now recreate the partial store
    assert result.code == 1
    assert only_line(result.err) == (
        f"error: {out}: no space left on device; the partial store was removed"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_disk_full_on_a_real_small_filesystem(tmp_path: Path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        src = tmp_path / "x.npy"
        np.save(src, np.random.default_rng(0).integers(0, 255, (16384, 256), dtype=np.uint8))
        out = small / "out.zarr"
        ran = subprocess.run(
            [sys.executable, "-m", "gpuds", "ingest", src, "-o", out, "--chunk-mb", "0.01"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ran.returncode == 1
        assert only_line(ran.stderr) == (
            f"error: {out}: no space left on device; the partial store was removed"
        )
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


# `gpuds preprocess` whose chunk writes are slow (as on a busy disk), so that a signal lands
# while the main thread waits in a write and zarr still has writes in flight.
_SLOW_PREPROCESS = textwrap.dedent(
    """
    import asyncio
    import zarr.storage
    from gpuds.cli import run

    real = zarr.storage.LocalStore.set

    async def slow(self, key, value):
        if "/c/" in key:
            await asyncio.sleep(0.5)
        await real(self, key, value)

    zarr.storage.LocalStore.set = slow
    run()
    """
)


def test_second_ctrl_c_removes_the_partial_and_exits_130_in_one_line(tmp_path: Path):
    raw = tmp_path / "raw.zarr"
    with StoreWriter(raw) as w:
        f = w.create_field("x", np.dtype("u1"), (1024,), length=4096, chunk=256)
        f.append(np.ones((4096, 1024), "u1"))
        f.finish()
        w.commit(StoreInfo(num_samples=4096, fields={"x": "array"}))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = ["preprocess", raw, "-o", out_dir / "p.zarr", "--cast", "x=float32"]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_PREPROCESS, *map(str, [*args, "--device", "cpu"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not any(p.name == "c" for p in out_dir.rglob("c")):
        assert proc.poll() is None and time.monotonic() < deadline, "no write started"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)  # the first one is taken alone; it waits for the write under way
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert only_line(err) == "interrupted: the partial output was removed"
    assert list(out_dir.iterdir()) == []


def test_the_tree_removal_spares_a_symlinks_target(tmp_path: Path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "f").touch()
    (tmp_path / "link").symlink_to(target)
    commit.remove(tmp_path / "link")
    assert (target / "f").exists() and not (tmp_path / "link").is_symlink()
    commit.remove(target)
    assert not target.exists()
    commit.remove(tmp_path / "missing")
