#!/usr/bin/env bash
# The screenshot in docs/: `metering demo`'s days as `metering report --format html`,
# rendered by headless Chromium at a laptop's size (1366 px wide).
#   bash scripts/screenshot.sh [OUTPUT.png]      (default docs/report.png)
# Needs .venv (scripts/try.sh or scripts/test.sh make it) and Debian's chromium.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$ROOT/docs/report.png}
METERING="$ROOT/.venv/bin/metering"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/metering-screenshot.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

command -v chromium >/dev/null || { echo "screenshot.sh: install chromium" >&2; exit 1; }
"$METERING" --log-format json demo --path "$WORK/demo" --days 3 --seed 1 >/dev/null 2>&1
URL="sqlite:///$WORK/demo/metering.db"
"$METERING" --database-url "$URL" report --by day --format html -o "$WORK/report.html"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$WORK/profile" --hide-scrollbars --window-size=1366,2000 \
    --screenshot="$OUT" "file://$WORK/report.html" 2>/dev/null
echo "screenshot.sh: wrote $OUT"
