"""Multi-frame image files: refused unless --frames says how to read them, listed in the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from PIL import Image

import gpuds
from gpuds.cli.options import Frames
from gpuds.errors import ConfigError, SourceError
from gpuds.sources.base import ReadOptions
from gpuds.sources.images import FRAMES, ImageFolderSource

from .conftest import only_line, tree_hash

RNG = np.random.default_rng(11)


def rgb(height: int = 4, width: int = 5) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def save_frames(path: Path, frames: list[np.ndarray], **kwargs: Any) -> list[np.ndarray]:
    """Write ``frames`` as one multi-frame file (the format follows the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    first, *rest = (Image.fromarray(f) for f in frames)
    first.save(path, save_all=True, append_images=rest, **kwargs)
    return frames


def save(path: Path, pixels: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def gpuds_attrs(store: Path) -> dict[str, Any]:
    attrs: dict[str, Any] = dict(zarr.open_group(store, mode="r").attrs)["gpuds"]
    return attrs


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, dict[str, list[np.ndarray]]]:
    """a.png (2 frames), b.png (one), c.tif (3 pages): 3 files, 6 frames."""
    root = tmp_path / "frames"
    files = {
        "a.png": save_frames(root / "a.png", [rgb(), rgb()]),
        "b.png": [save(root / "b.png", rgb())],
        "c.tif": save_frames(root / "c.tif", [rgb(), rgb(), rgb()]),
    }
    return root, files


def test_refused_by_default_naming_file_frames_and_options(cli, folder, tmp_path: Path) -> None:
    root, _ = folder
    before = tree_hash(root)
    result = cli("ingest", root, "-o", tmp_path / "out.zarr")
    assert result.code == 1
    assert only_line(result.err) == (
        f"error: {root / 'a.png'}: an animated PNG with 2 frames (1 more file(s) hold several "
        "frames); pass --frames first to read frame 0 of each multi-frame file, or --frames all "
        "to make one sample per frame"
    )
    assert not (tmp_path / "out.zarr").exists()
    assert tree_hash(root) == before


def test_refusal_names_a_multi_page_tiff(tmp_path: Path) -> None:
    save_frames(tmp_path / "scan.tiff", [rgb(), rgb(), rgb(), rgb()])
    with pytest.raises(SourceError) as info:
        ImageFolderSource(tmp_path, ReadOptions())
    assert str(info.value).startswith(f"{tmp_path / 'scan.tiff'}: a multi-page TIFF with 4 frames;")


def test_skip_bad_does_not_skip_multi_frame_files(folder) -> None:
    root, _ = folder
    with pytest.raises(SourceError, match="--frames first"):
        ImageFolderSource(root, ReadOptions(skip_bad=True))


def test_first_reads_frame_zero_and_records_the_files(cli, folder, tmp_path: Path) -> None:
    root, files = folder
    before = tree_hash(root)
    out = tmp_path / "out.zarr"
    result = cli("ingest", root, "-o", out, "--frames", "first", "-q")
    assert result.code == 0, result.err
    images = zarr.open_group(out, mode="r")["images"][...]
    np.testing.assert_array_equal(images, np.stack([f[0] for f in files.values()]))
    attrs = gpuds_attrs(out)
    assert attrs["sources"][0]["multi_frame"] == [
        {"path": "a.png", "frames": 2},
        {"path": "c.tif", "frames": 3},
    ]
    assert attrs["history"][0]["settings"]["options"]["frames"] == "first"
    assert tree_hash(root) == before


def test_all_makes_one_sample_per_frame(cli, folder, tmp_path: Path) -> None:
    root, files = folder
    before = tree_hash(root)
    out = tmp_path / "out.zarr"
    result = cli("ingest", root, "-o", out, "--frames", "all", "-q")
    assert result.code == 0, result.err
    images = zarr.open_group(out, mode="r")["images"][...]
    np.testing.assert_array_equal(images, np.stack([f for fs in files.values() for f in fs]))
    attrs = gpuds_attrs(out)
    assert attrs["num_samples"] == 6
    assert attrs["sources"][0]["multi_frame"] == [
        {"path": "a.png", "frames": 2},
        {"path": "c.tif", "frames": 3},
    ]
    assert attrs["sources"][0]["files"] == 3
    assert tree_hash(root) == before


def test_all_gives_every_frame_its_file_label(tmp_path: Path) -> None:
    pages = save_frames(tmp_path / "cat" / "pages.tif", [rgb(), rgb(), rgb()])
    dog = save(tmp_path / "dog" / "one.png", rgb())
    # Blocks of 2 split the file's frames across blocks.
    src = ImageFolderSource(tmp_path, ReadOptions(frames="all"))
    blocks = list(src.blocks(2))
    assert [len(b["images"]) for b in blocks] == [2, 2]
    np.testing.assert_array_equal(
        np.concatenate([b["images"] for b in blocks]), np.stack([*pages, dog])
    )
    np.testing.assert_array_equal(np.concatenate([b["labels"] for b in blocks]), [0, 0, 0, 1])
    assert src.length == 4


def test_all_reads_animated_webp(tmp_path: Path) -> None:
    frames = save_frames(tmp_path / "anim.webp", [rgb(), rgb(), rgb()], lossless=True)
    src = ImageFolderSource(tmp_path, ReadOptions(frames="all"))
    np.testing.assert_array_equal(np.concatenate([b["images"] for b in src.blocks(8)]), frames)
    assert src.describe()["multi_frame"] == [{"path": "anim.webp", "frames": 3}]


def test_all_checks_each_frame_size(tmp_path: Path) -> None:
    save_frames(tmp_path / "pages.tif", [rgb(4, 5), rgb(6, 7)])
    with pytest.raises(SourceError) as info:
        ImageFolderSource(tmp_path, ReadOptions(frames="all"))
    assert "pages.tif (frame 0) is 4x5 and pages.tif (frame 1) is 6x7" in str(info.value)
    src = ImageFolderSource(tmp_path, ReadOptions(frames="all", resize=(4, 5)))
    assert sum(len(b["images"]) for b in src.blocks(8)) == 2
    first = ImageFolderSource(tmp_path, ReadOptions(frames="first"))  # frame 0 alone counts
    assert first.fields[0].sample_shape == (4, 5, 3)


def test_all_keeps_the_bomb_guard_on_later_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_frames(tmp_path / "pages.tif", [rgb(2, 2), rgb(10, 10)])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64)
    with pytest.raises(SourceError) as info:
        ImageFolderSource(tmp_path, ReadOptions(frames="all", resize=(2, 2)))
    assert str(info.value) == (
        f"{tmp_path / 'pages.tif'}: cannot read the image: frame 1 has 100 pixels, over the "
        "limit of 64; refused as a possible decompression bomb; fix or remove the file, or pass "
        "--skip-bad to skip bad files"
    )


