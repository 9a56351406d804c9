"""The shell of the read-only commands: `report`, `runs`, `runs show`, `rejected`.

Each function opens one connection, asks metering/store/reports.py and returns plain
values; rendering is metering/render.py's (and metering/html.py's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from metering.errors import MeteringError
from metering.store import reports as store
from metering.store.reports import FindingRow, LineRow, RunTotal, UsageFilter, UsageSum
from metering.store.runs import RunRecord


@dataclass(frozen=True)
class Report:
    by: str
    group: str
    rows: list[UsageSum]
    # Per account, for the HTML chart (the rows themselves when grouped by account).
    by_account: list[UsageSum] = field(default_factory=list)

    @property
    def columns(self) -> tuple[str, ...]:
        return store.GROUP_COLUMNS[self.group]


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
    engine: Engine, filters: UsageFilter, *, by: str, group: str, chart: bool = False
) -> Report:
    with engine.connect() as conn:
        rows = store.usage_sums(conn, filters, by, group)
        if not chart:
            return Report(by, group, rows)
        per_account = rows if group == "account" else store.usage_sums(conn, filters, by, "account")
    return Report(by, group, rows, per_account)


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
