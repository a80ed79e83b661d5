"""Where a stage's tasks run: in this process (``threads``) or on a Dask cluster.

A stage plans its work as a list of small, pure tasks (one per output shard, per block of
sources, per block of a pass) and hands them to an :class:`Executor`, which runs them and gives
the results back **in task order**, whatever order they finished in. The client merges results in
that order and commits; workers never commit. Both executors run the same task functions, so the
output does not depend on where they ran (docs/cluster.md).

- ``threads`` (default): this process, a task or two at a time; Dask is not imported.
- ``processes:N``: a ``distributed.LocalCluster`` of N single-threaded worker processes, started
  and stopped by gpuds.
- ``tcp://HOST:PORT`` (or ``tls://``) or the path of a scheduler file: an existing cluster (SLURM
  and PBS jobs start one with ``dask scheduler`` / ``dask worker`` or ``dask-jobqueue``). With no
  ``--scheduler``, ``DASK_SCHEDULER_ADDRESS`` names one.
- ``cuda``: ``dask_cuda.LocalCUDACluster``, one worker per visible GPU.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gpuds.errors import ConfigError, GpudsError, StoreError
from gpuds.progress import Progress, check_cancelled

__all__ = [
    "SCHEDULER_HELP",
    "Executor",
    "SchedulerSpec",
    "TaskFailed",
    "ThreadsExecutor",
    "local_cluster",
    "open_executor",
    "parse_scheduler",
    "task_threads",
    "unseen_here",
]

R = TypeVar("R")

SCHEDULER_HELP = (
    "Where the work runs: threads (this process, the default), processes:N (a local Dask "
    "cluster of N worker processes), tcp://HOST:PORT or a scheduler file (an existing Dask "
    "cluster, e.g. under SLURM; DASK_SCHEDULER_ADDRESS is the default when set), cuda (one "
    "Dask worker per GPU, dask-cuda). The output is byte for byte the same whichever is used. "
    "Needs gpuds[cluster] except for threads (docs/cluster.md)."
)
_ADDRESS_SCHEMES = ("tcp://", "tls://", "ucx://", "inproc://")
_HTTP_ADDRESS = "127.0.0.1:0"
"""A local cluster's scheduler serves HTTP (health, metrics, the dashboard when bokeh is there)
on this machine only, on a free port: the default, 8787, makes a second cluster warn."""
_CONNECT_S = 10.0
"""Seconds to wait for an existing scheduler's port to accept a connection."""
_INSTALL = "pip install 'gpuds[cluster]'"


class TaskFailed(GpudsError, RuntimeError):
    """A task could not finish on the cluster (its workers kept dying)."""


@dataclass(frozen=True)
class SchedulerSpec:
    """A parsed ``--scheduler`` value.

    Examples
    --------
    >>> parse_scheduler("processes:4")
    SchedulerSpec(kind='processes', workers=4, target='', from_env=False)
    >>> parse_scheduler("tcp://10.0.0.1:8786").kind
    'address'
    """

    kind: str
    """``threads``, ``processes``, ``address``, ``file`` or ``cuda``."""
    workers: int = 0
    target: str = ""
    from_env: bool = False

    def __str__(self) -> str:
        if self.kind == "processes":
            return f"processes:{self.workers}"
        return self.target or self.kind


def parse_scheduler(text: str | None) -> SchedulerSpec:
    """Parse a ``--scheduler`` value (None: ``DASK_SCHEDULER_ADDRESS`` when set, else
    ``threads``); raise :class:`ConfigError` naming the forms accepted."""
    if text is None or not str(text).strip():
        env = os.environ.get("DASK_SCHEDULER_ADDRESS", "").strip()
        if env:
            spec = _parse(env, "DASK_SCHEDULER_ADDRESS=")
            return SchedulerSpec(spec.kind, spec.workers, spec.target, from_env=True)
        return SchedulerSpec("threads")
    return _parse(str(text).strip(), "--scheduler ")


def _parse(value: str, where: str) -> SchedulerSpec:
    if value in ("threads", "cuda"):
        return SchedulerSpec(value)
    if value == "processes" or value.startswith("processes:"):
        count = value.partition(":")[2] or str(os.cpu_count() or 1)
        if not count.isdigit() or int(count) < 1:
            raise ConfigError(
                f"{where}{value}: expected processes:N with N a number of workers >= 1"
            )
        return SchedulerSpec("processes", int(count))
    if value.startswith(_ADDRESS_SCHEMES):
        return SchedulerSpec("address", target=value)
    path = Path(value).expanduser()
    if path.is_file():
        return SchedulerSpec("file", target=str(path.absolute()))
    if "/" in value or path.suffix == ".json":
        raise ConfigError(
            f"{where}{value}: no scheduler file there (the file `dask scheduler "
            "--scheduler-file FILE` writes once it listens: start the scheduler first, or wait "
            "for the file)"
        )
    raise ConfigError(
        f"{where}{value}: expected threads, processes:N, cuda, a scheduler address "
        "(tcp://HOST:PORT) or the path of an existing scheduler file"
    )