def test_frames_option_is_validated_and_round_trips(tmp_path: Path) -> None:
    save(tmp_path / "a.png", rgb())
    with pytest.raises(ConfigError, match=r"first, all.*'some'"):
        ImageFolderSource(tmp_path, ReadOptions(frames="some"))  # type: ignore[arg-type]
    options = ReadOptions(frames="all")
    assert ReadOptions.from_dict(options.to_dict()) == options
    assert [f.value for f in Frames] == list(FRAMES)


def test_python_api_passes_frames(folder, tmp_path: Path) -> None:
    root, _ = folder
    summary = gpuds.ingest([root], tmp_path / "out.zarr", options=ReadOptions(frames="all"))
    assert summary["samples"] == 6
    with pytest.raises(SourceError, match="with 2 frames"):
        gpuds.ingest([root], tmp_path / "other.zarr")


def test_mpo_is_a_multi_frame_jpeg(tmp_path: Path) -> None:
    frames = [np.full((8, 8, 3), 50, np.uint8), np.full((8, 8, 3), 200, np.uint8)]
    save_frames(tmp_path / "stereo.jpg", frames, format="MPO")
    with pytest.raises(SourceError) as info:
        ImageFolderSource(tmp_path, ReadOptions())
    assert str(info.value).startswith(
        f"{tmp_path / 'stereo.jpg'}: an MPO (a JPEG holding several pictures) with 2 frames;"
    )
    src = ImageFolderSource(tmp_path, ReadOptions(frames="all"))
    images = np.concatenate([b["images"] for b in src.blocks(4)])
    np.testing.assert_allclose(images, np.stack(frames), atol=2)  # JPEG: lossy, flat colours
