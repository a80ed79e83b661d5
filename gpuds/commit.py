"""Moving a finished local store into place, and cleaning up after a run killed while doing it.

A store is built under a hidden sibling ``.NAME.partial-PID-RANDOM`` (:func:`partial_path`).
:func:`publish` moves it to ``NAME``: with a rename that refuses to replace anything, or, to
replace an existing store, with an atomic exchange where the OS has one (Linux ``renameat2``) and
two renames otherwise, which leave the old store under ``.NAME.replaced-PID-RANDOM`` in between.
:func:`recover` puts right what a killed run left. docs/FORMAT.md ("Safe writes") is the protocol.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from gpuds.errors import StoreExistsError

__all__ = [
    "exchange",
    "interrupted_overwrite",
    "is_zarr_store",
    "partial_path",
    "publish",
    "recover",
    "remove",
    "rename_noreplace",
]

_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")
_HIDDEN = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|replaced)-(?P<pid>\d+)-[0-9a-f]+$")
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
# What renameat2 answers where the kernel (ENOSYS) or the filesystem (EINVAL, e.g. NFS) lacks it.
_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP})
# What a rename answers when its destination exists (a file or a folder that is not empty).
_EXISTS = frozenset({errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR})


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's ``renameat2`` (glibc >= 2.28), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


def _rename2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``: True when done, False where it is not supported."""
    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(src), None, str(dst))


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` exists, atomically.

    Raises
    ------
    StoreExistsError
        ``dst`` exists; nothing was moved.

    Examples
    --------
    >>> a, b = tmp / "a", tmp / "b"                               # doctest: +SKIP
    >>> a.mkdir(); b.mkdir(); (b / "f").touch()                    # doctest: +SKIP
    >>> rename_noreplace(a, b)                                     # doctest: +SKIP
    Traceback (most recent call last):
    gpuds.errors.StoreExistsError: .../b already exists
    """
    try:
        if _rename2(src, dst, _RENAME_NOREPLACE):
            return
        # Without renameat2, POSIX rename still refuses a file or a non-empty folder at dst; it
        # replaces only an empty folder, the one race left, and that loses nothing.
        os.rename(src, dst)
    except OSError as e:
        if e.errno in _EXISTS and os.path.lexists(dst):
            raise StoreExistsError(f"{dst} already exists") from e
        raise


def exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` atomically (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False, having changed nothing, where the OS or the filesystem cannot; raises
    :class:`OSError` otherwise (``FileNotFoundError`` when either is missing).

    Examples
    --------
    >>> exchange(tmp / "new.zarr", tmp / "data.zarr")             # doctest: +SKIP
    True
    """
    return _rename2(a, b, _RENAME_EXCHANGE)


def remove(path: Path) -> None:
    """Delete a folder tree, a file, or a symbolic link (never its target); missing is fine."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def is_zarr_store(path: Path) -> bool:
    """True when ``path`` is a folder with Zarr metadata (v3 or v2) at its top."""
    return path.is_dir() and any((path / m).exists() for m in _ZARR_MARKERS)


def _hidden(out: Path, kind: str) -> Path:
    return out.parent / f".{out.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def partial_path(out: Path) -> Path:
    """A fresh hidden sibling of ``out`` to build it under: ``.NAME.partial-PID-RANDOM``."""
    return _hidden(out, "partial")


def publish(partial: Path, out: Path, *, overwrite: bool) -> Path | None:
    """Move the complete store ``partial`` to ``out``; return where the replaced store now is.

    Without ``overwrite`` the rename refuses atomically if ``out`` appeared meanwhile. With it an
    existing Zarr store at ``out`` is replaced: by an atomic exchange (the old store then sits at
    ``partial``) or, where there is none, by two renames with the old store under
    ``.NAME.replaced-PID-RANDOM`` in between; a failure between them puts the old store back.
    The caller deletes the returned path (:func:`remove`); a run killed first leaves it for
    :func:`recover`.

    Raises
    ------
    StoreExistsError
        ``out`` appeared while the store was written (without ``overwrite``), or it is not a
        Zarr store. Nothing was moved.

    Examples
    --------
    >>> publish(partial_path(out), out, overwrite=False) is None  # doctest: +SKIP
    True
    """
    if not (overwrite and os.path.lexists(out)):
        try:
            rename_noreplace(partial, out)
            return None
        except StoreExistsError as e:
            if not overwrite:
                raise StoreExistsError(
                    f"{out} appeared while this run was writing; nothing was replaced "
                    "(pass --overwrite to replace it)"
                ) from e
    if not is_zarr_store(out):
        raise StoreExistsError(
            f"{out} appeared while this run was writing and is not a Zarr store; nothing was "
            "replaced (remove it yourself if you mean it)"
        )
    if exchange(partial, out):
        return partial
    old = _hidden(out, "replaced")
    rename_noreplace(out, old)
    try:
        rename_noreplace(partial, out)
    except BaseException:
        with suppress(OSError):
            rename_noreplace(old, out)
        raise
    return old


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftovers(out: Path, *, dead_only: bool) -> list[tuple[str, Path]]:
    """``(kind, path)`` of the hidden partial and replaced stores of ``out``, replaced first."""
    try:
        entries = sorted(out.parent.iterdir())
    except OSError:
        return []
    found = []
    for entry in entries:
        match = _HIDDEN.match(entry.name)
        if (
            match
            and match["name"] == out.name
            and not (dead_only and _pid_alive(int(match["pid"])))
        ):
            found.append((match["kind"], entry))
    return sorted(found, key=lambda item: item[0] != "replaced")


def recover(out: Path) -> None:
    """Put right what runs writing ``out`` left when they were killed (their process is gone).

    An old store left under ``.NAME.replaced-*`` goes back to ``out`` when nothing is there (the
    run that was replacing it never reported success), and is deleted when ``out`` holds a Zarr
    store (the new one was in place). Partial stores are deleted. Entries of live processes are
    left alone.

    Examples
    --------
    >>> recover(tmp / "data.zarr")                                # doctest: +SKIP
    """
    for kind, entry in _leftovers(out, dead_only=True):
        if kind == "replaced" and not os.path.lexists(out):
            with suppress(StoreExistsError, FileNotFoundError):
                rename_noreplace(entry, out)
                continue
        if kind == "partial" or is_zarr_store(out):
            remove(entry)


def interrupted_overwrite(out: Path) -> Path | None:
    """The old store an interrupted overwrite of ``out`` left hidden, if there is one.

    Examples
    --------
    >>> interrupted_overwrite(tmp / "data.zarr")                  # doctest: +SKIP
    PosixPath('.../.data.zarr.replaced-4242-0a1b2c3d')
    """
    return next((p for kind, p in _leftovers(out, dead_only=False) if kind == "replaced"), None)
