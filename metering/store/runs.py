"""Run records and the rejected/anomalous events each run recorded."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from metering.store.bulk import insert_rows
from metering.store.schema import rejected_events, runs

REJECTED = "rejected"
ANOMALY = "anomaly"


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    kind: str
    status: str
    clock: datetime
    started_at: datetime
    finished_at: datetime | None
    hours_from: datetime | None
    hours_to: datetime | None
    first_event_id: int | None
    last_event_id: int | None
    events_read: int
    lines_written: int
    corrections: int
    rejected: int
    anomalies: int
    duration_ms: int | None
    host: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class Finding:
    event_row_id: int
    event_id: str
    category: str  # REJECTED or ANOMALY
    reason: str


def insert_run(conn: Connection, record: RunRecord) -> None:
    conn.execute(insert(runs).values(**asdict(record)))


def insert_findings(
    conn: Connection, run_id: str, at: datetime, findings: Iterable[Finding]
) -> int:
    rows = (
        (run_id, f.event_row_id, f.event_id[:64], f.category, f.reason[:255], at, False)
        for f in findings
    )
    return insert_rows(conn, rejected_events, _FINDING_COLUMNS, rows)


_FINDING_COLUMNS = ("run_id", "event_row_id", "event_id", "category", "reason", "recorded_at",
                    "reviewed")  # fmt: skip


def recorded_anomalies(conn: Connection, row_ids: Sequence[int]) -> set[tuple[int, str]]:
    """(event row id, reason) of the anomalies already on record for these events."""
    found: set[tuple[int, str]] = set()
    for start in range(0, len(row_ids), 1000):
        query = select(rejected_events.c.event_row_id, rejected_events.c.reason).where(
            rejected_events.c.category == ANOMALY,
            rejected_events.c.event_row_id.in_(row_ids[start : start + 1000]),
        )
        found.update((int(i), reason) for i, reason in conn.execute(query))
    return found
