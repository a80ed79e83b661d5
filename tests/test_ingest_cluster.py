"""`gpuds ingest` on the executor: one task per block of samples for the sources that read any
range, the same bytes whatever the scheduler, tables read on the client, a bad file failing the
stage on a cluster as it does in-process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from PIL import Image

import gpuds
from gpuds.errors import SourceError
from gpuds.sources import ReadOptions, open_source
from gpuds.sources.images import ImageFolderSource
from gpuds.sources.numpy import NpzSource

from .conftest import assert_same_store, tree_hash

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).parent.parent
CHUNK_MB = 0.002
BLOCK_MB = 0.01


class Recorder:
    """A :class:`gpuds.progress.Progress` that keeps what it is told."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, int | None]] = []
        self.advances: list[int] = []
        self.notes: list[str] = []

    def start(self, description: str, total: int | None) -> None:
        self.phases.append((description, total))

    def advance(self, amount: int) -> None:
        self.advances.append(amount)

    def note(self, message: str) -> None:
        self.notes.append(message)


def _image_folder(root: Path, per_class: int = 30) -> Path:
    """PNGs in three class folders: RGB, with grayscale and RGBA files spread over the blocks
    (conversions the tasks count and the client joins)."""
    rng = np.random.default_rng(3)
    folder = root / "images"
    for label, name in enumerate(("ant", "bee", "cat")):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (12, 10, 4), dtype=np.uint8)
            if (i + label) % 11 == 3:
                image = Image.fromarray(pixels[..., 0], "L")
            elif (i + label) % 13 == 5:
                image = Image.fromarray(pixels, "RGBA")
            else:
                image = Image.fromarray(pixels[..., :3], "RGB")
            image.save(folder / name / f"{i:03d}.png")
    return folder


def _npy(root: Path) -> Path:
    values = np.random.default_rng(1).normal(size=(3001, 5)).astype(">f4")  # stored native
    np.save(root / "x.npy", values)
    return root / "x.npy"


def _npz(root: Path) -> Path:
    rng = np.random.default_rng(2)
    np.savez(
        root / "y.npz", a=np.arange(2500, dtype="i8"), b=rng.integers(0, 9, (2500, 3, 2), "u1")
    )
    return root / "y.npz"


def _hdf5(root: Path) -> Path:
    rng = np.random.default_rng(4)
    with h5py.File(root / "run.h5", "w") as f:
        f.create_dataset("data/x", data=rng.normal(size=(2200, 6)), chunks=(100, 6))
        f.create_dataset("data/y", data=rng.integers(0, 5, 2200).astype("u2"))
    return root / "run.h5"


def _csv(root: Path) -> Path:
    rng = np.random.default_rng(5)
    lines = ["id,score,kind"] + [
        f"{i},{rng.normal():.4f},{rng.choice(['a', 'b', ''])}" for i in range(1500)
    ]
    (root / "table.csv").write_text("\n".join(lines) + "\n")
    return root / "table.csv"


def _quick_start(root: Path) -> list[Path]:
    """The quick start's raw files: an image folder, meta.csv and embeddings.npy."""
    data = root / "sample"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_sample.py"), str(data), "--per-class", "60"],
        check=True, capture_output=True,
    )  # fmt: skip
    return [data / "images", data / "meta.csv", data / "embeddings.npy"]


INPUTS: dict[str, Callable[[Path], list[Path]]] = {
    "images": lambda root: [_image_folder(root)],
    "npy": lambda root: [_npy(root)],
    "npz": lambda root: [_npz(root)],
    "hdf5": lambda root: [_hdf5(root)],
    "csv": lambda root: [_csv(root)],
    "quick-start": _quick_start,
}


