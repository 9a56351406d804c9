"""The naive baseline of the talk: every run reads every event ever recorded.

Reads all of usage_events (streamed, an unbuffered cursor: it would not fit in
memory otherwise), pairs starts and stops per resource, splits measures over hours
and sums everything in Python, from scratch, as a cron job without state would.
It writes nothing (which flatters it: the real thing would also diff and write).

    python benchmarks/naive.py URL --until 2024-01-31T01:00Z [--report-from T]

Prints one JSON object: rows read, seconds, and the totals per (account, entity,
resource_id, offering, unit, hour) for hours in [report-from, until), for the
benchmark to check metering's billed sums against.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

HOUR = 3_600_000
EPOCH = datetime(1970, 1, 1)
MS = timedelta(milliseconds=1)
QUERY = (
    "SELECT id, kind, entity, action, account, resource_id, offering, occurred_at,"
    " quantity, unit, period_start, period_end FROM usage_events"
)
STARTS = {"create", "start"}
STOPS = {"stop", "destroy"}


def to_ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.replace(tzinfo=None) - (value.utcoffset() or timedelta(0))
    return (value - EPOCH) // MS


def rows_of(url: str) -> Iterator[tuple[Any, ...]]:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("///", 1)[1])
        try:
            yield from conn.execute(QUERY)
        finally:
            conn.close()
        return
    import pymysql
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = pymysql.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 3306,
        user=u.username,
        password=u.password or "",
        database=u.database,
        charset="utf8mb4",
        init_command="SET time_zone = '+00:00'",
        cursorclass=pymysql.cursors.SSCursor,
    )
    try:
        with conn.cursor() as cur:
            cur.execute(QUERY)
            yield from cur
    finally:
        conn.close()


def split(quantity: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Rule 4: pro rata by time, floor for each hour but the last, which gets the rest."""
    if end == start:
        yield start - start % HOUR, quantity
        return
    hour = start - start % HOUR
    given = 0
    while hour + HOUR < end:
        part = quantity * (min(end, hour + HOUR) - max(start, hour)) // (end - start)
        yield hour, part
        given += part
        hour += HOUR
    yield hour, quantity - given


def bill(url: str, until: int) -> tuple[int, dict[tuple[Any, ...], int]]:
    """Totals per (account, entity, resource_id, offering, unit, hour): ms or units."""
    totals: defaultdict[tuple[Any, ...], int] = defaultdict(int)
    history: defaultdict[tuple[str, str, str], list[tuple[int, int, str, str | None]]]
    history = defaultdict(list)
    read = 0
    for row in rows_of(url):
        read += 1
        rid, kind, entity, action, account, resource_id, offering = row[:7]
        if kind == "quantity":
            quantity, unit = row[8], row[9] or "byte"
            start, end = to_ms(row[10]), to_ms(row[11])
            if action != "measure" or quantity is None or quantity < 0:
                continue
            if start is None or end is None or end < start:
                continue
            for hour, part in split(int(quantity), start, end):
                totals[(account, entity, resource_id, "", unit, hour)] += part
        elif kind == "resource" and (action in STARTS or action in STOPS or action == "update"):
            at = to_ms(row[7])
            if at is not None:
                history[(account, entity, resource_id)].append((at, rid, action, offering))
    for (account, entity, resource_id), events in history.items():
        events.sort()
        offering: str | None = None
        since: int | None = None
        for at, _id, action, new_offering in events:
            if action in STOPS and since is not None:
                run(totals, (account, entity, resource_id), offering, since, at)
                since = None
            if since is not None and new_offering and new_offering != offering:
                run(totals, (account, entity, resource_id), offering, since, at)
                since = at
            if new_offering:
                offering = new_offering
            if action in STARTS and since is None:
                since = at
            if action == "destroy":
                break
        if since is not None and since < until:
            run(totals, (account, entity, resource_id), offering, since, until)
    return read, totals


def run(
    totals: defaultdict[tuple[Any, ...], int],
    key: tuple[str, str, str],
    offering: str | None,
    start: int,
    end: int,
) -> None:
    hour = start - start % HOUR
    while hour < end:
        ms = min(end, hour + HOUR) - max(start, hour)
        if ms > 0:
            totals[(*key, offering or "", "second", hour)] += ms
        hour += HOUR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--until", required=True, help="end of the last closed hour")
    parser.add_argument("--report-from", default=None, help="print totals from this hour")
    args = parser.parse_args(argv)
    until = to_ms(datetime.fromisoformat(args.until.replace("Z", "+00:00")))
    assert until is not None
    started = time.monotonic()
    read, totals = bill(args.url, until)
    seconds = time.monotonic() - started
    report_from = (
        until
        if args.report_from is None
        else to_ms(datetime.fromisoformat(args.report_from.replace("Z", "+00:00")))
    )
    assert report_from is not None
    report = [
        [*key[:5], key[5], amount]
        for key, amount in totals.items()
        if report_from <= key[5] < until and amount
    ]
    json.dump({"rows_read": read, "seconds": seconds, "totals": report}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
