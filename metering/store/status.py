"""The counts `metering status` shows, each one cheap (indexed or a single-row table)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from metering.store import retention
from metering.store.runs import ANOMALY, REJECTED
from metering.store.schema import (
    event_gaps,
    metering_state,
    pending_usage,
    rejected_events,
    resource_state,
    usage_events,
)
from metering.timeutil import from_ms


@dataclass(frozen=True, slots=True)
class StateRow:
    version: int
    last_event_id: int
    billed_until: datetime | None
    last_run_id: str | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class Counts:
    max_event_id: int
    running_resources: int
    gaps: int
    gap_ids: int  # the ids the gap rows hold
    oldest_gap_seen_at: datetime | None
    pending_parts: int
    unreviewed_rejected: int
    unreviewed_anomalies: int


def read_state(conn: Connection) -> StateRow | None:
    row = conn.execute(select(metering_state).where(metering_state.c.id == 1)).first()
    if row is None:
        return None
    return StateRow(
        version=int(row.version),
        last_event_id=int(row.last_event_id),
        billed_until=row.billed_until,
        last_run_id=row.last_run_id,
        updated_at=row.updated_at,
    )


def counts(conn: Connection) -> Counts:
    g = event_gaps.c
    # metering/core/gaps.py's size, summed by the database: whole periods, then the
    # last (maybe partial) block.
    ids = func.sum(
        (g.id_to - g.id_from) // g.step * g.width
        + case(((g.id_to - g.id_from) % g.step < g.width, (g.id_to - g.id_from) % g.step + 1),
               else_=g.width)
    )  # fmt: skip
    gaps, gap_ids, oldest = conn.execute(select(func.count(), ids, func.min(g.first_seen_at))).one()
    # A Result has keys(), so dict(result) would take it for a mapping.
    unreviewed = {
        category: count
        for category, count in conn.execute(
            select(rejected_events.c.category, func.count())
            .where(rejected_events.c.reviewed.is_(False))
            .group_by(rejected_events.c.category)
        )
    }
    return Counts(
        max_event_id=int(conn.execute(select(func.max(usage_events.c.id))).scalar() or 0),
        running_resources=int(
            conn.execute(
                select(func.count()).where(resource_state.c.running.is_(True))
            ).scalar_one()
        ),
        gaps=int(gaps),
        gap_ids=int(gap_ids or 0),
        oldest_gap_seen_at=oldest,
        pending_parts=int(
            conn.execute(select(func.count()).select_from(pending_usage)).scalar_one()
        ),
        unreviewed_rejected=int(unreviewed.get(REJECTED, 0)),
        unreviewed_anomalies=int(unreviewed.get(ANOMALY, 0)),
    )


@dataclass(frozen=True, slots=True)
class EventsTable:
    """The size of usage_events, as cheaply as each database tells it."""

    rows: int
    rows_estimated: bool  # the server's statistics, not a count
    size_bytes: int | None
    size_of: str  # what size_bytes covers
    first_id: int | None  # the lowest id: the oldest row by ingest order
    first_occurred_at: datetime | None
    pruned_before: datetime | None  # the pruned horizon (metering prune)


def events_table(conn: Connection) -> EventsTable:
    first = conn.execute(
        select(usage_events.c.id, usage_events.c.occurred_at).order_by(usage_events.c.id).limit(1)
    ).first()
    horizon = retention.horizon(conn)
    if conn.dialect.name == "sqlite":
        rows, estimated = _sqlite_rows(conn)
        size, size_of = _sqlite_size(conn)
    else:
        # InnoDB's statistics: a COUNT(*) would read every row of a huge table.
        found = conn.execute(
            text(
                "SELECT TABLE_ROWS, DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'usage_events'"
            )
        ).one()
        rows, estimated = int(found[0] or 0), True
        size, size_of = int(found[1] or 0), "table and indexes"
    return EventsTable(
        rows=rows,
        rows_estimated=estimated,
        size_bytes=size,
        size_of=size_of,
        first_id=None if first is None else int(first[0]),
        first_occurred_at=None if first is None else first[1],
        pruned_before=None if horizon is None else from_ms(horizon),
    )


def _sqlite_rows(conn: Connection) -> tuple[int, bool]:
    """sqlite_stat1's row count if ANALYZE has run, else an exact COUNT(*)."""
    try:
        stat = conn.execute(
            # Each row's first number is the table's row count when ANALYZE ran.
            text("SELECT stat FROM sqlite_stat1 WHERE tbl = 'usage_events' LIMIT 1")
        ).scalar()
    except OperationalError:  # no sqlite_stat1: ANALYZE never ran
        stat = None
    if stat:
        return int(str(stat).split()[0]), True
    return int(conn.execute(select(func.count()).select_from(usage_events)).scalar_one()), False


def _sqlite_size(conn: Connection) -> tuple[int | None, str]:
    """The pages of the table and its indexes (dbstat), else the whole file's."""
    try:
        size = conn.execute(
            text(
                "SELECT SUM(pgsize) FROM dbstat WHERE name IN "
                "(SELECT name FROM sqlite_master WHERE tbl_name = 'usage_events')"
            )
        ).scalar()
        return int(size or 0), "table and indexes"
    except OperationalError:  # SQLite built without the dbstat table
        pages = conn.execute(text("PRAGMA page_count")).scalar()
        page_size = conn.execute(text("PRAGMA page_size")).scalar()
        return int(pages or 0) * int(page_size or 0), "whole database file"
