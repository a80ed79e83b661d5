"""A local disk cache of chunks read from object stores (the loader's ``cache_dir=``).

Each cached chunk is one file holding its stored bytes exactly as the store holds them, checksum
included, so the chunk service checks a cached chunk exactly as one read from the network (one
policy: :mod:`gpuds.chunks`). Files are written under a hidden name and renamed into place, so a
reader never sees half a file; beyond ``limit`` bytes the least recently used files are deleted.
Fields live in scopes named by a hash of what identifies their content (URL, array metadata, the
store's creation record), so a store rewritten at the same URL never reads the old store's chunks.

Several processes may share a directory (every write is atomic and every read is checked), but
each counts the limit on its own: give each process its own directory, or a limit that allows
for all of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from gpuds.errors import ConfigError

__all__ = ["ChunkCache"]

_TOUCH_NS = 60 * 10**9


class ChunkCache:
    """Stored chunks on local disk, least recently used evicted beyond ``limit`` bytes.

    Parameters
    ----------
    root
        The cache directory (made if absent; files already there are counted and reused).
    limit
        Bytes of chunk files kept at most (None: no limit).

    Examples
    --------
    >>> import tempfile
    >>> cache = ChunkCache(tempfile.mkdtemp(), limit=10)
    >>> scope = ChunkCache.scope("s3://bucket/data.zarr", "train/x")
    >>> cache.put(f"{scope}/0", b"123456")
    >>> cache.get(f"{scope}/0")
    b'123456'
    >>> cache.put(f"{scope}/1", b"abcdef")  # 12 bytes > 10: the least recently used goes
    >>> cache.get(f"{scope}/0") is None, cache.nbytes
    (True, 6)
    """

    def __init__(self, root: str | os.PathLike[str], limit: int | None = None) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise ConfigError(f"Expected cache_limit to be a number of bytes, got {limit!r}")
        if limit is not None and limit < 0:
            raise ConfigError(f"Expected cache_limit >= 0 bytes, got {limit}")
        self.root = Path(root).expanduser()
        self.limit = limit
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cache_dir {self.root}: cannot be created ({e})") from e
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, int] = OrderedDict()  # key -> bytes, oldest first
        self._made: set[str] = set()
        self.nbytes = 0
        self._scan()
        self._evict_to(self.limit)

    def __repr__(self) -> str:
        return f"ChunkCache({self.root}, {self.nbytes} bytes, limit={self.limit})"

    @staticmethod
    def scope(*identity: str) -> str:
        """The directory name of what ``identity`` names (a field of a store): a hash, so that
        different content never shares a scope.

        Examples
        --------
        >>> ChunkCache.scope("s3://bucket/data.zarr", "train/x")
        '8d310267ba460673a3fa070c'
        """
        digest = hashlib.blake2b("\0".join(identity).encode(), digest_size=12)
        return digest.hexdigest()

    def _scan(self) -> None:
        found = []
        for scope in os.scandir(self.root):
            if not scope.is_dir() or scope.name.startswith("."):
                continue
            self._made.add(scope.name)
            for entry in os.scandir(scope.path):
                if entry.name.startswith("."):  # a write a killed process left: not a chunk
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                    continue
                stat = entry.stat()
                found.append((stat.st_mtime_ns, f"{scope.name}/{entry.name}", stat.st_size))
        for _, key, size in sorted(found):
            self._entries[key] = size
            self.nbytes += size

    def _path(self, key: str) -> Path:
        return self.root / key

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def get(self, key: str) -> bytes | None:
        """The cached bytes of ``key`` (marked most recently used), or None."""
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # never cached, or evicted (by this process or another)
            with self._lock:
                size = self._entries.pop(key, None)
                if size is not None:
                    self.nbytes -= size
            return None
        try:
            stat = os.fstat(fd)
            data = os.read(fd, stat.st_size)
            # The order survives the process (a later run evicts by the files' times), to the
            # minute: touching a file at every read would dirty an inode per chunk read.
            if time.time_ns() - stat.st_mtime_ns > _TOUCH_NS:
                os.utime(fd)
        finally:
            os.close(fd)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
            else:  # written by another process sharing the directory
                self._entries[key] = len(data)
                self.nbytes += len(data)
        return data

    def put(self, key: str, data: bytes | memoryview) -> None:
        """Keep ``data`` as ``key`` (replacing what was there), then evict beyond the limit."""
        size = len(data)
        if self.limit is not None and size > self.limit:
            return
        path = self._path(key)
        scope = key.split("/", 1)[0]
        if scope not in self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(scope)
        hidden = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            with open(hidden, "wb") as fh:
                fh.write(data)
            os.replace(hidden, path)
        except OSError:  # a full or read-only disk: the cache is an optimisation, reads go on
            with contextlib.suppress(OSError):
                os.unlink(hidden)
            return
        with self._lock:
            self.nbytes += size - self._entries.pop(key, 0)
            self._entries[key] = size
        self._evict_to(self.limit)

    def discard(self, key: str) -> None:
        """Forget and delete ``key`` (a damaged copy)."""
        with self._lock:
            self.nbytes -= self._entries.pop(key, 0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))

    def _evict_to(self, limit: int | None) -> None:
        if limit is None:
            return
        victims = []
        with self._lock:
            while self.nbytes > limit and self._entries:
                key, size = self._entries.popitem(last=False)
                self.nbytes -= size
                victims.append(key)
        for key in victims:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(key))
