#!/usr/bin/env bash
# For GPU hosts: install the GPU extra that matches the driver's CUDA into .venv, run the
# `gpu`-marked tests and `gpuds bench --quick --device cuda`, and print a one-line verdict.
# The report is left in gpu-bench.json (and gpu-bench.md) to attach to an issue.
set -uo pipefail
cd "$(dirname "$0")/.."

fail() { echo "gpu-check: FAIL ($*)"; exit 1; }

command -v nvidia-smi >/dev/null 2>&1 || fail "nvidia-smi not found: no NVIDIA driver on this host"
cuda="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\)\..*/\1/p' | head -n 1)"
case "$cuda" in
    12) extra="gpu-cu12" ;;
    13) extra="gpu-cu13" ;;
    *) fail "the driver reports CUDA '${cuda:-unknown}'; gpuds supports CUDA 12 and 13" ;;
esac

(EXTRAS="test,$extra" source scripts/_venv.sh) || fail "could not install gpuds[test,$extra]"
PATH="$(pwd)/.venv/bin:$PATH"

gpuds env --device cuda || fail "gpuds cannot use the GPU (see the line above)"

log="$(mktemp)"
python -m pytest -m gpu -q -rs -p no:cacheprovider 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
summary="$(grep -E '[0-9]+ (passed|failed)' "$log" | tail -n 1)"
skipped="$(grep -c '^SKIPPED' "$log" || true)"
rm -f "$log"
[ "$status" -eq 0 ] || fail "gpu tests: $summary"
[ "$skipped" -eq 0 ] || fail "gpu tests skipped ($skipped reasons above): the GPU is not usable"

gpuds bench --quick --device cuda --json gpu-bench.json --markdown gpu-bench.md \
    || fail "gpuds bench --quick --device cuda failed"
gpu="$(python -c 'import json; print(json.load(open("gpu-bench.json"))["environment"]["gpu"])')"
echo "gpu-check: PASS ($summary on $gpu; bench report in gpu-bench.json and gpu-bench.md)"
