"""Reading usage_events: past the watermark (by primary-key range), one resource's
history (by index), and measures overlapping a time range (for backfills).

Measures that fall in one hour and are plainly valid are summed by the database
(GROUP BY over the id range); everything else (resource events, measures spanning
hours, anything doubtful) is streamed to Python, where the core validates it. The
two predicates are exact complements, NULL-safe, so every row lands in one of them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
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
    tuple_,
    type_coerce,
    union_all,
)
from sqlalchemy.engine import Connection, Row
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
    WHITESPACE,
    RawEvent,
    ResourceKey,
    is_blank,
)
from metering.core.gaps import BLOCK, RESIDUES, IdClass, Strided
from metering.store.keys import MANY, key_match, key_table, same_key
from metering.store.schema import usage_events as ev
from metering.timeutil import from_ms, to_ms

STREAM_BATCH = 5000
GAP_BATCH = 200
_YEAR0_TO_1970_HOURS = 62_167_219_200 // 3600  # TO_SECONDS('1970-01-01') / 3600


class _Raw(UserDefinedType[Any]):
    """Hands the driver's value through untouched (datetime on MySQL, text on SQLite)."""

    cache_ok = True

    def get_col_spec(self, **_: Any) -> str:
        return "RAW"


# The text forms SQLite's date functions read (and Python's reading agrees with):
# a date, optionally a time to the minute, second or fraction, optionally an offset.
_TEXT_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?",
    re.ASCII,
)


class Unreadable(str):
    """A stored value that does not mean what its column says (kept to quote it)."""


def parse_raw_time(value: Any) -> int | Unreadable | None:
    """Epoch ms of a stored time, None when absent, Unreadable when it is no time.

    SQLite holds whatever text a producer wrote; fractions beyond milliseconds are
    cut, as MariaDB's DATETIME(3) would round them away on insert anyway.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return to_ms(value)
    text = value if isinstance(value, str) else repr(value)
    match = _TEXT_TIME.fullmatch(text)
    if match is None:
        return Unreadable(text)
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0")[:3].ljust(3, "0")) * 1000,
            tzinfo=UTC,
        )
    except ValueError:
        return Unreadable(text)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        if offset >= timedelta(days=1):
            return Unreadable(text)
        moment -= sign * offset
    try:
        return to_ms(moment)
    except OverflowError:
        return Unreadable(text)


def parse_raw_quantity(value: Any) -> int | Unreadable | None:
    """A stored quantity as a whole number, however the row stores it (SQLite keeps
    REAL and TEXT in a BIGINT column): 3.0 and '3' are 3; 0.5 and 'n/a' are not."""
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        return Unreadable(repr(value))
    try:
        number = Decimal(value.strip() if isinstance(value, str) else str(value))
    except (InvalidOperation, ValueError, TypeError):
        return Unreadable(value if isinstance(value, str) else repr(value))
    if not number.is_finite() or number != number.to_integral_value():
        return Unreadable(value if isinstance(value, str) else repr(value))
    # Far beyond any valid quantity: not worth building a huge int for the rejection.
    return int(number) if number.adjusted() < 30 else MAX_QUANTITY + 1


def _text(value: Any) -> Any:
    """Text columns as str: SQLite returns what the producer stored (5, b'x')."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def epoch_hour(conn: Connection, column: Any) -> ColumnElement[Any]:
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


def simple_measure(conn: Connection) -> ColumnElement[bool]:
    """True for a measure the database may sum as is (valid, one hour); else false
    or NULL, so it belongs in a CASE WHEN, which takes NULL as false.

    The SQL twin of metering.core.events.validate (a Measure) with
    metering.core.slicing.split_measure (one part): tests/test_range_scan.py holds the
    two to the millisecond on both databases (SQLite alone where MariaDB is absent),
    and tests/test_producer_properties.py for rows in a producer's own forms."""
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
        *(_mysql_not_blank(column) for column in (ev.c.account, ev.c.entity, ev.c.resource_id)),
        ev.c.quantity >= 0,
        ev.c.quantity <= MAX_QUANTITY,
        ev.c.period_start >= from_ms(MIN_TIME),
        # Within the hour of period_start: millisecond times, so end - 1 ms lies in
        # that hour exactly when end <= the next hour's start, i.e. when end rounded
        # up to whole seconds (TO_SECONDS drops the fraction) is.
        ev.c.period_end >= ev.c.period_start,
        end_seconds_up <= next_hour_seconds,
        # The unit as the database can default it itself (metering/store/measure_lines.py):
        # absent, empty, or not starting with whitespace (the rest the core reads).
        or_(ev.c.unit.is_(None), func.ord(ev.c.unit).not_in(_WHITESPACE_ORD[1:])),
    )


