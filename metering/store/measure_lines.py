"""Measure lines the database writes itself (MariaDB/MySQL; SQLite bills in Python).

The simple measures of a window (store/events.simple_measure: valid, within one hour)
are summed per (key, hour) by the server straight into usage_lines, INSERT ... SELECT
... GROUP BY with the run id a constant: the sums never travel to Python and back. A
day of 1M events is ~550k lines; fetching them took ~45% of a catch-up and writing
them back ~35% (profiled, benchmarks/backlog.py). What Python still sums (measures
over several hours, rows it must read alone, pending parts) is merged into those
lines afterwards, and the hours not closed yet move to pending_usage.

Only over a dense id range below the newest row. In REPEATABLE READ an INSERT ...
SELECT reads its source with shared next-key locks: the newest committed rows, not
the run's snapshot. Where every id of [lo, hi] holds a row in the snapshot, no
transaction can add one there or hold one back, so both reads see the same rows; and
with a row above hi, the lock past the range never reaches the end of the table,
where producers insert. Should a lock still be waited for (a producer's open
transaction just past the range), the wait ends after LOCK_WAIT_S and the window is
summed the Python way.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    MetaData,
    Table,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from metering.core.events import DEFAULT_UNIT, QuantityKey
from metering.store import events as store_events
from metering.store.bulk import insert_rows
from metering.store.keys import cached_options
from metering.store.schema import pending_usage, usage_lines
from metering.store.schema import usage_events as ev
from metering.store.usage import LINE_COLUMNS, MEASURE
from metering.timeutil import from_ms

# Seconds an INSERT ... SELECT waits for a row lock before the window is read the
# Python way: producers' inserts commit in milliseconds, and none is expected at all.
LOCK_WAIT_S = 2
_LOCK_WAIT_TIMEOUT = 1205
_EPOCH = "1970-01-01 00:00:00"
# pending_usage's, and those of the parts merged into the lines.
_PART_COLUMNS = ("account", "entity", "resource_id", "unit", "hour", "quantity")


def available(conn: Connection) -> bool:
    """A server, where a lock wait that times out undoes its statement alone (with
    innodb_rollback_on_timeout, the whole transaction: a chunk half undone)."""
    if conn.dialect.name == "sqlite":
        return False
    known: dict[str, bool] = conn.info.setdefault("metering_server_sums", {})
    if "available" not in known:
        whole = conn.exec_driver_sql("SELECT @@GLOBAL.innodb_rollback_on_timeout").scalar()
        known["available"] = not int(whole or 0)
    return known["available"]


def dense_end(conn: Connection, lo: int, hi: int) -> int:
    """The largest d in [lo - 1, hi] such that every id of [lo, d] holds a row: one
    count of the range, and where it falls short, a bisection whose counts halve."""
    if hi < lo:
        return lo - 1
    if store_events.digest(conn, lo, hi).rows == hi - lo + 1:
        return hi
    # Every id of [lo, good] holds a row; some id of [lo, bad] holds none.
    good, bad = lo - 1, hi
    while bad - good > 1:
        middle = (good + bad) // 2
        if store_events.digest(conn, good + 1, middle).rows == middle - good:
            good = middle
        else:
            bad = middle
    return good


def insert_sums(conn: Connection, run_id: str, lo: int, hi: int) -> int | None:
    """The simple measures of the dense range [lo, hi], summed per key and hour by the
    database into lines of `run_id` (every hour, closed or not: see move_open).
    None if a row lock was waited for too long; nothing is written then."""
    hour = store_events.epoch_hour(conn, ev.c.period_start)
    # The unit defaulted as the core does: simple_measure admits on MariaDB only units
    # that are absent, empty, or start with no whitespace, so blank means NULL or ''.
    unit = case((or_(ev.c.unit.is_(None), ev.c.unit == ""), DEFAULT_UNIT), else_=ev.c.unit)
    start = func.timestampadd(text("HOUR"), hour, cast(literal(_EPOCH), DateTime))
    amount = func.sum(ev.c.quantity)
    query = (
        select(
            literal(run_id),
            ev.c.account,
            ev.c.entity,
            ev.c.resource_id,
            literal(""),
            unit.label("g_unit"),
            start.label("g_start"),
            amount,
            literal(MEASURE),
        )
        .where(ev.c.id.between(lo, hi), store_events.simple_measure(conn))
        # By alias, short columns first, as the range scan groups (store/events.py).
        .group_by(
            literal_column("g_unit"),
            literal_column("g_start"),
            ev.c.account,
            ev.c.entity,
            ev.c.resource_id,
        )
        .having(amount != 0)
    )
    statement = insert(usage_lines).from_select(list(LINE_COLUMNS), query)
    previous = conn.exec_driver_sql("SELECT @@SESSION.innodb_lock_wait_timeout").scalar_one()
    conn.exec_driver_sql(f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_S}")
    try:
        # No savepoint: the timeout undoes this statement alone (see available), and
        # any other error (a Galera certification failure undoes the transaction and
        # its savepoints) must reach the caller as it is.
        return int(conn.execute(statement).rowcount)
    except OperationalError as error:
        if getattr(error.orig, "args", (None,))[0] != _LOCK_WAIT_TIMEOUT:
            raise
        return None
    finally:
        conn.exec_driver_sql(f"SET SESSION innodb_lock_wait_timeout = {int(previous)}")


def move_open(conn: Connection, run_id: str, h1: int) -> int:
    """Move the run's measure lines of hours from h1 on (not closed) to pending_usage,
    as Python's parts of those hours go; how many lines that took away."""
    c = usage_lines.c
    where = (c.run_id == run_id, c.source == MEASURE, c.period_start >= from_ms(h1))
    rows = select(c.account, c.entity, c.resource_id, c.unit, c.period_start, c.quantity)
    conn.execute(insert(pending_usage).from_select(_PART_COLUMNS, rows.where(*where)))
    return int(conn.execute(delete(usage_lines).where(*where)).rowcount)


