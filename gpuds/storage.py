"""Where stores and sources live: local paths and object-store URLs (docs/storage.md).

:func:`location` parses what a user passes (``data.zarr``, ``file:///data/x.zarr``,
``s3://bucket/prefix/x.zarr``, ``gs://...``, ``az://...``) into a :class:`Location`, which opens
it as a zarr-python store (:meth:`Location.zarr_store`) or as an obstore store
(:meth:`Location.object_store`) for what zarr's store does not offer (conditional puts, listing,
bulk deletes, ranged reads of raw files). Object stores go through **obstore** (Rust
``object_store``; zarr-python's ``zarr.storage.ObjectStore`` wraps it). Other URLs that fsspec
knows (``memory://``, ...) are read through zarr-python's fsspec store, never written.

Credentials and endpoints come from the standard environment variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``, the
``GOOGLE_*`` and ``AZURE_*`` equivalents, read by obstore), the shared AWS credentials file
(``AWS_PROFILE``), and ``storage_options`` (``--storage-option KEY=VALUE``), which win.
:func:`storage_error` turns a failed request into one line naming the URL and the fix.
"""

from __future__ import annotations

import configparser
import functools
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from gpuds.errors import ConfigError, GpudsError, StoreError

if TYPE_CHECKING:
    from obstore.store import ObjectStore as ObstoreStore
    from zarr.abc.store import Store

__all__ = [
    "OBJECT_SCHEMES",
    "Location",
    "is_url",
    "location",
    "parse_storage_options",
    "storage_error",
]

OBJECT_SCHEMES = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gs",
    "gcs": "gs",
    "az": "az",
    "azure": "az",
    "abfs": "az",
    "abfss": "az",
}
"""URL schemes read and written through obstore, and the service each names."""

