"""Where a stage's tasks run (gpuds/execution.py): the ``--scheduler`` forms, the in-process
threads, a Dask cluster (results in task order, errors back as themselves), local clusters that
leave no process behind, and the probe that refuses a local output the workers cannot see."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpuds.errors import Cancelled, ConfigError, SourceError, StoreError
from gpuds.execution import (
    SchedulerSpec,
    ThreadsExecutor,
    open_executor,
    parse_scheduler,
)
from gpuds.progress import request_cancel

from .conftest import only_line


class Recorder:
    """A :class:`~gpuds.progress.Progress` that keeps what it was told."""

    def __init__(self) -> None:
        self.advanced: list[int] = []
        self.notes: list[str] = []

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int) -> None:
        self.advanced.append(amount)

    def note(self, message: str) -> None:
        self.notes.append(message)


# Tasks run on Dask workers are found there by module and name (tests is a package on the
# workers' sys.path, which spawned processes inherit).
def square_late(i: int, n: int) -> int:
    """``i * i``, later for earlier tasks: they finish in reverse order."""
    time.sleep(0.02 * (n - i))
    return i * i


def fail_on(i: int, bad: int) -> int:
    if i == bad:
        raise SourceError(f"part-{i}.npy: header declares 80 bytes of data, file has 12")
    return i


def connect(scheduler: str) -> None:
    """Open the executor of ``scheduler`` and close it again."""
    with open_executor(scheduler):
        pass


@pytest.fixture(autouse=True)
def no_scheduler_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)


# --- parse_scheduler -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, SchedulerSpec("threads")),
        ("", SchedulerSpec("threads")),
        ("threads", SchedulerSpec("threads")),
        (" processes:3 ", SchedulerSpec("processes", 3)),
        ("processes", SchedulerSpec("processes", os.cpu_count() or 1)),
        ("cuda", SchedulerSpec("cuda")),
        ("tcp://10.1.2.3:8786", SchedulerSpec("address", target="tcp://10.1.2.3:8786")),
        ("tls://head:8786", SchedulerSpec("address", target="tls://head:8786")),
        ("ucx://10.1.2.3:13337", SchedulerSpec("address", target="ucx://10.1.2.3:13337")),
    ],
)
def test_every_form_parses(text: str | None, expected: SchedulerSpec):
    assert parse_scheduler(text) == expected


def test_a_scheduler_file_parses_to_its_absolute_path(tmp_path: Path, monkeypatch):
    (tmp_path / "scheduler.json").write_text('{"address": "tcp://10.1.2.3:8786"}')
    monkeypatch.chdir(tmp_path)
    spec = parse_scheduler("scheduler.json")
    assert spec == SchedulerSpec("file", target=str(tmp_path / "scheduler.json"))
    assert str(spec) == str(tmp_path / "scheduler.json")


def test_the_spec_prints_as_the_value_that_makes_it():
    for text in ("threads", "processes:2", "cuda", "tcp://10.1.2.3:8786"):
        assert str(parse_scheduler(text)) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("processes:0", "expected processes:N with N a number of workers >= 1"),
        ("processes:two", "expected processes:N with N a number of workers >= 1"),
        ("dask", "expected threads, processes:N, cuda, a scheduler address"),
        ("10.1.2.3:8786", "expected threads, processes:N, cuda, a scheduler address"),
        ("/no/such/scheduler.json", "no scheduler file there"),
        ("scheduler.json", "no scheduler file there"),
    ],
)
def test_a_bad_value_names_the_forms(text: str, message: str):
    with pytest.raises(ConfigError, match=f"^--scheduler {text}: ") as e:
        parse_scheduler(text)
    assert message in str(e.value)


def test_the_environment_variable_applies_only_without_a_value(monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.1.2.3:8786")
    assert parse_scheduler(None) == SchedulerSpec(
        "address", target="tcp://10.1.2.3:8786", from_env=True
    )
    assert parse_scheduler("threads") == SchedulerSpec("threads")
    assert parse_scheduler("processes:2") == SchedulerSpec("processes", 2)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "  ")
    assert parse_scheduler(None) == SchedulerSpec("threads")


def test_a_bad_environment_variable_is_named(monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "head:8786")
    with pytest.raises(ConfigError, match=r"^DASK_SCHEDULER_ADDRESS=head:8786: expected"):
        parse_scheduler(None)


# --- ThreadsExecutor -----------------------------------------------------------------------------


def test_threads_give_results_in_task_order():
    tasks = [(i, 8) for i in range(8)]
    assert ThreadsExecutor(4).map(square_late, tasks, name="sq") == [i * i for i in range(8)]


@pytest.mark.parametrize("concurrency", [1, 3])
def test_consume_takes_each_result_in_task_order_and_none_is_kept(concurrency: int):
    got: list[tuple[int, int]] = []
    out = ThreadsExecutor(concurrency).map(
        square_late, [(i, 6) for i in range(6)], name="sq", consume=lambda i, r: got.append((i, r))
    )
    assert got == [(i, i * i) for i in range(6)] and out == [None] * 6


def test_one_in_flight_runs_the_tasks_one_after_the_other_in_order():
    ran: list[int] = []
    active = {"now": 0, "most": 0}
    lock = threading.Lock()

    def task(i: int) -> int:
        with lock:
            active["now"] += 1
            active["most"] = max(active["most"], active["now"])
        ran.append(i)
        time.sleep(0.002)
        with lock:
            active["now"] -= 1
        return -i

    out = ThreadsExecutor(4).map(task, [(i,) for i in range(20)], name="t", in_flight=1)
    assert out == [-i for i in range(20)]
    assert ran == list(range(20)) and active["most"] == 1


@pytest.mark.parametrize("concurrency", [1, 3])
def test_the_first_error_fails_the_call_and_the_rest_do_not_run(concurrency: int):
    started: list[int] = []

    def task(i: int) -> int:
        started.append(i)
        time.sleep(0.005)
        return fail_on(i, 3)

    begin = time.perf_counter()
    with pytest.raises(SourceError, match=r"part-3\.npy: header declares") as e:
        ThreadsExecutor(concurrency).map(task, [(i,) for i in range(10_000)], name="t")
    assert type(e.value) is SourceError
    assert len(started) < 3 + 2 * concurrency
    assert time.perf_counter() - begin < 5


def test_a_cancel_request_stops_between_tasks():
    started: list[int] = []

    def task(i: int) -> int:
        started.append(i)
        if i == 2:
            request_cancel()
        return i

    with pytest.raises(Cancelled):
        ThreadsExecutor(2).map(task, [(i,) for i in range(1000)], name="t")
    assert len(started) < 10


@pytest.mark.parametrize("concurrency", [1, 2])
def test_progress_advances_by_each_tasks_weight(concurrency: int):
    weights = [5, 1, 7, 3, 2]
    progress = Recorder()
    ThreadsExecutor(concurrency).map(
        pow, [(2, i) for i in range(5)], name="pow", weights=weights, progress=progress
    )
    assert sorted(progress.advanced) == sorted(weights)
    unweighted = Recorder()
    ThreadsExecutor(concurrency).map(pow, [(2, 1)] * 4, name="pow", progress=unweighted)
    assert unweighted.advanced == [1, 1, 1, 1]


def test_threads_need_no_dask():
    code = (
        "import sys\n"
        "sys.modules['distributed'] = None\n"
        "from gpuds.execution import open_executor\n"
        "with open_executor(None) as ex:\n"
        "    out = ex.map(pow, [(2, 5)], name='pow')\n"
        "print(out, ex.distributed, sorted(m for m in ('dask', 'distributed') "
        "if sys.modules.get(m)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert done.stdout.strip() == "[32] False []"


# --- Dask: errors before any work ----------------------------------------------------------------


def test_without_distributed_a_cluster_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    for value in ("processes:2", "tcp://127.0.0.1:8786", "cuda"):
        with pytest.raises(ConfigError, match=r"pip install 'gpuds\[cluster\]'"):
            connect(value)


def test_cuda_without_dask_cuda_says_which_extra_to_install(monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setitem(sys.modules, "dask_cuda", None)
    with pytest.raises(ConfigError, match=r"needs dask-cuda: pip install 'gpuds\[cluster,gpu-"):
        connect("cuda")


def test_an_address_where_nothing_listens_fails_at_once():
    pytest.importorskip("distributed")
    begin = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        connect("tcp://127.0.0.1:1")
    assert time.perf_counter() - begin < 5
    message = only_line(str(e.value))
    assert message.startswith("--scheduler tcp://127.0.0.1:1: no Dask scheduler answers at ")
    assert "is it running" in message


def test_a_scheduler_file_is_read_and_checked(tmp_path: Path):
    pytest.importorskip("distributed")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")
    with pytest.raises(ConfigError, match=r"garbage\.json: not a Dask scheduler file"):
        connect(str(garbage))
    dead = tmp_path / "dead.json"
    dead.write_text(json.dumps({"address": "tcp://127.0.0.1:1", "type": "Scheduler"}))
    with pytest.raises(ConfigError, match=r"no Dask scheduler answers at tcp://127\.0\.0\.1:1"):
        connect(str(dead))


# --- Dask: a running cluster ---------------------------------------------------------------------


def test_a_cluster_gives_results_in_task_order(dask_cluster):
    progress = Recorder()
    with open_executor(dask_cluster(2), progress=progress) as ex:
        assert ex.distributed and ex.workers == 2
        assert ex.description.startswith("the Dask cluster at tcp://127.0.0.1:")
        weights = list(range(1, 9))
        tasks = [(i, 8) for i in range(8)]
        out = ex.map(square_late, tasks, name="sq", weights=weights, progress=progress)
        got: list[tuple[int, int]] = []
        kept = ex.map(square_late, tasks, name="sq", consume=lambda i, r: got.append((i, r)))
    assert out == [i * i for i in range(8)]
    assert got == list(enumerate(out)) and kept == [None] * 8
    assert sorted(progress.advanced) == weights
    assert progress.notes == [f"running on {ex.description}"] or progress.notes[0].startswith(
        f"running on {ex.description}; dashboard "
    )


def test_a_task_error_comes_back_as_itself(dask_cluster):
    with open_executor(dask_cluster(2)) as ex:
        with pytest.raises(SourceError) as e:
            ex.map(fail_on, [(i, 3) for i in range(6)], name="fail")
        assert type(e.value) is SourceError
        assert str(e.value) == "part-3.npy: header declares 80 bytes of data, file has 12"
        # the cluster is still usable: the failed call cancelled its own tasks only
        assert ex.map(fail_on, [(i, -1) for i in range(4)], name="fail") == [0, 1, 2, 3]


def test_a_scheduler_file_reaches_the_cluster(dask_cluster, tmp_path: Path):
    address = dask_cluster(2)
    file = tmp_path / "scheduler.json"
    file.write_text(json.dumps({"type": "Scheduler", "address": address}))
    with open_executor(str(file)) as ex:
        assert ex.map(pow, [(3, 2)], name="pow") == [9]
        assert ex.description == f"the Dask cluster at {file} (--scheduler)"


def test_the_environment_variable_reaches_the_cluster(dask_cluster, monkeypatch):
    address = dask_cluster(2)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
    with open_executor(None) as ex:
        assert ex.description == f"the Dask cluster at {address} (DASK_SCHEDULER_ADDRESS)"
        assert ex.map(pow, [(2, 10)], name="pow") == [1024]


def test_a_local_cluster_is_started_and_stopped_with_no_process_left():
    psutil = pytest.importorskip("psutil")
    me = psutil.Process()

    def children() -> dict[int, Any]:
        # multiprocessing's resource tracker is started once per process, on first use, and
        # lives as long as this process: it is not a worker and not gpuds'.
        return {
            p.pid: p
            for p in me.children(recursive=True)
            if "resource_tracker" not in " ".join(p.cmdline())
        }

    before = children()
    with open_executor("processes:2") as ex:
        started = {pid: p for pid, p in children().items() if pid not in before}
        assert len(started) >= 2
        assert ex.workers == 2 and ex.description == "a local Dask cluster of 2 worker process(es)"
        assert ex.map(square_late, [(i, 4) for i in range(4)], name="sq") == [0, 1, 4, 9]
    _, alive = psutil.wait_procs(list(started.values()), timeout=10)
    assert alive == []
    assert set(children()) <= set(before)


@pytest.mark.gpu
def test_cuda_starts_one_worker_per_gpu():
    from gpuds.backend import probe_cuda

    cp, reason, _ = probe_cuda()
    if cp is None:
        pytest.skip(f"no usable GPU: {reason}")
    pytest.importorskip("dask_cuda", reason="dask-cuda is in the GPU extras")
    with open_executor("cuda") as ex:
        assert ex.workers == cp.cuda.runtime.getDeviceCount()
        assert ex.map(pow, [(2, 3)], name="pow") == [8]


# --- the shared-filesystem probe -----------------------------------------------------------------


def _dask_command() -> list[str]:
    script = Path(sys.executable).parent / "dask"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dask"]


@pytest.fixture(scope="module")
def blind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``(address, folder)``: a Dask scheduler with one worker that sees an empty ``folder``
    where this process sees its files (a tmpfs mounted over it in the worker's own mount
    namespace: a cluster without a shared filesystem, on one machine)."""
    distributed = pytest.importorskip("distributed")
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to give a worker its own mount namespace")
    root = tmp_path_factory.mktemp("blind")
    folder = root / "out"
    folder.mkdir()
    namespace = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
    mount = 'mount -t tmpfs gpuds-test "$0"'
    tried = subprocess.run([*namespace, mount, str(folder)], capture_output=True, text=True)
    if tried.returncode != 0:
        pytest.skip(f"cannot mount in a new mount namespace here: {tried.stderr.strip()}")
    cluster = distributed.LocalCluster(
        n_workers=0, processes=True, dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL
    )
    log = open(root / "worker.log", "wb")  # noqa: SIM115 - closed below, after the worker
    # `unshare` and `sh` exec the worker: the process started here is the worker (no nanny).
    worker = subprocess.Popen(
        [
            *namespace,
            f'{mount} && exec "$@"',
            str(folder),
            *_dask_command(),
            "worker",
            cluster.scheduler_address,
            "--no-nanny",
            "--nthreads",
            "1",
            "--no-dashboard",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with distributed.Client(cluster.scheduler_address, timeout="30s") as client:
            try:
                client.wait_for_workers(1, timeout=60)
            except TimeoutError:
                log.flush()
                pytest.fail(f"the worker did not start: {(root / 'worker.log').read_text()}")
        yield cluster.scheduler_address, folder
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
        cluster.close()


def test_a_worker_that_cannot_see_the_folder_is_refused(blind_cluster):
    address, folder = blind_cluster
    with open_executor(address) as ex:
        ex.check_shared(folder.parent)  # the worker sees this one: no error
        with pytest.raises(StoreError) as e:
            ex.check_shared(folder)
    message = str(e.value)
    assert message.startswith(f"{folder}: the Dask workers at tcp://")
    assert "cannot see this local folder" in message
    assert "shared filesystem" in message and "object-store URL" in message
    assert [p.name for p in folder.iterdir()] == []  # the probe cleaned up after itself


def test_a_stage_with_blind_workers_fails_before_any_work(blind_cluster, cli):
    address, folder = blind_cluster
    source = folder.parent / "x.npy"
    np.save(source, np.arange(4000, dtype=np.float32).reshape(1000, 4))
    for command in (["ingest", source], ["compress", folder.parent / "in.zarr", "--device", "cpu"]):
        if command[0] == "compress":
            assert cli("ingest", source, "-o", folder.parent / "in.zarr", "--quiet").code == 0
        result = cli(*command, "-o", folder / "out.zarr", "--scheduler", address)
        assert result.code == 1, result.err
        assert "Traceback" not in result.err
        # stderr: the note saying where it runs, then the error on one line
        assert " ".join(result.err.split()).startswith(f"running on the Dask cluster at {address}")
        (line,) = [line for line in result.err.splitlines() if "error" in line]
        assert line.startswith(f"error: {folder}") and "cannot see this local folder" in line
        assert "shared filesystem" in line
        assert list(folder.iterdir()) == []  # nothing written, not even a partial store
