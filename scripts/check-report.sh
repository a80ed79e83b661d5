#!/usr/bin/env bash
# A dataset card in a real browser: headless Chromium renders it to a full-page screenshot, and
# the check fails if the page logs anything to the browser console or renders blank.
#
#   scripts/check-report.sh [CARD.html [SCREENSHOT.png]]
#
# Without CARD it runs the quick start (scripts/quickstart.sh), which ends by writing
# quickstart-data/card.html, and checks that card. The screenshot goes next to the card
# (card.png) unless SCREENSHOT is given. Needs Chromium (Debian: apt-get install -y chromium):
# exits 2 without it, 1 when the page is broken, 0 with one line "check-report: PASS (...)".
set -euo pipefail
cd "$(dirname "$0")/.."

browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [ -z "$browser" ]; then
    echo "check-report: no Chromium found (Debian: apt-get install -y chromium)" >&2
    exit 2
fi

card="${1:-}"
if [ -z "$card" ]; then
    log="$(mktemp)"
    echo "check-report: running the quick start (log in $log)" >&2
    if ! bash scripts/quickstart.sh >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "check-report: FAIL (the quick start failed; log in $log)"
        exit 1
    fi
    card="quickstart-data/card.html"
fi
if [ ! -f "$card" ]; then
    echo "check-report: FAIL (no card at $card)"
    exit 1
fi
shot="${2:-${card%.html}.png}"
python="${PYTHON:-.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
url="file://$(realpath "$card")"

# No DevTools: the page is rendered in a window taller than it, and the blank rows below it are
# cut off afterwards; a page that fills the window is rendered again in a taller one. With
# --enable-logging=stderr every console message (an error, a warning, a failed load) is logged
# as "CONSOLE"; the card has no script, so any such line means the browser objected to it.
for height in 16000 32000 64000; do
    rm -rf "$work/profile" "$work/page.png"
    if ! timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-quic \
        --no-first-run --disable-background-networking --disable-component-update \
        --disable-sync --user-data-dir="$work/profile" --enable-logging=stderr --v=0 \
        --hide-scrollbars --window-size="1280,$height" --screenshot="$work/page.png" \
        "$url" 2>"$work/chromium.log" || [ ! -s "$work/page.png" ]; then
        tail -n 20 "$work/chromium.log" >&2
        echo "check-report: FAIL (Chromium did not render $card)"
        exit 1
    fi
    if grep -E "CONSOLE|Uncaught" "$work/chromium.log" >&2; then
        echo "check-report: FAIL ($card: the browser console logged the messages above)"
        exit 1
    fi
    # Prints the page's height, "tall" when the page reaches the window's bottom, or the
    # reason it is blank (exit 1).
    if ! verdict="$("$python" - "$work/page.png" "$shot" <<'PY'
import sys

import numpy as np
from PIL import Image

with Image.open(sys.argv[1]) as image:
    pixels = np.asarray(image.convert("RGB"))
background = pixels[-1, -1]
rows = np.flatnonzero((pixels != background).any(axis=(1, 2)))
if rows.size == 0:
    print("blank: a single colour")
    sys.exit(1)
if rows[-1] >= len(pixels) - 1:
    print("tall")
    sys.exit(0)
page = pixels[: rows[-1] + 24]
colours = len(np.unique(page.reshape(-1, 3), axis=0))
drawn = float((page != background).any(axis=2).mean())
if page.shape[0] < 600 or colours < 16 or drawn < 0.02:
    print(f"blank: {page.shape[0]} px high, {colours} colours, {drawn:.1%} drawn")
    sys.exit(1)
Image.fromarray(page).save(sys.argv[2])
print(f"{page.shape[1]}x{page.shape[0]} px, {colours} colours, {drawn:.0%} of it drawn")
PY
)"; then
        echo "check-report: FAIL ($card renders $verdict)"
        exit 1
    fi
    if [ "$verdict" != "tall" ]; then
        echo "check-report: PASS ($card: no console message; full-page screenshot $verdict in $shot)"
        exit 0
    fi
done
echo "check-report: FAIL ($card is taller than 64000 px)"
exit 1