def _mysql_not_blank(column: Any) -> ColumnElement[bool]:
    """False for a blank value (and for some that merely start with whitespace, which
    the core then reads alone): ORD gives the first character's UTF-8 bytes as a
    number (0 for ''), so no per-row trimming is needed."""
    return func.ord(column).not_in(_WHITESPACE_ORD)


_WHITESPACE_ORD = (0, *(int.from_bytes(chr(c).encode(), "big") for c in WHITESPACE))


def _sqlite_not_blank(column: Any) -> ColumnElement[bool]:
    # unicode('') is NULL: false in a CASE WHEN, as wanted.
    return and_(func.typeof(column) == "text", func.unicode(column).not_in(WHITESPACE))


def instant(conn: Connection, column: Any) -> Any:
    """A time column as an instant the database compares right: on SQLite, a
    producer's text ('T', 'Z', an offset, no fraction) in metering's own form."""
    if conn.dialect.name != "sqlite":
        return column
    return type_coerce(func.strftime("%Y-%m-%d %H:%M:%f", column), column.type)


def _sqlite_canonical(column: Any) -> ColumnElement[bool]:
    """metering's own text form of a valid time: anything else a producer stored (no
    fraction, a 'T', an offset, 30 February) is read alone by the core."""
    same: ColumnElement[bool] = func.strftime("%Y-%m-%d %H:%M:%f", column) == column
    return same


def _simple_sqlite(conn: Connection) -> ColumnElement[bool]:
    return and_(
        ev.c.kind == "quantity",
        ev.c.action == "measure",
        *(
            and_(_sqlite_not_blank(column), func.char_length(column) <= MAX_TEXT[column.name])
            for column in (ev.c.account, ev.c.entity, ev.c.resource_id)
        ),
        func.char_length(ev.c.event_id) <= MAX_TEXT["event_id"],
        # A blank unit is the default one: grouped apart, added up in scan_range.
        func.typeof(ev.c.unit).in_(("text", "null")),
        func.char_length(func.coalesce(ev.c.unit, "")) <= MAX_TEXT["unit"],
        # Unused by measures, but over-long text is rejected whatever the column.
        func.char_length(func.coalesce(ev.c.offering, "")) <= MAX_TEXT["offering"],
        # SQLite keeps REAL and TEXT in a BIGINT column: only integers are summed here.
        func.typeof(ev.c.quantity) == "integer",
        ev.c.quantity >= 0,
        ev.c.quantity <= MAX_QUANTITY,
        _sqlite_canonical(ev.c.period_start),
        _sqlite_canonical(ev.c.period_end),
        epoch_hour(conn, ev.c.period_start) >= MIN_TIME // HOUR,
        or_(
            ev.c.period_end == ev.c.period_start,
            and_(
                ev.c.period_end > ev.c.period_start,
                epoch_hour(conn, ev.c.period_start) == _sqlite_epoch_hour_before(ev.c.period_end),
            ),
        ),
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
    """One pass over an id range: how many rows it held, the ids of rows read alone,
    and the digest of the rows it summed."""

    rows: int
    other_ids: list[int]
    summed: Digest


def max_id(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(ev.c.id), 0))).scalar_one())


def time_at_id(conn: Connection, last: int) -> int | None:
    """occurred_at of the newest event up to id `last` (None: none, or unreadable)."""
    query = (
        select(type_coerce(ev.c.occurred_at, _Raw()))
        .where(ev.c.id <= last)
        .order_by(ev.c.id.desc())
        .limit(1)
    )
    value = parse_raw_time(conn.execute(query).scalar())
    return None if isinstance(value, Unreadable) else value