# ClientConfig keys of obstore: they go to client_options, every other key to the store's config.
_CLIENT_KEYS = frozenset(
    {
        "allow_http",
        "allow_invalid_certificates",
        "connect_timeout",
        "default_content_type",
        "http1_only",
        "http2_keep_alive_interval",
        "http2_keep_alive_timeout",
        "http2_keep_alive_while_idle",
        "http2_only",
        "pool_idle_timeout",
        "pool_max_idle_per_host",
        "proxy_url",
        "proxy_ca_certificate",
        "proxy_excludes",
        "randomize_addresses",
        "read_timeout",
        "timeout",
        "user_agent",
    }
)
_BOOLEAN_CLIENT_KEYS = frozenset(
    {"allow_http", "allow_invalid_certificates", "http1_only", "http2_only", "randomize_addresses"}
)
# Endpoint keys (storage option, environment variable), first found wins.
_ENDPOINT_OPTIONS = ("endpoint", "endpoint_url", "aws_endpoint", "aws_endpoint_url")
_ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")
_CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def is_url(text: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` (``file://`` included), False for a plain path.

    >>> is_url("s3://bucket/x.zarr"), is_url("data/x.zarr"), is_url("C:/data")
    (True, False, False)
    """
    return "://" in str(text)


def parse_storage_options(items: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` texts (``--storage-option``, repeatable) as a mapping; keys lower case.

    >>> parse_storage_options(["endpoint=http://127.0.0.1:9000", "REGION=eu-west-1"])
    {'endpoint': 'http://127.0.0.1:9000', 'region': 'eu-west-1'}
    """
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"Expected --storage-option KEY=VALUE (e.g. region=eu-west-1), got {item!r}"
            )
        options[key.strip().lower()] = value.strip()
    return options


@dataclass(frozen=True)
class Location:
    """A store or source: a local path or an object-store URL, with its storage options.

    ``url`` is what errors and the store's records name: the absolute local path, or the URL
    without a trailing slash. Made by :func:`location`.

    Examples
    --------
    >>> loc = location("s3://bucket/runs/raw.zarr")
    >>> loc.scheme, loc.bucket, loc.key, loc.name
    ('s3', 'bucket', 'runs/raw.zarr', 'raw.zarr')
    >>> str(loc.child("images/cat.png"))
    's3://bucket/runs/raw.zarr/images/cat.png'
    >>> location("file:///tmp/x.zarr").path
    PosixPath('/tmp/x.zarr')
    """

    url: str
    scheme: str = ""
    """``""`` for a local path, else the URL's scheme as given."""
    options: tuple[tuple[str, str], ...] = field(default=(), compare=True)

    def __str__(self) -> str:
        return self.url

    @property
    def is_local(self) -> bool:
        return not self.scheme

    @property
    def is_object_store(self) -> bool:
        """Read and written through obstore (``s3://``, ``gs://``, ``az://``)."""
        return self.scheme in OBJECT_SCHEMES

    @property
    def service(self) -> str:
        """``s3``, ``gs`` or ``az`` for object stores, ``local``, or the fsspec scheme."""
        return OBJECT_SCHEMES.get(self.scheme, self.scheme or "local")

    @property
    def path(self) -> Path:
        """The local path (local locations only)."""
        if not self.is_local:
            raise StoreError(f"{self.url}: not a local path")
        return Path(self.url)

    @property
    def bucket(self) -> str:
        """The bucket (container) of a URL."""
        return self.url.split("://", 1)[1].split("/", 1)[0] if self.scheme else ""

    @property
    def key(self) -> str:
        """The key prefix inside the bucket (``""`` for the bucket itself)."""
        if not self.scheme:
            return ""
        rest = self.url.split("://", 1)[1]
        return rest.split("/", 1)[1] if "/" in rest else ""

    @property
    def name(self) -> str:
        """The last part of the path or key."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def suffixes(self) -> list[str]:
        return PurePosixPath(self.name).suffixes

    @property
    def storage_options(self) -> dict[str, str]:
        return dict(self.options)

    def __truediv__(self, relative: str) -> Location:
        return self.child(relative)

    def child(self, relative: str) -> Location:
        """The location ``relative`` (``a/b``) below this one."""
        relative = relative.strip("/")
        if self.is_local:
            return Location(str(Path(self.url) / relative), "", self.options)
        return Location(
            f"{self.url}/{relative}" if relative else self.url, self.scheme, self.options
        )

    def object_store(self) -> ObstoreStore:
        """The obstore store rooted at this location (keys are relative to it); one per
        location and options in a process."""
        if not self.is_object_store:
            raise StoreError(f"{self.url}: not an object-store URL ({', '.join(OBJECT_SCHEMES)})")
        return _object_store(self.url, self.options, _environment())

    def zarr_store(self, *, read_only: bool = True) -> Store | str:
        """What ``zarr.open_group`` opens this location with: zarr's ``ObjectStore`` over
        obstore, the local path as a string, or (other fsspec URLs) zarr's ``FsspecStore``."""
        if self.is_local:
            return self.url
        if self.is_object_store:
            from zarr.storage import ObjectStore

            return ObjectStore(self.object_store(), read_only=read_only)
        from zarr.storage import FsspecStore

        if not read_only:
            raise StoreError(
                f"{self.url}: gpuds writes to local paths and to "
                f"{', '.join(sorted({f'{s}://' for s in ('s3', 'gs', 'az')}))} URLs only"
            )
        return FsspecStore.from_url(self.url, storage_options=self.storage_options, read_only=True)

    def exists(self) -> bool:
        """A local file or folder exists, or an object or a prefix holding objects does."""
        if self.is_local:
            return Path(self.url).exists()
        return self.is_file() or any(True for _ in self.list(limit=1))

    def is_dir(self) -> bool:
        """A local folder, or a prefix holding objects (and no object at exactly this key)."""
        if self.is_local:
            return Path(self.url).is_dir()
        return not self.is_file() and any(True for _ in self.list(limit=1))

    def entries(self) -> tuple[list[str], list[str]]:
        """Names of the folders (prefixes holding objects) and of the files right below this
        folder or prefix, each sorted: one listing request for an object store."""
        if self.is_local:
            names = sorted(os.listdir(self.url))
            folders = [n for n in names if os.path.isdir(os.path.join(self.url, n))]
            return folders, [n for n in names if n not in set(folders)]
        import obstore

        try:
            found = obstore.list_with_delimiter(self.object_store())
        except Exception as e:
            raise storage_error(self, e) from e
        folders = sorted({p.rstrip("/").rsplit("/", 1)[-1] for p in found["common_prefixes"]})
        files = sorted(m["path"].rsplit("/", 1)[-1] for m in found["objects"])
        return folders, files

    def open(self, mode: str = "rb") -> IO[bytes]:
        """The file or object as a seekable binary file (an object is read by ranged requests
        as the reader asks, never downloaded whole)."""
        if mode != "rb":
            raise ValueError(f"Expected mode 'rb', got {mode!r}")
        if self.is_local:
            return open(self.url, "rb")
        import obstore

        parent, name = self._split()
        try:
            reader = obstore.open_reader(parent.object_store(), name, buffer_size=4 * 2**20)
        except FileNotFoundError:
            raise
        except Exception as e:
            raise storage_error(self, e) from e
        return io.BufferedReader(_ObjectFile(reader), buffer_size=2**16)

    def is_file(self) -> bool:
        """A local file, or one object at exactly this key."""
        if self.is_local:
            return Path(self.url).is_file()
        return self.size() is not None

    def size(self) -> int | None:
        """The bytes of the file or object, None when there is none."""
        found = self.stat()
        return found[0] if found is not None else None

    def stat(self) -> tuple[int, float] | None:
        """The size and modification time (seconds since the epoch) of the file or object,
        None when there is none."""
        if self.is_local:
            try:
                st = Path(self.url).stat()
            except OSError:
                return None
            return (st.st_size, st.st_mtime) if Path(self.url).is_file() else None
        import obstore

        if not self.key:
            return None  # a bucket is a folder
        parent, name = self._split()
        try:
            meta = obstore.head(parent.object_store(), name)
        except FileNotFoundError:
            return None
        except Exception as e:
            raise storage_error(self, e) from e
        return int(meta["size"]), meta["last_modified"].timestamp()

    def list(self, limit: int | None = None) -> Iterator[tuple[str, int]]:
        """``(relative key, size)`` of every object below this location (every file below a
        local folder), in the order the service lists them."""
        if self.is_local:
            root = Path(self.url)
            for n, path in enumerate(p for p in sorted(root.rglob("*")) if p.is_file()):
                if limit is not None and n >= limit:
                    return
                yield path.relative_to(root).as_posix(), path.stat().st_size
            return
        import obstore

        count = 0
        try:
            for batch in obstore.list(self.object_store(), chunk_size=1000):
                for meta in batch:
                    if limit is not None and count >= limit:
                        return
                    count += 1
                    yield meta["path"], int(meta["size"])
        except GpudsError:
            raise
        except Exception as e:
            raise storage_error(self, e) from e

    def read_bytes(self) -> bytes:
        """The whole file or object."""
        if self.is_local:
            return Path(self.url).read_bytes()
        import obstore

        parent, name = self._split()
        try:
            return bytes(obstore.get(parent.object_store(), name).bytes())
        except Exception as e:
            raise storage_error(self, e) from e

    def read_range(self, offset: int, nbytes: int) -> bytes:
        """``nbytes`` bytes from ``offset`` of the file or object."""
        if self.is_local:
            with open(self.url, "rb") as fh:
                fh.seek(offset)
                return fh.read(nbytes)
        import obstore

        parent, name = self._split()
        try:
            return bytes(
                obstore.get_range(parent.object_store(), name, start=offset, length=nbytes)
            )
        except Exception as e:
            raise storage_error(self, e) from e

    def _split(self) -> tuple[Location, str]:
        """The parent location and this one's name: an object is read through its parent's
        store (a store's prefix is a folder, not an object)."""
        head, _, name = self.url.rpartition("/")
        if not name or head.endswith(":/"):
            raise StoreError(f"{self.url}: names a bucket, not an object")
        return Location(head, self.scheme, self.options), name


class _ObjectFile(io.RawIOBase):
    """obstore's buffered ranged reader as a Python raw file (what pyarrow, zipfile, gzip and
    NumPy's header parser take)."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._reader.seek(offset, whence))

    def tell(self) -> int:
        return int(self._reader.tell())

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = memoryview(self._reader.read(len(view)))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


def location(
    path: str | os.PathLike[str] | Location, storage_options: Mapping[str, str] | None = None
) -> Location:
    """Parse a local path, a ``file://`` URL or an object-store URL.

    ``storage_options`` (``--storage-option``) apply to URLs; for local paths they are ignored.

    Examples
    --------
    >>> location("s3://bucket/x.zarr/", {"region": "eu-west-1"}).url
    's3://bucket/x.zarr'
    >>> location("data.zarr").is_local
    True
    >>> location("nope://host/x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    gpuds.errors.ConfigError: nope://host/x: unknown URL scheme 'nope'; use a local path or ...
    """
    if isinstance(path, Location):
        return path
    options = tuple(sorted((storage_options or {}).items()))
    text = os.fspath(path)
    if not is_url(text):
        return Location(str(Path(text).expanduser().absolute()), "", options)
    scheme = text.split("://", 1)[0].lower()
    if scheme == "file":
        return Location(str(Path(text[len("file://") :]).absolute()), "", options)
    if scheme not in OBJECT_SCHEMES and not _fsspec_knows(scheme):
        raise ConfigError(
            f"{text}: unknown URL scheme {scheme!r}; use a local path or s3://, gs://, az:// "
            "(or an fsspec URL: memory://, ...)"
        )
    rest = text.split("://", 1)[1].rstrip("/")
    if scheme in OBJECT_SCHEMES and not rest.split("/", 1)[0]:
        raise ConfigError(f"{text}: the URL names no bucket; expected {scheme}://BUCKET/PATH")
    return Location(f"{scheme}://{rest}", scheme, options)


def _fsspec_knows(scheme: str) -> bool:
    try:
        from fsspec.registry import (  # type: ignore[import-untyped]
            known_implementations,
            registry,
        )
    except ImportError:
        return False
    return scheme in known_implementations or scheme in registry


def _environment() -> tuple[tuple[str, str], ...]:
    """The environment variables obstore reads: a store is built again when they change."""
    return tuple(
        sorted((k, v) for k, v in os.environ.items() if k.startswith(("AWS_", "GOOGLE_", "AZURE_")))
    )


@functools.lru_cache(maxsize=256)
def _object_store(
    url: str, options: tuple[tuple[str, str], ...], environment: tuple[tuple[str, str], ...]
) -> ObstoreStore:
    from obstore.store import from_url

    config, client = _split_options(url, dict(options))
    try:
        return from_url(url, config=config or None, client_options=client or None)  # type: ignore[arg-type]
    except Exception as e:  # unknown keys, bad values: obstore says which
        raise ConfigError(f"{url}: invalid storage options ({_first_line(e)})") from e


def _split_options(url: str, options: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The storage options as obstore's store config and client options; with the profile's
    keys where nothing else gives credentials, and plain HTTP allowed for an ``http://``
    endpoint (a local MinIO or test server)."""
    client: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for key, value in options.items():
        if key in _CLIENT_KEYS:
            client[key] = _truth(value) if key in _BOOLEAN_CLIENT_KEYS else value
        elif key in _ENDPOINT_OPTIONS:
            config["endpoint"] = value
        elif key != "profile":
            config[key] = value
    if OBJECT_SCHEMES.get(url.split("://", 1)[0]) == "s3":
        config.update(_profile_credentials(options, config))
        endpoint = config.get("endpoint") or next(
            (os.environ[k] for k in _ENDPOINT_ENV if os.environ.get(k)), ""
        )
        if endpoint.startswith("http://") and "allow_http" not in client:
            client["allow_http"] = True
    return config, client


def _truth(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _profile_credentials(options: Mapping[str, str], config: Mapping[str, Any]) -> dict[str, str]:
    """Keys of the shared credentials file's profile (``AWS_PROFILE``, ``--storage-option
    profile=NAME``, else ``default``) when neither the options nor the environment give any;
    obstore itself does not read that file."""
    if "access_key_id" in config or "aws_access_key_id" in config:
        return {}
    profile = options.get("profile") or os.environ.get("AWS_PROFILE")
    if any(os.environ.get(k) for k in _CREDENTIAL_ENV) and not options.get("profile"):
        return {}
    files = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"
    parser = configparser.ConfigParser()
    try:
        parser.read(os.path.expanduser(files))
    except configparser.Error:
        return {}
    section = profile or "default"
    if not parser.has_section(section):
        if profile:
            raise ConfigError(f"AWS profile {profile!r} is not in {files}; fix AWS_PROFILE")
        return {}
    found = {}
    for ours, theirs in (
        ("access_key_id", "aws_access_key_id"),
        ("secret_access_key", "aws_secret_access_key"),
        ("token", "aws_session_token"),
    ):
        if parser.has_option(section, theirs):
            found[ours] = parser.get(section, theirs)
    if (
        "region" not in config
        and not os.environ.get("AWS_REGION")
        and parser.has_option(section, "region")
    ):
        found["region"] = parser.get(section, "region")
    return found


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _endpoint_of(loc: Location) -> str:
    options = loc.storage_options
    for key in _ENDPOINT_OPTIONS:
        if options.get(key):
            return options[key]
    return next((os.environ[k] for k in _ENDPOINT_ENV if os.environ.get(k)), "")


def storage_error(loc: Location, error: BaseException, doing: str = "") -> GpudsError:
    """A failed request on ``loc`` as one line naming the URL, the cause and the fix: missing
    bucket, no credentials, credentials rejected, access denied, an unreachable endpoint.

    Examples
    --------
    >>> e = FileNotFoundError("... <Code>NoSuchBucket</Code> ...")
    >>> print(storage_error(location("s3://nobucket/x.zarr"), e))
    s3://nobucket/x.zarr: bucket 'nobucket' does not exist; create it or fix the URL
    """
    if isinstance(error, GpudsError):
        return error
    text = str(error)
    where = f"{loc.url}: " + (f"{doing}: " if doing else "")
    endpoint = _endpoint_of(loc)
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return StoreError(f"{where}bucket {loc.bucket!r} does not exist; create it or fix the URL")
    rejected = "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text
    if not rejected and (
        "latest/api/token" in text or "instance metadata" in text.lower() or "credential" in text
    ):
        return StoreError(
            f"{where}no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE, or --storage-option access_key_id=... secret_access_key=...)"
        )
    if rejected or type(error).__name__ == "UnauthenticatedError":
        return StoreError(
            f"{where}the service rejected the credentials (unknown key or wrong secret); check "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the storage options"
        )
    if (
        type(error).__name__ == "PermissionDeniedError"
        or "AccessDenied" in text
        or "403 Forbidden" in text
    ):
        return StoreError(
            f"{where}access denied; the credentials lack permission for this bucket or prefix "
            "(check the IAM or bucket policy: reading needs s3:GetObject and s3:ListBucket, "
            "writing s3:PutObject and s3:DeleteObject)"
        )
    if "error sending request" in text or "dns error" in text.lower() or "Connect" in text:
        shown = endpoint or "the service's default endpoint"
        return StoreError(
            f"{where}cannot reach {shown}; check AWS_ENDPOINT_URL or --storage-option "
            "endpoint=URL, and the network"
        )
    return StoreError(f"{where}{type(error).__name__}: {_first_line(error)}")
