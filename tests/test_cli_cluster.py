"""``--scheduler`` on the command line: offered by ingest, preprocess and compress, passed through,
the same bytes on a cluster as in-process, where it ran in the output, and every way a scheduler
can be wrong as one line and exit 1 before any work."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpuds.execution import SCHEDULER_HELP

from .conftest import assert_same_store, only_line

ROOT = Path(__file__).parent.parent
STAGES = ("ingest", "preprocess", "compress")


@pytest.fixture(autouse=True)
def no_scheduler_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``x.npy`` (1,000 samples of 64 float32 and int64 labels) and its ingested store
    ``in.zarr``, made in-process."""
    import gpuds

    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    np.savez(
        folder / "x.npz",
        x=rng.normal(size=(1000, 64)).astype(np.float32),
        labels=rng.integers(0, 3, size=1000),
    )
    gpuds.ingest([folder / "x.npz"], folder / "in.zarr", chunk_mb=0.05)
    return folder


def _command(stage: str, inputs: Path, out: Path) -> list[str | Path]:
    source = inputs / "x.npz" if stage == "ingest" else inputs / "in.zarr"
    # --device cpu: no note that a GPU is missing before the line a test looks at
    extra = [] if stage == "ingest" else ["--device", "cpu"]
    if stage == "preprocess":
        extra += ["--split", "0.8,0.2", "--shuffle"]
    return [stage, source, "-o", out, *extra]


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_offers_the_option(cli, stage: str):
    result = cli(stage, "--help")
    assert result.code == 0 and "--scheduler" in result.out
    # Rich wraps the help text in a box: compare words
    shown = " ".join(w for w in result.out.split() if w not in "│╭╮╰╯")
    assert " ".join(SCHEDULER_HELP.split()[:8]) in shown


def test_help_imports_no_dask():
    code = (
        "import sys\n"
        "from gpuds.cli import main\n"
        "codes = [main(['--help']), main(['compress', '--help'])]\n"
        "print(codes, sorted(m for m in ('dask', 'distributed', 'zarr') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[0, 0] []"


def _error(result, out: Path) -> str:  # type: ignore[no-untyped-def]
    """The one-line error of a failed run that left nothing at ``out`` or beside it."""
    assert result.code == 1, result.err
    assert "Traceback" not in result.err
    assert not out.exists() and list(out.parent.iterdir()) == [], list(out.parent.iterdir())
    line = only_line(result.err)
    assert line.startswith("error: ")
    return line


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("processes:0", "--scheduler processes:0: expected processes:N with N a number of"),
        ("dask", "--scheduler dask: expected threads, processes:N, cuda, a scheduler address"),
        ("/nowhere/scheduler.json", "--scheduler /nowhere/scheduler.json: no scheduler file"),
        ("tcp://127.0.0.1:1", "--scheduler tcp://127.0.0.1:1: no Dask scheduler answers at"),
    ],
)
def test_a_bad_scheduler_is_one_line_before_any_work(
    cli, inputs: Path, tmp_path: Path, stage: str, value: str, message: str
):
    out = tmp_path / "out" / "o.zarr"
    out.parent.mkdir()
    begin = time.perf_counter()
    result = cli(*_command(stage, inputs, out), "--scheduler", value)
    assert message in _error(result, out)
    assert time.perf_counter() - begin < 10


@pytest.mark.parametrize("stage", STAGES)
def test_without_distributed_it_says_which_extra_to_install(
    cli, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
):
    monkeypatch.setitem(sys.modules, "distributed", None)
    out = tmp_path / "out" / "o.zarr"
    out.parent.mkdir()
    result = cli(*_command(stage, inputs, out), "--scheduler", "processes:2")
    line = _error(result, out)
    assert "needs Dask's distributed package: pip install 'gpuds[cluster]'" in line


def test_a_bad_environment_variable_is_named(cli, inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:1")
    out = tmp_path / "out" / "o.zarr"
    out.parent.mkdir()
    line = _error(cli(*_command("compress", inputs, out)), out)
    assert "DASK_SCHEDULER_ADDRESS=tcp://127.0.0.1:1: no Dask scheduler answers" in line


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_on_a_cluster_writes_the_same_store_and_says_where(
    cli, dask_cluster, inputs: Path, tmp_path: Path, stage: str
):
    address = dask_cluster(2)
    here, there = tmp_path / "threads.zarr", tmp_path / "cluster.zarr"
    assert cli(*_command(stage, inputs, here), "--quiet").code == 0
    result = cli(*_command(stage, inputs, there), "--scheduler", address)
    assert result.code == 0, result.err
    assert_same_store(here, there)
    assert f"running on the Dask cluster at {address}" in " ".join(result.err.split())
    said = " ".join(result.out.split())  # Rich wraps long lines
    assert f"; ran on the Dask cluster at {address}" in said


def test_the_json_summary_says_where_it_ran(cli, dask_cluster, inputs, tmp_path, monkeypatch):
    address = dask_cluster(2)
    out = tmp_path / "a.zarr"
    summary = cli(*_command("compress", inputs, out), "--json", "--scheduler", address).json()
    assert address in json.dumps(summary["scheduler"])
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
    from_env = cli(*_command("compress", inputs, tmp_path / "b.zarr"), "--json").json()
    assert address in json.dumps(from_env["scheduler"])
    assert "DASK_SCHEDULER_ADDRESS" in json.dumps(from_env["scheduler"])
    here = cli(
        *_command("compress", inputs, tmp_path / "c.zarr"), "--json", "--scheduler", "threads"
    )
    assert here.json()["scheduler"] == "threads"
    assert_same_store(out, tmp_path / "c.zarr")


@pytest.fixture(scope="module")
def raw_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick start's raw files (6 images a class)."""
    data = tmp_path_factory.mktemp("raw") / "sample"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_sample.py"), str(data), "--per-class", "6"],
        check=True, capture_output=True,
    )  # fmt: skip
    return data


def test_the_quick_start_runs_unchanged_on_a_local_cluster(cli, raw_files: Path, tmp_path: Path):
    """The quick start's three commands with ``--scheduler processes:2`` write the same bytes."""
    out = tmp_path / "out"  # the same paths for both runs: the history records the inputs'
    for scheduler in ("threads", "processes:2"):
        out.mkdir()
        steps = [
            ("ingest", raw_files / "images", raw_files / "meta.csv",
             raw_files / "embeddings.npy", "-o", out / "raw.zarr"),
            ("preprocess", out / "raw.zarr", "-o", out / "prep.zarr",
             "--config", ROOT / "configs" / "image-classification.yaml"),
            ("compress", out / "prep.zarr", "-o", out / "data.zarr"),
        ]  # fmt: skip
        for step in steps:
            result = cli(*step, "--quiet", "--scheduler", scheduler)
            assert result.code == 0, (step, result.err)
        if scheduler == "threads":
            out.rename(tmp_path / "threads")
    for name in ("raw.zarr", "prep.zarr", "data.zarr"):
        assert_same_store(tmp_path / "threads" / name, out / name)