def last_before(conn: Connection, lo: int, hi: int, hour: int) -> int:
    """The highest id of [lo, hi] whose row may bill something before `hour` (its period,
    or else its time, starts before it); lo - 1 if none. A catch-up window whose last
    events began `hour` stops there (metering/run.py): the rows after it bill nothing
    before `hour`, so the next window bills them once, where this one would have put
    their sums in pending_usage for the next to take back (0.6-0.8 s a window of a
    day's catch-up on MariaDB, profiled). One step down the primary key per row past."""
    start = func.coalesce(instant(conn, ev.c.period_start), instant(conn, ev.c.occurred_at))
    query = (
        select(ev.c.id)
        .where(ev.c.id.between(lo, hi), start < from_ms(hour))
        .order_by(ev.c.id.desc())
        .limit(1)
    )
    found = conn.execute(query).scalar()
    return lo - 1 if found is None else int(found)


def in_gap(column: Any, ids: Strided) -> ColumnElement[bool]:
    """column is one of the ids of a gap row. The offset is added, never subtracted:
    MariaDB's ids are unsigned, and a negative intermediate is an error there."""
    span: ColumnElement[bool] = column.between(ids.id_from, ids.id_to)
    if ids.contiguous:
        return span
    shift = -ids.id_from % ids.step
    return and_(span, (column + shift) % ids.step < ids.width)


def scan_query(
    conn: Connection, lo: int, hi: int, within: Strided | None = None, quantities: bool = False
) -> Select[Any]:
    """The one query scan_range sends (benchmarks/scan_parts.py times it too)."""
    single = case((simple_measure(conn), 0), else_=ev.c.id).label("g_single")
    # Meaningless for rows grouped alone (by id), so not guarded by `simple`: the
    # predicate is then evaluated once per row, not twice.
    hour = epoch_hour(conn, ev.c.period_start).label("g_hour")
    query = (
        select(
            single,
            ev.c.unit,
            hour,
            ev.c.account,
            ev.c.entity,
            ev.c.resource_id,
            func.count().label("g_rows"),
            *_quantity_sums(conn),
            func.sum(ev.c.id).label("g_ids"),
        )
        .where(ev.c.id.between(lo, hi) if within is None else in_gap(ev.c.id, within))
        # By alias: given the expressions, MariaDB evaluated them again for grouping
        # (2.5x the time at 1M rows). Aliases unlike any column: MySQL resolves a
        # GROUP BY name to a table column first. The order is MariaDB's fastest of
        # those measured (short columns first: 1.9 s at 1M rows, 2.9 s with the text
        # columns first: benchmarks/scan_parts.py); the raw unit, as its default is
        # cheaper applied here.
        .group_by(*(literal_column(name) for name in ("g_single", "unit", "g_hour", "account",
                                                      "entity", "resource_id")))
    )  # fmt: skip
    if not quantities:
        return query
    # The rows read_other_kinds leaves: a third of the groups in a busy hour, where
    # resource events were grouped one by one. Along the primary key still: MariaDB
    # would take the (kind, id) index and look up each row (a third slower).
    return query.where(ev.c.kind == "quantity").with_hint(ev, "FORCE INDEX (PRIMARY)", "mysql")


def _quantity_sums(conn: Connection) -> tuple[ColumnElement[Any], ...]:
    """SUM(quantity), as one sum or two that cannot overflow. MariaDB sums a BIGINT
    into a DECIMAL, exactly; SQLite's integer SUM fails past 2^63 ("integer overflow":
    one key's volume would stop every run), so it sums the high and low 32 bits apart."""
    if conn.dialect.name != "sqlite":
        return (func.sum(ev.c.quantity).label("g_amount"),)
    return (
        func.sum(ev.c.quantity.op(">>")(32)).label("g_amount_high"),
        func.sum(ev.c.quantity.op("&")(_LOW_BITS)).label("g_amount_low"),
    )


_LOW_BITS = 2**32 - 1


