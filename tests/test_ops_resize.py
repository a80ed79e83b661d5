"""resize and center_crop against independent per-pixel references."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from gpuds.errors import ConfigError
from gpuds.ops import make_op
from gpuds.ops.base import Spec
from gpuds.ops.resize import CenterCrop, Resize

from .opkit import run_op, specs_of

IMAGE = {"images": "image"}


def _images(n: int = 9, h: int = 5, w: int = 7, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def _source(d: int, n_in: int, n_out: int) -> float:
    """Half-pixel-centre source coordinate, clamped to the edge."""
    return min(max((d + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)


def _bilinear_reference(x: np.ndarray, h_out: int, w_out: int) -> np.ndarray:
    """Per-pixel loop in float64; neighbours with zero weight are left out."""
    n, h_in, w_in = x.shape[:3]
    out = np.zeros((n, h_out, w_out, *x.shape[3:]), dtype=np.float64)
    for i in range(h_out):
        sy = _source(i, h_in, h_out)
        y0 = math.floor(sy)
        for j in range(w_out):
            sx = _source(j, w_in, w_out)
            x0 = math.floor(sx)
            total = np.zeros((n, *x.shape[3:]))
            for yy, wy in ((y0, 1 - (sy - y0)), (min(y0 + 1, h_in - 1), sy - y0)):
                for xx, wx in ((x0, 1 - (sx - x0)), (min(x0 + 1, w_in - 1), sx - x0)):
                    if wy * wx > 0:
                        total = total + wy * wx * x[:, yy, xx].astype(np.float64)
            out[:, i, j] = total
    return out


def _nearest_reference(x: np.ndarray, h_out: int, w_out: int) -> np.ndarray:
    h_in, w_in = x.shape[1:3]
    out = np.empty((x.shape[0], h_out, w_out, *x.shape[3:]), dtype=x.dtype)
    for i in range(h_out):
        for j in range(w_out):
            out[:, i, j] = x[:, int((i + 0.5) * h_in / h_out), int((j + 0.5) * w_in / w_out)]
    return out


SIZES = [(3, 4), (11, 13), (5, 7), (1, 1), (10, 3)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("block", [1, 7, 9])
def test_nearest_is_exact(xp: Any, size: tuple[int, int], block: int) -> None:
    data = {"images": _images(), "labels": np.arange(9)}
    op = Resize({"op": "resize", "size": list(size), "interpolation": "nearest"})
    out, specs = run_op(op, data, block=block, kinds=IMAGE, xp=xp)
    np.testing.assert_array_equal(out["images"], _nearest_reference(data["images"], *size))
    np.testing.assert_array_equal(out["labels"], data["labels"])
    assert specs["images"] == Spec(np.dtype(np.uint8), (*size, 3), "image")
    assert specs["labels"] == specs_of(data)["labels"]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("block", [1, 7, 9])
def test_bilinear_float_matches_loop(xp: Any, size: tuple[int, int], block: int) -> None:
    images = _images().astype(np.float32) / 255
    op = Resize({"op": "resize", "fields": "images", "size": list(size)})
    out, specs = run_op(op, {"images": images}, block=block, kinds=IMAGE, xp=xp)
    assert out["images"].dtype == np.float32
    assert specs["images"].sample_shape == (*size, 3)
    np.testing.assert_allclose(
        out["images"], _bilinear_reference(images, *size), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("size", SIZES)
def test_bilinear_uint8_rounds_half_to_even(xp: Any, size: tuple[int, int]) -> None:
    images = _images()
    op = Resize({"op": "resize", "fields": "images", "size": f"{size[0]}x{size[1]}"})
    out, _ = run_op(op, {"images": images}, kinds=IMAGE, xp=xp)
    reference = _bilinear_reference(images, *size)
    assert out["images"].dtype == np.uint8
    diff = np.abs(out["images"].astype(np.int64) - np.rint(reference).astype(np.int64))
    # float32 rounding may tip a value lying at k + 0.5 to either side, never further.
    assert diff.max() <= 1
    near_half = np.abs(reference - np.floor(reference) - 0.5) < 1e-4
    assert (diff[~near_half] == 0).all()


@pytest.mark.parametrize("size", [(3, 4), (12, 17), (6, 8)])
def test_bilinear_reproduces_a_linear_ramp(xp: Any, size: tuple[int, int]) -> None:
    h_in, w_in = 6, 8
    rows, cols = np.meshgrid(np.arange(h_in), np.arange(w_in), indexing="ij")
    ramp = np.stack([3.0 * rows + 5.0 * cols + 1.0, -2.0 * rows + 0.5 * cols], axis=-1)
    images = np.stack([ramp, 2 * ramp]).astype(np.float32)
    op = Resize({"op": "resize", "fields": "images", "size": list(size)})
    out, _ = run_op(op, {"images": images}, kinds=IMAGE, xp=xp)
    sy = np.array([_source(i, h_in, size[0]) for i in range(size[0])])[:, None]
    sx = np.array([_source(j, w_in, size[1]) for j in range(size[1])])[None, :]
    expected = np.stack([3.0 * sy + 5.0 * sx + 1.0, -2.0 * sy + 0.5 * sx], axis=-1)
    np.testing.assert_allclose(out["images"], np.stack([expected, 2 * expected]), atol=1e-5)


def test_identity_and_nan_only_reach_weighted_pixels(xp: Any) -> None:
    images = np.arange(2 * 4 * 4, dtype=np.float64).reshape(2, 4, 4)
    images[0, 1, 2] = np.nan
    images[1, 3, 3] = np.inf
    same, _ = run_op(
        Resize({"op": "resize", "fields": "images", "size": [4, 4]}), {"images": images}, xp=xp
    )
    np.testing.assert_array_equal(same["images"], images)
    up, _ = run_op(
        Resize({"op": "resize", "fields": "images", "size": [8, 8]}), {"images": images}, xp=xp
    )
    reference = _bilinear_reference(images, 8, 8)
    np.testing.assert_array_equal(np.isnan(up["images"]), np.isnan(reference))
    np.testing.assert_allclose(up["images"], reference, rtol=1e-12)
    assert np.isnan(up["images"][0]).sum() == 16  # a 4x4 patch around the NaN pixel


def test_gray_images_and_bool_masks_nearest(xp: Any) -> None:
    gray = _images(c=1)[..., 0]
    mask = gray > 128
    data = {"gray": gray, "mask": mask}
    op = Resize({"op": "resize", "fields": ["gray", "mask"], "size": [3, 9]})
    with pytest.raises(ConfigError, match=r"field 'mask' has dtype bool.*use interpolation 'near"):
        op.plan(specs_of(data))
    op = Resize(
        {"op": "resize", "fields": ["gray", "mask"], "size": [3, 9], "interpolation": "nearest"}
    )
    out, specs = run_op(op, data, xp=xp)
    assert specs["gray"].sample_shape == specs["mask"].sample_shape == (3, 9)
    np.testing.assert_array_equal(out["gray"], _nearest_reference(gray, 3, 9))
    np.testing.assert_array_equal(out["mask"], _nearest_reference(mask, 3, 9))


def test_output_dtype_rounds_and_clips(xp: Any) -> None:
    values = np.array([0.5, 1.5, 2.5, -3.0, 300.2, 254.5, 7.49], dtype=np.float32)
    images = values.reshape(1, 1, 7)
    op = Resize({"op": "resize", "fields": "x", "size": [1, 7], "dtype": "uint8"})
    out, specs = run_op(op, {"x": images}, xp=xp)
    assert specs["x"].dtype == np.uint8
    assert out["x"].ravel().tolist() == [0, 2, 2, 0, 255, 254, 7]
    up = Resize({"op": "resize", "fields": "x", "size": [2, 2], "dtype": "float32"})
    out, _ = run_op(up, {"x": np.array([[[10, 20], [30, 40]]], np.uint8)}, xp=xp)
    assert out["x"].dtype == np.float32
    np.testing.assert_array_equal(out["x"], [[[10, 20], [30, 40]]])
    narrow = Resize({"op": "resize", "fields": "x", "size": [1, 3], "dtype": "int8"})
    wide = np.array([[[-1000, 5, 1000]]], dtype=np.int16)
    out, _ = run_op(narrow, {"x": wide}, xp=xp)
    assert out["x"].tolist() == [[[-128, 5, 127]]]
    out, _ = run_op(
        Resize(
            {
                "op": "resize",
                "fields": "x",
                "size": [1, 3],
                "interpolation": "nearest",
                "dtype": "uint8",
            }
        ),
        {"x": wide},
        xp=xp,
    )
    assert out["x"].tolist() == [[[0, 5, 255]]]


def test_wide_integers_compute_in_float64(xp: Any) -> None:
    rows, cols = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    images = (2**40 + 2 * rows + 2 * cols)[None].astype(np.int64)
    op = Resize({"op": "resize", "fields": "x", "size": [2, 2]})
    out, _ = run_op(op, {"x": images}, xp=xp)
    # Samples at 0.5 and 2.5: exact integers that float32 (24-bit mantissa) could not hold.
    assert out["x"].tolist() == [[[2**40 + 2, 2**40 + 6], [2**40 + 6, 2**40 + 10]]]


def test_to_dict_round_trip() -> None:
    images = _images()
    config = {"op": "resize", "fields": ["images"], "size": "4x6", "interpolation": "bilinear"}
    op = make_op(config, "test")
    again = Resize(op.to_dict())
    assert op.to_dict() == again.to_dict() == config
    a, _ = run_op(op, {"images": images}, kinds=IMAGE)
    b, _ = run_op(again, {"images": images}, kinds=IMAGE)
    c, _ = run_op(Resize({"op": "resize", "size": [4, 6]}), {"images": images}, kinds=IMAGE)
    np.testing.assert_array_equal(a["images"], b["images"])
    np.testing.assert_array_equal(a["images"], c["images"])


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({}, r"op 'resize': missing key 'size'"),
        ({"size": "224"}, r"op 'resize': expected 'size' to be \[height, width\] or \"HxW\""),
        ({"size": [0, 3]}, r"expected 'size'.*got \[0, 3\]"),
        ({"size": [2.5, 3]}, r"expected 'size'"),
        ({"size": [True, 3]}, r"expected 'size'"),
        ({"size": "axb"}, r"expected 'size'"),
        ({"size": [2, 2], "interpolation": "cubic"}, r"'interpolation' to be one of bilinear, ne"),
        ({"size": [2, 2], "dtype": "bool"}, r"'dtype' to be an integer or float dtype.*'bool'"),
        ({"size": [2, 2], "dtype": "complex64"}, r"'dtype' to be an integer or float"),
        ({"size": [2, 2], "dtype": "nonsense"}, r"'dtype' to be an integer or float"),
        ({"size": [2, 2], "dtype": 5}, r"'dtype' to be an integer or float"),
        ({"size": [2, 2], "mode": "x"}, r"unknown key\(s\) mode; valid: fields, size, interp"),
    ],
)
def test_resize_bad_config(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Resize({"op": "resize", **config})


def test_resize_bad_fields() -> None:
    data = {"images": _images(), "labels": np.arange(9), "c": np.zeros((9, 2, 2), np.complex64)}
    specs = specs_of(data, IMAGE)
    with pytest.raises(ConfigError, match=r"field 'labels' has per-sample shape \(\), not an im"):
        Resize({"op": "resize", "fields": "labels", "size": [2, 2]}).plan(specs)
    with pytest.raises(ConfigError, match=r"no field\(s\) 'nope' at this point"):
        Resize({"op": "resize", "fields": "nope", "size": [2, 2]}).plan(specs)
    with pytest.raises(ConfigError, match=r"field 'c' has dtype complex64"):
        Resize({"op": "resize", "fields": "c", "size": [2, 2]}).plan(specs)
    with pytest.raises(ConfigError, match=r"no field of kind 'image'.*name the fields"):
        CenterCrop({"op": "center_crop", "size": [2, 2]}).plan(specs_of(data))


@pytest.mark.parametrize(("h", "w"), [(5, 7), (2, 3), (4, 4), (1, 6), (5, 1)])
@pytest.mark.parametrize("block", [1, 7, 9])
def test_center_crop_is_exact(xp: Any, h: int, w: int, block: int) -> None:
    data = {"images": _images(), "gray": _images(c=1)[..., 0], "labels": np.arange(9)}
    op = CenterCrop({"op": "center_crop", "fields": ["images", "gray"], "size": [h, w]})
    out, specs = run_op(op, data, block=block, kinds=IMAGE, xp=xp)
    top, left = (5 - h) // 2, (7 - w) // 2
    for name in ("images", "gray"):
        expected = data[name][:, top : top + h, left : left + w]
        np.testing.assert_array_equal(out[name], expected)
        assert specs[name].sample_shape == expected.shape[1:]
        assert specs[name].dtype == np.uint8
    np.testing.assert_array_equal(out["labels"], data["labels"])


def test_center_crop_odd_margin_cuts_bottom_right() -> None:
    x = np.arange(16).reshape(1, 4, 4)
    out, _ = run_op(
        CenterCrop({"op": "center_crop", "size": "1x1"}), {"x": x}, kinds={"x": "image"}
    )
    assert out["x"].tolist() == [[[5]]]


def test_center_crop_round_trip_and_bad_config() -> None:
    op = make_op({"op": "center_crop", "size": [2, 3]}, "test")
    assert CenterCrop(op.to_dict()).to_dict() == {"op": "center_crop", "size": [2, 3]}
    with pytest.raises(ConfigError, match=r"op 'center_crop': missing key 'size'"):
        CenterCrop({"op": "center_crop"})
    with pytest.raises(ConfigError, match=r"op 'center_crop': expected 'size'"):
        CenterCrop({"op": "center_crop", "size": [2, 3, 4]})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) interpolation; valid: fields, size"):
        CenterCrop({"op": "center_crop", "size": [2, 3], "interpolation": "nearest"})
    specs = specs_of({"images": _images()}, IMAGE)
    with pytest.raises(
        ConfigError, match=r"crop 6x3 is larger than field 'images' \(5x7\); choose a size at most"
    ):
        CenterCrop({"op": "center_crop", "size": [6, 3]}).plan(specs)
    with pytest.raises(ConfigError, match=r"crop 5x8 is larger"):
        CenterCrop({"op": "center_crop", "size": [5, 8]}).plan(specs)
