#!/usr/bin/env bash
# The GPU checklist. On any host, first: the surface checks (gpuds' CuPy and nvCOMP calls read
# from its source and checked against the installed packages: tests/test_surface_*.py), one line
# each. On a GPU host, then: one PASS/FAIL line per assumption the docs list as unverified
# without a GPU (scripts/gpu_checks.py), the `gpu`-marked tests, `gpuds bench --quick --device
# cuda`, and a one-line verdict; the bench report is left in gpu-bench.json (and gpu-bench.md).
# On a GPU host it installs the GPU extra matching the driver's CUDA into .venv first. Without a
# GPU it installs nothing, says so and exits 0 once the surface checks pass (1 if one fails).
set -uo pipefail
cd "$(dirname "$0")/.."

verdict() { echo "gpu-check: $*"; }

no_gpu=""
if ! command -v nvidia-smi >/dev/null 2>&1; then
    no_gpu="nvidia-smi not found: no NVIDIA driver on this host"
else
    cuda="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\)\..*/\1/p' | head -n 1)"
    case "$cuda" in
        12) extra="gpu-cu12" ;;
        13) extra="gpu-cu13" ;;
        *) verdict "FAIL (the driver reports CUDA '${cuda:-unknown}'; gpuds supports CUDA 12 and 13)"
           exit 1 ;;
    esac
    (EXTRAS="test,$extra" source scripts/_venv.sh) || {
        verdict "FAIL (could not install gpuds[test,$extra])"; exit 1; }
fi
if [ ! -x .venv/bin/python ]; then
    verdict "FAIL (no .venv here: run ./scripts/test.sh first, with GPUDS_TEST_EXTRAS=gpu-cu13)"
    exit 1
fi
PATH="$(pwd)/.venv/bin:$PATH"

echo "== surface: gpuds' CuPy and nvCOMP calls against the installed packages"
log="$(mktemp)"
python -m pytest -q -rA -p no:cacheprovider tests/test_surface_*.py >"$log" 2>&1
surface_status=$?
sed -n -E 's/^PASSED tests\/(test_surface_[a-z_]+)\.py::(test_)?/PASS  /p;
           s/^FAILED tests\/(test_surface_[a-z_]+)\.py::(test_)?/FAIL  /p;
           s/^ERROR tests\/(.*)/FAIL  \1/p;
           s/^SKIPPED \[[0-9]+\] tests\/(test_surface_[a-z_]+)\.py(:[0-9]+)?: /SKIP  \1: /p' "$log"
surface="$(grep -E '[0-9]+ (passed|failed|skipped|error)' "$log" | tail -n 1 | sed 's/^=* *//; s/ *=*$//')"
if [ "$surface_status" -ne 0 ]; then
    sed -n '/^=* FAILURES =*$/,/^=* short test summary/p' "$log"
fi
rm -f "$log"
surface_ok=$([ "$surface_status" -eq 0 ] && echo 1 || echo 0)

if [ -n "$no_gpu" ]; then
    if [ "$surface_ok" -eq 1 ]; then
        verdict "no GPU on this host ($no_gpu): surface checks PASS ($surface); the checklist," \
            "the gpu tests and the bench need a GPU host"
        exit 0
    fi
    verdict "FAIL (surface checks: $surface; no GPU on this host, so nothing else ran)"
    exit 1
fi

gpuds env --device cuda || { verdict "FAIL (gpuds cannot use the GPU: see the line above)"; exit 1; }

echo "== checklist: what the docs list as unverified without a GPU (scripts/gpu_checks.py)"
log="$(mktemp)"
python scripts/gpu_checks.py 2>&1 | tee "$log"
checks_status=${PIPESTATUS[0]}
checks="$(grep '^gpu_checks: ' "$log" | tail -n 1 | sed 's/^gpu_checks: //')"
rm -f "$log"

echo "== the gpu-marked tests"
log="$(mktemp)"
python -m pytest -m gpu -q -rs -p no:cacheprovider 2>&1 | tee "$log"
tests_status=${PIPESTATUS[0]}
tests="$(grep -E '[0-9]+ (passed|failed|errors?)' "$log" | tail -n 1 | sed 's/^=* *//; s/ *=*$//')"
skipped="$(grep -c '^SKIPPED' "$log" || true)"
rm -f "$log"

echo "== quick bench"
gpuds bench --quick --device cuda --json gpu-bench.json --markdown gpu-bench.md
bench_status=$?
gpu="$(python -c 'import json; print(json.load(open("gpu-bench.json"))["environment"]["gpu"])' \
    2>/dev/null || echo "the GPU")"

failed=()
[ "$surface_ok" -eq 1 ] || failed+=("surface: $surface")
[ "$checks_status" -eq 0 ] || failed+=("checklist: $checks")
[ "$tests_status" -eq 0 ] || failed+=("gpu tests: $tests")
[ "$skipped" -eq 0 ] || failed+=("gpu tests skipped ($skipped reasons above): the GPU is not usable")
[ "$bench_status" -eq 0 ] || failed+=("gpuds bench --quick --device cuda failed")
if [ "${#failed[@]}" -gt 0 ]; then
    joined=""
    for f in "${failed[@]}"; do joined="${joined:+$joined; }$f"; done
    verdict "FAIL ($joined)"
    exit 1
fi
verdict "PASS (surface $surface; checklist $checks; gpu tests $tests; on $gpu;" \
    "bench report in gpu-bench.json and gpu-bench.md)"