class Executor(ABC):
    """Runs a stage's tasks and hands their results back in task order."""

    distributed: bool = False
    """True when tasks run in other processes (or machines): they then share only what the
    stage writes to storage that all of them can see."""

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the work runs, for progress lines and the store's history."""

    @property
    @abstractmethod
    def workers(self) -> int:
        """How many tasks may run at once."""

    @abstractmethod
    def map(
        self,
        fn: Callable[..., R],
        tasks: Sequence[tuple[Any, ...]],
        *,
        name: str,
        weights: Sequence[int] | None = None,
        progress: Progress | None = None,
        in_flight: int | None = None,
        consume: Callable[[int, R], None] | None = None,
    ) -> list[R]:
        """``[fn(*args) for args in tasks]``, run where this executor runs things.

        Results come back in task order. With ``consume``, each result is handed to
        ``consume(i, result)`` instead, in task order, as soon as it and those before it are
        done, and not kept (the list returned holds None): a stage merges or writes results
        while later tasks run. ``progress`` advances by ``weights[i]`` (default 1) when task
        ``i`` ends. ``in_flight`` bounds the tasks running at once in this process (a stage whose
        tasks each hold a block of its memory budget passes 1); a cluster's workers bound it
        themselves. The first task to fail fails the call with its error, the others are
        cancelled.
        """

    def check_shared(self, path: Path, hint: str = "") -> None:  # noqa: B027 - in-process
        """Refuse a local folder ``path`` the stage writes to that the workers cannot see
        (before any work); ``hint`` says what to do instead (default: for an output folder)."""


class ThreadsExecutor(Executor):
    """This process: at most ``concurrency`` tasks at a time, on threads.

    Examples
    --------
    >>> ThreadsExecutor().map(pow, [(2, 3), (3, 2)], name="pow")
    [8, 9]
    """

    def __init__(self, concurrency: int = 2) -> None:
        self.concurrency = max(1, concurrency)

    @property
    def description(self) -> str:
        return "threads"

    @property
    def workers(self) -> int:
        return self.concurrency

    def map(
        self,
        fn: Callable[..., R],
        tasks: Sequence[tuple[Any, ...]],
        *,
        name: str,
        weights: Sequence[int] | None = None,
        progress: Progress | None = None,
        in_flight: int | None = None,
        consume: Callable[[int, R], None] | None = None,
    ) -> list[R]:
        limit = min(self.concurrency, in_flight or self.concurrency)
        results = _InOrder(len(tasks), consume)
        if limit == 1:
            for i, args in enumerate(tasks):
                check_cancelled()
                results.put(i, fn(*args))
                if progress is not None:
                    progress.advance(weights[i] if weights is not None else 1)
            return results.kept
        running: dict[Future[R], int] = {}
        with ThreadPoolExecutor(max_workers=limit, thread_name_prefix=f"gpuds-{name}") as pool:
            try:
                queue = iter(enumerate(tasks))
                for i, args in queue:
                    running[pool.submit(fn, *args)] = i
                    if len(running) >= limit:
                        break
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        i = running.pop(future)
                        results.put(i, future.result())
                        if progress is not None:
                            progress.advance(weights[i] if weights is not None else 1)
                    check_cancelled()
                    for i, args in queue:
                        running[pool.submit(fn, *args)] = i
                        if len(running) >= limit:
                            break
            except BaseException:
                for future in running:
                    future.cancel()
                raise
        return results.kept


class _InOrder:
    """Results by task index: kept, or handed on in task order as soon as they can be."""

    def __init__(self, count: int, consume: Callable[[int, Any], None] | None) -> None:
        self.kept: list[Any] = [None] * count
        self._consume = consume
        self._waiting: dict[int, Any] = {}
        self._next = 0

    def put(self, i: int, result: Any) -> None:
        if self._consume is None:
            self.kept[i] = result
            return
        self._waiting[i] = result
        while self._next in self._waiting:
            self._consume(self._next, self._waiting.pop(self._next))
            self._next += 1