def scan_range(
    conn: Connection,
    lo: int,
    hi: int,
    sums: dict[PartKey, int],
    within: Strided | None = None,
    quantities: bool = False,
) -> RangeScan:
    """Read [lo, hi] (or the ids of the gap row `within`) once: the database sums
    simple measures per (account, entity, resource_id, unit, hour), added here into
    `sums` ((key, hour ms) -> amount); every other row comes back alone, as its id,
    so a window costs one primary-key range scan whatever its mix. Rows stream:
    memory follows the groups, not the rows. `quantities`: only the rows of a
    measure's kind (the rest having been read by read_other_kinds)."""
    query = scan_query(conn, lo, hi, within, quantities)
    sqlite = conn.dialect.name == "sqlite"
    rows = summed_ids = 0
    others: list[int] = []
    groups: Iterable[Sequence[Any]]
    if sqlite:
        groups = _streamed(conn, query)
    else:
        groups = map(_unpack_group, _streamed(conn, _packed_groups(query)))
    for row in groups:
        rows += row[6]
        if row[0]:
            others.append(int(row[0]))
            continue
        summed_ids += int(row[-1])
        # Entities and units repeat across thousands of groups: one string each.
        unit = intern(DEFAULT_UNIT if is_blank(row[1]) else row[1])
        key = ((row[3], intern(row[4]), row[5], unit), int(row[2]) * HOUR)
        # SQLite's sum comes in two halves (_quantity_sums).
        amount = (int(row[7]) << 32) + int(row[8]) if sqlite else int(row[7])
        sums[key] = sums.get(key, 0) + amount
    others.sort()
    return RangeScan(rows, others, Digest(rows - len(others), summed_ids))


def _packed_groups(query: Select[Any]) -> Select[Any]:
    """scan_query's groups on MariaDB, each as one text: its numbers, the lengths of
    its key's texts, then those texts unseparated, so no character in them can be
    misread. The driver's reading of nine columns a group took most of the 0.3 s of CPU
    a busy hour's 27k groups cost once summed; the run waits for it."""
    c = query.subquery().c
    head = (c.g_single, c.g_rows, func.ifnull(c.g_hour, ""), func.ifnull(c.g_amount, ""),
            c.g_ids, func.ifnull(func.char_length(c.unit), 0), func.char_length(c.account),
            func.char_length(c.entity))  # fmt: skip
    fields: list[Any] = []
    for value in head:
        fields.extend((value, ","))
    fields[-1] = ":"
    fields.extend((func.ifnull(c.unit, ""), c.account, c.entity, c.resource_id))
    return select(cast(func.concat(*fields), String))


def _unpack_group(row: Sequence[Any]) -> tuple[Any, ...]:
    """A _packed_groups text as scan_query's row (its unit '' for NULL: both are blank)."""
    text: str = row[0]
    colon = text.index(":")
    single, count, hour, amount, ids, unit_len, account_len, entity_len = text[:colon].split(",")
    a = colon + 1
    b = a + int(unit_len)
    c = b + int(account_len)
    d = c + int(entity_len)
    return (int(single), text[a:b], hour, text[b:c], text[c:d], text[d:], int(count), amount, ids)


@dataclass(frozen=True, slots=True)
class Digest:
    """Which rows one snapshot held, in brief: how many, and the sum of their ids."""

    rows: int
    id_sum: int

    def __sub__(self, other: Digest) -> Digest:
        return Digest(self.rows - other.rows, self.id_sum - other.id_sum)

    def plus(self, row_id: int) -> Digest:
        return Digest(self.rows + 1, self.id_sum + row_id)


def digest(conn: Connection, lo: int, hi: int) -> Digest:
    """The digest of all rows of [lo, hi]: one primary-key range pass."""
    rows, id_sum = conn.execute(
        select(func.count(), func.coalesce(func.sum(ev.c.id), 0)).where(ev.c.id.between(lo, hi))
    ).one()
    return Digest(int(rows), int(id_sum))


_TIMES = ("occurred_at", "period_start", "period_end")
_NAMES = ("id", "event_id", "kind", "entity", "action", "account", "resource_id", "offering",
          "occurred_at", "quantity", "unit", "period_start", "period_end")  # fmt: skip
