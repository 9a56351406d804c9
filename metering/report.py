"""The shell of the read-only commands: `report`, `runs`, `runs show`, `rejected`.

Each function opens one connection, asks metering/store/reports.py and returns plain
values; rendering is metering/render.py's (and metering/html.py's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from metering.errors import MeteringError
from metering.store import reports as store
from metering.store.reports import (
    FindingRow,
    LineRow,
    RunTotal,
    UsageFilter,
    UsageSum,
    WrittenAfter,
)
from metering.store.runs import RunRecord


@dataclass(frozen=True)
class Report:
    by: str
    columns: tuple[str, ...]  # what each row sums over (store.group_columns), unit included
    rows: list[UsageSum]
    filters: UsageFilter = field(default_factory=UsageFilter)
    # Only lines of later runs; each row then either all corrections or none.
    written_after: WrittenAfter | None = None
    # For the page's header: which database (password masked) and when it was made.
    database: str = ""
    made_at: datetime | None = None
    units: str = "si"


@dataclass(frozen=True)
class RunDetail:
    run: RunRecord
    totals: list[RunTotal]
    corrections: list[LineRow]
    corrections_total: int
    rejected: list[FindingRow]


class NotFound(MeteringError):
    """What was asked for does not exist (exit 1)."""


def report(
    engine: Engine,
    filters: UsageFilter,
    *,
    by: str,
    group: Sequence[str] = store.DEFAULT_GROUP,
    written_after: WrittenAfter | None = None,
    database: str = "",
    made_at: datetime | None = None,
    units: str = "si",
) -> Report:
    columns = store.group_columns(group)
    with engine.connect() as conn:
        try:
            rows = store.usage_sums(conn, filters, by, columns, written_after)
        except LookupError:
            raise NotFound(
                f"no run {written_after and written_after.run_id!r} (metering runs lists them)"
            ) from None
    return Report(by, columns, rows, filters, written_after, database, made_at, units)


def runs(engine: Engine, limit: int) -> list[RunRecord]:
    with engine.connect() as conn:
        return store.list_runs(conn, limit)


def run_detail(engine: Engine, run_id: str, limit: int) -> RunDetail:
    with engine.connect() as conn:
        record = store.get_run(conn, run_id)
        if record is None:
            raise NotFound(f"no run {run_id!r} (metering runs lists them)")
        corrections, total = store.run_corrections(conn, run_id, limit)
        return RunDetail(
            run=record,
            totals=store.run_totals(conn, run_id),
            corrections=corrections,
            corrections_total=total,
            rejected=store.findings(conn, run_id=run_id, limit=limit),
        )


def rejected(
    engine: Engine,
    *,
    run_id: str | None,
    category: str | None,
    since: datetime | None,
    unreviewed: bool,
    limit: int,
    mark_reviewed: bool,
) -> list[FindingRow]:
    """The findings asked for; with mark_reviewed, exactly those are marked reviewed."""
    with engine.begin() as conn:
        rows = store.findings(
            conn,
            run_id=run_id,
            category=category,
            since=since,
            unreviewed=unreviewed,
            limit=limit,
        )
        if mark_reviewed:
            store.mark_reviewed(conn, [row.id for row in rows])
    return rows
