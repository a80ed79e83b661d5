"""Ranged reads through a zarr-python store: many in flight, retried, errors named in one line.

The chunk service (:mod:`gpuds.chunks`) reads object stores (``s3://``, ``gs://``, ``az://``,
fsspec URLs) through :class:`RangeFetcher`: every request is a coroutine of the store's async API
(``Store.get`` with a byte range) run on zarr-python's own event loop, so that tens of requests are
in flight from one thread, never a thread per request. A semaphore bounds the requests in flight;
transient failures (throttling, 5xx, dropped connections, timeouts) are retried with exponential
backoff and full jitter; what still fails is a :class:`~gpuds.errors.StoreError` naming the URL in
one line.
:func:`coalesce` merges the byte ranges of neighbouring chunks into one request.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from gpuds.errors import GpudsError, StoreError

__all__ = ["RangeFetcher", "ReadPolicy", "coalesce", "is_transient", "store_url"]

T = TypeVar("T")

# Errors no retry can fix: the object is not there, access is refused, the request is invalid.
_PERMANENT_NAMES = frozenset(
    {
        "NotFoundError",
        "PermissionDeniedError",
        "UnauthenticatedError",
        "InvalidPathError",
        "NotSupportedError",
        "UnknownConfigurationKeyError",
        "PreconditionError",
    }
)
_PERMANENT_TYPES: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    ValueError,
    TypeError,
    KeyError,
)


def is_transient(error: BaseException) -> bool:
    """Whether a failed request is worth retrying (anything but a refusal or a bad request).

    Examples
    --------
    >>> is_transient(ConnectionResetError()), is_transient(PermissionError("denied"))
    (True, False)
    """
    if isinstance(error, _PERMANENT_TYPES):
        return False
    return type(error).__name__ not in _PERMANENT_NAMES


def first_line(error: BaseException) -> str:
    """The first line of an error's message (obstore's run to dozens of lines), at most 300
    characters, with its type when the message is empty."""
    text = (str(error).strip().splitlines() or [""])[0][:300]
    return text or type(error).__name__


@dataclass(frozen=True)
class ReadPolicy:
    """How a loader reads an object store.

    Parameters
    ----------
    requests
        Requests in flight at most (per loader; object stores reward tens).
    retries
        Retries of a request that failed transiently, after the store's own retries.
    backoff
        Seconds before the first retry; each next one doubles it, up to 32 times it, with full
        jitter (a uniform draw below that bound, as AWS recommends against throttling).

    Examples
    --------
    >>> ReadPolicy().requests, ReadPolicy(retries=0).retries
    (32, 0)
    """

    requests: int = 32
    retries: int = 5
    backoff: float = 0.25

    def __post_init__(self) -> None:
        from gpuds.errors import ConfigError

        if isinstance(self.requests, bool) or not isinstance(self.requests, int):
            raise ConfigError(f"Expected requests to be an integer, got {self.requests!r}")
        if self.requests < 1 or self.retries < 0 or not self.backoff >= 0:
            raise ConfigError(
                f"Expected requests >= 1, retries >= 0 and backoff >= 0, got {self.requests}, "
                f"{self.retries} and {self.backoff}"
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (0 for the first)."""
        return random.uniform(0, self.backoff * 2 ** min(attempt, 5))


def coalesce(
    ranges: Sequence[tuple[int, int]], *, gap: int = 0, limit: int = 64 * 2**20
) -> list[tuple[int, int, list[int]]]:
    """Merge byte ranges ``[start, stop)`` into requests: ``(start, stop, members)``, members
    being the positions of the ranges in ``ranges``. Ranges at most ``gap`` bytes apart join the
    same request while it stays within ``limit`` bytes.

    Examples
    --------
    >>> coalesce([(10, 20), (0, 10), (40, 50)])
    [(0, 20, [1, 0]), (40, 50, [2])]
    >>> coalesce([(0, 10), (12, 20)], gap=2)
    [(0, 20, [0, 1])]
    """
    order = sorted(range(len(ranges)), key=lambda i: ranges[i])
    out: list[tuple[int, int, list[int]]] = []
    for i in order:
        start, stop = ranges[i]
        if out and start - out[-1][1] <= gap and max(stop, out[-1][1]) - out[-1][0] <= limit:
            first, end, members = out[-1]
            out[-1] = (first, max(end, stop), [*members, i])
        else:
            out.append((start, stop, [i]))
    return out


def store_url(store: Any) -> str:
    """A zarr-python store's location as a URL, for messages (``s3://bucket/prefix``)."""
    fs = getattr(store, "fs", None)
    if fs is not None:  # fsspec
        return str(fs.unstrip_protocol(store.path))
    inner = getattr(store, "store", None)  # zarr.storage.ObjectStore around an obstore store
    config = getattr(inner, "config", None)
    if isinstance(config, dict):
        bucket = config.get("bucket") or config.get("container_name")
        scheme = {"S3Store": "s3", "GCSStore": "gs", "AzureStore": "az"}.get(type(inner).__name__)
        if bucket and scheme:
            prefix = str(getattr(inner, "prefix", "") or "").strip("/")
            return f"{scheme}://{bucket}/{prefix}".rstrip("/")
    return str(store)


def _refused(url: str, what: str, error: Exception) -> Exception:
    """A refused request (access denied, bad credentials, ...) as one line naming the fix."""
    from gpuds.storage import location, storage_error

    try:
        where = location(url)
    except GpudsError:  # a store that is not at a URL gpuds parses
        return StoreError(f"{url}: {what}: {type(error).__name__}: {first_line(error)}")
    return storage_error(where, error, what)


