"""Rule 6 by example generation: whatever the events, their delivery order and delays,
duplicate deliveries and the run schedule (repeated runs, backfills, dry runs), the
billed sums equal the reference model (tests/contract_model.py), on SQLite and MariaDB.

After every real run the hours before billed_until must already be exact for the
events stored so far; after a final run past everything, exact for all of them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from metering.errors import UsageError
from metering.run import RunOutcome
from metering.store.usage import lines_of_runs
from metering.timeutil import to_ms
from tests.contract_model import billable_measure, billable_resource, expected
from tests.support import PROPERTY_SETTINGS, Database, billed, run
from tests.support import event as row

T0 = datetime(2016, 12, 12, 10, tzinfo=UTC)
HOUR_MS = 3_600_000
SPAN_HOURS = 8
FINAL_NOW = T0 + timedelta(hours=30)


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


instants = st.one_of(
    st.integers(0, SPAN_HOURS).map(lambda h: h * HOUR_MS),  # exact hour boundaries
    st.sampled_from([HOUR_MS // 2, HOUR_MS - 1, HOUR_MS + 1, 2 * HOUR_MS + 1234]),  # ties
    st.integers(0, SPAN_HOURS * HOUR_MS - 1),
)


@st.composite
def resource_events(draw: st.DrawFn) -> dict[str, Any]:
    return row(
        kind="resource",
        entity=draw(st.sampled_from(["vm", "volume"])),
        action=draw(
            st.sampled_from(["create", "start", "start", "stop", "stop", "destroy", "update"])
        ),
        account=draw(st.sampled_from(["a", "b"])),
        resource_id=draw(st.sampled_from(["r1", "r2"])),
        offering=draw(st.sampled_from([None, "", "s", "m", "l"])),
        occurred_at=at(draw(instants)),
    )


@st.composite
def measures(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(instants)
    length = draw(
        st.one_of(
            st.just(0),
            st.sampled_from([HOUR_MS, HOUR_MS // 2, 1]),
            st.integers(1, 3 * HOUR_MS),
        )
    )
    return row(
        kind="quantity",
        entity="ip",
        action="measure",
        account=draw(st.sampled_from(["a", "b"])),
        resource_id=draw(st.sampled_from(["r1", "r2"])),
        quantity=draw(st.one_of(st.integers(0, 5000), st.integers(0, 10**12))),
        unit=draw(st.sampled_from([None, "byte", "packet"])),
        period_start=at(start),
        period_end=at(start + length),
        occurred_at=at(start + length),
    )


@st.composite
def bad_events(draw: st.DrawFn) -> dict[str, Any]:
    good = draw(measures())
    flaw = draw(st.sampled_from(["negative", "backwards", "kind", "action", "account"]))
    if flaw == "negative":
        return {**good, "quantity": -1}
    if flaw == "backwards":
        return {**good, "period_end": good["period_start"] - timedelta(milliseconds=1)}
    if flaw == "kind":
        return {**good, "kind": "bogus"}
    if flaw == "action":
        return {**good, "kind": "resource", "action": "reboot"}
    return {**good, "account": ""}


@dataclass(frozen=True)
class Step:
    advance_ms: int
    kind: str  # run, dry, backfill, back (a clock behind the last run)
    since_hour: int


@dataclass(frozen=True)
class Scenario:
    events: list[dict[str, Any]]
    batches: list[list[int]]  # per step: indexes of events delivered before it
    first_now: datetime
    steps: list[Step]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    events = draw(
        st.lists(
            st.one_of(resource_events(), resource_events(), measures(), bad_events()),
            min_size=1,
            max_size=20,
        )
    )
    for number, e in enumerate(events):
        e["event_id"] = f"e{number}"
    steps = draw(
        st.lists(
            st.builds(
                Step,
                advance_ms=st.sampled_from(
                    [0, 1, 10 * 60_000, 45 * 60_000, HOUR_MS, 2 * HOUR_MS, 3 * HOUR_MS]
                ),
                kind=st.sampled_from(["run", "run", "run", "dry", "backfill", "back"]),
                since_hour=st.integers(0, SPAN_HOURS),
            ),
            min_size=2,
            max_size=7,
        )
    )
    batches: list[list[int]] = [[] for _ in steps]
    last = len(steps) - 1
    for index, e in enumerate(events):
        # Starts tend to arrive early and everything else late, so that late events
        # often land in hours already billed for a running resource.
        if e["action"] in ("create", "start"):
            first = draw(st.integers(0, last)) // 2
        else:
            first = max(draw(st.integers(0, last)), draw(st.integers(0, last)))
        batches[first].append(index)
        if draw(st.integers(0, 5)) == 0:  # a redelivery, now or later
            batches[draw(st.integers(first, last))].append(index)
    for batch in batches:
        order = draw(st.permutations(batch))
        batch[:] = order
    first_now = T0 + timedelta(milliseconds=draw(st.integers(0, 2 * HOUR_MS)))
    return Scenario(events, batches, first_now, steps)


def check_billed_so_far(db: Database, events: list[dict[str, Any]]) -> None:
    """Hours before billed_until are exact for the events the runs have had a chance to read."""
    until = db.billed_until()
    truth = {} if until is None else expected(events, until)
    assert billed(db.engine) == truth


def line_shape(lines: list[Any]) -> Counter[tuple[Any, ...]]:
    return Counter(
        (x.account, x.entity, x.resource_id, x.offering, x.unit, x.hour, Decimal(x.quantity))
        for x in lines
    )


def written_by(db: Database, outcome: RunOutcome) -> Counter[tuple[Any, ...]]:
    with db.engine.connect() as conn:
        return line_shape(lines_of_runs(conn, [r.run_id for r in outcome.runs]))


def play(db: Database, scenario: Scenario, tmp_path: Path) -> None:
    db.reset()
    now = scenario.first_now
    last_horizon: datetime | None = None
    read: list[dict[str, Any]] = []
    for step, batch in zip(scenario.steps, scenario.batches, strict=True):
        db.deliver([scenario.events[i] for i in batch])
        now += timedelta(milliseconds=step.advance_ms)
        horizon = (now - timedelta(minutes=30)).replace(minute=0, second=0, microsecond=0)
        if step.kind == "dry":
            before = db.snapshot()
            dry = run(db.engine, now, tmp_path, dry_run=True)
            assert db.snapshot() == before, "a dry run changes nothing"
            outcome = run(db.engine, now, tmp_path)
            assert line_shape(dry.lines) == written_by(db, outcome)
        elif step.kind == "backfill":
            since = T0 + timedelta(hours=step.since_hour)
            if since >= horizon:
                with pytest.raises(UsageError):
                    run(db.engine, now, tmp_path, since=since)
                continue
            outcome = run(db.engine, now, tmp_path, since=since)
        elif step.kind == "back" and last_horizon is not None:
            before = db.snapshot()
            outcome = run(db.engine, now - timedelta(hours=2), tmp_path)
            if outcome.clock_stepped_back:
                assert db.snapshot() == before, "a clock behind the last run changes nothing"
                check_billed_so_far(db, read)
                continue
        else:
            outcome = run(db.engine, now, tmp_path)
        if any(r.kind == "scheduled" and r.corrections for r in outcome.runs):
            event("a late event corrected a billed hour")
        last_horizon = horizon
        read = db.stored()
        check_billed_so_far(db, read)
    run(db.engine, FINAL_NOW, tmp_path)
    final = FINAL_NOW - timedelta(minutes=30)
    assert to_ms(db.billed_until() or T0) == to_ms(final.replace(minute=0))
    stored = db.stored()
    assert billed(db.engine) == expected(stored, final.replace(minute=0))
    bad = {e["event_id"] for e in stored if not (billable_resource(e) or billable_measure(e))}
    assert db.rejected_ids() == Counter(bad), "each bad event recorded once"


# Each example empties the database: fixtures are set up once per test function.
@pytest.mark.slow
@given(scenario=scenarios())
@settings(max_examples=40, **PROPERTY_SETTINGS)  # type: ignore[arg-type]
def test_billed_equals_model_sqlite(
    scenario: Scenario, sqlite_database: Database, tmp_path: Path
) -> None:
    play(sqlite_database, scenario, tmp_path)


@pytest.mark.slow
@pytest.mark.mariadb
@given(scenario=scenarios())
@settings(max_examples=15, **PROPERTY_SETTINGS)  # type: ignore[arg-type]
def test_billed_equals_model_mariadb(
    scenario: Scenario, mariadb_database: Database, tmp_path: Path
) -> None:
    play(mariadb_database, scenario, tmp_path)
