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

echo "== done: open it from Python with zarr.open_group('$DATA/raw.zarr') or gpuds.inspect()"
