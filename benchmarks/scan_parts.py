"""The parts of one billed hour, timed in process on a kept MariaDB benchmark database.

    python benchmarks/run.py --events 1M --history-days 1 --no-naive --keep
    python benchmarks/scan_parts.py --db mysql+pymysql://USER:PW@HOST:PORT/bench_<stamp>_d1

Takes the id range and the lines of the last scheduled run in that database and
times, best of --repeat (interleaved, so a noisy moment hits every variant alike):
  limit            the benchmark's limit query (GROUP BY account, entity, resource_id, h)
  scan             metering's range scan (store.events.scan_range), fetch included
  scan, measures   the same over the rows of a measure's kind only: what the side
                   connection of an hourly run on MariaDB sends (store/side_scan.py)
  scan, columns    the scan's query with each group as nine columns, fetched, not
                   summed (how MariaDB's groups came before they came as one text)
  scan, text first the scan's query with the text columns first in GROUP BY (how it was)
  scan, no 1h test the scan's query without the exact one-hour test (not a valid query:
                   it shows what that test costs)
  insert lines     store.usage.insert_lines of the run's lines (rolled back)
  insert via SA    the same rows through Connection.execute(insert(usage_lines), dicts)
Prints one line each, with the best wall and CPU time of this process (on MariaDB, the
CPU is reading the groups once the server has summed them). Nothing is written: every
insert is rolled back. Each variant runs in the same session as metering's (256 MB
in-memory temporary tables).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import desc, insert, select, text
from sqlalchemy.engine import Connection

from metering.db import make_engine
from metering.store import events, usage
from metering.store.schema import runs, usage_lines
from metering.timeutil import from_ms

LIMIT = (
    "SELECT account, entity, resource_id, TIMESTAMPDIFF(HOUR, '1970-01-01 00:00:00', "
    "period_start) AS h, SUM(quantity) FROM usage_events WHERE id BETWEEN :lo AND :hi "
    "GROUP BY account, entity, resource_id, h"
)
ONE_HOUR_TEST = " AND to_seconds(usage_events.period_end)"


def scan_variants(conn: Connection, lo: int, hi: int) -> dict[str, str]:
    """The scan's SQL with its text columns grouped first, and without the one-hour test."""
    scan = str(
        events.scan_query(conn, lo, hi).compile(
            dialect=conn.dialect, compile_kwargs={"literal_binds": True}
        )
    )
    group_by = scan.rindex("GROUP BY")
    test = scan.index(ONE_HOUR_TEST)
    return {
        "scan, text first": scan[:group_by]
        + "GROUP BY account, entity, resource_id, g_single, unit, g_hour",
        "scan, no 1h test": scan[:test] + scan[scan.index(") THEN 0 ELSE", test) :],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", required=True, help="URL of a kept benchmark database")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    engine = make_engine(args.db)
    with engine.connect() as conn:
        run_id, lo, hi = conn.execute(
            select(runs.c.run_id, runs.c.first_event_id, runs.c.last_event_id)
            .where(runs.c.kind == "scheduled", runs.c.first_event_id.is_not(None))
            .order_by(desc(runs.c.last_event_id))
            .limit(1)
        ).one()
        lines = usage.lines_of_runs(conn, [run_id])

        def rows() -> list[dict[str, Any]]:
            return [
                {
                    "run_id": "scan-parts",
                    "account": x.account,
                    "entity": x.entity,
                    "resource_id": x.resource_id,
                    "offering": x.offering,
                    "unit": x.unit,
                    "period_start": from_ms(x.hour),
                    "quantity": x.quantity,
                    "source": x.source,
                }
                for x in lines
            ]

        conn.rollback()

        def query(statement: str) -> Callable[[], Any]:
            return lambda: conn.execute(text(statement), {"lo": lo, "hi": hi}).all()

        variants: dict[str, Callable[[], Any]] = {
            "limit": query(LIMIT),
            "scan": lambda: events.scan_range(conn, lo, hi, {}),
            "scan, measures": lambda: events.scan_range(conn, lo, hi, {}, quantities=True),
            "scan, columns": lambda: conn.execute(events.scan_query(conn, lo, hi)).all(),
            **{name: query(sql) for name, sql in scan_variants(conn, lo, hi).items()},
            "insert lines": lambda: usage.insert_lines(conn, "scan-parts", lines),
            "insert via SA": lambda: [
                conn.execute(insert(usage_lines), batch)
                for all_rows in [rows()]
                for batch in (all_rows[i : i + 5000] for i in range(0, len(all_rows), 5000))
            ],
        }
        best = {name: float("inf") for name in variants}
        best_cpu = dict(best)
        for _ in range(args.repeat):
            for name, work in variants.items():
                started, cpu = time.perf_counter(), time.process_time()
                work()
                best[name] = min(best[name], time.perf_counter() - started)
                best_cpu[name] = min(best_cpu[name], time.process_time() - cpu)
                conn.rollback()
    print(f"run {run_id}: ids {lo}..{hi} ({hi - lo + 1} rows), {len(lines)} lines")
    for name, seconds in best.items():
        print(f"  {name:18s} {seconds:6.2f} s  cpu {best_cpu[name]:5.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
