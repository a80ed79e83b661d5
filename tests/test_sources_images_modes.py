"""Image pixel formats: what each conversion loses (recorded, and reported once when it loses
something), and the reason given for a file Pillow's decoder refuses."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from PIL import Image

from gpuds.sources.base import ReadOptions
from gpuds.sources.images import ImageFolderSource

from .conftest import only_line, tree_hash

RNG = np.random.default_rng(5)


def pixels(*shape: int, dtype: Any = np.uint8) -> np.ndarray:
    return RNG.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def png_16_bit(path: Path, values: np.ndarray) -> np.ndarray:
    """Write ``values`` (uint16, (H, W, 3) or (H, W, 4)) as a 16-bit-per-channel PNG, which
    Pillow cannot write."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    height, width, channels = values.shape
    colour_type = {3: 2, 4: 6}[channels]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return values


def tiff_one_sample(path: Path, values: np.ndarray, sample_format: int) -> None:
    """Write 2-D ``values`` as an uncompressed one-sample TIFF with ``values``' bit depth and
    the TIFF SampleFormat (1 unsigned, 2 signed, 3 float): a 64-bit float TIFF, which Pillow
    cannot write."""
    height, width = values.shape
    data = values.astype(values.dtype.newbyteorder("<")).tobytes()
    tags = [  # (tag, type 3=SHORT 4=LONG, value)
        (256, 4, width),
        (257, 4, height),
        (258, 3, values.dtype.itemsize * 8),  # BitsPerSample
        (259, 3, 1),  # no compression
        (262, 3, 1),  # BlackIsZero
        (273, 4, 0),  # StripOffsets, filled in below
        (277, 3, 1),  # SamplesPerPixel
        (278, 4, height),
        (279, 4, len(data)),
        (339, 3, sample_format),
    ]
    data_offset = 8 + 2 + 12 * len(tags) + 4
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        value = data_offset if tag == 273 else value
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + data)


def read(root: Path, **options: Any) -> tuple[np.ndarray, ImageFolderSource]:
    src = ImageFolderSource(root, ReadOptions(**options))
    images = np.concatenate([b["images"] for b in src.blocks(2)])
    return images, src


