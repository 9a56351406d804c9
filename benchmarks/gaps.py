"""Benchmark: interleaved ids (a Galera cluster's auto_increment_increment) against
dense ids on one MariaDB: event_gaps rows and `metering run` time.

    python benchmarks/gaps.py --events 1M                    # increments 1 and 3
    python benchmarks/gaps.py --events 100k --increments 1,3,5 --burst 500

For each increment k a fresh database (bench_<stamp>_gaps_k<k> on the server of
--db/$METERING_TEST_MYSQL_URL, dropped unless --keep) gets a day of light history
(billed), then two busy hours of N events each (generate.py's measured hour), one
after the other, with the ids a k-node cluster gives: bursts of --burst rows (an
ingest batch) from random nodes, each id the next of its node's offset above the
highest (k = 1: one server). After each hour `metering run` bills it, timed as a
subprocess (after run.py's limit query, warm, on the hour's ids); the second run
also re-reads the gaps the first left. The gap rows
and the ids they hold are counted after each run.
Results: a table on stdout and benchmarks/results/gaps-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import generate  # noqa: E402
import run as bench  # noqa: E402
from generate import HOUR, World  # noqa: E402


def cluster_ids(n: int, first_free: int, k: int, burst: int, rng: random.Random) -> list[int]:
    """n ascending ids above first_free - 1 as a k-node cluster hands them out."""
    ids: list[int] = []
    top = first_free - 1
    while len(ids) < n:
        node = rng.randrange(1, k + 1)
        start = top + 1 + (node - top - 1) % k
        count = min(burst, n - len(ids))
        ids.extend(range(start, start + k * count, k))
        top = ids[-1]
    return ids


def gap_counts(target: bench.Target) -> tuple[int, int]:
    """Rows and the ids they hold (metering/core/gaps.py's size, in SQL)."""
    rows, ids = target.query(
        "SELECT COUNT(*), COALESCE(SUM((id_to - id_from) DIV step * width"
        " + LEAST(MOD(id_to - id_from, step) + 1, width)), 0) FROM event_gaps"
    )[0]
    return int(rows), int(ids)


def measure(args: argparse.Namespace, url: str, stamp: str, k: int) -> dict[str, Any]:
    target = bench.Target(url, f"{stamp.lower()}_gaps_k{k}", args.keep)
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-gaps-k{k}-"))
    try:
        harness = bench.Harness(args, target, workdir, 1)
        harness.upgrade()
        world = World(seed=args.seed)
        start = int(bench.HISTORY_START.timestamp()) * 1000
        harness.history(world, start, 1)
        rng = random.Random(args.seed)
        hours: list[dict[str, Any]] = []
        hour = start + 24 * HOUR
        for label in ("first", "second (re-reads the first's gaps)"):
            rows = world.measured_hour(hour, args.events)
            top = int(target.query("SELECT COALESCE(MAX(id), 0) FROM usage_events")[0][0])
            ids = cluster_ids(len(rows), top + 1, k, args.burst, rng)
            generate.load_mariadb(target.conn, rows, ids)
            del rows
            gaps_before = gap_counts(target)
            # run.py's limit query, warm: the first read after a bulk load pays for
            # InnoDB's background work on it (2-3x), which would drown what is measured.
            limit = harness.limit(ids[0], ids[-1], args.events)
            seconds, rss, _ = harness.bill(hour + HOUR + bench.GRACE_MARGIN_MS)
            gap_rows, gap_ids = gap_counts(target)
            internal = target.query(
                "SELECT duration_ms, events_read FROM runs ORDER BY started_at DESC LIMIT 1"
            )[0]
            hours.append(
                {
                    "hour": label,
                    "ids": [ids[0], ids[-1]],
                    "gap_rows_before": gaps_before[0],
                    "limit_s": limit.seconds,
                    "run_s": seconds,
                    "run_internal_s": int(internal[0]) / 1000,
                    "events_read": int(internal[1]),
                    "peak_rss_mb": rss,
                    "gap_rows": gap_rows,
                    "gap_ids": gap_ids,
                }
            )
            print(f"  k={k} {label}: {hours[-1]}", file=sys.stderr, flush=True)
            hour += HOUR
        return {"increment": k, "events_per_hour": args.events, "burst": args.burst, "hours": hours}
    finally:
        target.close()


def table(cells: list[dict[str, Any]]) -> str:
    header = (
        f"{'k':>2} {'hour':<36} {'limit s':>7} {'run s':>7} {'in-proc':>7} {'vs k=1':>7} "
        f"{'gap rows':>9} {'gap ids':>10}"
    )
    lines = [header, "-" * len(header)]
    base = {h["hour"]: h["run_s"] for c in cells if c["increment"] == 1 for h in c["hours"]}
    for cell in cells:
        for h in cell["hours"]:
            ratio = h["run_s"] / base[h["hour"]] if h["hour"] in base else None
            lines.append(
                f"{cell['increment']:>2} {h['hour']:<36} {h['limit_s']:>7.2f} {h['run_s']:>7.2f} "
                f"{h['run_internal_s']:>7.2f} "
                f"{bench.fmt(ratio, '.2f'):>7} {h['gap_rows']:>9} {h['gap_ids']:>10}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default=None, help="MariaDB server URL")
    parser.add_argument("--events", default="1M", help="events per hour (e.g. 100k, 1M)")
    parser.add_argument("--increments", default="1,3", help="cluster sizes, comma separated")
    parser.add_argument("--burst", type=int, default=2000, help="rows a node inserts at once")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the bench databases")
    parser.add_argument("--out", default=str(HERE / "results"), help="results directory")
    args = parser.parse_args(argv)
    args.events = bench.parse_size(args.events)
    args.history_step_days = 7
    url = args.db or os.environ.get("METERING_TEST_MYSQL_URL")
    if not url or url.startswith("sqlite"):
        parser.error("a MariaDB server URL is needed (--db or METERING_TEST_MYSQL_URL)")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    cells = [measure(args, url, stamp, int(k)) for k in args.increments.split(",")]
    report = {"timestamp": stamp, "command": sys.argv, "machine": bench.machine(), "cells": cells}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gaps-{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(table(cells))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
