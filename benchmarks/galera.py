"""Benchmark: one hour of N events on a 3-node Galera cluster next to a single MariaDB.

    bash scripts/galera.sh start /tmp/gal && source /tmp/gal/env
    bash scripts/mariadb.sh start /tmp/mdb && source /tmp/mdb/env
    python benchmarks/galera.py                  # N = 1M
    python benchmarks/galera.py --events 50k     # quick

The events (generate.py's measured hour, after one billed history hour) are inserted
as producers would: multi-row INSERTs without ids, here by one thread per node, so on
the cluster the ids interleave (node k of 3 hands out k, k+3, ...) and the ids no node
used are gaps to metering; on the single server they are dense. Then `metering run`
(as cron starts it, through node 1 on the cluster: one node for runs) bills the hour.
Printed and written to benchmarks/results/galera-<timestamp>.json, per target: ingest
wall time, `metering run` wall time and peak RSS, the rows in event_gaps after the
run, and what the run read and wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import generate  # noqa: E402
from generate import COLUMNS, HOUR, World  # noqa: E402
from run import Target, child_env, iso, machine, parse_size, spawn  # noqa: E402

START = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp()) * 1000
GRACE_MARGIN_MS = 31 * 60_000  # --now = hour end + 31 min: the hour is just closed
# ingested_at is a parameter, not NOW(3): pymysql's executemany joins the rows into
# multi-row INSERTs only when VALUES holds placeholders alone; with NOW(3) it sent one
# INSERT per row (up to galera-20261201T181820Z.json), which on a cluster interleaves
# ids row by row (see --single-row).
INSERT_SQL = (
    f"INSERT INTO usage_events ({', '.join(COLUMNS)}, ingested_at) "
    f"VALUES ({', '.join(['%s'] * (len(COLUMNS) + 1))})"
)


def connect(url: str) -> Any:
    import pymysql
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return pymysql.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 3306,
        user=u.username,
        password=u.password or "",
        database=u.database,
        charset="utf8mb4",
        init_command="SET time_zone = '+00:00'",
        autocommit=False,
    )


def ingest(
    urls: Sequence[str], rows: Sequence[generate.Row], batch: int, single_row: bool = False
) -> float:
    """Rows in batches of `batch`, batch i through urls[i % len(urls)], one thread per
    URL (each its own producer), a transaction per batch: multi-row INSERTs (pymysql
    cuts a batch into statements of up to 1 MB), or with single_row one INSERT per row;
    wall seconds."""
    shares: list[list[Sequence[generate.Row]]] = [[] for _ in urls]
    for i, first in enumerate(range(0, len(rows), batch)):
        shares[i % len(urls)].append(rows[first : first + batch])
    errors: list[BaseException] = []

    def produce(url: str, batches: list[Sequence[generate.Row]]) -> None:
        try:
            conn = connect(url)
            try:
                with conn.cursor() as cur:
                    for chunk in batches:
                        now = datetime.now(UTC).replace(tzinfo=None)
                        values = [(*row, now) for row in chunk]
                        if single_row:
                            for one in values:
                                cur.execute(INSERT_SQL, one)
                        else:
                            cur.executemany(INSERT_SQL, values)
                        conn.commit()
            finally:
                conn.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=produce, args=(url, share))
        for url, share in zip(urls, shares, strict=True)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.monotonic() - started


def bill(url: str, now_ms: int, lock: Path) -> tuple[float, float, dict[str, Any]]:
    """`metering run` as a subprocess: wall seconds, peak RSS MB, its run_summary."""
    argv = [sys.executable, "-m", "metering", "--database-url", url, "--log-format", "json"]
    argv += ["run", "--now", iso(now_ms), "--lock-file", str(lock)]
    code, seconds, rss, _, err = spawn(argv, child_env())
    if code != 0:
        raise SystemExit(f"metering run failed ({code}): {err.decode()[-3000:]}")
    summary: dict[str, Any] = {}
    for line in err.decode().splitlines():
        if '"run_summary"' in line:
            summary = json.loads(line)
    return seconds, rss, summary


def measure(
    label: str, target: Target, ingest_urls: Sequence[str], args: argparse.Namespace
) -> dict[str, Any]:
    from metering import migrate
    from metering.db import make_engine

    engine = make_engine(target.url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    world = World(seed=args.seed)
    hour = START + HOUR
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-galera-{label}-"))
    lock = workdir / "metering.lock"
    # One billed hour before: the measured run is an hourly run, not a first one.
    ingest(ingest_urls, world.history_hour(START), args.batch, args.single_row)
    bill(target.url, hour + GRACE_MARGIN_MS, lock)
    rows = world.measured_hour(hour, args.events)
    ingest_s = ingest(ingest_urls, rows, args.batch, args.single_row)
    del rows
    seconds, rss, summary = bill(target.url, hour + HOUR + GRACE_MARGIN_MS, lock)
    lo, hi, stored = target.query(
        "SELECT MIN(id), MAX(id), COUNT(*) FROM usage_events WHERE occurred_at >= %s",
        (datetime.fromtimestamp(hour / 1000, UTC).replace(tzinfo=None),),
    )[0]
    gaps, gap_ids = target.query(
        # A row holds the ids x in [id_from, id_to] with (x - id_from) % step < width.
        "SELECT COUNT(*), COALESCE(SUM((id_to - id_from) DIV step * width"
        " + LEAST(MOD(id_to - id_from, step) + 1, width)), 0) FROM event_gaps"
    )[0]
    cell = {
        "target": label,
        "nodes_ingesting": len(ingest_urls),
        "inserts": "single-row" if args.single_row else "multi-row",
        "events": args.events,
        "events_stored": int(stored),
        "id_span": int(hi) - int(lo) + 1,
        "ingest_s": ingest_s,
        "run_s": seconds,
        "run_rss_mb": rss,
        "gap_rows": int(gaps),
        "gap_ids": int(gap_ids),
        "events_read": summary.get("events_read"),
        "lines_written": summary.get("lines_written"),
        "run_duration_ms": summary.get("duration_ms"),
        "database": target.version(),
    }
    print(table([cell]), file=sys.stderr, flush=True)
    return cell


def table(cells: list[dict[str, Any]]) -> str:
    out = [
        "| target | events | ingest s | run s | run RSS MB | gap rows | ids in gaps | "
        "events read | lines |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        out.append(
            f"| {c['target']} | {c['events']:,} | {c['ingest_s']:.2f} | {c['run_s']:.2f} | "
            f"{c['run_rss_mb']:.0f} | {c['gap_rows']:,} | {c['gap_ids']:,} | "
            f"{c['events_read'] or 0:,} | {c['lines_written'] or 0:,} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", default="1M", help="N events in the measured hour")
    parser.add_argument(
        "--galera-urls",
        default=os.environ.get("METERING_TEST_GALERA_URLS", ""),
        help="one server URL per node, comma separated (default $METERING_TEST_GALERA_URLS)",
    )
    parser.add_argument(
        "--single-url",
        default=os.environ.get("METERING_TEST_MYSQL_URL", ""),
        help="a single MariaDB server URL (default $METERING_TEST_MYSQL_URL)",
    )
    parser.add_argument("--batch", type=int, default=2_000, help="rows per INSERT transaction")
    parser.add_argument(
        "--single-row",
        action="store_true",
        help="one INSERT per row (a producer without multi-row INSERTs); ids then "
        "interleave row by row on the cluster",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the bench databases")
    parser.add_argument("--out", default=str(HERE / "results"), help="results directory")
    args = parser.parse_args(argv)
    args.events = parse_size(args.events)
    nodes = [u for u in args.galera_urls.split(",") if u]
    if len(nodes) < 2 or not args.single_url:
        parser.error("need --galera-urls (2 or more nodes) and --single-url")

    from sqlalchemy.engine import make_url

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    cells = []
    cluster = Target(nodes[0], f"{stamp.lower()}_galera", args.keep)
    try:
        urls = [
            make_url(u).set(database=cluster.name).render_as_string(hide_password=False)
            for u in nodes
        ]
        cells.append(measure(f"galera ({len(nodes)} nodes)", cluster, urls, args))
    finally:
        cluster.close()
    single = Target(args.single_url, f"{stamp.lower()}_single", args.keep)
    try:
        cells.append(measure("single MariaDB", single, [single.url], args))
    finally:
        single.close()

    report = {"timestamp": stamp, "command": sys.argv, "machine": machine(), "cells": cells}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"galera-{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(table(cells))
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
