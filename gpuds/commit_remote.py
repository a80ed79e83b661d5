"""Writing a store into an object store, which has no rename: the commit protocol of
docs/FORMAT.md ("Safe writes") and docs/storage.md.

The root ``zarr.json`` is both the lock and the commit point:

1. **Claim.** The run puts an *incomplete mark* at the root ``zarr.json``: a document no Zarr
   reader opens (``node_type`` ``gpuds.incomplete``) naming the writer (host, pid, start). A new
   output is claimed with a conditional put that fails if the object exists (``If-None-Match``);
   an existing store (``overwrite``) or the mark of a dead run with one conditional on the
   version read (``If-Match`` its ETag). Of two runs, one claims, the other fails at once.
2. **Clear.** Every other object under the prefix is deleted: the old store's, or what a killed
   run left.
3. **Write.** Data objects are written as they come; every ``zarr.json`` is held in memory
   (:class:`DeferredMetadata`). The claim is renewed in the background (a conditional rewrite
   of the mark) so that a run on another machine can tell a live writer from a dead one.
4. **Publish.** The arrays' ``zarr.json``, then the groups', then the root with the completion
   mark, conditional on the claim still being this run's.

A run that fails deletes what it wrote and its mark; a run killed leaves its mark, which the
next run writing that URL takes over (its process is gone, or, from another machine, its claim
has not been renewed for :attr:`RemoteCommit.STALE_AFTER` seconds).
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype

from gpuds.errors import GpudsError, IncompleteStoreError, StoreError, StoreExistsError
from gpuds.storage import Location, storage_error

__all__ = [
    "INCOMPLETE",
    "ROOT",
    "DeferredMetadata",
    "RemoteCommit",
    "describe_writer",
    "incomplete_writer",
]

ROOT = "zarr.json"
INCOMPLETE = "gpuds.incomplete"
"""The ``node_type`` of the incomplete mark: Zarr readers refuse a node of an unknown type."""
_METADATA = "zarr.json"


def incomplete_writer(document: bytes | None) -> dict[str, Any] | None:
    """The writer named by an incomplete mark, or None when ``document`` is not one.

    >>> mark = RemoteCommit.mark({"host": "h", "pid": 1, "id": "x", "started": "t"})
    >>> incomplete_writer(mark)["pid"], incomplete_writer(b'{"node_type": "group"}')
    (1, None)
    """
    if document is None:
        return None
    try:
        parsed = json.loads(document)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or parsed.get("node_type") != INCOMPLETE:
        return None
    writer = parsed.get("gpuds", {}).get("writer") if isinstance(parsed.get("gpuds"), dict) else {}
    return dict(writer) if isinstance(writer, dict) else {}


def describe_writer(writer: dict[str, Any]) -> str:
    """``pid 42 on host gpu-7 since 2026-11-30T12:00:00Z`` (what is known of it)."""
    parts = []
    if writer.get("pid") is not None:
        parts.append(f"pid {writer['pid']}")
    if writer.get("host"):
        parts.append(f"on host {writer['host']}")
    if writer.get("started"):
        parts.append(f"since {writer['started']}")
    return " ".join(parts) or "an unknown writer"


def _machine() -> str:
    """What tells this machine's process ids apart from any other's: the host name, and on
    Linux the boot and the process-id namespace (containers may share a host name)."""
    parts = [socket.gethostname()]
    with suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return "/".join(parts)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_metadata(key: str) -> bool:
    return key == _METADATA or key.endswith("/" + _METADATA)


class RemoteCommit:
    """One run writing the store at ``loc`` (an object-store URL): claim, write, publish.

    Parameters
    ----------
    loc
        Where the store goes.
    overwrite
        Replace a Zarr store found there (without it, one found there is an error).

    Examples
    --------
    >>> commit = RemoteCommit(location("s3://bucket/x.zarr"), overwrite=False)  # doctest: +SKIP
    >>> commit.claim(); commit.put("x/c/0", b"..."); commit.publish(root)  # doctest: +SKIP
    """

    RENEW_EVERY = 60.0
    """Seconds between renewals of the claim."""
    STALE_AFTER = 600.0
    """A claim from another machine not renewed for this long belongs to a dead run."""

    def __init__(self, loc: Location, *, overwrite: bool) -> None:
        self.loc = loc
        self.overwrite = overwrite
        self.writer = {
            "id": secrets.token_hex(8),
            "host": socket.gethostname(),
            "machine": _machine(),
            "pid": os.getpid(),
            "started": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        }
        self._store = loc.object_store()
        self._etag: str | None = None
        self._renewed = 0.0
        self._renewals = 0
        self._lost: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.metadata = DeferredMetadata(self)

    # -- the mark ---------------------------------------------------------------------------
    @staticmethod
    def mark(writer: dict[str, Any], renewal: int = 0) -> bytes:
        """The incomplete mark naming ``writer``, at its ``renewal``-th renewal (every renewal
        changes the document, so its ETag changes on every service)."""
        document = {
            "zarr_format": 3,
            "node_type": INCOMPLETE,
            "gpuds": {
                "complete": False,
                "writer": writer,
                "renewal": renewal,
                "note": "being written by gpuds, or interrupted; readers refuse it",
            },
        }
        return json.dumps(document, indent=1).encode()

    def _read_root(self) -> tuple[bytes, str | None, datetime] | None:
        import obstore

        try:
            result = obstore.get(self._store, ROOT)
            data = bytes(result.bytes())
        except FileNotFoundError:
            return None
        except Exception as e:
            raise storage_error(self.loc, e) from e
        return data, result.meta.get("e_tag"), result.meta["last_modified"]

    def _stale(self, writer: dict[str, Any], modified: datetime) -> bool:
        """The run that left a mark is gone: its process (same machine) or its renewals."""
        pid = writer.get("pid")
        if writer.get("machine") == self.writer["machine"] and isinstance(pid, int):
            return pid != os.getpid() and not _pid_alive(pid)
        age = (datetime.now(UTC) - modified).total_seconds()
        return age > self.STALE_AFTER

    # -- claim ------------------------------------------------------------------------------
    def precheck(self) -> None:
        """What :meth:`claim` would refuse, found before any work starts (nothing is written):
        an existing store without ``overwrite``, a live run writing it, objects that are not a
        store, an unreachable service, a missing bucket, missing credentials."""
        found = self._read_root()
        if found is None:
            self._refuse_foreign_objects()
        else:
            self._may_replace(found[0], found[2])

    def claim(self) -> None:
        """Put this run's mark at the root (conditionally), then delete every other object
        under the prefix. Raises :class:`StoreExistsError` for a store (or other objects) there
        without ``overwrite``, :class:`IncompleteStoreError` while another live run writes it."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        mark = self.mark(self.writer)
        for _ in range(5):
            found = self._read_root()
            if found is not None and incomplete_writer(found[0]) == self.writer:
                # A put of ours whose answer was lost, then retried: it is claimed.
                self._etag, self._renewed = found[1], time.monotonic()
                break
            try:
                if found is None:
                    self._refuse_foreign_objects()
                    result = obstore.put(self._store, ROOT, mark, mode="create")
                else:
                    data, etag, modified = found
                    self._may_replace(data, modified)
                    mode: Any = {"e_tag": etag} if etag else "overwrite"
                    result = obstore.put(self._store, ROOT, mark, mode=mode)
            except (AlreadyExistsError, PreconditionError):
                continue  # another run changed the root between our read and write: look again
            except GpudsError:
                raise
            except Exception as e:
                raise storage_error(self.loc, e, "cannot claim the output") from e
            self._etag = result.get("e_tag")
            self._renewed = time.monotonic()
            break
        else:
            raise StoreError(
                f"{self.loc}: other runs keep changing the store's zarr.json; nothing was written"
            )
        self._confirm()
        self._clear()
        self._renewer = threading.Thread(target=self._renew_loop, name="gpuds-claim", daemon=True)
        self._renewer.start()

    def _may_replace(self, data: bytes, modified: datetime) -> None:
        writer = incomplete_writer(data)
        if writer is not None:
            if not self._stale(writer, modified):
                raise IncompleteStoreError(
                    f"{self.loc}: another run is writing this store ({describe_writer(writer)}); "
                    "wait for it, or stop it and rerun"
                )
            return  # a killed run's: take it over and clean up after it
        if not self.overwrite:
            raise StoreExistsError(f"{self.loc} already exists; pass --overwrite to replace it")
        try:
            document = json.loads(data)
        except ValueError:
            document = None
        if not isinstance(document, dict) or document.get("node_type") not in ("group", "array"):
            raise StoreExistsError(
                f"{self.loc}: its zarr.json is not Zarr metadata; refusing to replace it even "
                "with --overwrite (remove it yourself if you mean it)"
            )

    def _refuse_foreign_objects(self) -> None:
        """Objects without a root zarr.json are not a store gpuds wrote (its runs put the root
        first and delete it last): never deleted."""
        found = next(iter(self.loc.list(limit=1)), None)
        if found is not None:
            raise StoreExistsError(
                f"{self.loc}: holds objects ({found[0]}, ...) but no Zarr store; refusing to "
                "write into it even with --overwrite (choose another URL)"
            )

    def _confirm(self) -> None:
        """Read the root back: on a service that ignores conditional headers, a run that lost
        the race sees the other's mark here."""
        found = self._read_root()
        if found is None or incomplete_writer(found[0]) != self.writer:
            self._etag = None
            raise StoreError(
                f"{self.loc}: another run claimed this store at the same time; nothing was "
                "written (if no other run exists, the service ignores conditional writes: "
                "see docs/storage.md)"
            )

    def _clear(self) -> None:
        """Delete every object under the prefix but the root (the old store, or a killed run's
        leftovers), arrays' metadata first so that no array stays readable meanwhile."""
        keys = [key for key, _ in self.loc.list() if key != ROOT]
        keys.sort(key=lambda k: not _is_metadata(k))
        self._delete(keys)

    def _delete(self, keys: list[str]) -> None:
        import obstore

        for start in range(0, len(keys), 1000):
            try:
                obstore.delete(self._store, keys[start : start + 1000])
            except FileNotFoundError:
                pass
            except Exception as e:
                raise storage_error(self.loc, e, "cannot delete old objects") from e

    # -- renewals ---------------------------------------------------------------------------
    def _renew_loop(self) -> None:
        while not self._stop.wait(self.RENEW_EVERY):
            self._renew()

    def _renew(self, *, strict: bool = False) -> None:
        """Rewrite the mark conditionally on its version: proves the claim is still this run's.
        A failed request is tried again at the next renewal (``strict``: raised)."""
        import obstore
        from obstore.exceptions import PreconditionError

        with self._lock:
            if self._lost or self._etag is None:
                return
            try:
                etag = obstore.put(
                    self._store,
                    ROOT,
                    self.mark(self.writer, self._renewals + 1),
                    mode={"e_tag": self._etag},
                ).get("e_tag")
            except PreconditionError:
                try:
                    found = self._read_root()
                except StoreError:
                    if strict:
                        raise
                    return  # transient: tried again at the next renewal
                if found is None or incomplete_writer(found[0]) != self.writer:
                    self._lost = "another run took the store over"
                    return
                etag = found[1]  # a retried put of ours: it went through
            except Exception as e:
                if strict:
                    raise storage_error(self.loc, e, "cannot renew the claim") from e
                return  # transient: the next renewal tries again; writes stop once it is stale
            self._etag = etag
            self._renewed = time.monotonic()
            self._renewals += 1

    def check(self) -> None:
        """Raise unless the claim is still this run's and recently renewed: called before
        every write, so a run that lost its claim writes nothing more."""
        if self._lost:
            raise StoreError(f"{self.loc}: {self._lost}; this run stopped writing")
        if time.monotonic() - self._renewed > self.STALE_AFTER / 2:
            raise StoreError(
                f"{self.loc}: the claim could not be renewed for {self.STALE_AFTER / 2:.0f} s; "
                "this run stopped writing so that another run may take over"
            )

    def _stop_renewing(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None

    # -- writes -----------------------------------------------------------------------------
    def put(self, key: str, data: bytes | memoryview | Iterable[bytes]) -> None:
        """Write the data object ``key`` (relative to the store)."""
        import obstore

        self.check()
        try:
            obstore.put(self._store, key, data)
        except Exception as e:
            raise storage_error(self.loc, e, f"cannot write {key}") from e

    async def put_async(self, key: str, data: Any) -> None:
        import obstore

        self.check()
        try:
            await obstore.put_async(self._store, key, data)
        except Exception as e:
            raise storage_error(self.loc, e, f"cannot write {key}") from e

    # -- publish / discard ------------------------------------------------------------------
    def publish(self) -> None:
        """Write the held metadata, arrays first, then groups, the root last; the root
        conditional on the claim. Raises :class:`StoreError` when the claim was lost."""
        import obstore
        from obstore.exceptions import PreconditionError

        self._stop_renewing()
        self._renew(strict=True)  # the claim is still this run's before any metadata is written
        self.check()
        documents = self.metadata.documents
        root = documents.get(ROOT)
        if root is None:
            raise RuntimeError("publish without root metadata")  # a bug of the writer
        arrays = [k for k, v in documents.items() if k != ROOT and _node_type(v) == "array"]
        groups = [k for k in documents if k != ROOT and k not in arrays]
        groups.sort(key=lambda k: -k.count("/"))
        for key in [*sorted(arrays), *groups]:
            self.put(key, documents[key])
        try:
            obstore.put(
                self._store, ROOT, root, mode={"e_tag": self._etag} if self._etag else "create"
            )
        except PreconditionError as e:
            found = self._read_root()
            if found is None or found[0] != root:  # a retried put of ours answers 412 too
                raise StoreError(
                    f"{self.loc}: another run took the store over before this one finished; "
                    "this run's output was not committed"
                ) from e
        except Exception as e:
            raise storage_error(self.loc, e, "cannot write the root metadata") from e
        self._etag = None

    def discard(self) -> None:
        """Remove what this run wrote and its mark, if the claim is still its own (else the
        run that took over owns everything there)."""
        self._stop_renewing()
        if self._etag is None or self._lost:
            return
        found = self._read_root()
        if found is None or found[1] != self._etag:
            return
        self._delete([key for key, _ in self.loc.list() if key != ROOT])
        self._delete([ROOT])
        self._etag = None


class DeferredMetadata(Store):
    """The zarr-python store a remote run builds its store through: data objects go to the
    object store at once (after :meth:`RemoteCommit.check`), every ``zarr.json`` stays in
    memory until :meth:`RemoteCommit.publish`."""

    def __init__(self, commit: RemoteCommit) -> None:
        from zarr.storage import ObjectStore

        super().__init__(read_only=False)
        self.commit = commit
        self.documents: dict[str, bytes] = {}
        self._inner = ObjectStore(commit.loc.object_store())

    def with_read_only(self, read_only: bool = False) -> DeferredMetadata:
        """A view sharing the held metadata (zarr asks for one to read the store back)."""
        view = copy.copy(self)
        view._read_only = read_only
        return view

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DeferredMetadata) and other.documents is self.documents

    def __hash__(self) -> int:
        return id(self.documents)

    def __str__(self) -> str:
        return str(self.commit.loc)

    @property
    def supports_writes(self) -> bool:
        return True

    @property
    def supports_deletes(self) -> bool:
        return True

    @property
    def supports_listing(self) -> bool:
        return True

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        if _is_metadata(key):
            data = self.documents.get(key)
            if data is None:
                return None
            return prototype.buffer.from_bytes(_slice(data, byte_range))
        return await self._inner.get(key, prototype, byte_range)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def exists(self, key: str) -> bool:
        if _is_metadata(key):
            return key in self.documents
        return await self._inner.exists(key)

    async def set(self, key: str, value: Buffer) -> None:
        if _is_metadata(key):
            self.documents[key] = value.to_bytes()
            return
        await self.commit.put_async(key, value.as_buffer_like())

    async def delete(self, key: str) -> None:
        if _is_metadata(key):
            self.documents.pop(key, None)
            return
        self.commit.check()
        await self._inner.delete(key)

    async def getsize(self, key: str) -> int:
        if _is_metadata(key):
            if key not in self.documents:
                raise FileNotFoundError(key)
            return len(self.documents[key])
        return await self._inner.getsize(key)

    def _keys(self, prefix: str, stored: list[str]) -> list[str]:
        data = [k for k in stored if not _is_metadata(k)]
        return sorted({*data, *(k for k in self.documents if k.startswith(prefix))})

    async def list(self) -> AsyncIterator[str]:
        stored = [k async for k in self._inner.list()]
        for key in self._keys("", stored):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        stored = [k async for k in self._inner.list_prefix(prefix)]
        for key in self._keys(prefix, stored):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        base = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        seen: set[str] = set()
        async for key in self.list_prefix(base):
            first = key[len(base) :].split("/", 1)[0]
            if first and first not in seen:
                seen.add(first)
                yield first


def _node_type(document: bytes) -> object:
    parsed = json.loads(document)
    return parsed.get("node_type") if isinstance(parsed, dict) else None


def _slice(data: bytes, byte_range: ByteRequest | None) -> bytes:
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest

    if byte_range is None:
        return data
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return data[-byte_range.suffix :]
    raise ValueError(f"Unexpected byte_range, got {byte_range}")