def _ingest(sources: list[Path], out: Path, **kw: Any) -> dict[str, Any]:
    kw.setdefault("chunk_mb", CHUNK_MB)
    kw.setdefault("block_mb", BLOCK_MB)
    return gpuds.ingest(sources, out, **kw)


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_the_store_is_the_same_whatever_the_scheduler(
    tmp_path: Path, dask_cluster: Any, name: str
) -> None:
    (tmp_path / "in").mkdir()
    sources = INPUTS[name](tmp_path / "in")
    before = {str(p): tree_hash(p) for p in sources}
    reference = tmp_path / "threads.zarr"
    progress = Recorder()
    summary = _ingest(sources, reference, progress=progress)
    assert summary["scheduler"] == "threads"
    assert not [n for n in progress.notes if "on the client" in n]  # all of it runs here
    # Several blocks: the stage was really cut into tasks (a table into the client's blocks).
    assert len(progress.advances) >= 3 and sum(progress.advances) >= summary["samples"]
    for workers in (1, 2, 3):
        out = tmp_path / f"cluster{workers}.zarr"
        progress = Recorder()
        summary = _ingest(sources, out, progress=progress, scheduler=dask_cluster(workers))
        assert summary["scheduler"].startswith("the Dask cluster at tcp://")
        assert_same_store(reference, out)
        assert "scheduler" not in (out / "zarr.json").read_text()  # not recorded in the store
        client_side = [n for n in progress.notes if "is read on the client" in n]
        tables = [p for p in sources if p.suffix == ".csv"]
        assert client_side == [
            f"{p} is read on the client: a CSV file is parsed front to back (where a row "
            "starts is known only by parsing all that comes before it)"
            for p in tables
        ]
    assert gpuds.inspect(str(reference), verify=True)["problems"] == []
    assert {str(p): tree_hash(p) for p in sources} == before


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_values_and_conversions_match_the_files(tmp_path: Path, dask_cluster: Any) -> None:
    folder = _image_folder(tmp_path)
    out = tmp_path / "o.zarr"
    summary = _ingest([folder], out, scheduler=dask_cluster(2))
    group = gpuds.open(out)
    expected = np.stack([_rgb(p) for p in sorted(folder.rglob("*.png"))])
    np.testing.assert_array_equal(group.arrays["images"][:], expected)
    np.testing.assert_array_equal(group.arrays["labels"][:], np.repeat([0, 1, 2], 30))
    # What the tasks counted, joined in sample order: as one pass over the folder counts it.
    src = ImageFolderSource(folder, ReadOptions())
    for _ in src.blocks(7):
        pass
    assert summary["sources"][0]["conversions"] == src.describe()["conversions"]
    assert [c["from"] for c in src.describe()["conversions"]] == ["L", "RGBA"]
    assert summary["notes"] == src.notes()


@pytest.mark.parametrize(
    ("chunk_mb", "block_mb"),
    [(CHUNK_MB, BLOCK_MB), (0.02, 0.005)],  # then chunks of images longer than a block
)
def test_the_stream_and_the_tasks_write_the_same_chunks(
    tmp_path: Path, chunk_mb: float, block_mb: float
) -> None:
    """--skip-bad reads the folder front to back on the client: with no bad file it writes the
    chunks and fingerprints the tasks write."""
    folder = _image_folder(tmp_path)
    split = tmp_path / "split.zarr"
    stream = tmp_path / "stream.zarr"
    progress = Recorder()
    _ingest([folder], split, chunk_mb=chunk_mb, block_mb=block_mb, progress=progress)
    assert len(progress.advances) > 1
    progress = Recorder()
    options = ReadOptions(skip_bad=True)
    _ingest([folder], stream, options=options, chunk_mb=chunk_mb, progress=progress)
    assert len(progress.phases) == 1
    for field in ("images", "labels"):
        left = sorted(p for p in (split / field).rglob("*") if p.is_file())
        right = sorted(p for p in (stream / field).rglob("*") if p.is_file())
        assert [p.relative_to(split) for p in left] == [p.relative_to(stream) for p in right]
        assert [p.read_bytes() for p in left] == [p.read_bytes() for p in right]
    info = [
        json.loads((s / "zarr.json").read_text())["attributes"]["gpuds"] for s in (split, stream)
    ]
    assert info[0]["fingerprint"] == info[1]["fingerprint"]
    assert info[0]["sources"] == info[1]["sources"]


def test_compressed_members_are_read_on_the_client(tmp_path: Path, dask_cluster: Any) -> None:
    rng = np.random.default_rng(0)
    np.savez_compressed(tmp_path / "z.npz", c=rng.normal(size=(3000, 2)))
    progress = Recorder()
    threads = _ingest([tmp_path / "z.npz"], tmp_path / "t.zarr")
    cluster = _ingest(
        [tmp_path / "z.npz"], tmp_path / "c.zarr", progress=progress, scheduler=dask_cluster(2)
    )
    assert threads["samples"] == cluster["samples"] == 3000
    assert_same_store(tmp_path / "t.zarr", tmp_path / "c.zarr")
    assert (
        f"{tmp_path / 'z.npz'} is read on the client: its member 'c' is compressed, and "
        "compressed data is read from its start only" in progress.notes
    )


