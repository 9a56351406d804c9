"""The counts `metering status` shows, each one cheap (indexed or a single-row table)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.engine import Connection

from metering.store.runs import ANOMALY, REJECTED
from metering.store.schema import (
    event_gaps,
    metering_state,
    pending_usage,
    rejected_events,
    resource_state,
    usage_events,
)


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
