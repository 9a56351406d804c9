"""Rule 6 for rows a producer writes itself (issue 11): usage_events rows inserted with
the database's own driver, in every form each database can hold them, billed hour by
hour with random backfills, dry runs and (MariaDB) inserts that commit late, compared
with the reference model (tests/contract_model.py) after every run.

SQLite holds whatever it is given: times in any text form SQLite's date functions
read (no fraction, 1-6 digits, 'T', 'Z', an offset), quantities as INTEGER, REAL or
TEXT, some of them no whole number. After each run the billed amounts equal the model
over the rows committed before that run (never more, never less), and at the end over
all of them; every row the model cannot bill is recorded once as rejected.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, insert, select

from metering.errors import UsageError
from metering.store.schema import usage_events
from metering.store.usage import Line, lines_of_runs
from tests.contract_model import billable_measure, billable_resource, expected
from tests.support import PROPERTY_SETTINGS, Database, billed, run
from tests.test_run_properties import (
    FINAL_NOW,
    HOUR_MS,
    SPAN_HOURS,
    T0,
    measures,
    resource_events,
)

BLANKS = (" ", "\t", "\u00a0")
OFFSET = timezone(timedelta(hours=5, minutes=30))


@dataclass
class Row:
    logical: dict[str, Any]  # what the model sees: datetimes, an int quantity or None
    stored: dict[str, Any]  # what is written


def _time_text(draw: st.DrawFn, value: datetime) -> str:
    """One of the text forms of `value` SQLite reads, chosen at random."""
    naive = value.replace(tzinfo=None)
    forms = [
        naive.strftime("%Y-%m-%d %H:%M:%S.") + f"{naive.microsecond // 1000:03d}",
        naive.isoformat(sep=" ", timespec="microseconds"),
        naive.isoformat(timespec="milliseconds") + "Z",
        value.astimezone(OFFSET).isoformat(timespec="milliseconds"),
    ]
    if naive.microsecond == 0:
        forms += [str(naive), naive.isoformat(), naive.isoformat() + "+00:00"]
        if naive.second == 0:
            forms.append(naive.strftime("%Y-%m-%d %H:%M"))
    elif naive.microsecond % 100_000 == 0:
        forms.append(naive.strftime("%Y-%m-%d %H:%M:%S.") + str(naive.microsecond // 100_000))
    return draw(st.sampled_from(forms))


@st.composite
def producer_rows(draw: st.DrawFn, dialect: str) -> Row:
    logical = dict(draw(st.one_of(resource_events(), measures(), measures())))
    if logical["kind"] == "quantity" and draw(st.integers(0, 9)) == 0:
        logical["quantity"] = 10**15
    # Blank names are missing (rejected); blank offerings and units take the default.
    for column in ("account", "offering", "unit"):
        if draw(st.integers(0, 12)) == 0:
            logical[column] = draw(st.sampled_from(BLANKS))
    stored = dict(logical)
    if dialect == "sqlite":
        for column in ("occurred_at", "period_start", "period_end"):
            if logical[column] is not None:
                stored[column] = _time_text(draw, logical[column])
        quantity = logical["quantity"]
        if quantity is not None:
            form = draw(st.sampled_from(["int", "real", "text", "half", "junk"]))
            if form == "real":
                stored["quantity"] = float(quantity)
            elif form == "text":
                stored["quantity"] = str(quantity)
            elif form == "half":
                stored["quantity"] = quantity + 0.5
                logical["quantity"] = None  # not a whole number: rejected
            elif form == "junk":
                stored["quantity"] = "n/a"
                logical["quantity"] = None
    return Row(logical, stored)


@dataclass(frozen=True)
class Step:
    advance_ms: int
    kind: str  # run, dry, backfill, late (MariaDB: a row whose insert commits after the run)
    since_hour: int


@st.composite
def scenarios(draw: st.DrawFn, dialect: str) -> tuple[list[Row], list[list[int]], list[Step]]:
    rows = draw(st.lists(producer_rows(dialect), min_size=1, max_size=16))
    for number, row in enumerate(rows):
        row.logical["event_id"] = row.stored["event_id"] = f"p{number}"
    kinds = ["run", "run", "run", "dry", "backfill"] + (["late"] if dialect != "sqlite" else [])
    steps = draw(
        st.lists(
            st.builds(
                Step,
                advance_ms=st.sampled_from([HOUR_MS, HOUR_MS, 2 * HOUR_MS, 10 * 60_000]),
                kind=st.sampled_from(kinds),
                since_hour=st.integers(0, SPAN_HOURS),
            ),
            min_size=2,
            max_size=8,
        )
    )
    batches: list[list[int]] = [[] for _ in steps]
    for index in range(len(rows)):
        batches[draw(st.integers(0, len(steps) - 1))].append(index)
    return rows, batches, steps


def write(engine: Engine, rows: list[Row]) -> None:
    if not rows:
        return
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            conn.execute(insert(usage_events), [row.stored for row in rows])
        return
    columns = [c for c in rows[0].stored if c != "attributes"] + ["ingested_at"]
    sql = (
        f"INSERT INTO usage_events ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    )
    with engine.begin() as conn:
        for row in rows:
            values = {**row.stored, "ingested_at": "2016-12-12 00:00:00.000"}
            conn.exec_driver_sql(sql, tuple(values[c] for c in columns))


def lines_of(engine: Engine, run_ids: list[str]) -> list[Line]:
    with engine.connect() as conn:
        return lines_of_runs(conn, run_ids)


def model_rows(engine: Engine, rows: list[Row], visible: set[str]) -> list[dict[str, Any]]:
    """The logical rows committed so far, in the table's id order (rule 1's tie-break)."""
    with engine.connect() as conn:
        ids = dict(conn.execute(select(usage_events.c.event_id, usage_events.c.id)).all())
    by_id = {row.logical["event_id"]: row.logical for row in rows}
    return [by_id[e] for e in sorted(visible, key=lambda e: ids[e])]


def play(db: Database, rows: list[Row], batches: list[list[int]], steps: list[Step],
         tmp_path: Path) -> None:  # fmt: skip
    db.reset()
    engine = db.engine
    now = T0 + timedelta(hours=1, minutes=31)
    visible: set[str] = set()
    for step, batch in zip(steps, batches, strict=True):
        now += timedelta(milliseconds=step.advance_ms)
        delivered = [rows[i] for i in batch]
        if step.kind == "late" and delivered:
            # Inserted (its id taken) before the run, committed after it: the run
            # cannot see it; a later run must still bill it (rule 12).
            conn = engine.connect()
            held = conn.begin()
            conn.execute(insert(usage_events), [row.stored for row in delivered])
            run(engine, now, tmp_path)
            held.commit()
            conn.close()
        else:
            write(engine, delivered)
            visible.update(row.logical["event_id"] for row in delivered)
            if step.kind == "dry":
                before = db.snapshot()
                dry = run(engine, now, tmp_path, dry_run=True)
                assert db.snapshot() == before, "a dry run changes nothing"
                real = run(engine, now, tmp_path)
                assert sorted(map(repr, dry.lines)) == sorted(
                    map(repr, lines_of(engine, [r.run_id for r in real.runs]))
                ), "the dry run showed what the run wrote"
            elif step.kind == "backfill":
                since = T0 + timedelta(hours=step.since_hour)
                try:
                    run(engine, now, tmp_path, since=since)
                except UsageError:  # --since not before the closed hours: refused
                    run(engine, now, tmp_path)
            else:
                run(engine, now, tmp_path)
        until = db.billed_until()
        truth = {} if until is None else expected(model_rows(engine, rows, visible), until)
        assert billed(engine) == truth, f"after a {step.kind} step"
        if step.kind == "late":
            visible.update(row.logical["event_id"] for row in delivered)
    run(engine, FINAL_NOW, tmp_path)
    final = (FINAL_NOW - timedelta(minutes=30)).replace(minute=0)
    everything = model_rows(engine, rows, {row.logical["event_id"] for row in rows})
    assert billed(engine) == expected(everything, final)
    bad = Counter(
        e["event_id"] for e in everything if not (billable_resource(e) or billable_measure(e))
    )
    assert db.rejected_ids() == bad, "each row that cannot be billed recorded once"


@pytest.mark.slow
@given(data=st.data())
@settings(max_examples=40, **PROPERTY_SETTINGS)
def test_producer_rows_bill_like_the_model_sqlite(
    data: st.DataObject, sqlite_database: Database, tmp_path: Path
) -> None:
    play(sqlite_database, *data.draw(scenarios("sqlite")), tmp_path)


@pytest.mark.slow
@pytest.mark.mariadb
@given(data=st.data())
@settings(max_examples=15, **PROPERTY_SETTINGS)
def test_producer_rows_bill_like_the_model_mariadb(
    data: st.DataObject, mariadb_database: Database, tmp_path: Path
) -> None:
    play(mariadb_database, *data.draw(scenarios("mariadb")), tmp_path)
