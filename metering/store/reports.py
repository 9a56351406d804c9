"""Reading what was billed: usage sums per period and group, runs, rejected events.

Every sum is a SQL GROUP BY, exact on SQLite too (metering/store/sums.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import String, case, func, literal_column, or_, select, type_coerce, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.elements import ColumnElement

from metering.db import is_mysql
from metering.store.runs import RunRecord
from metering.store.schema import rejected_events, runs, usage_events, usage_lines
from metering.store.sums import exact_sum, sum_value

PERIODS = ("hour", "day", "month")
GROUPS = ("account", "entity", "resource", "offering", "unit")
DEFAULT_GROUP = ("account", "entity", "offering", "unit")
# The usage_lines column behind each group name, in the order rows show them.
_GROUP_COLUMN = {
    "account": "account",
    "entity": "entity",
    "resource": "resource_id",
    "offering": "offering",
    "unit": "unit",
}
_SQLITE_PREFIX = {"hour": 13, "day": 10, "month": 7}
_MYSQL_FORMAT = {"hour": "%Y-%m-%d %H", "day": "%Y-%m-%d", "month": "%Y-%m"}
_PARSE_FORMAT = {"hour": "%Y-%m-%d %H", "day": "%Y-%m-%d", "month": "%Y-%m"}
_ZERO: ColumnElement[Any] = literal_column("0")


@dataclass(frozen=True, slots=True)
class UsageFilter:
    accounts: Sequence[str] = ()
    resources: Sequence[str] = ()
    entities: Sequence[str] = ()
    offerings: Sequence[str] = ()
    since: datetime | None = None  # hours starting at or after
    until: datetime | None = None  # hours starting before


def group_columns(names: Sequence[str]) -> tuple[str, ...]:
    """The columns rows are summed over for a --group: the names asked for, plus entity
    and unit always (seconds of a VM and of a volume, or seconds and bytes, are never
    one figure), plus account and entity with resource (a resource_id is only unique
    within them, contract rule 4)."""
    wanted = set(names) | {"entity", "unit"}
    if "resource" in wanted:
        wanted.add("account")
    return tuple(_GROUP_COLUMN[name] for name in GROUPS if name in wanted)


@dataclass(frozen=True, slots=True)
class WrittenAfter:
    """Lines of the runs after a run (by the order runs committed in) or committed after
    an instant: what changed since an invoice was cut."""

    run_id: str | None = None
    time: datetime | None = None


@dataclass(frozen=True, slots=True)
class UsageSum:
    period: datetime
    group: tuple[str, ...]  # the values of the group columns, unit included
    unit: str
    quantity: Decimal
    lines: int
    corrections: int  # lines that corrected an hour billed before (see is_correction)

    def value(self, columns: Sequence[str], name: str) -> str | None:
        return self.group[columns.index(name)] if name in columns else None


@dataclass(frozen=True, slots=True)
class LineRow:
    account: str
    entity: str
    resource_id: str
    offering: str
    unit: str
    period_start: datetime
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class RunTotal:
    account: str
    entity: str
    unit: str
    quantity: Decimal
    lines: int


@dataclass(frozen=True, slots=True)
class FindingRow:
    id: int
    run_id: str
    category: str
    reason: str
    recorded_at: datetime
    reviewed: bool
    event_row_id: int
    event_id: str
    # From usage_events; None when the event row is gone.
    account: str | None
    entity: str | None
    resource_id: str | None
    action: str | None
    occurred_at: datetime | None


def _period(conn: Connection, by: str) -> ColumnElement[Any]:
    """The line's hour truncated to `by`, as text 'YYYY-MM-DD HH' / 'YYYY-MM-DD' / 'YYYY-MM'."""
    column = usage_lines.c.period_start
    if is_mysql(conn):
        return func.date_format(column, _MYSQL_FORMAT[by])
    # Stored as 'YYYY-MM-DD HH:MM:SS.fff'; rows from other writers may use a 'T'.
    text = func.substr(type_coerce(column, String), 1, _SQLITE_PREFIX[by])
    return func.replace(text, "T", " ")


def is_correction() -> ColumnElement[bool]:
    """A line that changed an hour billed before: negative, written by a backfill, or
    written by a scheduled run for an hour before its window (a late event)."""
    return or_(
        usage_lines.c.quantity < _ZERO,
        runs.c.kind == "backfill",
        usage_lines.c.period_start < runs.c.hours_from,
    )


def _where(filters: UsageFilter) -> list[ColumnElement[bool]]:
    c = usage_lines.c
    clauses: list[ColumnElement[bool]] = []
    for column, values in (
        (c.account, filters.accounts),
        (c.resource_id, filters.resources),
        (c.entity, filters.entities),
        (c.offering, filters.offerings),
    ):
        if values:
            clauses.append(column.in_(list(values)))
    if filters.since is not None:
        clauses.append(c.period_start >= filters.since)
    if filters.until is not None:
        clauses.append(c.period_start < filters.until)
    return clauses


def _written_after(conn: Connection, after: WrittenAfter) -> ColumnElement[bool]:
    r = runs.c
    if after.time is not None:
        # A run's lines commit with it, just after finished_at.
        return r.finished_at > after.time
    row = conn.execute(select(r.started_at, r.hours_to).where(r.run_id == after.run_id)).first()
    if row is None:
        raise LookupError(after.run_id)
    # Runs never overlap; the chunks of one invocation share started_at and follow
    # each other by their hours.
    return or_(
        r.started_at > row.started_at,
        (r.started_at == row.started_at) & (r.hours_to > row.hours_to),
    )