# As the driver gives them: on SQLite, times and quantities as the producer stored them.
_RAW_COLUMNS = tuple(
    type_coerce(column, _Raw()) if column.name in (*_TIMES, "quantity") else column
    for column in ev.c[_NAMES]
)


def _raw(row: Sequence[Any]) -> RawEvent:
    unreadable: list[tuple[str, str]] = []

    def read(column: str, value: int | Unreadable | None) -> int | None:
        if isinstance(value, Unreadable):
            unreadable.append((column, str(value)))
            return None
        return value

    return RawEvent(
        id=int(row[0]),
        event_id=_text(row[1]),
        kind=_text(row[2]),
        entity=_text(row[3]),
        action=_text(row[4]),
        account=_text(row[5]),
        resource_id=_text(row[6]),
        offering=_text(row[7]),
        occurred_at=read("occurred_at", parse_raw_time(row[8])),
        quantity=read("quantity", parse_raw_quantity(row[9])),
        unit=_text(row[10]),
        period_start=read("period_start", parse_raw_time(row[11])),
        period_end=read("period_end", parse_raw_time(row[12])),
        unreadable=tuple(unreadable),
    )


# MariaDB's columns hold only what their types allow: text as text, whole numbers,
# and times, which come as the server's text and are read by Python's C parser. The
# driver's own DATETIME conversion, and _raw's checks for what SQLite may hold, took
# half of reading a busy hour's 43k resource events.
_MYSQL_COLUMNS = tuple(
    cast(column, String) if column.name in _TIMES else column for column in ev.c[_NAMES]
)
_NAIVE_EPOCH = datetime(1970, 1, 1)


def _mysql_ms(text: str | None) -> int | Unreadable | None:
    if text is None:
        return None
    try:
        delta = datetime.fromisoformat(text) - _NAIVE_EPOCH
    except ValueError:
        # A zero date a lax sql_mode let in: unreadable, as the driver's text is.
        return parse_raw_time(text)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _mysql_raw(row: Sequence[Any]) -> RawEvent:
    occurred_at, period_start, period_end = (_mysql_ms(row[i]) for i in (8, 11, 12))
    if (
        isinstance(occurred_at, Unreadable)
        or isinstance(period_start, Unreadable)
        or isinstance(period_end, Unreadable)
    ):
        return _raw(row)
    return RawEvent(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
        occurred_at, row[9], row[10], period_start, period_end,
    )  # fmt: skip


def _reading(conn: Connection) -> tuple[tuple[Any, ...], Callable[[Sequence[Any]], RawEvent]]:
    """The columns to select for whole rows, and what makes each a RawEvent."""
    if conn.dialect.name == "sqlite":
        return _RAW_COLUMNS, _raw
    return _MYSQL_COLUMNS, _mysql_raw


def _stream(conn: Connection, where: Callable[[Select[Any]], Select[Any]]) -> Iterator[RawEvent]:
    """Whole rows of select(columns), as `where` narrows and orders it, streamed."""
    columns, make = _reading(conn)
    for row in _streamed(conn, where(select(*columns))):
        yield make(row)


def _streamed(conn: Connection, query: Select[Any]) -> Iterator[Row[Any]]:
    # Per statement: Connection.execution_options would switch the whole connection
    # to unbuffered cursors.
    result = conn.execute(query.execution_options(stream_results=True, yield_per=STREAM_BATCH))
    try:
        yield from result
    finally:
        result.close()


def read_alone(conn: Connection, lo: int, hi: int) -> Iterator[RawEvent]:
    """The rows of [lo, hi] that scan_range would return alone (all but the simple
    measures), whole, in id order: for a range whose simple measures the database
    sums itself (metering/store/measure_lines.py)."""
    alone = case((simple_measure(conn), 0), else_=1) == 1
    return _stream(conn, lambda q: q.where(ev.c.id.between(lo, hi), alone).order_by(ev.c.id))


