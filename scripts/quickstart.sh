#!/usr/bin/env bash
# Quick start: set up .venv, build a small sample dataset from raw files end to end on the CPU,
# and show the result, ending with its dataset card. Everything lands in ./quickstart-data
# (rerunning replaces it).
set -euo pipefail
cd "$(dirname "$0")/.."
# The plot extra (matplotlib) draws the figures of the dataset card (step 10); the cluster extra
# (Dask) runs step 11.
EXTRAS="plot,cluster" source scripts/_venv.sh
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

echo "== 6. gpuds compress: sharded Zarr v3, zstd, byte shuffle decided per field, verified with zarr-python"
gpuds compress "$DATA/prep.zarr" -o "$DATA/data.zarr"

echo "== 7. gpuds inspect: ratio and portability per field"
gpuds inspect "$DATA/data.zarr" --verify

echo "== 8. the training loader: one shuffled epoch of the train split, batches of 32"
python - "$DATA/data.zarr" <<'PY'
import sys, time
import gpuds

train = gpuds.open(sys.argv[1])["train"]
loader = train.loader(batch_size=32, fields=["images", "labels"], seed=0, device="auto")
start, seen = time.perf_counter(), 0
for batch in loader:
    seen += len(batch["labels"])
seconds = time.perf_counter() - start
print(f"{seen} of {len(train)} samples in {len(loader)} batches of {batch['images'].shape[1:]} "
      f"{batch['images'].dtype} on {loader.backend.name}: {seen / seconds:,.0f} samples/s")
print("fitted statistics available to training:", list(train.stats))
PY

echo "== 9. gpuds bench --quick: codecs, the store and the loader on this machine, with bounds"
gpuds bench "$DATA/data.zarr" --quick

echo "== 10. gpuds report: the dataset card, one HTML file that opens offline in any browser"
gpuds report "$DATA/data.zarr" -o "$DATA/card.html" --quiet

echo "== 11. the same preprocess and compress on a local Dask cluster of 2 worker processes"
mkdir -p "$DATA/cluster"
gpuds preprocess "$DATA/raw.zarr" -o "$DATA/cluster/prep.zarr" \
    --config configs/image-classification.yaml --scheduler processes:2 --quiet
gpuds compress "$DATA/cluster/prep.zarr" -o "$DATA/cluster/data.zarr" --scheduler processes:2 --quiet
python - "$DATA/data.zarr" "$DATA/cluster/data.zarr" <<'PY'
import json, sys
from pathlib import Path

a, b = (Path(p) for p in sys.argv[1:])
objects = lambda root: {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
assert objects(a) == objects(b), "the stores hold different objects"
# Every object but the root's metadata (which records times and paths) is byte for byte equal.
differ = [k for k in objects(a) if k != "zarr.json" and (a / k).read_bytes() != (b / k).read_bytes()]
assert not differ, f"objects differ: {differ}"
info = [json.loads((p / "zarr.json").read_text())["attributes"]["gpuds"] for p in (a, b)]
assert info[0]["fingerprint"] == info[1]["fingerprint"]
print(f"identical: {len(objects(a))} objects, fingerprint {info[0]['fingerprint']}")
PY

echo "== done: train on it with examples/train_torch.py (pip install torch), or open the stores"
echo "   with zarr.open_group('$DATA/data.zarr') / gpuds.open('$DATA/data.zarr')"
echo "   dataset card: $(realpath "$DATA/card.html")"
