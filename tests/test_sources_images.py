from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gpuds.errors import ConfigError, SourceError
from gpuds.sources.base import ReadOptions
from gpuds.sources.images import ImageFolderSource

from .conftest import tree_hash

RNG = np.random.default_rng(7)


def rgb(height: int = 4, width: int = 5) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def save(path: Path, pixels: np.ndarray, **kwargs: Any) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)
    return pixels


def read_all(
    root: Path, max_samples: int = 3, **options: Any
) -> tuple[dict[str, np.ndarray], ImageFolderSource]:
    src = ImageFolderSource(root, ReadOptions(**options))
    blocks = list(src.blocks(max_samples))
    assert all(len(next(iter(b.values()))) <= max_samples for b in blocks)
    names = [spec.name for spec in src.fields]
    out = {name: np.concatenate([b[name] for b in blocks]) for name in names}
    json.dumps(src.metadata())
    json.dumps(src.describe())
    return out, src


@pytest.fixture
def classes(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """cat/ has 3 PNGs, dog/ has 2 (plus a README at the top): 5 samples over 2 blocks of 3."""
    root = tmp_path / "pets"
    images, labels = [], []
    for label, (name, count) in enumerate([("cat", 3), ("dog", 2)]):
        for i in range(count):
            images.append(save(root / name / f"{i}.png", rgb()))
            labels.append(label)
    (root / "README.txt").write_text("not an image")
    return root, np.stack(images), np.array(labels)


def test_class_layout_values(classes: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, labels = classes
    before = tree_hash(root)
    out, src = read_all(root)
    np.testing.assert_array_equal(out["images"], images)
    np.testing.assert_array_equal(out["labels"], labels)
    assert out["images"].dtype == np.uint8 and out["labels"].dtype == np.int64
    specs = {spec.name: spec for spec in src.fields}
    assert specs["images"].kind == "image" and specs["images"].sample_shape == (4, 5, 3)
    assert specs["labels"].kind == "label" and specs["labels"].attrs == {"classes": ["cat", "dog"]}
    assert src.length == 5
    assert src.metadata()["classes"] == ["cat", "dog"]
    assert src.metadata()["ignored_files"] == ["README.txt"]
    assert src.metadata()["skipped"] == []
    assert src.describe() == {
        "format": "images",
        "path": str(root),
        "layout": "classes",
        "files": 5,
        "multi_frame": [],
        "conversions": [],
    }
    assert tree_hash(root) == before


def test_flat_layout_sorted_by_name(tmp_path: Path) -> None:
    pixels = {name: save(tmp_path / name, rgb()) for name in ["b.png", "a.png", "c.PNG", "10.png"]}
    out, src = read_all(tmp_path)
    assert [spec.name for spec in src.fields] == ["images"]
    order = ["10.png", "a.png", "b.png", "c.PNG"]
    np.testing.assert_array_equal(out["images"], np.stack([pixels[n] for n in order]))
    assert "classes" not in src.metadata()
    assert src.describe()["layout"] == "flat" and src.describe()["files"] == 4


@pytest.mark.parametrize(
    ("suffix", "kwargs", "exact"),
    [
        (".tif", {}, True),
        (".tiff", {"compression": "tiff_lzw"}, True),
        (".bmp", {}, True),
        (".webp", {"lossless": True}, True),
        (".jpg", {"quality": 90}, False),
        (".JPEG", {}, False),
    ],
)
def test_formats(tmp_path: Path, suffix: str, kwargs: dict[str, Any], exact: bool) -> None:
    pixels = [save(tmp_path / f"{i}{suffix}", rgb(6, 7), **kwargs) for i in range(4)]
    out, _ = read_all(tmp_path)
    assert out["images"].shape == (4, 6, 7, 3) and out["images"].dtype == np.uint8
    if exact:
        np.testing.assert_array_equal(out["images"], np.stack(pixels))


def test_suffix_and_content_may_differ(tmp_path: Path) -> None:
    pixels = save(tmp_path / "a.jpg", rgb(), format="PNG")
    out, _ = read_all(tmp_path)
    np.testing.assert_array_equal(out["images"][0], pixels)


def test_field_selection(classes: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, labels = classes
    out, _ = read_all(root, fields=("labels",))
    assert list(out) == ["labels"]
    np.testing.assert_array_equal(out["labels"], labels)
    out, _ = read_all(root, fields=("images",))
    np.testing.assert_array_equal(out["images"], images)
    with pytest.raises(SourceError, match=r"'boxes'.*available: images, labels"):
        ImageFolderSource(root, ReadOptions(fields=("boxes",)))
    flat = ImageFolderSource(root / "cat", ReadOptions(fields=("labels",), strict_fields=False))
    assert flat.fields == [] and list(flat.blocks(3)) == []


def test_gray_to_rgb_and_rgb_to_gray(tmp_path: Path) -> None:
    gray = RNG.integers(0, 256, (4, 5), dtype=np.uint8)
    save(tmp_path / "gray" / "g.png", gray)
    out, src = read_all(tmp_path / "gray", mode="RGB")
    np.testing.assert_array_equal(out["images"][0], np.repeat(gray[:, :, None], 3, axis=2))
    assert src.fields[0].sample_shape == (4, 5, 3)

    color = save(tmp_path / "color" / "c.png", rgb())
    out, src = read_all(tmp_path / "color", mode="L")
    assert out["images"].shape == (1, 4, 5, 1) and src.fields[0].sample_shape == (4, 5, 1)
    expected = np.asarray(Image.fromarray(color).convert("L"))
    np.testing.assert_array_equal(out["images"][0, :, :, 0], expected)

    out, _ = read_all(tmp_path / "color", mode="RGBA")
    np.testing.assert_array_equal(out["images"][0, :, :, :3], color)
    assert (out["images"][0, :, :, 3] == 255).all()


def test_palette_keeps_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (3, 2))
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "p.png", transparency=0)
    out, _ = read_all(tmp_path, mode="RGBA")
    expected = np.array([[10, 20, 30, 0], [200, 100, 50, 255], [10, 20, 30, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(out["images"][0, 0], expected)
    out, _ = read_all(tmp_path, mode="RGB")
    np.testing.assert_array_equal(out["images"][0, 0], expected[:, :3])


def test_16_bit_keeps_high_byte(tmp_path: Path) -> None:
    values = np.array([[0, 255, 256, 65535], [4660, 1000, 40000, 512]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as check:
        assert check.mode == "I;16"
    out, _ = read_all(tmp_path, mode="L")
    np.testing.assert_array_equal(out["images"][0, :, :, 0], (values >> 8).astype(np.uint8))


@pytest.mark.parametrize(
    ("array", "kind"),
    [
        (np.arange(6, dtype=np.int32).reshape(2, 3), "32-bit integer"),
        (np.ones((2, 3), dtype=np.float32), "floating-point"),
    ],
)
def test_wide_modes_refused(tmp_path: Path, array: np.ndarray, kind: str) -> None:
    Image.fromarray(array).save(tmp_path / "wide.tif")
    with pytest.raises(SourceError, match=rf"wide\.tif.*{kind}.*convert the file to 8-bit"):
        ImageFolderSource(tmp_path, ReadOptions())


def test_bad_options(tmp_path: Path) -> None:
    save(tmp_path / "a.png", rgb())
    with pytest.raises(ConfigError, match=r"RGB, RGBA, L.*'CMYK'"):
        ImageFolderSource(tmp_path, ReadOptions(mode="CMYK"))
    with pytest.raises(ConfigError, match="stretch, crop, pad"):
        ImageFolderSource(tmp_path, ReadOptions(fit="squash"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="nearest, bilinear, bicubic, lanczos"):
        ImageFolderSource(tmp_path, ReadOptions(resample="box"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="positive"):
        ImageFolderSource(tmp_path, ReadOptions(resize=(0, 4)))


def test_mixed_sizes_name_both_files(tmp_path: Path) -> None:
    save(tmp_path / "a" / "1.png", rgb(4, 5))
    save(tmp_path / "a" / "2.png", rgb(4, 5))
    save(tmp_path / "b" / "3.png", rgb(6, 7))
    with pytest.raises(SourceError) as info:
        ImageFolderSource(tmp_path, ReadOptions())
    message = str(info.value)
    assert "a/1.png is 4x5" in message and "b/3.png is 6x7" in message
    assert "--resize HxW" in message and "--fit stretch|crop|pad" in message


@pytest.mark.parametrize("fit", ["stretch", "crop", "pad"])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_resize_shapes(tmp_path: Path, fit: str, mode: str) -> None:
    for i, (h, w) in enumerate([(4, 5), (9, 3), (8, 8), (1, 20)]):
        save(tmp_path / f"{i}.png", rgb(h, w))
    out, src = read_all(tmp_path, resize=(6, 4), fit=fit, mode=mode, resample="bicubic")
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    assert out["images"].shape == (4, 6, 4, channels)
    assert src.fields[0].sample_shape == (6, 4, channels)


def test_stretch_values(tmp_path: Path) -> None:
    pixels = save(tmp_path / "a.png", rgb(2, 3))
    out, _ = read_all(tmp_path, resize=(4, 6), fit="stretch", resample="nearest")
    np.testing.assert_array_equal(out["images"][0], pixels.repeat(2, axis=0).repeat(2, axis=1))


def test_crop_values(tmp_path: Path) -> None:
    wide = save(tmp_path / "wide" / "a.png", rgb(2, 6))
    out, _ = read_all(tmp_path / "wide", resize=(2, 2), fit="crop", resample="nearest")
    np.testing.assert_array_equal(out["images"][0], wide[:, 2:4])
    tall = save(tmp_path / "tall" / "a.png", rgb(8, 2))
    out, _ = read_all(tmp_path / "tall", resize=(1, 1), fit="crop", resample="nearest")
    assert out["images"].shape == (1, 1, 1, 3)
    # Cover a 4x2 target with an 8x2 image: scale 1, keep the middle 4 rows.
    out, _ = read_all(tmp_path / "tall", resize=(4, 2), fit="crop", resample="nearest")
    np.testing.assert_array_equal(out["images"][0], tall[2:6])


def test_pad_values(tmp_path: Path) -> None:
    pixels = save(tmp_path / "a.png", rgb(2, 4))
    out, _ = read_all(tmp_path, resize=(4, 4), fit="pad", resample="nearest")
    expected = np.zeros((4, 4, 3), dtype=np.uint8)
    expected[1:3] = pixels
    np.testing.assert_array_equal(out["images"][0], expected)
    # Scaled by 2 to fit 6x8, then centred with the odd margin at the bottom.
    out, _ = read_all(tmp_path, resize=(5, 8), fit="pad", resample="nearest")
    expected = np.zeros((5, 8, 3), dtype=np.uint8)
    expected[0:4] = pixels.repeat(2, axis=0).repeat(2, axis=1)
    np.testing.assert_array_equal(out["images"][0], expected)


def test_image_of_target_size_is_untouched(tmp_path: Path) -> None:
    pixels = save(tmp_path / "a.png", rgb(4, 4))
    for fit in ("stretch", "crop", "pad"):
        out, _ = read_all(tmp_path, resize=(4, 4), fit=fit, resample="lanczos")
        np.testing.assert_array_equal(out["images"][0], pixels)


def corrupt_folder(root: Path) -> dict[str, np.ndarray]:
    """Good PNGs in cat/ and dog/, plus a random-bytes .png and a truncated PNG."""
    good = {
        "cat/0.png": save(root / "cat" / "0.png", rgb(16, 16)),
        "cat/2.png": save(root / "cat" / "2.png", rgb(16, 16)),
        "dog/0.png": save(root / "dog" / "0.png", rgb(16, 16)),
        "dog/1.png": save(root / "dog" / "1.png", rgb(16, 16)),
    }
    (root / "cat" / "1.png").write_bytes(RNG.bytes(500))
    save(root / "dog" / "9.png", rgb(16, 16))
    data = (root / "dog" / "9.png").read_bytes()
    (root / "dog" / "9.png").write_bytes(data[: len(data) // 2])
    return good


def test_corrupt_files_are_named(tmp_path: Path) -> None:
    corrupt_folder(tmp_path)
    with pytest.raises(SourceError, match=r"cat/1\.png: cannot read.*identify.*--skip-bad"):
        ImageFolderSource(tmp_path, ReadOptions())
    (tmp_path / "cat" / "1.png").unlink()
    src = ImageFolderSource(tmp_path, ReadOptions())  # the truncated file's header is intact
    with pytest.raises(SourceError, match=r"dog/9\.png: cannot read.*truncated"):
        list(src.blocks(3))


def test_skip_bad_lists_and_counts(tmp_path: Path) -> None:
    good = corrupt_folder(tmp_path)
    before = tree_hash(tmp_path)
    out, src = read_all(tmp_path, skip_bad=True)
    assert src.length == 5  # the truncated file passes the header scan
    np.testing.assert_array_equal(out["images"], np.stack(list(good.values())))
    np.testing.assert_array_equal(out["labels"], [0, 0, 1, 1])
    skipped = src.metadata()["skipped"]
    assert len(skipped) == 2
    assert [s["path"] for s in skipped] == ["cat/1.png", "dog/9.png"]
    assert "identify" in skipped[0]["error"] and "truncated" in skipped[1]["error"]
    assert tree_hash(tmp_path) == before


def test_skip_bad_when_every_file_is_bad(tmp_path: Path) -> None:
    (tmp_path / "scan").mkdir()
    (tmp_path / "scan" / "a.png").write_bytes(b"not a png")
    with pytest.raises(SourceError, match=r"none of the 1 image files.*a\.png"):
        ImageFolderSource(tmp_path / "scan", ReadOptions(skip_bad=True))
    save(tmp_path / "decode" / "b.png", rgb(32, 32))
    data = (tmp_path / "decode" / "b.png").read_bytes()
    (tmp_path / "decode" / "b.png").write_bytes(data[: len(data) // 2])
    src = ImageFolderSource(tmp_path / "decode", ReadOptions(skip_bad=True))
    with pytest.raises(SourceError, match="none of the 1 image files"):
        list(src.blocks(3))


def test_decompression_bomb_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save(tmp_path / "a.png", rgb(4, 4))
    save(tmp_path / "b.png", rgb(10, 10))  # over the limit: Pillow warns
    save(tmp_path / "c.png", rgb(20, 20))  # over twice the limit: Pillow raises
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64)
    with pytest.raises(SourceError, match=r"b\.png: cannot read.*decompression bomb"):
        ImageFolderSource(tmp_path, ReadOptions(resize=(4, 4)))
    src = ImageFolderSource(tmp_path, ReadOptions(resize=(4, 4), skip_bad=True))
    assert [s["path"] for s in src.metadata()["skipped"]] == ["b.png", "c.png"]
    assert all("decompression bomb" in s["error"] for s in src.metadata()["skipped"])
    assert sum(len(b["images"]) for b in src.blocks(3)) == 1


def test_ignored_and_hidden_files(classes: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, _ = classes
    (root / "cat" / "notes.md").write_text("x")
    (root / "cat" / ".DS_Store").write_bytes(b"\x00")
    (root / "cat" / ".hidden.png").write_bytes(b"garbage")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref")
    out, src = read_all(root)
    assert src.metadata()["ignored_files"] == ["README.txt", "cat/notes.md"]
    assert src.metadata()["classes"] == ["cat", "dog"]
    np.testing.assert_array_equal(out["images"], images)


def test_multi_frame_first_frame(tmp_path: Path) -> None:
    frames = [rgb(), rgb(), rgb()]
    first, *rest = (Image.fromarray(f) for f in frames)
    first.save(tmp_path / "pages.tif", save_all=True, append_images=rest)
    single = save(tmp_path / "single.tif", rgb())
    out, src = read_all(tmp_path, frames="first")
    np.testing.assert_array_equal(out["images"], np.stack([frames[0], single]))
    assert src.describe()["multi_frame"] == [{"path": "pages.tif", "frames": 3}]


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda r: (save(r / "a.png", rgb()), (r / "cat").mkdir()), "both image files"),
        (lambda r: save(r / "cat" / "deeper" / "a.png", rgb()), r"cat/deeper: a folder inside"),
        (
            lambda r: (save(r / "cat" / "a.png", rgb()), (r / "dog").mkdir()),
            "dog: class folder holds no image files",
        ),
        (lambda r: r.mkdir(exist_ok=True), "holds no image files"),
        (lambda r: (r / "README.txt").write_text("x"), "holds no image files"),
    ],
)
def test_bad_layouts(tmp_path: Path, build: Any, match: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    build(root)
    with pytest.raises(SourceError, match=match) as info:
        ImageFolderSource(root, ReadOptions())
    assert str(root) in str(info.value)
    if "class folder" not in match:
        assert "class subfolders" in str(info.value) and "flat folder" in str(info.value)


def test_path_must_be_a_folder(tmp_path: Path) -> None:
    save(tmp_path / "a.png", rgb())
    with pytest.raises(SourceError, match=r"a\.png: not a folder"):
        ImageFolderSource(tmp_path / "a.png", ReadOptions())


def test_blocks_can_be_read_twice(classes: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, _ = classes
    src = ImageFolderSource(root, ReadOptions())
    for _ in range(2):
        np.testing.assert_array_equal(np.concatenate([b["images"] for b in src.blocks(2)]), images)
