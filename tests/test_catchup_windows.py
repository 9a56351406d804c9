"""Catching up N hours in one run, in windows of event ids of any size (one event to
everything), bills exactly the per-key sums of N hourly runs, on SQLite and MariaDB
(issue 12). Events are stored in random order, so a window often closes hours that a
later window's events belong to: those come back as corrections.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from metering import run as run_module
from metering.core.billing import next_window, window_end
from metering.core.events import HOUR, MIN_TIME
from metering.store.events import last_before
from metering.store.schema import usage_lines
from tests.contract_model import expected
from tests.support import (
    PROPERTY_SETTINGS,
    Database,
    billed,
    insert_events,
    measure,
    migrated,
    resource,
    run,
    t,
)
from tests.test_run_properties import (
    SPAN_HOURS,
    T0,
    measures,
    resource_events,
)

GRACE = timedelta(minutes=30)
# Before the last events: some are in hours not closed yet (pending parts, future events).
LAST_NOW = T0 + timedelta(hours=SPAN_HOURS - 2, minutes=31)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[dict[str, Any]], int]:
    events = draw(st.lists(st.one_of(resource_events(), measures()), min_size=1, max_size=25))
    for number, e in enumerate(events):
        e["event_id"] = f"w{number}"
    window = draw(st.integers(1, len(events) + 1))
    return events, window


def catch_up(db: Database, events: list[dict[str, Any]], window: int, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> dict[Any, Any]:  # fmt: skip
    db.reset()
    db.deliver(events)
    monkeypatch.setattr(run_module, "ID_WINDOW", window)
    monkeypatch.setattr(run_module, "ID_WINDOW_LIMITS", (window, window))
    outcome = run(db.engine, LAST_NOW, tmp_path)
    read = [r for r in outcome.runs if r.last_event_id is not None]
    # Every window is a chunk of its own (one transaction, one run id) of at most
    # `window` ids (fewer where it stops before the hour its last event began), until
    # the backlog left is short enough to be read at once; together they read every id.
    spans = [(r.first_event_id, r.last_event_id) for r in read]
    assert all(last - first < window for first, last in spans[:-1]), spans
    assert [first for first, _ in spans] == [1] + [last + 1 for _, last in spans[:-1]]
    assert read[-1].last_event_id == len(events)
    assert len({r.run_id for r in outcome.runs}) == len(outcome.runs)
    return billed(db.engine)


def hourly(db: Database, events: list[dict[str, Any]], tmp_path: Path) -> dict[Any, Any]:
    db.reset()
    db.deliver(events)
    now = T0 + timedelta(minutes=31)
    while now <= LAST_NOW:
        run(db.engine, now, tmp_path)
        now += timedelta(hours=1)
    return billed(db.engine)


def check(db: Database, history: tuple[list[dict[str, Any]], int], tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    events, window = history
    at_once = catch_up(db, events, window, tmp_path, monkeypatch)
    monkeypatch.undo()
    one_by_one = hourly(db, events, tmp_path)
    assert at_once == one_by_one
    until = (LAST_NOW - GRACE).replace(minute=0)
    assert at_once == expected(db.stored(), until)


@pytest.mark.slow
@given(history=histories())
@settings(max_examples=30, **PROPERTY_SETTINGS)
def test_catch_up_in_windows_equals_hourly_runs_sqlite(
    history: tuple[list[dict[str, Any]], int],
    sqlite_database: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check(sqlite_database, history, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.mariadb
@given(history=histories())
@settings(max_examples=12, **PROPERTY_SETTINGS)
def test_catch_up_in_windows_equals_hourly_runs_mariadb(
    history: tuple[list[dict[str, Any]], int],
    mariadb_database: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check(mariadb_database, history, tmp_path, monkeypatch)


def test_a_window_bills_up_to_the_hour_its_last_event_reached() -> None:
    h = 400_000 * HOUR
    assert window_end(h, h + 10 * HOUR, h + 3 * HOUR + 5) == h + 3 * HOUR
    assert window_end(h, h + 2 * HOUR, h + 3 * HOUR) == h + 2 * HOUR  # never past the end
    assert window_end(h, h + 2 * HOUR, h - 5 * HOUR) == h  # nor before billed_until
    assert window_end(None, h, h - 5 * HOUR) == h - 5 * HOUR  # a first run
    assert window_end(None, h, None) == MIN_TIME  # unreadable: no new hour
    assert window_end(None, h, 0) == MIN_TIME  # a 1970 time: no hour before 2000


def test_the_next_window_holds_about_the_part_budget() -> None:
    assert next_window(200_000, 200_000, 20_000, 100_000, (1, 10**7)) == 1_000_000
    assert next_window(200_000, 200_000, 400_000, 100_000, (1, 10**7)) == 50_000
    assert next_window(200_000, 200_000, 0, 100_000, (1, 10**7)) == 10**7
    assert next_window(200_000, 0, 0, 100_000, (1, 10**7)) == 200_000
    assert next_window(5, 5, 50, 100_000, (20_000, 10**7)) == 20_000


def test_a_window_bills_only_from_events_up_to_its_last_id(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stop stored before its VM's create (a producer out of order), the two in
    # different windows of a first run: the window holding only the stop bills
    # nothing for the VM (its history read stops at the window's last id); the window
    # that reads the create bills the span as a late event. Reading the create early
    # made a committed chunk disagree with the events its watermark says it read.
    engine = migrated(database_url)
    starts = [datetime(2016, 12, 12, 3, tzinfo=UTC) + timedelta(minutes=30 * i) for i in range(12)]
    filler = [
        measure(f"m{i}", 10, start.isoformat(), (start + timedelta(minutes=1)).isoformat())
        for i, start in enumerate(starts)
    ]
    # Windows of up to 5 ids, each stopping before the hour its last event began: 1-4
    # (filler to 04:30), 5-8 (filler to 06:00 and, as id 8, the stop at 05:28), 9-11
    # (filler to 07:30), then the rest, 12-14 (the create at 05:10, id 14).
    insert_events(engine, filler[:7])
    insert_events(engine, [resource("stop", "stop", "2016-12-12T05:28:00Z")])
    insert_events(engine, filler[7:])
    insert_events(engine, [resource("create", "create", "2016-12-12T05:10:00Z", offering="l")])
    monkeypatch.setattr(run_module, "ID_WINDOW", 5)
    monkeypatch.setattr(run_module, "ID_WINDOW_LIMITS", (5, 5))
    outcome = run(engine, "2016-12-12T09:31Z", tmp_path)
    windows = [(r.first_event_id, r.last_event_id) for r in outcome.runs]
    assert windows == [(1, 4), (5, 8), (9, 11), (12, 14)], windows
    with engine.connect() as conn:
        writers = set(
            conn.execute(
                select(usage_lines.c.run_id).where(usage_lines.c.resource_id == "vm-1")
            ).scalars()
        )
    assert writers == {outcome.runs[3].run_id}, writers
    assert billed(engine)[("acme", "vm", "vm-1", "l", "second", t("2016-12-12T05:00Z"))] == (
        Decimal(18 * 60)
    )


def test_a_window_stops_before_the_hour_its_last_event_began(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """That hour is not closed by the window's chunk: its rows there would only wait in
    pending_usage for the next chunk, which reads them with the rest of the hour. A row
    belongs before the hour its period, or else its time, starts before."""
    engine = migrated(database_url)
    insert_events(
        engine,
        [
            measure("a", 1, "2016-12-12T03:10Z", "2016-12-12T03:20Z"),
            measure("b", 2, "2016-12-12T03:50Z", "2016-12-12T04:10Z"),  # over 04:00
            resource("c", "create", "2016-12-12T03:59Z", offering="l"),
            measure("d", 4, "2016-12-12T04:00Z", "2016-12-12T04:00Z"),  # an instant: 04:00
            measure("e", 8, "2016-12-12T04:20Z", "2016-12-12T04:30Z"),  # the first window's last
            measure("f", 16, "2016-12-12T05:20Z", "2016-12-12T05:30Z"),
            measure("g", 32, "2016-12-12T06:20Z", "2016-12-12T06:30Z"),
            measure("h", 64, "2016-12-12T07:20Z", "2016-12-12T07:30Z"),  # the second's
            measure("i", 128, "2016-12-12T08:20Z", "2016-12-12T08:30Z"),
            measure("j", 256, "2016-12-12T09:10Z", "2016-12-12T09:20Z"),
        ],
    )
    with engine.connect() as conn:
        hour = int(t("2016-12-12T04:00Z").timestamp() * 1000)
        assert last_before(conn, 1, 5, hour) == 3
        assert last_before(conn, 4, 5, hour) == 3  # none: lo - 1
        assert last_before(conn, 1, 2, hour) == 2
    monkeypatch.setattr(run_module, "ID_WINDOW", 5)
    monkeypatch.setattr(run_module, "ID_WINDOW_LIMITS", (5, 5))
    now = "2016-12-12T10:31Z"
    outcome = run(engine, now, tmp_path)
    windows = [(r.first_event_id, r.last_event_id) for r in outcome.runs]
    assert windows == [(1, 3), (4, 7), (8, 10)], windows
    assert [r.corrections for r in outcome.runs] == [0, 0, 0]
    assert billed(engine) == expected(Database(engine).stored(), t("2016-12-12T10:00Z"))


def test_a_producers_own_time_text_is_read_as_its_instant(sqlite_url: str) -> None:
    """On SQLite, where a producer may store '2016-12-12T03:59:00Z': the window's edge
    compares instants, not texts ('T' sorts after ' ')."""
    engine = migrated(sqlite_url)
    insert_events(engine, [resource("c", "create", "2016-12-12T04:30Z", offering="l")])
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE usage_events SET occurred_at = '2016-12-12T03:59:00Z'")
        hour = int(t("2016-12-12T04:00Z").timestamp() * 1000)
        assert last_before(conn, 1, 1, hour) == 1