class DaskExecutor(Executor):
    """A ``distributed.Client``: every task is submitted at once, the scheduler spreads them, a
    task whose worker died is rerun elsewhere (the result is the same: tasks are pure)."""

    distributed = True

    def __init__(self, client: Any, description: str) -> None:
        self.client = client
        self._description = description
        self._run = secrets.token_hex(4)
        self._calls = 0

    @property
    def description(self) -> str:
        return self._description

    @property
    def workers(self) -> int:
        # nthreads() lists every worker (scheduler_info() listed only 5 in some versions).
        return max(1, sum(self.client.nthreads().values()))

    def map(
        self,
        fn: Callable[..., R],
        tasks: Sequence[tuple[Any, ...]],
        *,
        name: str,
        weights: Sequence[int] | None = None,
        progress: Progress | None = None,
        in_flight: int | None = None,
        consume: Callable[[int, R], None] | None = None,
    ) -> list[R]:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        check_cancelled()
        # Keys are unique per call: the scheduler may still hold an earlier call's key
        # (finished, or cancelled after an error), and a key it holds is not run again.
        self._calls += 1
        prefix = f"gpuds-{name}-{self._run}-{self._calls}"
        futures = [
            self.client.submit(fn, *args, key=f"{prefix}-{i}", pure=False)
            for i, args in enumerate(tasks)
        ]
        index = {f.key: i for i, f in enumerate(futures)}
        results = _InOrder(len(tasks), consume)
        try:
            pending = as_completed(futures, with_results=False)
            for future in pending:
                i = index[future.key]
                try:
                    result = future.result()
                except KilledWorker as e:
                    raise TaskFailed(
                        f"task {i + 1} of {len(tasks)} ({name}) failed: the workers running it "
                        f"died ({e}); see the workers' logs (memory limit, a crash?)"
                    ) from None
                future.release()
                results.put(i, result)
                if progress is not None:
                    progress.advance(weights[i] if weights is not None else 1)
                check_cancelled()
        except BaseException:
            self.client.cancel(futures, force=True)
            # A cancelled task that already runs goes on; wait for it, so that nothing writes
            # after the stage has removed what it wrote.
            self._wait_idle(f"gpuds-{name}-{self._run}-")
            raise
        return results.kept

    def _wait_idle(self, prefix: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                running = self.client.run(_executing, prefix)
            except Exception:  # a worker went away meanwhile: ask again
                running = {"?": True}
            if not any(running.values()):
                return
            time.sleep(0.05)

    def check_shared(self, path: Path, hint: str = "") -> None:
        """Write a probe file into ``path`` here and read it on every worker."""
        token = secrets.token_hex(16)
        probe = path / f".gpuds-probe-{token}"
        probe.write_text(token)
        try:
            seen = self.client.run(_read_probe, str(probe))
        finally:
            probe.unlink(missing_ok=True)
        blind = sorted(worker for worker, text in seen.items() if text != token)
        if blind:
            raise StoreError(
                f"{path}: the Dask workers at {', '.join(blind)} cannot see this local folder; "
                + (
                    hint
                    or "write to a shared filesystem that every worker mounts at the same path, "
                    "or to an object-store URL (s3://...)"
                )
            )


def task_threads() -> int:
    """Threads a task may use for work of its own (decoding images, encoding chunks): in a Dask
    worker, the threads the worker was given (``processes:N`` gives each worker one core: more
    would only fight the other workers for it), elsewhere the machine's cores.

    Examples
    --------
    >>> task_threads() == (os.cpu_count() or 1)
    True
    """
    distributed = sys.modules.get("distributed")  # never imported on the threads path
    if distributed is not None:
        try:
            worker = distributed.get_worker()
        except ValueError:  # not in a worker
            pass
        else:
            return max(1, int(getattr(worker.state, "nthreads", 1)))
    return os.cpu_count() or 1


def unseen_here(path: Path | str) -> str:
    """The message for a local input that the process running a task cannot find: on a
    cluster, the workers must see inputs at the same path as the client."""
    return (
        f"{path}: no such file or folder on {socket.gethostname()}, where a task reading it ran; "
        "on a cluster every worker must see the inputs at the same path (a shared filesystem), "
        "or read them from an object-store URL"
    )


def _executing(prefix: str, dask_worker: Any = None) -> bool:
    """(On a worker) Whether it runs a task whose key starts with ``prefix``."""
    state = getattr(dask_worker, "state", None)
    if state is None:
        return False
    tasks = [*getattr(state, "executing", ()), *getattr(state, "long_running", ())]
    return any(str(getattr(t, "key", t)).startswith(prefix) for t in tasks)


def _read_probe(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as e:
        raise ConfigError(
            f"--scheduler other than threads needs Dask's distributed package: {_INSTALL}"
        ) from e
    return distributed


@contextmanager
def open_executor(
    scheduler: str | SchedulerSpec | None = None, *, progress: Progress | None = None
) -> Iterator[Executor]:
    """The executor for ``scheduler`` (a ``--scheduler`` value); a local cluster it starts is
    stopped on exit, an existing cluster is only disconnected from.

    Examples
    --------
    >>> with open_executor("threads") as ex:
    ...     ex.description
    'threads'
    """
    spec = scheduler if isinstance(scheduler, SchedulerSpec) else parse_scheduler(scheduler)
    if spec.kind == "threads":
        yield ThreadsExecutor()
        return
    distributed = _import_distributed()
    with _cluster(spec, distributed) as (client, description):
        if progress is not None:
            remote = spec.kind in ("address", "file")
            link = getattr(client, "dashboard_link", None) if remote else None
            progress.note(f"running on {description}" + (f"; dashboard {link}" if link else ""))
        yield DaskExecutor(client, description)


@contextmanager
def _cluster(spec: SchedulerSpec, distributed: Any) -> Iterator[tuple[Any, str]]:
    if spec.kind == "processes":
        cluster_cm: AbstractContextManager[Any] = local_cluster(spec.workers)
        description = f"a local Dask cluster of {spec.workers} worker process(es)"
    elif spec.kind == "cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as e:
            raise ConfigError(
                "--scheduler cuda needs dask-cuda: pip install 'gpuds[cluster,gpu-cu12]' "
                "(or gpu-cu13)"
            ) from e
        cluster_cm = LocalCUDACluster(
            dashboard_address=_HTTP_ADDRESS, silence_logs=logging.CRITICAL
        )
        description = "a local Dask cluster, one worker per GPU (dask-cuda)"
    else:
        cluster_cm = _NoCluster()
        where = "DASK_SCHEDULER_ADDRESS" if spec.from_env else "--scheduler"
        description = f"the Dask cluster at {spec.target} ({where})"
    with cluster_cm as cluster:
        address = cluster if cluster is not None else _scheduler_address(spec)
        try:
            client = distributed.Client(address=address, timeout="30s")
        except OSError as e:
            # Only the connection: an OSError of the stage's own work (below) is not this.
            raise ConfigError(f"{_where(spec)}: cannot reach the Dask scheduler ({e})") from e
        with client:
            if cluster is None:
                _wait_for_workers(client, spec)
            yield client, description


def _where(spec: SchedulerSpec) -> str:
    return f"{'DASK_SCHEDULER_ADDRESS=' if spec.from_env else '--scheduler '}{spec}"


def _scheduler_address(spec: SchedulerSpec) -> str:
    """The address of an existing scheduler, checked to answer: distributed would retry a
    refused connection until its timeout, and a scheduler that is not there is not coming."""
    address = spec.target
    if spec.kind == "file":
        try:
            address = str(json.loads(Path(spec.target).read_text())["address"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"{_where(spec)}: not a Dask scheduler file (expected the JSON with an "
                f"'address' that `dask scheduler --scheduler-file` writes): {e}"
            ) from e
    scheme, _, rest = address.partition("://")
    if scheme in ("tcp", "tls"):
        host, _, port = rest.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_S).close()
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"{_where(spec)}: no Dask scheduler answers at {address} ({e}); is it running, "
                "and is this the address it printed?"
            ) from e
    return address


def local_cluster(workers: int) -> Any:
    """The ``distributed.LocalCluster`` that ``--scheduler processes:N`` starts: ``workers``
    worker processes of one thread each, quiet, its HTTP server on a free local port. A context
    manager; stop it with ``close()``."""
    import dask

    distributed = _import_distributed()
    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_ in its workers, which turns off glibc's dynamic
    # mmap threshold: every block-sized NumPy temporary of a task is then mapped and faulted in
    # afresh (measured: a preprocess 20% slower). gpuds bounds a task's memory itself (a block),
    # so the workers of a cluster it starts keep glibc's default.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=_HTTP_ADDRESS,
            silence_logs=logging.CRITICAL,
        )


def _wait_for_workers(client: Any, spec: SchedulerSpec, timeout: float = 60.0) -> None:
    """An existing cluster may still be starting its workers (a batch job's first seconds)."""
    deadline = time.monotonic() + timeout
    while not client.nthreads():
        if time.monotonic() > deadline:
            raise ConfigError(
                f"{_where(spec)}: the scheduler has no workers after {timeout:.0f} s; "
                "start them (dask worker ADDRESS) or check the batch job"
            )
        time.sleep(0.2)


class _NoCluster:
    """An existing cluster: nothing to start or stop."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
