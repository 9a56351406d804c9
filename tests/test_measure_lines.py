"""The database writing a window's measure lines itself (metering/store/measure_lines.py):
the same lines, pending parts and run records as the Python path, on any history; only
over ids that all hold a row; and never in a producer's way."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, func, insert, select, text

from metering import run as run_module
from metering.db import make_engine
from metering.store import measure_lines
from metering.store.measure_lines import dense_end
from metering.store.schema import pending_usage, runs, usage_events, usage_lines
from tests.support import (
    PROPERTY_SETTINGS,
    Database,
    event,
    insert_events,
    measure,
    migrated,
    resource,
    run,
    t,
)

START = t("2016-12-12T10:00Z")
HOURS = 6


# -- dense_end ----------------------------------------------------------------------


@pytest.fixture
def engines(tmp_path: Path, mariadb_url: str) -> dict[str, Engine]:
    return {"sqlite": migrated(f"sqlite:///{tmp_path}/m.db"), "mariadb": migrated(mariadb_url)}


@pytest.mark.mariadb
@settings(max_examples=40, **PROPERTY_SETTINGS)
@given(
    missing=st.sets(st.integers(1, 80), max_size=6),
    lo=st.integers(1, 80),
    length=st.integers(-1, 80),
)
def test_dense_end_is_the_last_id_before_the_first_missing_one(
    engines: dict[str, Engine], missing: set[int], lo: int, length: int
) -> None:
    hi = lo + length
    expected = lo - 1
    while expected + 1 <= hi and expected + 1 not in missing and expected + 1 <= 80:
        expected += 1
    for name, engine in engines.items():
        with engine.begin() as conn:
            conn.execute(delete(usage_events))
            conn.execute(
                insert(usage_events),
                [
                    {**resource(f"e{i}", "create", "2016-12-12T10:00Z"), "id": i}
                    for i in range(1, 81)
                    if i not in missing
                ],
            )
        with engine.connect() as conn:
            assert dense_end(conn, lo, hi) == expected, (name, missing, lo, hi)


# -- the same billing as the Python path ----------------------------------------------


def calls_of_insert_sums(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """What each call of measure_lines.insert_sums returns from now on, in order."""
    results: list[int | None] = []
    original = measure_lines.insert_sums

    def spy(*args: Any) -> int | None:
        results.append(original(*args))
        return results[-1]

    monkeypatch.setattr(measure_lines, "insert_sums", spy)
    return results


UNITS = ["byte", None, "", " ", "\tbyte", "packet"]


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Measures in one hour and across hours (zero quantities, blank and odd units),
    lifecycle events, bad rows, in any order of ids."""
    rows: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 60))):
        start = START + timedelta(minutes=draw(st.integers(0, HOURS * 60 - 1)))
        kind = draw(st.sampled_from(["measure"] * 6 + ["long", "resource", "bad"]))
        key = {
            "account": draw(st.sampled_from(["acme", "ACME"])),
            "resource_id": draw(st.sampled_from(["r1", "r2"])),
        }
        if kind == "resource":
            rows.append(
                event(
                    event_id=f"e{i}",
                    kind="resource",
                    entity="vm",
                    action=draw(st.sampled_from(["create", "start", "stop"])),
                    offering="small",
                    occurred_at=start,
                    **key,
                )
            )
            continue
        minutes = 1 if kind == "measure" else draw(st.integers(30, 150))
        rows.append(
            event(
                event_id=f"e{i}",
                kind="quantity",
                entity="ip",
                action="measure",
                quantity=-5 if kind == "bad" else draw(st.sampled_from([0, 1, 1001, 10**6])),
                unit=draw(st.sampled_from(UNITS)),
                period_start=start,
                period_end=start + timedelta(minutes=minutes),
                **key,
            )
        )
    return draw(st.permutations(rows))