def read_other_kinds(conn: Connection, lo: int, hi: int) -> Iterator[RawEvent]:
    """The rows of [lo, hi] whose kind is not a measure's (resource events and bad
    rows), whole, in id order but for the rare row _unpack cannot read, which comes
    last: what scan_range(quantities=True) leaves, on MariaDB. Through the
    (kind, id) index, an id range per kind: 0.1 s for a busy hour's 43k rows of 1M,
    against 0.45 s for a pass along the primary key that tests each row's kind (what
    it does past MAX_KINDS_SOUGHT kinds)."""
    kinds = _other_kinds(conn)
    if kinds == []:
        return
    query = select(_packed()).where(ev.c.id.between(lo, hi)).order_by(ev.c.id)
    if kinds is None:
        query = query.where(ev.c.kind != "quantity")
    else:
        query = query.where(ev.c.kind.in_(kinds)).with_hint(
            ev, "FORCE INDEX (ix_usage_events_kind_id)", "mysql"
        )
    later: list[int] = []
    for (text,) in _streamed(conn, query):
        raw = _unpack(text)
        if raw is None:
            later.append(int(text.split(_SEPARATOR, 1)[0]))
        else:
            yield raw
    yield from events_by_id(conn, later)


# A busy hour's 43k resource events, each a single text: the driver's reading of
# thirteen columns apiece was most of the time it took to read them (0.71 s of CPU,
# 0.40 s as one text each). A text column holding the separator, or a zero date, makes
# a row _unpack leaves to events_by_id.
_SEPARATOR = "\x1f"
_NULLABLE = ("offering", "quantity", "unit", "period_start", "period_end")
_NULLABLE_AT = tuple(_NAMES.index(name) for name in _NULLABLE)


def _packed() -> ColumnElement[Any]:
    """A row's columns as _NAMES orders them, joined by _SEPARATOR (times as the
    server's text, NULL as ''), then which of _NULLABLE are NULL, as bits."""
    fields: list[Any] = []
    for name in _NAMES:
        column: Any = ev.c[name]
        if name in _TIMES:
            column = cast(column, String)
        if name in _NULLABLE:
            column = func.ifnull(column, "")
        fields.extend((column, _SEPARATOR))
    nulls = sum(
        (case((ev.c[name].is_(None), 1 << bit), else_=0) for bit, name in enumerate(_NULLABLE)),
        start=literal(0),
    )
    return cast(func.concat(*fields, nulls), String)


def _unpack(text: str) -> RawEvent | None:
    """The RawEvent of a _packed row; None where it cannot be read so (see above)."""
    fields = text.split(_SEPARATOR)
    if len(fields) != len(_NAMES) + 1:
        return None
    nulls = int(fields[-1])
    offering, quantity, unit, period_start, period_end = (
        None if nulls >> bit & 1 else fields[at] for bit, at in enumerate(_NULLABLE_AT)
    )
    occurred_at = _mysql_ms(fields[8])
    start, end = _mysql_ms(period_start), _mysql_ms(period_end)
    if (
        isinstance(occurred_at, Unreadable)
        or isinstance(start, Unreadable)
        or isinstance(end, Unreadable)
    ):
        return None
    return RawEvent(
        int(fields[0]), fields[1], fields[2], fields[3], fields[4], fields[5], fields[6],
        offering, occurred_at, None if quantity is None else int(quantity), unit, start, end,
    )  # fmt: skip


# Past this many kinds the run tests each row's kind instead: a producer that once
# wrote a kind per row would otherwise cost every run a seek per kind, forever.
MAX_KINDS_SOUGHT = 64


def _other_kinds(conn: Connection) -> list[str] | None:
    """Every kind stored but a measure's, one index seek each from the least up; None
    past MAX_KINDS_SOUGHT kinds. The column compares, so a kind equal to 'quantity'
    under its collation is a measure's kind here as in scan_range's filter, and `IN`
    finds all of a kind's spellings."""
    kinds: list[str] = []
    query = select(ev.c.kind, ev.c.kind == "quantity").order_by(ev.c.kind).limit(1)
    row = conn.execute(query).first()
    for _ in range(MAX_KINDS_SOUGHT + 1):
        if row is None:
            return kinds
        if not row[1]:
            kinds.append(row[0])
        row = conn.execute(query.where(ev.c.kind > row[0])).first()
    return None