def usage_sums(
    conn: Connection,
    filters: UsageFilter,
    by: str,
    columns: Sequence[str],
    written_after: WrittenAfter | None = None,
) -> list[UsageSum]:
    """SUM(quantity) per (period, columns), ordered by period then columns; `columns`
    include unit (see group_columns). With written_after, only the lines of the later
    runs, and corrections apart from the other lines."""
    period = _period(conn, by).label("period")
    groups = [usage_lines.c[name] for name in columns]
    correction = case((is_correction(), 1), else_=0)
    split = [correction.label("correction")] if written_after is not None else []
    where = _where(filters)
    if written_after is not None:
        where.append(_written_after(conn, written_after))
    query = (
        select(
            period,
            *groups,
            exact_sum(conn, usage_lines.c.quantity),
            func.count(),
            func.sum(correction),
            *split,
        )
        .select_from(usage_lines.outerjoin(runs, runs.c.run_id == usage_lines.c.run_id))
        .where(*where)
        # By its alias (usage_lines has no such column): given the expression, MariaDB
        # evaluates it again to group, as it did for the run's range scan.
        .group_by(literal_column("period"), *groups, *(literal_column("correction") for _ in split))
        .order_by(period, *groups, *(literal_column("correction") for _ in split))
    )
    width = len(groups)
    unit_at = list(columns).index("unit")
    periods: dict[str, datetime] = {}  # strptime is slow and there are few distinct periods
    result: list[UsageSum] = []
    for row in conn.execute(query):
        start = periods.get(row[0])
        if start is None:
            start = datetime.strptime(row[0], _PARSE_FORMAT[by]).replace(tzinfo=UTC)
            periods[row[0]] = start
        group = tuple(str(v) for v in row[1 : 1 + width])
        result.append(
            UsageSum(
                period=start,
                group=group,
                unit=group[unit_at],
                quantity=sum_value(row[1 + width]),
                lines=int(row[2 + width]),
                corrections=int(row[3 + width] or 0),
            )
        )
    return result


def _run(row: Row[Any]) -> RunRecord:
    return RunRecord(**{name: getattr(row, name) for name in RunRecord.__dataclass_fields__})


def list_runs(conn: Connection, limit: int) -> list[RunRecord]:
    """Newest first; chunks of one invocation share a start time, the later window first."""
    query = (
        select(runs)
        .order_by(runs.c.started_at.desc(), runs.c.hours_to.desc(), runs.c.run_id.desc())
        .limit(limit)
    )
    return [_run(row) for row in conn.execute(query)]


def get_run(conn: Connection, run_id: str) -> RunRecord | None:
    row = conn.execute(select(runs).where(runs.c.run_id == run_id)).first()
    return None if row is None else _run(row)


def run_totals(conn: Connection, run_id: str) -> list[RunTotal]:
    c = usage_lines.c
    query = (
        select(c.account, c.entity, c.unit, exact_sum(conn, c.quantity), func.count())
        .where(c.run_id == run_id)
        .group_by(c.account, c.entity, c.unit)
        .order_by(c.account, c.entity, c.unit)
    )
    return [
        RunTotal(account, entity, unit, sum_value(total), int(count))
        for account, entity, unit, total, count in conn.execute(query)
    ]


def run_corrections(conn: Connection, run_id: str, limit: int) -> tuple[list[LineRow], int]:
    """The run's correction lines (first `limit`, by hour) and how many there are in all."""
    c = usage_lines.c
    base = (
        usage_lines.join(runs, runs.c.run_id == c.run_id),
        (c.run_id == run_id) & is_correction(),
    )
    total = conn.execute(select(func.count()).select_from(base[0]).where(base[1])).scalar_one()
    query = (
        select(c.account, c.entity, c.resource_id, c.offering, c.unit, c.period_start, c.quantity)
        .select_from(base[0])
        .where(base[1])
        .order_by(c.period_start, c.account, c.entity, c.resource_id, c.offering, c.unit)
        .limit(limit)
    )
    return [LineRow(*row) for row in conn.execute(query)], int(total)


def findings(
    conn: Connection,
    *,
    run_id: str | None = None,
    category: str | None = None,
    since: datetime | None = None,
    unreviewed: bool = False,
    limit: int = 100,
) -> list[FindingRow]:
    """Rejected events and anomalies, newest first, with the event's context."""
    r = rejected_events.c
    e = usage_events.c
    query = select(
        r.id,
        r.run_id,
        r.category,
        r.reason,
        r.recorded_at,
        r.reviewed,
        r.event_row_id,
        r.event_id,
        e.account,
        e.entity,
        e.resource_id,
        e.action,
        e.occurred_at,
    ).select_from(rejected_events.outerjoin(usage_events, e.id == r.event_row_id))
    if run_id is not None:
        query = query.where(r.run_id == run_id)
    if category is not None:
        query = query.where(r.category == category)
    if since is not None:
        query = query.where(r.recorded_at >= since)
    if unreviewed:
        query = query.where(r.reviewed.is_(False))
    query = query.order_by(r.id.desc()).limit(limit)
    return [
        FindingRow(
            id=int(row.id),
            run_id=row.run_id,
            category=row.category,
            reason=row.reason,
            recorded_at=row.recorded_at,
            reviewed=bool(row.reviewed),
            event_row_id=int(row.event_row_id),
            event_id=row.event_id,
            account=row.account,
            entity=row.entity,
            resource_id=row.resource_id,
            action=row.action,
            occurred_at=row.occurred_at,
        )
        for row in conn.execute(query)
    ]


def mark_reviewed(conn: Connection, ids: Sequence[int]) -> int:
    marked = 0
    for start in range(0, len(ids), 500):
        batch = list(ids[start : start + 500])
        result = conn.execute(
            update(rejected_events).where(rejected_events.c.id.in_(batch)).values(reviewed=True)
        )
        marked += result.rowcount
    return marked
