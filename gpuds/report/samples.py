"""The samples a dataset card shows: a seeded choice per class, images made viewable again, and
the first rows of the other fields as text.

The choice streams through the label field's chunks (the same chunks the statistics read) and
keeps, per class, the samples with the smallest keys of a random stream seeded by the seed and
the chunk's index: the same seed gives the same samples, in bounded memory, however large the
split. Image values go back to what the pixels were before preprocessing by undoing the fitted
``standardize`` and ``normalize`` ops the store records (:func:`display_steps`), in reverse.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpuds.chunks import FieldChunks
from gpuds.progress import check_cancelled

__all__ = [
    "THUMB_PX",
    "DisplayStep",
    "cell_text",
    "display_steps",
    "pick_samples",
    "read_samples",
    "row_png",
    "to_pixels",
]

THUMB_PX = 96
"""The longest side of a shown image, in pixels (small images are enlarged by a whole factor,
pixels kept sharp; large ones reduced)."""
INVERTIBLE = ("standardize", "normalize")


@dataclass(frozen=True)
class DisplayStep:
    """A fitted op on a field, recorded in the store, that the card undoes to show it."""

    op: str
    index: int
    fitted: dict[str, Any]
    config: dict[str, Any]

    def undo(self, x: np.ndarray) -> np.ndarray:
        """``x`` (float64, channels last) as it was before this op."""
        if self.op == "standardize":
            from gpuds.ops.standardize import DEFAULT_EPS

            mean = np.asarray(self.fitted["mean"], dtype=np.float64)
            std = np.asarray(self.fitted["std"], dtype=np.float64)
            eps = float(self.config.get("eps", DEFAULT_EPS))
            # As the op applied it: a constant channel was only centred.
            scale = np.where(std > eps * np.abs(mean), std, 1.0)
            return x * scale + mean
        lo = np.asarray(self.fitted["min"], dtype=np.float64)
        span = np.asarray(self.fitted["max"], dtype=np.float64) - lo
        low, high = (float(v) for v in self.fitted.get("range", [0, 1]))
        return lo + (x - low) * span / (high - low)

    def describe(self) -> str:
        per = " per channel" if self.fitted.get("per") == "channel" else ""
        stats = "mean and std" if self.op == "standardize" else "min and max"
        return f"{self.op} (op {self.index}) undone with its fitted {stats}{per}"


def display_steps(info: Mapping[str, Any], field: str) -> list[DisplayStep]:
    """The fitted ``standardize`` and ``normalize`` ops of ``field`` the store records, in the
    order they ran (their settings from the last ``preprocess`` of the history)."""
    configs: list[dict[str, Any]] = []
    for entry in info.get("history") or []:
        if entry.get("stage") == "preprocess":
            configs = list((entry.get("settings") or {}).get("ops") or [])
    steps = []
    for entry in (info.get("stats") or {}).get("ops") or []:
        fitted = (entry.get("stats") or {}).get(field)
        if entry.get("op") not in INVERTIBLE or not isinstance(fitted, dict):
            continue
        index = int(entry.get("index", -1))
        config = configs[index] if 0 <= index < len(configs) else {}
        steps.append(DisplayStep(str(entry["op"]), index, fitted, dict(config)))
    return steps


def pick_samples(
    labels: FieldChunks | None,
    chunks: Sequence[int],
    length: int,
    groups: int,
    per_group: int,
    seed: int,
) -> dict[int, list[int]]:
    """Up to ``per_group`` sample indices per class ``0..groups-1`` (from the label field's
    ``chunks``), or, without labels, ``per_group * groups`` indices of a split of ``length``
    samples under the key 0; sorted, the same for the same seed.

    Examples
    --------
    >>> picked = pick_samples(None, [], 100, 2, 4, seed=0)
    >>> len(picked[0]), picked == pick_samples(None, [], 100, 2, 4, seed=0)
    (8, True)
    """
    if labels is None:
        rng = np.random.default_rng([seed, 0])
        count = min(length, per_group * groups)
        return {0: sorted(int(i) for i in rng.choice(length, size=count, replace=False))}
    best_key = np.empty(0, dtype=np.float64)
    best_index = np.empty(0, dtype=np.int64)
    best_class = np.empty(0, dtype=np.int64)
    for chunk in chunks:
        check_cancelled()
        rows = min(labels.chunk, labels.length - chunk * labels.chunk)
        values = labels.read(chunk)[:rows].astype(np.int64)
        keys = np.random.default_rng([seed, chunk]).random(rows)
        keep = (values >= 0) & (values < groups)
        best_key = np.concatenate([best_key, keys[keep]])
        best_index = np.concatenate([best_index, chunk * labels.chunk + np.flatnonzero(keep)])
        best_class = np.concatenate([best_class, values[keep]])
        order = np.lexsort((best_key, best_class))
        best_key, best_index, best_class = best_key[order], best_index[order], best_class[order]
        # Rank within its class: keep the `per_group` smallest keys of each.
        starts = np.searchsorted(best_class, best_class, side="left")
        rank = np.arange(len(best_class)) - starts
        mask = rank < per_group
        best_key, best_index, best_class = best_key[mask], best_index[mask], best_class[mask]
    return {
        group: sorted(int(i) for i in best_index[best_class == group]) for group in range(groups)
    }


def read_samples(reader: FieldChunks, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """Samples ``indices`` of a field, each chunk holding some decoded once."""
    by_chunk: dict[int, list[int]] = {}
    for i in sorted(set(indices)):
        by_chunk.setdefault(i // reader.chunk, []).append(i)
    out = {}
    for chunk, members in by_chunk.items():
        check_cancelled()
        values = reader.read(chunk)
        for i in members:
            out[i] = values[i - chunk * reader.chunk].copy()
    return out


def to_pixels(
    samples: Sequence[np.ndarray], steps: Sequence[DisplayStep]
) -> tuple[list[np.ndarray], str]:
    """Images ``(H, W, C)`` as uint8 pixels, and how their values were mapped: the recorded ops
    undone (``steps``), then shown as 0-255 when they lie there (as ingested images do), as
    0-1 scaled to 0-255 when they lie there, or else stretched over the shown samples' range."""
    if not samples:
        return [], "no samples"
    x = np.stack([np.asarray(s, dtype=np.float64) for s in samples])
    how = [step.describe() for step in reversed(steps)]
    for step in reversed(steps):
        x = step.undo(x)
    finite = x[np.isfinite(x)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo >= -0.5 and hi <= 255.5 and (hi > 1.0 or samples[0].dtype.kind in "iub"):
        how.append("shown as 0-255")
    elif lo >= 0.0 and hi <= 1.0:
        x = x * 255.0
        how.append("0-1 shown as 0-255")
    else:
        x = (x - lo) * (255.0 / (hi - lo)) if hi > lo else x - lo
        how.append(f"stretched: {lo:.4g}..{hi:.4g} shown as 0-255")
    pixels = np.clip(np.nan_to_num(x, nan=0.0), 0, 255).round().astype(np.uint8)
    return list(pixels), "; ".join(how)


def _image(pixels: np.ndarray) -> Any:
    from PIL import Image

    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[-1]
    if channels == 3:
        image = Image.fromarray(pixels, "RGB")
    elif channels == 4:
        image = Image.fromarray(pixels, "RGBA").convert("RGB")
    else:  # one channel, or a count no picture has: the first channel in grey
        image = Image.fromarray(np.ascontiguousarray(pixels[..., 0]), "L").convert("RGB")
    side = max(image.size)
    if side * 2 <= THUMB_PX:
        factor = THUMB_PX // side
        return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    if side > THUMB_PX:
        scale = THUMB_PX / side
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image.resize(size, Image.Resampling.LANCZOS)
    return image


def row_png(pixels: Sequence[np.ndarray], gap: int = 4) -> bytes:
    """One row of images, ``gap`` white pixels apart, as PNG bytes."""
    from PIL import Image

    tiles = [_image(p) for p in pixels]
    width = sum(t.width for t in tiles) + gap * (len(tiles) - 1)
    height = max(t.height for t in tiles)
    row = Image.new("RGB", (max(1, width), height), "white")
    x = 0
    for tile in tiles:
        row.paste(tile, (x, (height - tile.height) // 2))
        x += tile.width + gap
    buffer = io.BytesIO()
    row.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def cell_text(value: Any, kind: str, attrs: Mapping[str, Any]) -> tuple[str, bool]:
    """A sample's value of a non-image field as the card writes it, and whether it is missing.

    Examples
    --------
    >>> cell_text(np.int32(1), "category", {"vocabulary": ["a", "b"], "missing_code": -1})
    ('b', False)
    >>> cell_text(np.float64("nan"), "numeric", {})
    ('missing (NaN)', True)
    >>> cell_text(np.arange(6, dtype=np.float32), "array", {})
    ('[0, 1, 2, … 6 values]', False)
    """
    arr = np.asarray(value)
    if arr.ndim:
        flat = arr.reshape(-1)
        shown = ", ".join(_number(v) for v in flat[:3])
        return (f"[{shown}]" if flat.size <= 3 else f"[{shown}, … {flat.size} values]"), False
    if kind == "label":
        classes = attrs.get("classes") or []
        k = int(arr)
        return (f"{classes[k]} ({k})" if 0 <= k < len(classes) else f"{k} (no such class)"), False
    if kind == "category":
        code, vocabulary = int(arr), attrs.get("vocabulary") or []
        if code == int(attrs.get("missing_code", -1)):
            return "missing", True
        return (str(vocabulary[code]) if 0 <= code < len(vocabulary) else str(code)), False
    if kind == "mask":
        return ("missing" if bool(arr) else ""), False
    unit = attrs.get("unit")
    if unit in ("ns", "days") and arr.dtype.kind in "iu":
        return str(np.datetime64(int(arr), "D" if unit == "days" else "ns")), False
    if arr.dtype.kind == "f" and math.isnan(float(arr)):
        return "missing (NaN)", True
    return _number(arr), False


def _number(value: Any) -> str:
    value = np.asarray(value)
    if value.dtype.kind == "b":
        return "true" if bool(value) else "false"
    if value.dtype.kind == "f":
        return f"{float(value):.4g}"
    return str(value.item())
