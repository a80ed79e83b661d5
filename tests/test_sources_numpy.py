""".npy and .npz files: values, and one-line errors in the user's terms that never suggest
unpickling."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from gpuds.errors import SourceError
from gpuds.sources.base import ReadOptions
from gpuds.sources.numpy import NpySource, NpzSource

from .conftest import only_line, tree_hash


class _TouchOnUnpickle:
    """Unpickling this creates ``marker``: proof that a file was (or was not) unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (self.marker.touch, ())


def ingest_fails(cli, source: Path, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    """Ingest ``source`` through the CLI; check exit 1, no output, input unchanged; the line."""
    before = tree_hash(source)
    result = cli("ingest", source, "-o", tmp_path / "out.zarr")
    assert result.code == 1
    assert "Traceback" not in result.err
    assert "allow_pickle" not in result.err and "pickle.load" not in result.err
    assert not (tmp_path / "out.zarr").exists()
    assert tree_hash(source) == before
    return only_line(result.err)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_text_file_named_npy(cli, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    path.write_text("1,2,3\n4,5,6\n")
    assert ingest_fails(cli, path, tmp_path) == (
        f"error: {path}: not a .npy file: no NumPy magic (it starts with b'1,2,3\\n4,'); write "
        "it with numpy.save, or pass --format with the format it is in"
    )


def test_npz_named_npy(cli, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    with path.open("wb") as fh:
        np.savez(fh, a=np.arange(3))
    assert ingest_fails(cli, path, tmp_path).endswith(
        "no NumPy magic (it starts with b'PK\\x03\\x04-\\x00\\x00\\x00'); it is a zip archive: if "
        "it is a .npz, pass --format npz"
    )


def test_empty_file(cli, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    path.write_bytes(b"")
    assert ingest_fails(cli, path, tmp_path) == f"error: {path}: not a .npy file: it is empty"


def test_truncated_data(cli, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    path.write_bytes(npy_bytes(np.arange(100, dtype="<f8"))[:-16])
    assert ingest_fails(cli, path, tmp_path) == (
        f"error: {path}: truncated: header declares 800 bytes of data, file has 784; the file is "
        "incomplete (an interrupted copy?), corrupt or crafted"
    )


def test_truncated_header(cli, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    path.write_bytes(npy_bytes(np.arange(4))[:20])
    assert ingest_fails(cli, path, tmp_path) == (
        f"error: {path}: truncated: the file ends inside its .npy header (10 of 118 header bytes)"
    )


def test_trailing_bytes(cli, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    path.write_bytes(npy_bytes(np.arange(4, dtype="<i4")) + b"\x00" * 8)
    assert ingest_fails(cli, path, tmp_path) == (
        f"error: {path}: header declares 16 bytes of data, file has 24; the file is corrupt or "
        "crafted (re-save it with numpy.save)"
    )


def test_unknown_version_and_bad_header(cli, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    path.write_bytes(b"\x93NUMPY\x09\x00" + b"\x00" * 8)
    assert ingest_fails(cli, path, tmp_path) == (
        f"error: {path}: not a readable .npy file: format version 9.0 is unknown (NumPy writes "
        "1.0, 2.0 and 3.0)"
    )
    header = b"{'descr': '<f8', 'fortran_order': False}".ljust(118) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
    assert "not a readable .npy file: bad header (Header does not contain" in ingest_fails(
        cli, path, tmp_path
    )


def test_oversized_header_is_refused_without_numpys_advice(cli, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    path.write_bytes(b"\x93NUMPY\x02\x00" + (50_000).to_bytes(4, "little") + b" " * 50_000)
    assert ingest_fails(cli, path, tmp_path) == (
        f"error: {path}: not a readable .npy file: its header claims 50000 bytes, more than NumPy "
        "reads (10000); the file is corrupt or crafted"
    )


def test_object_array_is_refused_without_unpickling(cli, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "x.npy"
    objects = np.empty(2, dtype=object)
    objects[:] = [_TouchOnUnpickle(marker), 1]
    np.save(path, objects, allow_pickle=True)
    assert ingest_fails(cli, path, tmp_path) == (
        f"error: {path}: holds Python objects (dtype object), which NumPy stores pickled; gpuds "
        "never unpickles input (unpickling can run any code): save a numeric array instead"
    )
    assert not marker.exists()


def test_object_member_of_npz_is_refused_without_unpickling(cli, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "x.npz"
    objects = np.empty(1, dtype=object)
    objects[0] = _TouchOnUnpickle(marker)
    np.savez(path, good=np.arange(1), bad=objects)
    line = ingest_fails(cli, path, tmp_path)
    assert line.startswith(f"error: {path}[bad]: holds Python objects (dtype object)")
    assert not marker.exists()


def test_npz_member_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("text.npy", b"hello")
        archive.writestr("short.npy", npy_bytes(np.arange(10, dtype="<i8"))[:-8])
    with pytest.raises(SourceError) as info:
        NpzSource(path, ReadOptions(fields=("text",)))
    assert str(info.value) == (
        f"{path}[text]: not a .npy archive member: no NumPy magic (it starts with b'hello'); the "
        "archive was not written by numpy.savez"
    )
    with pytest.raises(SourceError) as info:
        NpzSource(path, ReadOptions(fields=("short",)))
    assert str(info.value) == (
        f"{path}[short]: truncated: header declares 80 bytes of data, archive member has 72; the "
        "archive member is incomplete (an interrupted copy?), corrupt or crafted"
    )


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype="<f4").reshape(6, 4),
        np.arange(24, dtype=">i2").reshape(6, 2, 2),  # big-endian: delivered native
        np.asfortranarray(np.arange(24, dtype="<f8").reshape(6, 4)),
        np.array([True, False, True]),
    ],
)
def test_values(tmp_path: Path, array: np.ndarray) -> None:
    path = tmp_path / "x.npy"
    np.save(path, array)
    with NpySource(path, ReadOptions()) as src:
        (spec,) = src.fields
        assert spec.dtype == array.dtype.newbyteorder("=") and src.length == len(array)
        values = np.concatenate([b["x"] for b in src.blocks(4)])
    np.testing.assert_array_equal(values, array)
    assert values.dtype.isnative


def test_values_through_the_cli(cli, tmp_path: Path) -> None:
    array = np.arange(12, dtype="<u2").reshape(4, 3)
    np.save(tmp_path / "x.npy", array)
    before = tree_hash(tmp_path / "x.npy")
    out = tmp_path / "out.zarr"
    assert cli("ingest", tmp_path / "x.npy", "-o", out, "-q").code == 0
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")["x"][...], array)
    assert tree_hash(tmp_path / "x.npy") == before
