"""SQL of `metering check`: each sanity check is one query over the stored tables.

Sums over usage_lines are exact on SQLite too (metering/store/sums.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection

from metering.store.events import instant
from metering.store.schema import rejected_events, resource_state, runs, usage_events, usage_lines
from metering.store.sums import exact_sum, sum_above, sum_value
from metering.store.usage import RUNNING

HOUR_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class Stale:
    account: str
    entity: str
    resource_id: str
    offering: str | None
    last_event_at: datetime | None
    last_seen_at: datetime | None


@dataclass(frozen=True, slots=True)
class HourTotal:
    account: str
    entity: str
    resource_id: str
    hour: datetime
    seconds: Decimal
    destroyed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Orphan:
    run_id: str
    lines: int


@dataclass(frozen=True, slots=True)
class Unreviewed:
    category: str
    reason: str
    count: int
    first_recorded_at: datetime


def stale_running(conn: Connection, before: datetime) -> list[Stale]:
    """Running resources with no event, and not listed by a snapshot, since `before`."""
    rs = resource_state.c
    query = (
        select(
            rs.account, rs.entity, rs.resource_id, rs.offering, rs.last_event_at, rs.last_seen_at
        )
        .where(
            rs.running.is_(True),
            rs.destroyed.is_(False),
            or_(rs.last_event_at.is_(None), rs.last_event_at < before),
            or_(rs.last_seen_at.is_(None), rs.last_seen_at < before),
        )
        .order_by(rs.account, rs.entity, rs.resource_id)
    )
    return [Stale(*row) for row in conn.execute(query)]


def billed_after_destroy(conn: Connection) -> list[HourTotal]:
    """Running time billed in hours that start at or after the resource's first destroy."""
    ev = usage_events.c
    destroyed = (
        select(
            ev.account,
            ev.entity,
            ev.resource_id,
            func.min(instant(conn, ev.occurred_at)).label("destroyed_at"),
        )
        .where(ev.kind == "resource", ev.action == "destroy")
        .group_by(ev.account, ev.entity, ev.resource_id)
        .subquery()
    )
    li = usage_lines.c
    query = (
        select(
            li.account,
            li.entity,
            li.resource_id,
            li.period_start,
            exact_sum(conn, li.quantity),
            destroyed.c.destroyed_at,
        )
        .join_from(
            usage_lines,
            destroyed,
            and_(
                li.account == destroyed.c.account,
                li.entity == destroyed.c.entity,
                li.resource_id == destroyed.c.resource_id,
            ),
        )
        .where(li.source == RUNNING, li.period_start >= destroyed.c.destroyed_at)
        .group_by(li.account, li.entity, li.resource_id, li.period_start, destroyed.c.destroyed_at)
        .having(sum_above(conn, li.quantity, 0))
        .order_by(li.account, li.entity, li.resource_id, li.period_start)
    )
    return [
        HourTotal(a, e, r, hour, sum_value(amount), destroyed_at)
        for a, e, r, hour, amount, destroyed_at in conn.execute(query)
    ]


def over_an_hour(conn: Connection) -> list[HourTotal]:
    """More running seconds billed for one resource in one hour than the hour has,
    whatever the offerings."""
    li = usage_lines.c
    query = (
        select(li.account, li.entity, li.resource_id, li.period_start, exact_sum(conn, li.quantity))
        .where(li.source == RUNNING)
        .group_by(li.account, li.entity, li.resource_id, li.period_start)
        .having(sum_above(conn, li.quantity, HOUR_SECONDS))
        .order_by(li.account, li.entity, li.resource_id, li.period_start)
    )
    return [
        HourTotal(a, e, r, hour, sum_value(amount)) for a, e, r, hour, amount in conn.execute(query)
    ]


def lines_without_run(conn: Connection) -> list[Orphan]:
    li = usage_lines.c
    query = (
        select(li.run_id, func.count())
        .join_from(usage_lines, runs, li.run_id == runs.c.run_id, isouter=True)
        .where(runs.c.run_id.is_(None))
        .group_by(li.run_id)
        .order_by(li.run_id)
    )
    return [Orphan(run_id, int(count)) for run_id, count in conn.execute(query)]


def unreviewed(conn: Connection) -> list[Unreviewed]:
    re_ = rejected_events.c
    query = (
        select(re_.category, re_.reason, func.count(), func.min(re_.recorded_at))
        .where(re_.reviewed.is_(False))
        .group_by(re_.category, re_.reason)
        .order_by(func.count().desc(), re_.category, re_.reason)
    )
    return [Unreviewed(c, r, int(n), first) for c, r, n, first in conn.execute(query)]
