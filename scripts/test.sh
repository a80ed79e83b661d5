#!/usr/bin/env bash
# Set up .venv with the test extras and run the whole suite: ruff, mypy, pytest.
# Extra arguments go to pytest (e.g. ./scripts/test.sh -k images -x).
# GPUDS_TEST_EXTRAS adds extras (CI sets gpu-cu13 to prove the fallback with CuPy installed).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="test${GPUDS_TEST_EXTRAS:+,$GPUDS_TEST_EXTRAS}"
source scripts/_venv.sh

echo "== ruff format --check" >&2
ruff format --check gpuds tests
echo "== ruff check" >&2
ruff check gpuds tests
echo "== mypy" >&2
mypy
echo "== pytest" >&2
set +e
python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests; that is a failure, not a pass" >&2
    exit 1
fi
exit "$status"
