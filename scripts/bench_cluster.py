"""Benchmark: preprocess + compress in-process (threads) and on local Dask clusters of 1 and 2
single-threaded worker processes, on the same input, in one run.

    python scripts/bench_cluster.py [--samples 160000] [--input raw.zarr] [--json] [--quick]

The input (made unless ``--input`` names one) is ``--samples`` image-like uint8 samples of
32x32x3 (blocky pictures with noise, 1% exact duplicates) and int64 labels in 10 classes,
ingested by ``gpuds.ingest`` from an .npy pair: 160,000 samples are 492 MB of images. Each
scheduler runs ``gpuds.preprocess`` with ``configs/image-classification.yaml`` (dedupe, shuffle,
stratified 80/10/10 split, centre crop, cast to float32, standardize) on the CPU, then
``gpuds.compress`` of its result (zstd, verified). The outputs of every scheduler must be
identical (every object, timing attributes aside), or the script fails.

- ``threads``: the default, in this process.
- ``processes:N``: the ``distributed.LocalCluster`` that ``--scheduler processes:N`` starts (N
  worker processes of one thread), started here and passed to the stages by address, so that
  its start-up, reported apart, is not in the stage times.

Figures, per stage: seconds (wall time of the call); ``processes:2`` against ``processes:1``
(goal >= 1.7x on 2 cores) and against ``threads`` (goal: within 15%, i.e. at most 1.15x its
time); the cores kept busy (CPU seconds of this process and the workers over the wall time: on
a machine shared with other work, what the run got), and from them the *ceiling* of 2 workers
here (the cores, at most 2, over the cores 1 worker already kept busy); the tasks' own seconds,
summed (if they grow from 1 worker to 2, the workers slow each other down or other work slows
them, rather than the client holding them up).

The **serial time** of a stage on a cluster is measured from outside: the wall time of the call
minus the time during which at least one worker ran one of its tasks (the union of the tasks'
intervals in Dask's task stream): planning, split assignment, merging, the commit and the gaps
between passes, all on the client. With the serial time ``s`` and the time ``T1`` on one worker,
Amdahl's law projects the speed-up on ``n`` workers as ``T1 / (s + (T1 - s) / n)``, for an
input with enough tasks for ``n`` workers; the serial time on two workers and the two-point fit
``2 T2 - T1`` are shown as checks. ``--quick`` runs a small input (a smoke test, not a
measurement).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import gpuds

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "image-classification.yaml"
SCHEDULERS = ("threads", "processes:1", "processes:2")
STAGES = ("preprocess", "compress")
PROJECT = (16, 128, 1024)
GOAL_SCALING = 1.7
GOAL_THREADS = 1.15


def make_input(work: Path, samples: int, seed: int = 0) -> Path:
    """``raw.zarr``: ``samples`` blocky 32x32x3 uint8 pictures with noise, 1% of them exact
    copies of others, and int64 labels, ingested from ``images.npy`` and ``labels.npy``."""
    rng = np.random.default_rng(seed)
    images = np.lib.format.open_memmap(
        work / "images.npy", mode="w+", dtype=np.uint8, shape=(samples, 32, 32, 3)
    )
    block = 8192
    for start in range(0, samples, block):
        n = min(block, samples - start)
        coarse = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.int16)
        fine = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
        noise = rng.integers(-12, 13, size=fine.shape, dtype=np.int16)
        images[start : start + n] = np.clip(fine + noise, 0, 255).astype(np.uint8)
    copies = rng.choice(samples, size=(samples // 100, 2), replace=False)
    images[copies[:, 1]] = images[copies[:, 0]]
    images.flush()
    del images
    np.save(work / "labels.npy", rng.integers(0, 10, size=samples).astype(np.int64))
    raw = work / "raw.zarr"
    gpuds.ingest([work / "images.npy", work / "labels.npy"], raw)
    (work / "images.npy").unlink()
    (work / "labels.npy").unlink()
    return raw


def store_digest(path: Path) -> str:
    """SHA-256 of every object of a local store (path and bytes), with the root attributes that
    record when and how long (and where it ran) left out: equal for equal stores."""
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        data = f.read_bytes()
        if rel == "zarr.json":
            meta = json.loads(data)
            info = meta.get("attributes", {}).get("gpuds", {})
            info.pop("created", None)
            for entry in info.get("history", []):
                for key in ("created", "started", "finished", "seconds", "time", "scheduler"):
                    entry.pop(key, None)
            data = json.dumps(meta, sort_keys=True).encode()
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def busy_seconds(records: list[dict[str, Any]], start: float, stop: float) -> float:
    """Seconds of ``[start, stop]`` during which at least one worker ran a task (the union of
    every task's intervals in the task stream)."""
    spans = sorted(
        (max(s["start"], start), min(s["stop"], stop))
        for record in records
        for s in record.get("startstops", ())
    )
    busy, end = 0.0, start
    for a, b in spans:
        if b <= end:
            continue
        busy += b - max(a, end)
        end = b
    return busy


def task_seconds(records: list[dict[str, Any]]) -> float:
    """The tasks' own seconds, summed over every worker."""
    return sum(s["stop"] - s["start"] for record in records for s in record.get("startstops", ()))


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes ``pids`` have used so far."""
    import psutil

    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def run_stage(fn: Callable[[], Any], client: Any) -> dict[str, float | None]:
    """Wall seconds of ``fn()``, and the cores that this process and the workers kept busy on
    average (their CPU seconds over the wall time); on a cluster also its serial seconds and
    its tasks' seconds."""
    here = [os.getpid()]
    workers = sorted(client.run(os.getpid).values()) if client is not None else []
    cpu_here, cpu_workers = cpu_seconds(here), cpu_seconds(workers)
    if client is None:
        start = time.perf_counter()
        fn()
        wall = time.perf_counter() - start
        cores = (cpu_seconds(here) - cpu_here) / wall
        return {"seconds": wall, "cores": cores, "client_cores": cores}
    from distributed import get_task_stream

    with get_task_stream(client=client) as stream:
        start = time.time()
        fn()
        stop = time.time()
    client_cores = (cpu_seconds(here) - cpu_here) / (stop - start)
    worker_cores = (cpu_seconds(workers) - cpu_workers) / (stop - start)
    # The task stream is fetched at the exit of the block; the tasks' times are the workers'
    # clocks, this machine's.
    return {
        "seconds": stop - start,
        "cores": client_cores + worker_cores,
        "client_cores": client_cores,
        "serial_seconds": stop - start - busy_seconds(stream.data, start, stop),
        "task_seconds": task_seconds(stream.data),
        "tasks": len(stream.data),
    }


def run_scheduler(scheduler: str, raw: Path, work: Path) -> dict[str, Any]:
    """Both stages on ``scheduler``; their times, serial times and output digests."""
    cluster = client = None
    result: dict[str, Any] = {"scheduler": scheduler, "startup_seconds": None}
    target = scheduler
    if scheduler.startswith("processes:"):
        import distributed

        from gpuds.execution import local_cluster

        begin = time.perf_counter()
        # What gpuds.execution starts for --scheduler processes:N.
        cluster = local_cluster(int(scheduler.partition(":")[2]))
        client = distributed.Client(cluster)
        result["startup_seconds"] = time.perf_counter() - begin
        target = cluster.scheduler_address
    prep, data = work / "prep.zarr", work / "data.zarr"
    config = gpuds.load_config(CONFIG)
    try:
        stages = {
            "preprocess": lambda: gpuds.preprocess(
                raw, prep, config=config, device="cpu", scheduler=target
            ),
            "compress": lambda: gpuds.compress(prep, data, device="cpu", scheduler=target),
        }
        for stage, call in stages.items():
            result[stage] = run_stage(call, client)
        result["digests"] = {"preprocess": store_digest(prep), "compress": store_digest(data)}
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        shutil.rmtree(prep, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
    return result


def _numpy_work(seconds: float) -> float:
    """A block's worth of the preprocess's arithmetic (uint8 to float64, per-channel moments),
    repeated for about ``seconds``; returns the rounds per second. No file is touched."""
    block = np.random.default_rng(0).integers(0, 255, size=(2048, 28, 28, 3), dtype=np.uint8)
    rounds, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        values = block.astype(np.float64)
        mean = values.mean(axis=(0, 1, 2))
        ((values - mean) ** 2).sum(axis=(0, 1, 2))
        rounds += 1
    return rounds / (time.perf_counter() - start)


def machine_bound(seconds: float = 3.0) -> float:
    """The speed-up two processes of pure NumPy work get over one on this machine: the bound for
    2 workers against 1 when no file I/O is involved."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Spawned, as Dask's workers are: this process has run threads, which fork does not copy.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        one = pool.submit(_numpy_work, seconds).result()
        two = sum(pool.map(_numpy_work, [seconds, seconds]))
    return two / one


def amdahl(t1: float, serial: float, n: int) -> float:
    return t1 / (serial + (t1 - serial) / n)


def summarise(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Speed-ups against the goals, serial fractions and projections, per stage."""
    stages = {}
    for stage in STAGES:
        t = {name: runs[name][stage]["seconds"] for name in SCHEDULERS}
        cores = {name: runs[name][stage]["cores"] for name in SCHEDULERS}
        client = {name: runs[name][stage]["client_cores"] for name in SCHEDULERS}
        s1 = runs["processes:1"][stage]["serial_seconds"]
        s2 = runs["processes:2"][stage]["serial_seconds"]
        scaling = t["processes:1"] / t["processes:2"]
        vs_threads = t["processes:2"] / t["threads"]
        stages[stage] = {
            "seconds": t,
            "cores": cores,
            "client_cores": client,
            "p2_vs_p1": scaling,
            # What 2 workers can gain here at best: the cores there are (at most 2 used) over
            # the cores that 1 worker already kept busy.
            "p2_vs_p1_ceiling": min(2, os.cpu_count() or 1) / cores["processes:1"],
            "p2_vs_p1_goal_met": scaling >= GOAL_SCALING,
            "p2_time_over_threads": vs_threads,
            "p2_vs_threads_goal_met": vs_threads <= GOAL_THREADS,
            "serial_seconds_p1": s1,
            "serial_seconds_p2": s2,
            "serial_seconds_fit": 2 * t["processes:2"] - t["processes:1"],
            "serial_fraction": s1 / t["processes:1"],
            "tasks": runs["processes:2"][stage]["tasks"],
            "task_seconds": {n: runs[n][stage]["task_seconds"] for n in SCHEDULERS[1:]},
            "workers_busy_p2": runs["processes:2"][stage]["task_seconds"] / t["processes:2"],
            "projected_speedup": {n: amdahl(t["processes:1"], s1, n) for n in PROJECT},
            "speedup_limit": t["processes:1"] / s1 if s1 > 0 else None,
        }
    return stages


def markdown(report: dict[str, Any]) -> str:
    """The two tables of docs/cluster.md."""
    lines = [
        "| stage | scheduler | seconds | cores busy (client) | task seconds | "
        "processes:2 vs processes:1 (goal >= 1.7x) | ceiling on these cores | "
        "processes:2 time / threads time (goal <= 1.15) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stage, s in report["stages"].items():
        for name in SCHEDULERS:
            last = name == "processes:2"
            scale = f"{s['p2_vs_p1']:.2f}x" if last else ""
            ceiling = f"{s['p2_vs_p1_ceiling']:.2f}x" if last else ""
            ratio = f"{s['p2_time_over_threads']:.2f}" if last else ""
            tasks = s["task_seconds"].get(name)
            lines.append(
                f"| {stage} | `{name}` | {s['seconds'][name]:.1f} | "
                f"{s['cores'][name]:.2f} ({s['client_cores'][name]:.2f}) | "
                f"{'' if tasks is None else f'{tasks:.1f}'} | {scale} | {ceiling} | {ratio} |"
            )
    lines += [
        "",
        "| stage | tasks | workers busy (of 2) | serial s (1 worker) | serial s (2 workers) | "
        "2 T2 - T1 | serial fraction | " + " | ".join(f"projected x{n}" for n in PROJECT) + " |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | "
        + " | ".join("---:" for _ in PROJECT)
        + " |",
    ]
    for stage, s in report["stages"].items():
        projected = " | ".join(f"{s['projected_speedup'][n]:.1f}x" for n in PROJECT)
        lines.append(
            f"| {stage} | {s['tasks']} | {s['workers_busy_p2']:.2f} | "
            f"{s['serial_seconds_p1']:.2f} | {s['serial_seconds_p2']:.2f} | "
            f"{s['serial_seconds_fit']:.2f} | {100 * s['serial_fraction']:.1f}% | {projected} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=160_000)
    parser.add_argument("--input", type=Path, help="an existing store of images and labels")
    parser.add_argument("--quick", action="store_true", help="a small input: a smoke test")
    parser.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    args = parser.parse_args(argv)
    samples = 3000 if args.quick else args.samples
    warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3")
    work = Path(tempfile.mkdtemp(prefix="gpuds-bench-cluster-"))
    try:
        made = time.perf_counter()
        raw = args.input or make_input(work, samples)
        made_s = time.perf_counter() - made
        info = gpuds.inspect(raw)
        load = [os.getloadavg()[0]]
        runs = {}
        for name in SCHEDULERS:
            runs[name] = run_scheduler(name, raw, work)
            load.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    digests = {name: run["digests"] for name, run in runs.items()}
    identical = all(d == digests["threads"] for d in digests.values())
    report = {
        "input": {
            "path": str(args.input) if args.input else "made (see --help)",
            "samples": info["num_samples"],
            "logical_bytes": info["logical_bytes"],
            "seconds_to_make": None if args.input else round(made_s, 1),
        },
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in load],
        "quick": args.quick,
        "startup_seconds": {n: r["startup_seconds"] for n, r in runs.items() if n != "threads"},
        "runs": runs,
        "identical": identical,
        "stages": summarise(runs),
        "machine_bound": round(machine_bound(1.0 if args.quick else 3.0), 2),
    }
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        command = "python scripts/bench_cluster.py" + (" --quick" if args.quick else "")
        print(
            f"{command}: {report['input']['samples']:,} samples, "
            f"{report['input']['logical_bytes'] / 1e6:,.0f} MB in the input store, "
            f"{report['cores']} cores"
        )
        startup = ", ".join(f"{n} {s:.1f} s" for n, s in report["startup_seconds"].items())
        print(f"cluster start-up (not in the stage times): {startup}")
        loads = ", ".join(f"{x:.1f}" for x in report["load_average"])
        print(f"1-minute load average before and after each scheduler's run: {loads}")
        print()
        print(markdown(report))
        print()
        print(
            "cores busy: CPU seconds of this process and the workers over the wall time; "
            "(client): of this process alone (the stage's client, a local cluster's "
            "scheduler); task seconds: the tasks' own times, summed (Dask's task stream); "
            "workers busy: task seconds on 2 workers over the wall time; serial s: the wall "
            "time minus the time during which at least one worker ran a task; projected xN: "
            "T1 / (s + (T1 - s) / N) with T1 and s on 1 worker (Amdahl), for an input with "
            "enough tasks to keep N workers busy (this one has the tasks above, over all of the "
            "stage's passes); ceiling: the cores (at most 2) over the cores busy on 1 worker, "
            "the best 2 workers can do on this machine."
        )
        print(
            f"bound: two processes of pure NumPy work (a block's preprocess arithmetic, no "
            f"files) run {report['machine_bound']:.2f}x one on this machine"
        )
        print(f"outputs identical across {', '.join(SCHEDULERS)}: {'yes' if identical else 'NO'}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
