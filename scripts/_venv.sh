# Shared by the scripts: create or reuse .venv and install gpuds from pyproject.toml with EXTRAS.
# Usage: EXTRAS="test" source scripts/_venv.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GPUDS_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: gpuds needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
spec="$ROOT"
if [ -n "${EXTRAS:-}" ]; then spec="$ROOT[$EXTRAS]"; fi
# Re-install only when pyproject.toml changed since the last install into this venv.
stamp="$VENV/.gpuds-install-${EXTRAS:-base}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "installing gpuds${EXTRAS:+[$EXTRAS]} into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec" >&2
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
