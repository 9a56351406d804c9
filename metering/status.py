"""`metering status`: where billing stands, and whether that is healthy.

Lag is measured against the latest instant an hour may be billed: (now - grace) minus
billed_until. Right after an hourly run it is under an hour; it grows by an hour per
missed run. Health problems (each makes the exit code 1): the schema is missing or not
at head, and with a max lag, nothing ever billed or a lag above it. Events dated
more than FUTURE_MARGIN after now are reported, not a health problem here: billing is
not late because of them (`metering check` flags them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine

from metering import migrate
from metering.core.events import HOUR
from metering.core.slicing import hour_of
from metering.store import events as store_events
from metering.store import reports as store_reports
from metering.store import status as store_status
from metering.store.events import DatedAfter
from metering.store.runs import RunRecord
from metering.store.status import Counts, EventsTable, StateRow
from metering.timeutil import from_ms, iso, to_ms

# Producers' clocks drift by seconds; an event dated hours ahead is a clock bug, and
# waits unbilled until its hour closes.
FUTURE_MARGIN = timedelta(hours=1)


@dataclass(frozen=True)
class Status:
    database: str  # its URL, password masked: which database this status is about
    now: datetime
    grace: timedelta
    max_lag: timedelta | None
    schema_current: str | None
    schema_head: str
    state: StateRow | None = None
    counts: Counts | None = None
    runs: list[RunRecord] = field(default_factory=list)
    future: DatedAfter | None = None  # events dated after future_after
    events: EventsTable | None = None

    @property
    def future_after(self) -> datetime:
        return self.now + FUTURE_MARGIN

    @property
    def at_head(self) -> bool:
        return self.schema_current == self.schema_head

    @property
    def horizon(self) -> datetime:
        """Hours before this instant are closed (the run's rule 5)."""
        return from_ms(hour_of(to_ms(self.now - self.grace)))

    @property
    def lag(self) -> timedelta | None:
        if self.state is None or self.state.billed_until is None:
            return None
        return max(timedelta(0), self.now - self.grace - self.state.billed_until)

    @property
    def hours_behind(self) -> int | None:
        """Closed hours not billed yet."""
        if self.state is None or self.state.billed_until is None:
            return None
        return max(0, (to_ms(self.horizon) - to_ms(self.state.billed_until)) // HOUR)

    @property
    def problems(self) -> list[str]:
        if self.schema_current is None:
            return ["the database is empty (never migrated): run metering db upgrade"]
        if not self.at_head:
            return [
                f"the schema is at {self.schema_current}, this metering needs "
                f"{self.schema_head}: run metering db upgrade"
            ]
        if self.max_lag is None:
            return []
        lag = self.lag
        if lag is None:
            return ["nothing was ever billed (no run yet)"]
        if lag > self.max_lag:
            billed_until = self.state.billed_until if self.state else None
            return [
                f"billed until {iso(billed_until)}, {_hours(lag)} behind now - grace "
                f"(max lag {_hours(self.max_lag)})"
            ]
        return []

    @property
    def healthy(self) -> bool:
        return not self.problems


def _hours(delta: timedelta) -> str:
    minutes = int(delta.total_seconds()) // 60
    return f"{minutes // 60} h {minutes % 60:02d} min"


def status(
    engine: Engine,
    *,
    database: str,
    now: datetime,
    grace: timedelta,
    max_lag: timedelta | None = None,
    runs: int = 5,
) -> Status:
    current = migrate.current(engine)
    head = migrate.HEAD
    if current != head:
        # Tables may be missing or shaped differently: report the schema, read nothing.
        return Status(database, now, grace, max_lag, current, head)
    with engine.connect() as conn:
        return Status(
            database,
            now,
            grace,
            max_lag,
            current,
            head,
            state=store_status.read_state(conn),
            counts=store_status.counts(conn),
            runs=store_reports.list_runs(conn, runs),
            future=store_events.dated_after(conn, now + FUTURE_MARGIN, 1),
            events=store_status.events_table(conn),
        )
