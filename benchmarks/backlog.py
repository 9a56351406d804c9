"""A backlog of days billed by one `metering run`: time, peak RSS, and the database's
own INSERT ... SELECT ... GROUP BY over the same rows (the limit), side by side.

    python benchmarks/backlog.py --db URL [--per-day 240k] [--days 1,7] [--out DIR]

For each D: a fresh database, D days of dense hours (benchmarks/generate.py's measured
hour: per-interval byte measures of 20k IPs, VM and volume churn, late and bad rows),
never billed; then `metering run` as a subprocess, as cron runs it after an outage or
on its first day on an existing history, with its peak RSS (VmHWM); then the limit:
the server writing the (key, hour) sums of the same rows into a table itself. The run
reads the backlog in windows of event ids (metering/run.py), so its memory should not
grow with D.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate import HOUR, World, fmt_ms  # noqa: E402
from run import Target, child_env, parse_size, spawn  # noqa: E402

START = int(datetime(2016, 12, 1, tzinfo=UTC).timestamp() * 1000)
GRACE_MARGIN_MS = 31 * 60_000


def limit_seconds(target: Target) -> tuple[float, float]:
    """INSERT ... SELECT ... GROUP BY of every row into a table: the server's own speed,
    into a plain table (the limit) and into one shaped and indexed like usage_lines
    (what writing the same sums as lines costs the server)."""
    hour_sql = "TIMESTAMPDIFF(HOUR, '1970-01-01 00:00:00', period_start)"
    with target.conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE limit_sums (account VARCHAR(64), entity VARCHAR(32),"
            " resource_id VARCHAR(64), h BIGINT, q DECIMAL(28,3))"
        )
        started = time.monotonic()
        cur.execute(
            f"INSERT INTO limit_sums SELECT account, entity, resource_id, {hour_sql} AS h,"
            " SUM(quantity) FROM usage_events GROUP BY account, entity, resource_id, h"
        )
        target.conn.commit()
        plain = time.monotonic() - started
        cur.execute("CREATE TABLE limit_lines LIKE usage_lines")
        started = time.monotonic()
        cur.execute(
            "INSERT INTO limit_lines (run_id, account, entity, resource_id, offering, unit,"
            " period_start, quantity, source) SELECT 'limit', account, entity, resource_id,"
            " '', COALESCE(unit, ''), DATE_FORMAT(period_start, '%Y-%m-%d %H:00:00'),"
            " SUM(quantity), 'measure' FROM usage_events WHERE period_start IS NOT NULL"
            " GROUP BY account, entity, resource_id, unit, DATE_FORMAT(period_start,"
            " '%Y-%m-%d %H:00:00')"
        )
        target.conn.commit()
        return plain, time.monotonic() - started


def one(args: argparse.Namespace, days: int) -> dict[str, object]:
    label = f"backlog_{days}d{'_outage' if args.after_outage else ''}"
    target = Target(args.db, label, keep=args.load_only)
    try:
        env = child_env()
        base = [sys.executable, "-m", "metering", "--database-url", target.url]
        code, *_ = spawn([*base, "db", "upgrade"], env)
        assert code == 0, "db upgrade failed"
        world = World(seed=args.seed)
        per_hour = args.per_day // 24
        if args.after_outage:
            # One hour billed as cron would, then the outage: the run resumes from a
            # watermark, with running resources and pending usage to carry.
            target.load(world.measured_hour(START - HOUR, per_hour))
            code, *_ = spawn([*base, "run", "--now", fmt_ms(START + GRACE_MARGIN_MS)], env)
            assert code == 0, "billing the hour before the outage failed"
        events = 0
        for hour in range(days * 24):
            rows = world.measured_hour(START + hour * HOUR, per_hour)
            target.load(rows)
            events += len(rows)
        now = fmt_ms(START + days * 24 * HOUR + GRACE_MARGIN_MS)
        if args.load_only:
            print(f"loaded, not billed: --database-url {target.url} run --now {now}")
            return {"days": days, "events": events, "now": now}
        code, seconds, rss, _, err = spawn(
            [*base, "--log-format", "json", "run", "--now", now], env
        )
        assert code == 0, err.decode()[-2000:]
        summary = [json.loads(line) for line in err.splitlines() if b"run_summary" in line]
        limit, limit_lines = limit_seconds(target)
        return {
            "days": days,
            "after_outage": args.after_outage,
            "events": events,
            "run_s": round(seconds, 2),
            "limit_s": round(limit, 2),
            "run_vs_limit": round(limit / seconds, 3),
            "limit_lines_s": round(limit_lines, 2),
            "run_vs_limit_lines": round(limit_lines / seconds, 3),
            "events_per_s": int(events / seconds),
            "peak_rss_mb": round(rss, 1),
            "chunks": summary[0]["chunks"] if summary else None,
            "lines_written": summary[0]["lines_written"] if summary else None,
        }
    finally:
        target.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--db", required=True, help="MariaDB server URL (a user that may create databases)"
    )
    parser.add_argument("--per-day", default="240k", help="events per day (e.g. 200k, 1M)")
    parser.add_argument("--days", default="1,7", help="backlog sizes in days, comma separated")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--after-outage",
        action="store_true",
        help="bill one hour first, so the backlog is a catch-up after an outage",
    )
    parser.add_argument(
        "--load-only",
        action="store_true",
        help="load the backlog and keep its database unbilled (to profile a run by hand)",
    )
    parser.add_argument("--out", default=str(HERE / "results"), help="results directory")
    args = parser.parse_args()
    args.per_day = parse_size(args.per_day)
    results = [one(args, int(d)) for d in args.days.split(",")]
    if args.load_only:
        return
    header = ("days", "events", "run_s", "limit_s", "run_vs_limit", "limit_lines_s",
              "run_vs_limit_lines", "events_per_s", "peak_rss_mb", "chunks",
              "lines_written")  # fmt: skip
    print(" | ".join(header))
    for r in results:
        print(" | ".join(str(r[h]) for h in header))
    out = Path(args.out) / f"backlog-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"command": sys.argv, "per_day": args.per_day, "results": results}, indent=2)
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
