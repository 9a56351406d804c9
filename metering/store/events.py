"""Reading usage_events: past the watermark (by primary-key range), one resource's
history (by index), and measures overlapping a time range (for backfills).

Measures that fall in one hour and are plainly valid are summed by the database
(GROUP BY over the id range); everything else (resource events, measures spanning
hours, anything doubtful) is streamed to Python, where the core validates it. The
two predicates are exact complements, NULL-safe, so every row lands in one of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from sys import intern
from typing import Any

from sqlalchemy import (
    Integer,
    LargeBinary,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import UserDefinedType

from metering.core.billing import PartKey
from metering.core.events import (
    DEFAULT_UNIT,
    HOUR,
    MAX_QUANTITY,
    MAX_TEXT,
    MIN_TIME,
    RawEvent,
    ResourceKey,
)
from metering.store.keys import key_match
from metering.store.schema import usage_events as ev
from metering.timeutil import from_ms, to_ms

STREAM_BATCH = 5000
_YEAR0_TO_1970_HOURS = 62_167_219_200 // 3600  # TO_SECONDS('1970-01-01') / 3600


class _Raw(UserDefinedType[Any]):
    """Hands the driver's value through untouched (datetime on MySQL, text on SQLite)."""

    cache_ok = True

    def get_col_spec(self, **_: Any) -> str:
        return "RAW"


