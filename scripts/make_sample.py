"""Write a small, realistic raw dataset for the quick start (deterministic, seed 0).

    python scripts/make_sample.py OUT_DIR [--per-class N]

OUT_DIR/images/<class>/<i>.png   32x32 RGB images, one folder per class (circle, square, stripes)
OUT_DIR/meta.csv                 one row per image, in the order gpuds reads the images
                                 (class folder, then file name): brightness, size_px, source
OUT_DIR/embeddings.npy           float32 (N, 16) per-image feature vectors
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("circle", "square", "stripes")
SIZE = 32


def draw(kind: str, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    cy, cx = rng.integers(10, SIZE - 10, size=2)
    r = int(rng.integers(5, 10))
    if kind == "circle":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    elif kind == "square":
        mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
    else:
        mask = ((xx + yy) // int(rng.integers(3, 6))) % 2 == 0
    color = rng.integers(80, 256, size=3)
    img = rng.normal(30, 10, size=(SIZE, SIZE, 3))
    img[mask] = color
    return np.clip(img, 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=40)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows, feats = [], []
    for kind in CLASSES:
        folder = args.out / "images" / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(args.per_class):
            pixels = draw(kind, rng)
            name = f"{i:04d}.png"
            Image.fromarray(pixels).save(folder / name)
            rows.append(
                {
                    "file": f"{kind}/{name}",
                    "brightness": round(float(pixels.mean()) / 255, 4),
                    "size_px": int((pixels.max(axis=2) > 60).sum()),
                    "source": rng.choice(["camera_a", "camera_b", ""]),
                }
            )
            feats.append(rng.normal(pixels.mean(axis=(0, 1)).mean() / 64, 1.0, size=16))
    with open(args.out / "meta.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    np.save(args.out / "embeddings.npy", np.asarray(feats, dtype=np.float32))
    print(f"wrote {len(rows)} samples under {args.out}")


if __name__ == "__main__":
    main()
