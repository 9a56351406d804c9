#!/usr/bin/env bash
# First set-up command: install metering into a virtualenv, bill the shipped sample
# day (2016-12-12, four accounts) on embedded SQLite, and print the usage billed.
#
#   bash scripts/try.sh
#
# Needs Python >= 3.11; on Debian as root it installs python3-venv when missing.
# VENV=path picks the virtualenv (created if missing; default .venv). Every run
# works in a new temporary directory, printed at the start, so runs never mix.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "== installing python3-venv (apt-get)"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        else
            echo "python3-venv is missing: sudo apt-get install python3-venv" >&2
            exit 1
        fi
    fi
    echo "== creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import sys; assert sys.version_info >= (3, 11), "metering needs Python >= 3.11"'
echo "== pip install -e . (into $VENV)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e .

WORK=$(mktemp -d -t metering-try-XXXXXX)
export METERING_DATABASE_URL="sqlite:///$WORK/metering.db"
export METERING_LOCK_FILE="$WORK/metering.lock"
metering() { "$VENV/bin/metering" "$@"; }

echo "== embedded SQLite database: $WORK/metering.db"
metering db upgrade
echo "== metering ingest metering/sample_data/day.jsonl"
metering ingest metering/sample_data/day.jsonl
# The day ends at 2016-12-13T00:00Z; an hour later (30 minutes grace) it is all closed.
echo "== metering run --now 2016-12-13T01:00:00Z  (the hourly job, as cron runs it)"
metering run --now 2016-12-13T01:00:00Z
echo "== usage billed (metering report --group resource)"
metering report --group resource
cat <<MSG

== next
  export METERING_DATABASE_URL=$METERING_DATABASE_URL
  $VENV/bin/metering report --account blue-lab --group resource --by hour
  $VENV/bin/metering status
  $VENV/bin/metering rejected
  $VENV/bin/metering demo        # three days, replayed hour by hour, with corrections
MSG