def test_a_damaged_npz_member_fails_as_when_read_front_to_back(tmp_path: Path) -> None:
    """The tasks read a stored member by ranges: the member's CRC-32 is still checked."""
    path = _npz(tmp_path)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("b.npy")
    data = bytearray(path.read_bytes())
    data[info.header_offset + info.compress_size] ^= 0x01  # a sample near the member's end
    path.write_bytes(bytes(data))
    with NpzSource(path, ReadOptions()) as src, pytest.raises(SourceError) as stream:
        for _ in src.blocks(1000):
            pass
    with pytest.raises(SourceError) as tasks:
        _ingest([path], tmp_path / "o.zarr")
    assert str(tasks.value) == str(stream.value)
    assert str(tasks.value) == f"{path}: corrupt archive (Bad CRC-32 for file 'b.npy')"
    assert not (tmp_path / "o.zarr").exists()


def _corrupt(folder: Path) -> Path:
    bad = folder / "bee" / "017.png"  # in the third of six blocks
    bad.write_bytes(bad.read_bytes()[:60])  # truncated inside its pixel data
    return bad


def _wait_until_idle(address: str) -> None:
    """Until no worker of the cluster at ``address`` runs a task: a task cancelled while it runs
    goes on to its end."""
    with distributed.Client(address, timeout="10s") as client:
        deadline = time.monotonic() + 30
        busy = lambda dask_worker: len(dask_worker.state.executing)  # noqa: E731
        while any(client.run(busy).values()) and time.monotonic() < deadline:
            time.sleep(0.05)


def test_a_corrupt_image_fails_the_stage_and_leaves_nothing(tmp_path: Path) -> None:
    folder = _image_folder(tmp_path / "in")
    bad = _corrupt(folder)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(SourceError) as failed:
        _ingest([folder], out_dir / "o.zarr")
    message = str(failed.value)
    assert message.startswith(f"{bad}: cannot read the image: ")
    assert message.endswith("; fix or remove the file, or pass --skip-bad to skip bad files")
    assert "\n" not in message
    assert list(out_dir.iterdir()) == []  # no output and no partial folder


@pytest.mark.parametrize(
    "where",
    [
        "local",
        "existing",
    ],
)
def test_a_corrupt_image_fails_a_cluster_as_it_fails_in_process_and_leaves_nothing(
    tmp_path: Path, dask_cluster: Any, where: str
) -> None:
    folder = _image_folder(tmp_path / "in")
    # A local cluster gpuds starts (and stops), or one that outlives the stage, its workers
    # warmed up by a first run (so that tasks run beside the one that fails).
    scheduler = "processes:2" if where == "local" else dask_cluster(3)
    if where == "existing":
        _ingest([folder], tmp_path / "good.zarr", scheduler=scheduler)
    _corrupt(folder)
    with pytest.raises(SourceError) as in_process:
        _ingest([folder], tmp_path / "threads.zarr")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(SourceError) as on_cluster:
        _ingest([folder], out_dir / "o.zarr", scheduler=scheduler)
    assert str(on_cluster.value) == str(in_process.value)
    if where == "existing":
        _wait_until_idle(scheduler)
    assert list(out_dir.iterdir()) == []  # no output and no partial folder


def test_parts_read_what_the_source_reads_and_close_on_their_own(tmp_path: Path) -> None:
    """A task's copy opens its own files: closing it leaves the source it came from open."""
    folder = _image_folder(tmp_path)
    for path in (_npy(tmp_path), _npz(tmp_path), _hdf5(tmp_path), folder):
        with open_source(path, ReadOptions()) as src:
            assert src.stream_only() is None
            blocks = list(src.blocks(20))
            part = src.part(40, 70)
            with part:
                got = part.read(40, 70).values
            again = src.read(40, 70).values  # the source's own files are still open
            assert got.keys() == again.keys() == {f.name for f in src.fields}
            for name in got:
                expected = np.concatenate([b[name] for b in blocks])[40:70]
                np.testing.assert_array_equal(got[name], expected)
                np.testing.assert_array_equal(again[name], expected)