def _outcome(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        c = usage_lines.c
        lines = conn.execute(
            select(
                c.run_id, c.account, c.entity, c.resource_id, c.offering, c.unit,
                c.period_start, c.quantity, c.source,
            )
        )  # fmt: skip
        p = pending_usage.c
        # Pending parts are summed when taken: how many rows hold a key's hour is free.
        key = (p.account, p.entity, p.resource_id, p.unit, p.hour)
        pending = conn.execute(select(*key, func.sum(p.quantity)).group_by(*key))
        r = runs.c
        chunks = conn.execute(
            select(r.run_id, r.events_read, r.lines_written, r.corrections, r.rejected)
        )
        return {
            "lines": sorted(tuple(map(str, row)) for row in lines),
            "pending": sorted(tuple(map(str, row)) for row in pending),
            "runs": sorted(tuple(map(str, row)) for row in chunks),
        }


@pytest.fixture
def pair(mariadb_url_factory: Any) -> list[Database]:
    return [Database(migrated(mariadb_url_factory())) for _ in range(2)]


@pytest.mark.mariadb
@settings(max_examples=60, **PROPERTY_SETTINGS)
@given(
    rows=histories(),
    missing=st.sets(st.integers(1, 60), max_size=3),
    runs_at=st.lists(st.integers(1, HOURS + 1), min_size=1, max_size=3),
    window=st.integers(3, 40),
)
def test_the_database_bills_measures_as_python_does(
    pair: list[Database],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    rows: list[dict[str, Any]],
    missing: set[int],
    runs_at: list[int],
    window: int,
) -> None:
    """Two MariaDB databases, the same rows (ids missing here and there), the same
    runs in windows of a fixed size: the one billed with the database's own sums holds
    exactly the lines, pending parts and run records of the one billed in Python."""
    monkeypatch.setattr(run_module, "ID_WINDOW", window)
    monkeypatch.setattr(run_module, "ID_WINDOW_LIMITS", (window, window))
    outcomes = []
    for server, db in zip((True, False), pair, strict=True):
        db.reset()
        insert_events(db.engine, [{**row, "id": i + 1} for i, row in enumerate(rows)])
        with db.engine.begin() as conn:
            conn.execute(delete(usage_events).where(usage_events.c.id.in_(missing)))
        monkeypatch.setattr(measure_lines, "available", lambda _conn, on=server: on)
        for hours in sorted(runs_at):
            now = START + timedelta(hours=hours, minutes=31)
            run(db.engine, now, tmp_path, settle_lag=timedelta(0))
        outcomes.append(_outcome(db.engine))
    assert outcomes[0] == outcomes[1]


@pytest.mark.mariadb
def test_the_property_above_can_tell_the_paths_apart(
    mariadb_url_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a tautology: the database path is taken on MariaDB, and writes lines."""
    engine = migrated(mariadb_url_factory())
    insert_events(
        engine,
        [
            measure(f"m{i}", 10, f"2016-12-12T10:0{i}Z", f"2016-12-12T10:0{i + 1}Z")
            for i in range(5)
        ],
    )
    summed = calls_of_insert_sums(monkeypatch)
    run(engine, START + timedelta(hours=1, minutes=31), tmp_path)
    assert summed == [1]
    with engine.connect() as conn:
        assert conn.execute(select(usage_lines.c.quantity)).scalars().all() == [50]


# -- never in a producer's way -------------------------------------------------------


@pytest.mark.mariadb
def test_a_producer_inserts_while_the_database_sums_a_window(
    mariadb_url: str, tmp_path: Path
) -> None:
    """The run holds its window's rows locked until it commits; a producer's insert
    at the end of the table must not wait for that."""
    engine = migrated(mariadb_url)
    at = "2016-12-12T10:00Z"
    insert_events(engine, [measure(f"m{i}", 1, at, at) for i in range(50)])
    took: list[float] = []

    def pause(where: str) -> None:
        if where != "write":
            return
        started = time.monotonic()
        with make_engine(mariadb_url).begin() as producer:
            producer.execute(text("SET SESSION innodb_lock_wait_timeout = 10"))
            producer.execute(
                insert(usage_events),
                [resource("late", "create", "2016-12-12T10:00Z")],
            )
        took.append(time.monotonic() - started)

    outcome = run(engine, START + timedelta(hours=1, minutes=31), tmp_path, pause=pause)
    assert outcome.runs[0].lines_written == 1
    assert took and took[0] < 5


@pytest.mark.mariadb
def test_a_row_held_by_a_producer_sends_the_window_to_python(
    mariadb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer's uncommitted row inside the window: the database's locking read
    would wait for it; after LOCK_WAIT_S the window is read in the run's snapshot
    instead, the row stays a gap, and it is billed once it commits."""
    monkeypatch.setattr(measure_lines, "LOCK_WAIT_S", 1)
    engine = migrated(mariadb_url)

    def row(i: int) -> dict[str, Any]:
        return {**measure(f"m{i}", 1, "2016-12-12T10:00Z", "2016-12-12T10:00Z"), "id": i}

    insert_events(engine, [row(i) for i in range(1, 21) if i != 10])
    holder = make_engine(mariadb_url).connect()
    transaction = holder.begin()
    holder.execute(insert(usage_events), [row(10)])
    summed = calls_of_insert_sums(monkeypatch)
    try:
        first = run(engine, START + timedelta(hours=1, minutes=31), tmp_path)
    finally:
        transaction.commit()
        holder.close()
    # The prefix [1, 9] reached row 10's lock: waited for, then read the Python way.
    assert summed == [None]
    assert first.runs[0].lines_written == 1
    run(engine, START + timedelta(hours=1, minutes=41), tmp_path)
    with engine.connect() as conn:
        total = conn.execute(select(usage_lines.c.quantity)).scalars().all()
    assert sum(total) == 20