def parse_raw_time(value: Any) -> int | None:
    """Epoch ms of a stored time, or None when absent or unreadable (rejected later)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return to_ms(value)
    try:
        return to_ms(datetime.fromisoformat(str(value).strip()))
    except (ValueError, OverflowError):
        return None


def _epoch_hour(conn: Connection, column: Any) -> ColumnElement[Any]:
    """Hours since 1970 of `column`."""
    if conn.dialect.name == "sqlite":
        # `//`: SQLAlchemy renders `/` as true division, and fractional hours
        # would make two instants of one hour differ.
        return cast(func.strftime("%s", column), Integer) // 3600
    return _mysql_year0_hour(column) - _YEAR0_TO_1970_HOURS


def _mysql_year0_hour(column: Any) -> ColumnElement[Any]:
    """Hours since year 0: TO_SECONDS (whole seconds since year 0) costs MariaDB a
    fraction of TIMESTAMPDIFF, and 1970 is a whole number of hours after year 0."""
    return func.to_seconds(column).op("DIV")(3600)


def _sqlite_epoch_hour_before(column: Any) -> ColumnElement[Any]:
    """Hours since 1970 of the millisecond before `column` (SQLite text times)."""
    return cast(func.strftime("%s", column, "-0.001 seconds"), Integer) // 3600


def _not_empty(column: Any, limit: int) -> ColumnElement[bool]:
    return and_(column != "", func.char_length(column) <= limit)


def simple_measure(conn: Connection) -> ColumnElement[bool]:
    """True for a measure the database may sum as is (valid, one hour); else false
    or NULL, so it belongs in a CASE WHEN, which takes NULL as false."""
    if conn.dialect.name == "sqlite":
        return _simple_sqlite(conn)
    return _simple_mysql()


def _simple_mysql() -> ColumnElement[bool]:
    # Lean, as it runs on every new row: a NULL makes its comparison NULL, which CASE
    # takes as false, and the columns are no wider than the core's limits (the
    # migrations create them), so a value the server holds is never over-long.
    # (tests/test_foundation.py checks the widths on the migrated database.)
    next_hour_seconds = (_mysql_year0_hour(ev.c.period_start) + 1) * 3600
    end_seconds_up = func.to_seconds(ev.c.period_end) + (func.microsecond(ev.c.period_end) > 0)
    return and_(
        ev.c.kind == "quantity",
        ev.c.action == "measure",
        ev.c.account != "",
        ev.c.entity != "",
        ev.c.resource_id != "",
        ev.c.quantity >= 0,
        ev.c.quantity <= MAX_QUANTITY,
        ev.c.period_start >= from_ms(MIN_TIME),
        # Within the hour of period_start: millisecond times, so end - 1 ms lies in
        # that hour exactly when end <= the next hour's start, i.e. when end rounded
        # up to whole seconds (TO_SECONDS drops the fraction) is.
        ev.c.period_end >= ev.c.period_start,
        end_seconds_up <= next_hour_seconds,
    )


def _simple_sqlite(conn: Connection) -> ColumnElement[bool]:
    return and_(
        ev.c.kind == "quantity",
        ev.c.action == "measure",
        _not_empty(ev.c.account, MAX_TEXT["account"]),
        _not_empty(ev.c.entity, MAX_TEXT["entity"]),
        _not_empty(ev.c.resource_id, MAX_TEXT["resource_id"]),
        func.char_length(ev.c.event_id) <= MAX_TEXT["event_id"],
        func.char_length(func.coalesce(ev.c.unit, "")) <= MAX_TEXT["unit"],
        # Unused by measures, but over-long text is rejected whatever the column.
        func.char_length(func.coalesce(ev.c.offering, "")) <= MAX_TEXT["offering"],
        ev.c.quantity.is_not(None),
        ev.c.quantity >= 0,
        ev.c.quantity <= MAX_QUANTITY,
        ev.c.period_start.is_not(None),
        ev.c.period_end.is_not(None),
        _epoch_hour(conn, ev.c.period_start) >= MIN_TIME // HOUR,
        or_(
            ev.c.period_end == ev.c.period_start,
            and_(
                ev.c.period_end > ev.c.period_start,
                _epoch_hour(conn, ev.c.period_start) == _sqlite_epoch_hour_before(ev.c.period_end),
            ),
        ),
        # Text times: only the canonical form compares correctly as text.
        func.length(ev.c.period_start) == 23,
        func.length(ev.c.period_end) == 23,
        func.substr(ev.c.period_start, 11, 1) == " ",
        func.substr(ev.c.period_end, 11, 1) == " ",
        # SQLite's length() stops at a NUL: such text goes to the core's check.
        *(
            func.instr(cast(column, LargeBinary), literal(b"\x00")) == 0
            for column in (ev.c.event_id, ev.c.account, ev.c.entity, ev.c.resource_id)
        ),
        *(
            func.instr(cast(func.coalesce(column, ""), LargeBinary), literal(b"\x00")) == 0
            for column in (ev.c.unit, ev.c.offering)
        ),
    )


@dataclass(frozen=True, slots=True)
class RangeScan:
    """One pass over an id range: how many rows it held, the ids of rows read alone."""

    rows: int
    other_ids: list[int]


def max_id(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(ev.c.id), 0))).scalar_one())


def scan_query(conn: Connection, lo: int, hi: int) -> Select[Any]:
    """The one query scan_range sends (benchmarks/scan_parts.py times it too)."""
    single = case((simple_measure(conn), 0), else_=ev.c.id).label("g_single")
    # Meaningless for rows grouped alone (by id), so not guarded by `simple`: the
    # predicate is then evaluated once per row, not twice.
    hour = _epoch_hour(conn, ev.c.period_start).label("g_hour")
    return (
        select(
            single,
            ev.c.unit,
            hour,
            ev.c.account,
            ev.c.entity,
            ev.c.resource_id,
            func.sum(ev.c.quantity),
            func.count(),
        )
        .where(ev.c.id.between(lo, hi))
        # By alias: given the expressions, MariaDB evaluated them again for grouping
        # (2.5x the time at 1M rows). Aliases unlike any column: MySQL resolves a
        # GROUP BY name to a table column first. The order is MariaDB's fastest of
        # those measured (short columns first: 1.9 s at 1M rows, 2.9 s with the text
        # columns first: benchmarks/scan_parts.py); the raw unit, as its default is
        # cheaper applied here.
        .group_by(*(literal_column(name) for name in ("g_single", "unit", "g_hour", "account",
                                                      "entity", "resource_id")))
    )  # fmt: skip


def scan_range(conn: Connection, lo: int, hi: int, sums: dict[PartKey, int]) -> RangeScan:
    """Read [lo, hi] once: the database sums simple measures per (account, entity,
    resource_id, unit, hour), added here into `sums` ((key, hour ms) -> amount); every
    other row comes back alone, as its id, so a window costs one primary-key range
    scan whatever its mix. Rows stream: memory follows the groups, not the rows."""
    query = scan_query(conn, lo, hi)
    rows = 0
    others: list[int] = []
    for row in conn.execute(query.execution_options(stream_results=True, yield_per=STREAM_BATCH)):
        rows += row[7]
        if row[0]:
            others.append(int(row[0]))
        else:
            # Entities and units repeat across thousands of groups: one string each.
            unit = intern(row[1] or DEFAULT_UNIT)
            key = ((row[3], intern(row[4]), row[5], unit), int(row[2]) * HOUR)
            sums[key] = sums.get(key, 0) + int(row[6])
    others.sort()
    return RangeScan(rows, others)


_RAW_COLUMNS = (
    ev.c.id,
    ev.c.event_id,
    ev.c.kind,
    ev.c.entity,
    ev.c.action,
    ev.c.account,
    ev.c.resource_id,
    ev.c.offering,
    type_coerce(ev.c.occurred_at, _Raw()),
    ev.c.quantity,
    ev.c.unit,
    type_coerce(ev.c.period_start, _Raw()),
    type_coerce(ev.c.period_end, _Raw()),
)


def _raw(row: Sequence[Any]) -> RawEvent:
    return RawEvent(
        id=int(row[0]),
        event_id=row[1],
        kind=row[2],
        entity=row[3],
        action=row[4],
        account=row[5],
        resource_id=row[6],
        offering=row[7],
        occurred_at=parse_raw_time(row[8]),
        quantity=None if row[9] is None else int(row[9]),
        unit=row[10],
        period_start=parse_raw_time(row[11]),
        period_end=parse_raw_time(row[12]),
    )


def _stream(conn: Connection, query: Any) -> Iterator[RawEvent]:
    # Per statement: Connection.execution_options would switch the whole connection
    # to unbuffered cursors.
    result = conn.execute(query.execution_options(stream_results=True, yield_per=STREAM_BATCH))
    try:
        for row in result:
            yield _raw(row)
    finally:
        result.close()


def events_by_id(conn: Connection, ids: Sequence[int]) -> Iterator[RawEvent]:
    """Whole rows by primary key, in id order."""
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        query = select(*_RAW_COLUMNS).where(ev.c.id.in_(chunk)).order_by(ev.c.id)
        for row in conn.execute(query):
            yield _raw(row)


def missing_ids(conn: Connection, lo: int, hi: int) -> list[tuple[int, int]]:
    """The id ranges within [lo, hi] that hold no row, found by the database (a
    window over the primary key), so only the gaps travel, not every id."""
    previous = func.lag(ev.c.id).over(order_by=ev.c.id).label("previous")
    inner = select(ev.c.id.label("id"), previous).where(ev.c.id.between(lo, hi)).subquery()
    jumps = select(inner.c.previous, inner.c.id).where(inner.c.id - inner.c.previous > 1)
    bounds = select(func.min(ev.c.id), func.max(ev.c.id)).where(ev.c.id.between(lo, hi))
    first, last = conn.execute(bounds).one()
    if first is None:
        return [(lo, hi)]
    ranges = [(lo, int(first) - 1)] if first > lo else []
    ranges += [(int(before) + 1, int(after) - 1) for before, after in conn.execute(jumps)]
    if last < hi:
        ranges.append((int(last) + 1, hi))
    return sorted(ranges)


def resource_history(
    conn: Connection, keys: Sequence[ResourceKey], since: datetime | None = None
) -> dict[ResourceKey, list[RawEvent]]:
    """Resource events of these resources (all, or those at or after `since`), through
    the (account, entity, resource_id, occurred_at) index."""
    found: dict[ResourceKey, list[RawEvent]] = {key: [] for key in keys}
    for start in range(0, len(keys), 200):
        batch = keys[start : start + 200]
        match = key_match(batch)
        query = select(*_RAW_COLUMNS).where(match, ev.c.kind == "resource")
        if since is not None:
            query = query.where(ev.c.occurred_at >= since)
        for row in conn.execute(query):
            raw = _raw(row)
            found[(raw.account, raw.entity, raw.resource_id)].append(raw)
    return found


def measures_overlapping(
    conn: Connection, start: datetime, end: datetime, earliest_start: datetime, last_id: int
) -> Iterator[RawEvent]:
    """Quantity rows already read by scheduled runs (id <= last_id) whose period may
    overlap [start, end); period_start >= earliest_start bounds the index scan."""
    query = (
        select(*_RAW_COLUMNS)
        .where(
            ev.c.kind == "quantity",
            ev.c.id <= last_id,
            ev.c.period_start >= earliest_start,
            # A day of slack: on SQLite, rows in a non-canonical text form compare
            # imprecisely; the caller keeps only parts that overlap [start, end).
            ev.c.period_start < end + timedelta(days=1),
        )
        .order_by(ev.c.id)
    )
    return _stream(conn, query)


@dataclass(frozen=True, slots=True)
class DatedEvent:
    id: int
    event_id: str
    account: str
    entity: str
    resource_id: str
    occurred_at: int | None  # ms; None if unreadable


@dataclass(frozen=True, slots=True)
class DatedAfter:
    count: int
    first: list[DatedEvent]  # the lowest ids, at most the limit asked for


def _occurred_after(conn: Connection, instant: datetime) -> ColumnElement[bool]:
    if conn.dialect.name == "sqlite":
        # Text times from other writers may carry a 'T', a 'Z', an offset or no
        # fraction, and compare wrongly as text; julianday() reads them all as instants.
        stored = func.julianday(func.trim(type_coerce(ev.c.occurred_at, String)))
        return stored > func.julianday(literal(instant, ev.c.occurred_at.type))
    return ev.c.occurred_at > instant


def dated_after(conn: Connection, instant: datetime, limit: int) -> DatedAfter:
    """Events whose occurred_at is after `instant`: how many, and the first by id.

    No index leads with occurred_at: this reads the whole table (on MariaDB, the
    narrower resource index, which holds occurred_at and the id)."""
    after = _occurred_after(conn, instant)
    count = int(conn.execute(select(func.count()).select_from(ev).where(after)).scalar_one())
    if not count:
        return DatedAfter(0, [])
    query = (
        select(
            ev.c.id,
            ev.c.event_id,
            ev.c.account,
            ev.c.entity,
            ev.c.resource_id,
            type_coerce(ev.c.occurred_at, _Raw()),
        )
        .where(after)
        .order_by(ev.c.id)
        .limit(limit)
    )
    first = [
        DatedEvent(int(i), event_id, account, entity, resource_id, parse_raw_time(when))
        for i, event_id, account, entity, resource_id, when in conn.execute(query)
    ]
    return DatedAfter(count, first)