@lru_cache(maxsize=8)
def _parts_table(options: tuple[tuple[str, Any], ...]) -> Table:
    """pending_usage's columns, keyed: the join below looks each line of the run up in it."""
    return Table(
        "metering_parts",
        MetaData(),
        *(
            Column(name, pending_usage.c[name].type, primary_key=name != "quantity")
            for name in _PART_COLUMNS
        ),
        prefixes=["TEMPORARY"],
        **dict(options),
    )


def merge_parts(conn: Connection, run_id: str, parts: Mapping[tuple[QuantityKey, int], int]) -> int:
    """Add these (key, closed hour) amounts to the run's measure lines: to the line of
    the same key and hour if the database wrote one, else as a new line. How many new
    lines that made. One line per key and hour and run, as the contract says."""
    rows = [
        (key[0], key[1], key[2], key[3], from_ms(hour), amount)
        for (key, hour), amount in sorted(parts.items())
        if amount
    ]
    if not rows:
        return 0
    parts_table = _parts_table(tuple(sorted(cached_options(conn).items())))
    parts_table.create(conn)
    try:
        insert_rows(conn, parts_table, _PART_COLUMNS, rows)
        # The lines' key index named: usage_lines has just grown by the run's lines, and
        # with statistics from before them MariaDB took the hour index (a day's catch-up
        # spent 18 s in this UPDATE, 0.1 s with the key index).
        same = (
            "u.account = p.account AND u.entity = p.entity AND u.resource_id = p.resource_id"
            " AND u.source = :source AND u.period_start = p.hour AND u.unit = p.unit"
            " AND u.offering = '' AND u.run_id = :run_id"
        )
        lines = f"{usage_lines.name} u FORCE INDEX (ix_usage_lines_key)"
        values = {"run_id": run_id, "source": MEASURE}
        conn.execute(
            text(
                f"UPDATE {parts_table.name} p STRAIGHT_JOIN {lines} ON {same}"
                " SET u.quantity = u.quantity + p.quantity"
            ),
            values,
        )
        added = conn.execute(
            text(
                f"INSERT INTO {usage_lines.name} ({', '.join(LINE_COLUMNS)})"
                " SELECT :run_id, p.account, p.entity, p.resource_id, '', p.unit,"
                f" p.hour, p.quantity, :source FROM {parts_table.name} p"
                f" WHERE NOT EXISTS (SELECT 1 FROM {lines} WHERE {same})"
            ),
            values,
        ).rowcount
        return int(added)
    finally:
        conn.exec_driver_sql(f"DROP TEMPORARY TABLE {parts_table.name}")


def count_before(conn: Connection, run_id: str, h0: int) -> int:
    """The run's measure lines of hours before h0: corrections of billed hours."""
    c = usage_lines.c
    query = select(func.count()).where(
        c.run_id == run_id, c.source == MEASURE, c.period_start < from_ms(h0)
    )
    return int(conn.execute(query).scalar_one())