_LOOPS: dict[int, asyncio.AbstractEventLoop] = {}


def _zarr_loop() -> asyncio.AbstractEventLoop:
    """zarr-python's I/O event loop (one per process; zarr makes a new one after a fork): the
    loop its stores' sessions live on, so fsspec's aiohttp sessions stay on theirs."""
    pid = os.getpid()
    loop = _LOOPS.get(pid)
    if loop is None or loop.is_closed():
        from zarr.core.sync import sync

        async def running() -> asyncio.AbstractEventLoop:
            return asyncio.get_running_loop()

        loop = _LOOPS[pid] = sync(running())
    return loop


class RangeFetcher:
    """Ranged reads of one zarr-python store, run concurrently on zarr's event loop.

    Parameters
    ----------
    store
        A zarr-python store (``zarr.storage.ObjectStore``, ``FsspecStore``, ...).
    url
        Its location, for messages (default: :func:`store_url`).
    policy
        Requests in flight, retries and backoff.

    Examples
    --------
    >>> from zarr.storage import MemoryStore
    >>> from zarr.core.buffer import cpu
    >>> from zarr.core.sync import sync
    >>> store = MemoryStore()
    >>> sync(store.set("a", cpu.Buffer.from_bytes(b"0123456789")))
    >>> fetcher = RangeFetcher(store, "memory://")
    >>> bytes(fetcher.get("a", 2, 5)), fetcher.size("a"), fetcher.get("b", 0, 1)
    (b'234', 10, None)
    """

    def __init__(self, store: Any, url: str | None = None, policy: ReadPolicy | None = None):
        from zarr.core.buffer import default_buffer_prototype

        self.store = store
        self.url = url if url is not None else store_url(store)
        self.policy = policy or ReadPolicy()
        self._prototype = default_buffer_prototype()
        self._semaphores: dict[int, asyncio.Semaphore] = {}
        # One GET gives a suffix and the object's size with obstore; other stores need a HEAD.
        self._obstore = (
            getattr(store, "store", None) if type(store).__name__ == "ObjectStore" else None
        )

    def __repr__(self) -> str:
        return f"RangeFetcher({self.url}, {self.policy})"

    # -- running ----------------------------------------------------------------------------
    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Start ``coro`` on zarr's event loop; a future of its result (cancel it to cancel)."""
        return asyncio.run_coroutine_threadsafe(coro, _zarr_loop())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on zarr's event loop and wait for it."""
        return self.submit(coro).result()

    def _semaphore(self) -> asyncio.Semaphore:
        pid = os.getpid()
        semaphore = self._semaphores.get(pid)
        if semaphore is None:  # made on the loop, where it is used
            semaphore = self._semaphores[pid] = asyncio.Semaphore(self.policy.requests)
        return semaphore

    async def _retrying(self, what: str, key: str, call: Any) -> Any:
        """``await call()`` within the in-flight bound, retried while it fails transiently."""
        attempt = 0
        while True:
            try:
                async with self._semaphore():
                    return await call()
            except Exception as e:
                if not is_transient(e):
                    if isinstance(e, FileNotFoundError | NotADirectoryError):
                        return None
                    raise _refused(f"{self.url}/{key}", what, e) from e
                if attempt >= self.policy.retries:
                    raise StoreError(
                        f"{self.url}/{key}: {what} failed after {attempt} retries: "
                        f"{first_line(e)}; the object store is unreachable or throttling: "
                        "check the endpoint and retry later, or allow more retries (retries=)"
                    ) from e
                await asyncio.sleep(self.policy.delay(attempt))
                attempt += 1

    # -- requests ---------------------------------------------------------------------------
    async def get_async(self, key: str, start: int, stop: int) -> memoryview | None:
        """Bytes ``[start, stop)`` of object ``key`` (fewer past its end); None when the object
        does not exist."""
        from zarr.abc.store import RangeByteRequest

        async def call() -> Any:
            return await self.store.get(key, self._prototype, RangeByteRequest(start, stop))

        buffer = await self._retrying(f"GET bytes {start}..{stop}", key, call)
        return None if buffer is None else memoryview(buffer.as_numpy_array())

    async def tail_async(self, key: str, nbytes: int) -> tuple[memoryview, int] | None:
        """The last ``nbytes`` bytes of object ``key`` and its size (None when it does not
        exist): one GET on obstore stores, a HEAD and a GET on others."""
        inner = self._obstore
        if inner is not None:
            import obstore

            async def call() -> Any:
                result = await obstore.get_async(inner, key, options={"range": {"suffix": nbytes}})
                return memoryview(await result.bytes_async()), int(result.meta["size"])

            found: tuple[memoryview, int] | None = await self._retrying(
                f"GET last {nbytes} bytes", key, call
            )
            return found
        size = await self.size_async(key)
        if size is None:
            return None
        data = await self.get_async(key, max(0, size - nbytes), size)
        return None if data is None else (data, size)

    async def size_async(self, key: str) -> int | None:
        """The size of object ``key``; None when it does not exist."""

        async def call() -> int:
            return int(await self.store.getsize(key))

        size: int | None = await self._retrying("HEAD", key, call)
        return size

    # -- blocking forms, for callers outside the loop -------------------------------------
    def get(self, key: str, start: int, stop: int) -> memoryview | None:
        return self.run(self.get_async(key, start, stop))

    def size(self, key: str) -> int | None:
        return self.run(self.size_async(key))

    async def gather(self, calls: Sequence[Awaitable[T]]) -> list[T]:
        """Await ``calls`` concurrently (in-flight bound applies per request)."""
        return list(await asyncio.gather(*calls))