@pytest.fixture
def lossy(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Files whose conversion to RGB loses something, plus a gray and an RGB one that do not."""
    root = tmp_path / "lossy"
    root.mkdir()
    made = {
        "a_rgba.png": pixels(2, 3, 4),
        "b_rgba.png": pixels(2, 3, 4),
        "c_rgb16.png": png_16_bit(root / "c_rgb16.png", pixels(2, 3, 3, dtype=np.uint16)),
        "d_gray16.png": pixels(2, 3, dtype=np.uint16),
        "e_gray.png": pixels(2, 3),
        "f_rgb.png": pixels(2, 3, 3),
    }
    for name in ("a_rgba.png", "b_rgba.png", "d_gray16.png", "e_gray.png", "f_rgb.png"):
        Image.fromarray(made[name]).save(root / name)
    palette = Image.new("P", (3, 2))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(root / "g_palette.png", transparency=0)
    return root, made


def test_lossy_conversions_are_reported_once_with_counts(
    cli, lossy: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    root, made = lossy
    before = tree_hash(root)
    out = tmp_path / "out.zarr"
    result = cli("ingest", root, "-o", out)
    assert result.code == 0
    assert only_line(result.err) == (
        f"{root}: 5 of 7 images lost information converting to RGB: 1 I;16 (16-bit precision), "
        "1 P with transparency (transparency), 1 RGB (16-bit) (16-bit precision), 2 RGBA "
        "(alpha); --mode RGBA keeps alpha; see 'conversions' in the store's sources"
    )
    images = zarr.open_group(out, mode="r")["images"][...]
    np.testing.assert_array_equal(images[0], made["a_rgba.png"][:, :, :3])
    np.testing.assert_array_equal(images[2], (made["c_rgb16.png"] >> 8).astype(np.uint8))
    high = (made["d_gray16.png"] >> 8).astype(np.uint8)
    np.testing.assert_array_equal(images[3], np.repeat(high[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(images[4], np.repeat(made["e_gray.png"][:, :, None], 3, axis=2))
    np.testing.assert_array_equal(images[6, 0], [[10, 20, 30], [200, 100, 50], [10, 20, 30]])
    source = dict(zarr.open_group(out, mode="r").attrs)["gpuds"]["sources"][0]
    assert source["conversions"] == [
        {"from": "I;16", "to": "RGB", "images": 1, "drops": ["16-bit precision"],
         "first": "d_gray16.png"},
        {"from": "L", "to": "RGB", "images": 1, "drops": [], "first": "e_gray.png"},
        {"from": "P with transparency", "to": "RGB", "images": 1, "drops": ["transparency"],
         "first": "g_palette.png"},
        {"from": "RGB (16-bit)", "to": "RGB", "images": 1, "drops": ["16-bit precision"],
         "first": "c_rgb16.png"},
        {"from": "RGBA", "to": "RGB", "images": 2, "drops": ["alpha"], "first": "a_rgba.png"},
    ]  # fmt: skip
    assert tree_hash(root) == before


def test_json_summary_carries_the_note(cli, lossy, tmp_path: Path) -> None:
    root, _ = lossy
    result = cli("ingest", root, "-o", tmp_path / "out.zarr", "--json")
    assert result.code == 0 and result.err == ""
    (note,) = result.json()["notes"]
    assert note.startswith(f"{root}: 5 of 7 images lost information converting to RGB:")


def test_rgba_keeps_alpha_and_transparency(lossy) -> None:
    root, made = lossy
    images, src = read(root, mode="RGBA")
    np.testing.assert_array_equal(images[0], made["a_rgba.png"])
    np.testing.assert_array_equal(images[6, 0, :, 3], [0, 255, 0])
    drops = {c["from"]: c["drops"] for c in src.describe()["conversions"]}
    assert drops == {
        "I;16": ["16-bit precision"],
        "L": [],
        "P with transparency": [],
        "RGB": [],
        "RGB (16-bit)": ["16-bit precision"],
    }
    assert src.notes() == [
        f"{root}: 2 of 7 images lost information converting to RGBA: 1 I;16 (16-bit "
        "precision), 1 RGB (16-bit) (16-bit precision); see 'conversions' in the store's sources"
    ]


@pytest.mark.parametrize(
    ("save", "mode", "source", "drops"),
    [
        (lambda p: Image.fromarray(pixels(2, 3, 3)).save(p), "L", "RGB", ["colour"]),
        (lambda p: Image.fromarray(pixels(2, 3, 4)).save(p), "L", "RGBA", ["alpha", "colour"]),
        (lambda p: Image.fromarray(pixels(2, 3, 2), "LA").save(p), "RGB", "LA", ["alpha"]),
        (lambda p: Image.fromarray(pixels(2, 3, 2), "LA").save(p), "RGBA", "LA", []),
        (lambda p: Image.fromarray(pixels(2, 3)).convert("1").save(p), "RGB", "1", []),
        (
            lambda p: Image.fromarray(pixels(2, 3, 3)).save(p, transparency=(1, 2, 3)),
            "RGB",
            "RGB with transparency",
            ["transparency"],
        ),
        (
            lambda p: Image.fromarray(pixels(2, 3, 4)).convert("CMYK").save(p, format="JPEG"),
            "RGB",
            "CMYK",
            ["K channel"],
        ),
    ],
)
def test_what_each_conversion_drops(
    tmp_path: Path, save: Any, mode: str, source: str, drops: list[str]
) -> None:
    save(tmp_path / "a.png")
    _, src = read(tmp_path, mode=mode)
    assert [(c["from"], c["to"], c["drops"]) for c in src.describe()["conversions"]] == [
        (source, mode, drops)
    ]
    assert len(src.notes()) == (1 if drops else 0)


def test_lossless_conversions_are_recorded_not_reported(cli, tmp_path: Path) -> None:
    root = tmp_path / "gray"
    root.mkdir()
    gray = pixels(2, 3)
    Image.fromarray(gray).save(root / "a.png")
    Image.fromarray(pixels(2, 3, 3)).save(root / "b.png")
    out = tmp_path / "out.zarr"
    result = cli("ingest", root, "-o", out)
    assert result.code == 0 and result.err == ""
    source = dict(zarr.open_group(out, mode="r").attrs)["gpuds"]["sources"][0]
    assert source["conversions"] == [
        {"from": "L", "to": "RGB", "images": 1, "drops": [], "first": "a.png"}
    ]
    images = zarr.open_group(out, mode="r")["images"][...]
    np.testing.assert_array_equal(images[0], np.repeat(gray[:, :, None], 3, axis=2))


def test_counts_restart_when_blocks_are_read_again(lossy) -> None:
    root, _ = lossy
    src = ImageFolderSource(root, ReadOptions())
    for _ in range(2):
        assert sum(len(b["images"]) for b in src.blocks(3)) == 7
        (rgba,) = [c for c in src.describe()["conversions"] if c["from"] == "RGBA"]
        assert rgba["images"] == 2
        assert len(src.notes()) == 1


def test_skipped_files_are_not_counted(tmp_path: Path) -> None:
    Image.fromarray(pixels(16, 16, 4)).save(tmp_path / "a.png")
    Image.fromarray(pixels(16, 16, 4)).save(tmp_path / "b.png")
    data = (tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(data[: len(data) // 2])
    _, src = read(tmp_path, skip_bad=True)
    assert [c["images"] for c in src.describe()["conversions"]] == [1]
    assert src.notes()[0].startswith(f"{tmp_path}: 1 of 1 images lost information")


def test_float64_tiff_names_the_decoder_refusal(cli, tmp_path: Path) -> None:
    root = tmp_path / "depth"
    root.mkdir()
    tiff_one_sample(root / "disparity.tif", np.linspace(0, 1, 6).reshape(2, 3), 3)
    before = tree_hash(root)
    result = cli("ingest", root, "-o", tmp_path / "out.zarr")
    assert result.code == 1
    assert only_line(result.err) == (
        f"error: {root / 'disparity.tif'}: cannot read the image: Pillow's TIFF decoder refused "
        "it: unknown pixel mode (pixels of 1 sample of 64-bit floating point); fix or remove "
        "the file, or pass --skip-bad to skip bad files"
    )
    assert "identify" not in result.err
    assert not (tmp_path / "out.zarr").exists()
    assert tree_hash(root) == before


def test_float32_tiff_keeps_its_own_reason(tmp_path: Path) -> None:
    tiff_one_sample(tmp_path / "f.tif", np.ones((2, 3), np.float32), 3)
    with Image.open(tmp_path / "f.tif") as check:  # the writer makes TIFFs Pillow reads
        assert check.mode == "F"
    with pytest.raises(ValueError, match=r"floating-point pixels \(Pillow mode F\)"):
        ImageFolderSource(tmp_path, ReadOptions())


def test_file_without_a_known_signature(cli, tmp_path: Path) -> None:
    root = tmp_path / "junk"
    root.mkdir()
    (root / "a.png").write_bytes(b"GIF89a not really")
    result = cli("ingest", root, "-o", tmp_path / "out.zarr")
    assert result.code == 1
    assert only_line(result.err) == (
        f"error: {root / 'a.png'}: cannot read the image: not a PNG, JPEG, TIFF, BMP or WebP "
        "image Pillow can identify; fix or remove the file, or pass --skip-bad to skip bad files"
    )