def events_by_id(conn: Connection, ids: Sequence[int]) -> Iterator[RawEvent]:
    """Whole rows by primary key, in id order."""
    columns, make = _reading(conn)
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        for row in conn.execute(select(*columns).where(ev.c.id.in_(chunk)).order_by(ev.c.id)):
            yield make(row)


def id_classes(
    conn: Connection, lo: int, hi: int, block: int = BLOCK, modulus: int = RESIDUES
) -> list[IdClass]:
    """The ids present in [lo, hi], counted by block and residue (metering/core/gaps.py):
    one aggregate pass over the primary-key range, a few thousand groups a million ids
    (by default)."""
    query = (
        select(
            (ev.c.id // block).label("g_block"),
            (ev.c.id % modulus).label("g_residue"),
            func.count(),
            func.min(ev.c.id),
            func.max(ev.c.id),
        )
        .where(ev.c.id.between(lo, hi))
        .group_by(literal_column("g_block"), literal_column("g_residue"))
    )
    return [
        IdClass(int(b), int(r), int(n), int(f), int(t), modulus)
        for b, r, n, f, t in conn.execute(query)
    ]


def id_step(conn: Connection) -> int:
    """The session's auto_increment_increment: on a Galera node (with
    wsrep_auto_increment_control) the cluster's size, each node's ids one residue
    class of it; 1 where the server has none (SQLite)."""
    if conn.dialect.name == "sqlite":
        return 1
    return int(conn.exec_driver_sql("SELECT @@auto_increment_increment").scalar_one())


def holes(conn: Connection, lo: int, hi: int) -> Iterator[tuple[int, int]]:
    """The id ranges within [lo, hi] that hold no row, in id order: a window over the
    primary key, so only the holes travel, not every id. Row by row in the database,
    so it is kept for the blocks id_classes cannot describe; the holes stream: many
    never become one list."""
    where = ev.c.id.between(lo, hi)
    last = conn.execute(select(func.max(ev.c.id)).where(where)).scalar()
    if last is None:
        yield lo, hi
        return
    rows = (
        select(
            ev.c.id.label("id"),
            # Before the first row: as if lo - 1 held one, so the range's head is a hole.
            func.coalesce(func.lag(ev.c.id).over(order_by=ev.c.id), lo - 1).label("previous"),
        )
        .where(where)
        .subquery()
    )
    query = (
        select(rows.c.previous + 1, rows.c.id - 1)
        .where(rows.c.id - rows.c.previous > 1)
        .order_by(rows.c.id)
    )
    for first, end in _streamed(conn, query):
        yield int(first), int(end)
    if last < hi:
        yield int(last) + 1, hi


def present_in(conn: Connection, sets: Sequence[Strided]) -> list[int]:
    """The ids of rows that are among the ids of these gap rows, ascending: what a
    re-read finds, one primary-key range scan of each span, a query per GAP_BATCH.
    A UNION ALL, not an OR: MariaDB tests every row of the ranges against every
    term of an OR (a 1M-event run re-reading 472 gap rows so took 10.6 s, 4.0 s
    without gaps; this way 0.3 s of it is the re-read: benchmarks/gaps.py)."""
    found: list[int] = []
    for start in range(0, len(sets), GAP_BATCH):
        parts = [select(ev.c.id).where(in_gap(ev.c.id, s)) for s in sets[start : start + GAP_BATCH]]
        query = parts[0] if len(parts) == 1 else union_all(*parts)
        found.extend(int(i) for i in conn.execute(query).scalars())
    return sorted(found)


def _text_slack(conn: Connection) -> timedelta:
    """How far a time filter must reach beyond its bound to catch every row.

    SQLite compares times as text, which is right only for metering's own form: a
    producer's '...12:00:00' sorts before '...12:00:00.000', a 'T' after a space, and
    an offset moves the instant up to 14 hours. The date always comes first, so two
    days' slack (the filter's index still bounds the scan) catches all of them, and
    callers keep what the core's reading of the time says is in range.
    """
    return timedelta(days=2) if conn.dialect.name == "sqlite" else timedelta(0)


def resource_history(
    conn: Connection,
    keys: Sequence[ResourceKey],
    since: datetime | None = None,
    up_to_id: int | None = None,
) -> dict[ResourceKey, list[RawEvent]]:
    """Resource events of these resources (all, or those at or after `since`; of ids
    up to `up_to_id`, if given), through the (account, entity, resource_id,
    occurred_at) index."""
    found: dict[ResourceKey, list[RawEvent]] = {key: [] for key in keys}
    columns, make = _reading(conn)

    def read(query: Select[Any]) -> None:
        query = query.where(ev.c.kind == "resource")
        if up_to_id is not None:
            query = query.where(ev.c.id <= up_to_id)
        if since is not None:
            query = query.where(ev.c.occurred_at >= since - _text_slack(conn))
        for row in conn.execute(query):
            raw = make(row)
            found[(raw.account, raw.entity, raw.resource_id)].append(raw)

    if len(keys) > MANY:
        with key_table(conn, keys) as wanted:
            read(select(*columns).select_from(ev.join(wanted, same_key(ev, wanted))))
        return found
    for start in range(0, len(keys), MANY):
        read(select(*columns).where(key_match(keys[start : start + MANY])))
    return found


def measures_overlapping(
    conn: Connection, start: datetime, end: datetime, earliest_start: datetime, last_id: int
) -> Iterator[RawEvent]:
    """Quantity rows already read by scheduled runs (id <= last_id) whose period may
    overlap [start, end); period_start >= earliest_start bounds the index scan."""
    return _stream(
        conn,
        lambda q: q.where(
            ev.c.kind == "quantity",
            ev.c.id <= last_id,
            ev.c.period_start >= earliest_start - _text_slack(conn),
            ev.c.period_start < end + _text_slack(conn),
        ).order_by(ev.c.id),
    )


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


def _readable(value: Any) -> int | None:
    parsed = parse_raw_time(value)
    return None if isinstance(parsed, Unreadable) else parsed


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
        DatedEvent(int(i), event_id, account, entity, resource_id, _readable(when))
        for i, event_id, account, entity, resource_id, when in conn.execute(query)
    ]
    return DatedAfter(count, first)


