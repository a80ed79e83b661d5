#!/usr/bin/env bash
# Quick start: set up .venv, build a small sample dataset from raw files end to end on the CPU,
# and show the result. Everything lands in ./quickstart-data (rerunning replaces it).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="" source scripts/_venv.sh
DATA="quickstart-data"
rm -rf "$DATA"
mkdir -p "$DATA"

echo "== 1. raw files: PNG images in class folders, a CSV, an .npy"
python scripts/make_sample.py "$DATA"

echo "== 2. gpuds ingest: images + table + array -> one Zarr v3 store"
gpuds ingest "$DATA/images" "$DATA/meta.csv" "$DATA/embeddings.npy" -o "$DATA/raw.zarr"

echo "== 3. gpuds inspect --verify"
gpuds inspect "$DATA/raw.zarr" --verify

echo "== 4. gpuds preprocess: dedupe, shuffle, split 80/10/10 by class, crop, standardize"
gpuds preprocess "$DATA/raw.zarr" -o "$DATA/prep.zarr" --config configs/image-classification.yaml

echo "== 5. gpuds inspect the result: splits, fitted statistics, history"
gpuds inspect "$DATA/prep.zarr" --verify

echo "== 6. gpuds compress: sharded Zarr v3, zstd + byte shuffle, verified with zarr-python"
gpuds compress "$DATA/prep.zarr" -o "$DATA/data.zarr"

echo "== 7. gpuds inspect: ratio and portability per field"
gpuds inspect "$DATA/data.zarr" --verify

echo "== done: open the stores from Python with zarr.open_group('$DATA/data.zarr') or gpuds.inspect()"