@dataclass(frozen=True, slots=True)
class OlderRow:
    """A row `metering prune` judges: the event, its attributes as stored, and where
    the next page starts after it."""

    raw: RawEvent
    attributes: Any
    position: tuple[Any, ...]


def older_page(
    conn: Connection, before: datetime, after: tuple[Any, ...] | None, limit: int
) -> list[OlderRow]:
    """Up to `limit` rows dated up to `before` (on SQLite some later ones too: the
    caller judges the time it reads), in the order of the resource index (account,
    entity, resource_id, occurred_at, id) from just after position `after`: a
    resource's rows come together, and each page is one range of that index."""
    occurred = type_coerce(ev.c.occurred_at, _Raw())
    order = (ev.c.account, ev.c.entity, ev.c.resource_id, occurred, ev.c.id)
    query = select(*_RAW_COLUMNS, type_coerce(ev.c.attributes, _Raw())).where(
        # <=: a measure's occurred_at is usually its period_end, and one ending at the
        # horizon may go.
        ev.c.occurred_at <= before + _text_slack(conn)
    )
    if after is not None:
        query = query.where(_after(conn, order, after))
    rows = conn.execute(query.order_by(*order).limit(limit)).all()
    return [OlderRow(_raw(row), row[13], (row[5], row[3], row[6], row[8], row[0])) for row in rows]


def _after(conn: Connection, order: Sequence[Any], position: Sequence[Any]) -> ColumnElement[bool]:
    """(a, b, ...) > (x, y, ...), as each database seeks it in the index: SQLite a row
    value; MariaDB (a > x) OR (a = x AND b > y) OR ..., as it reads a row comparison
    with a full scan and a sort."""
    bound = [literal(value, column.type) for value, column in zip(position, order, strict=True)]
    if conn.dialect.name == "sqlite":
        after: ColumnElement[bool] = tuple_(*order) > tuple_(*bound)
        return after
    return or_(
        *(
            and_(*(order[j] == bound[j] for j in range(i)), order[i] > bound[i])
            for i in range(len(order))
        )
    )
