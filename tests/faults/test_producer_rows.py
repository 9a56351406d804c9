"""Rows a producer can write straight into usage_events, in every form the database
can hold them, are billed right or recorded (issue 11, items 1-4, 8, 9, 14, 18).

Each test writes rows with the database's own driver, not through metering, so the
stored forms are the producer's, not metering's canonical ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from metering import run as run_module
from metering.check import execute as check_execute
from metering.run import RunRequest, execute
from metering.store.events import parse_raw_quantity, parse_raw_time
from metering.store.schema import rejected_events, resource_state, usage_events, usage_lines
from metering.timeutil import from_ms
from tests.contract_model import billable_measure, billable_resource, expected
from tests.support import EVENT_COLUMNS, billed, insert_events, measure, migrated, resource, run, t

# Written by the driver itself, as a producer would; attributes stay NULL.
COLUMNS = (*(c for c in EVENT_COLUMNS if c != "attributes"), "ingested_at")


def raw_insert(engine: Engine, rows: Sequence[dict[str, Any]]) -> None:
    """Insert with the driver's own parameter handling: values stored as given."""
    placeholders = ", ".join(["%s" if engine.dialect.name != "sqlite" else "?"] * len(COLUMNS))
    sql = f"INSERT INTO usage_events ({', '.join(COLUMNS)}) VALUES ({placeholders})"
    with engine.begin() as conn:
        for row in rows:
            values = {c: None for c in COLUMNS} | {"ingested_at": "2016-12-12 00:00:00"} | row
            conn.exec_driver_sql(sql, tuple(values[c] for c in COLUMNS))


def raw_resource(event_id: str, action: str, when: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "kind": "resource",
        "entity": "vm",
        "action": action,
        "account": "acme",
        "resource_id": "vm-1",
        "occurred_at": when,
    } | extra


def raw_measure(event_id: str, quantity: Any, start: str, end: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "kind": "quantity",
        "entity": "ip",
        "action": "measure",
        "account": "acme",
        "resource_id": "10.0.0.1",
        "occurred_at": end,
        "quantity": quantity,
        "unit": "byte",
        "period_start": start,
        "period_end": end,
    } | extra


def seconds(engine: Engine) -> dict[str, Decimal]:
    """Billed seconds per hour ('HH') of the one VM."""
    return {
        key[5].strftime("%H"): amount
        for key, amount in billed(engine).items()
        if key[4] == "second"
    }


def reasons(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(select(rejected_events.c.event_id, rejected_events.c.reason))
        return {event_id: reason for event_id, reason in rows}


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Engine:
    return migrated(sqlite_url)


@pytest.fixture
def engine(database_url: str) -> Engine:
    return migrated(database_url)


# -- item 1: every text form SQLite may hold for a time ------------------------------

SQLITE_TIME_FORMS = {
    "no fraction": "2016-12-12 12:00:00",
    "one digit": "2016-12-12 12:00:00.0",
    "six digits": "2016-12-12 12:00:00.000000",
    "T separator": "2016-12-12T12:00:00",
    "Z": "2016-12-12T12:00:00Z",
    "offset": "2016-12-12T14:00:00+02:00",
    "negative offset": "2016-12-11T23:00:00-13:00",
    "no seconds": "2016-12-12 12:00",
}


@pytest.mark.parametrize("form", SQLITE_TIME_FORMS.values(), ids=SQLITE_TIME_FORMS.keys())
def test_a_late_stop_in_any_time_form_is_read(
    sqlite_engine: Engine, tmp_path: Path, form: str
) -> None:
    raw_insert(sqlite_engine, [raw_resource("c", "create", "2016-12-12 10:00:00")])
    run(sqlite_engine, "2016-12-12T12:31Z", tmp_path)
    raw_insert(sqlite_engine, [raw_resource("s", "stop", form)])
    run(sqlite_engine, "2016-12-12T13:31Z", tmp_path)
    run(sqlite_engine, "2016-12-12T14:31Z", tmp_path)
    assert seconds(sqlite_engine) == {"10": Decimal(3600), "11": Decimal(3600)}


@pytest.mark.parametrize("form", SQLITE_TIME_FORMS.values(), ids=SQLITE_TIME_FORMS.keys())
def test_a_backfill_reads_measures_in_any_time_form(
    sqlite_engine: Engine, tmp_path: Path, form: str
) -> None:
    """The backfill's measure scan bounds period_start by time: no form may fall out."""
    raw_insert(sqlite_engine, [raw_measure("m", 7, form, form)])
    run(sqlite_engine, "2016-12-12T14:31Z", tmp_path)
    assert billed(sqlite_engine) == {
        ("acme", "ip", "10.0.0.1", "", "byte", t("2016-12-12T12:00Z")): Decimal(7)
    }
    outcome = run(sqlite_engine, "2016-12-12T14:31Z", tmp_path, since=t("2016-12-12T12:00Z"))
    assert sum(r.lines_written for r in outcome.runs) == 0


def test_an_unreadable_time_is_rejected_not_missing(sqlite_engine: Engine, tmp_path: Path) -> None:
    raw_insert(sqlite_engine, [raw_resource("c", "create", "12/12/2016 10:00")])
    run(sqlite_engine, "2016-12-12T12:31Z", tmp_path)
    assert reasons(sqlite_engine) == {"c": "unreadable occurred_at '12/12/2016 10:00'"}


# -- item 2: quantities that are not whole numbers -----------------------------------


def test_a_quantity_that_is_no_number_is_rejected_and_others_bill(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    hour = ("2016-12-12 12:00:00.000", "2016-12-12 12:01:00.000")
    raw_insert(
        sqlite_engine,
        [
            raw_measure("bad", "n/a", *hour),
            raw_measure("half-1", 0.5, *hour),
            raw_measure("half-2", "0.5", *hour),
            raw_measure("whole-real", 3.0, *hour),
            raw_measure("whole-text", "4", *hour),
            raw_measure("int", 5, *hour),
        ],
    )
    run(sqlite_engine, "2016-12-12T13:31Z", tmp_path)
    assert billed(sqlite_engine) == {
        ("acme", "ip", "10.0.0.1", "", "byte", t("2016-12-12T12:00Z")): Decimal(12)
    }
    found = reasons(sqlite_engine)
    assert set(found) == {"bad", "half-1", "half-2"}
    assert all(reason.startswith("quantity is not a whole number") for reason in found.values())
    outcome = run(sqlite_engine, "2016-12-12T13:31Z", tmp_path, since=t("2016-12-12T12:00Z"))
    assert sum(r.lines_written for r in outcome.runs) == 0


# -- items 3 and 4: sums beyond 64 bits and beyond a double's precision -------------


def test_a_key_hour_beyond_64_bits_is_billed_and_others_too(engine: Engine, tmp_path: Path) -> None:
    hour = ("2016-12-12T12:00:00Z", "2016-12-12T12:01:00Z")
    rows = [measure(f"m{i}", 10**15, *hour) for i in range(9224)]
    rows.append(measure("other", 5, *hour, account="other"))
    insert_events(engine, rows)
    run(engine, "2016-12-12T13:31Z", tmp_path)
    assert billed(engine) == {
        ("acme", "ip", "10.0.0.1", "", "byte", t("2016-12-12T12:00Z")): Decimal(9224 * 10**15),
        ("other", "ip", "10.0.0.1", "", "byte", t("2016-12-12T12:00Z")): Decimal(5),
    }
    outcome = run(engine, "2016-12-12T13:31Z", tmp_path, since=t("2016-12-12T12:00Z"))
    assert sum(r.lines_written for r in outcome.runs) == 0


def test_a_line_above_2_to_the_53_is_stored_exactly(engine: Engine, tmp_path: Path) -> None:
    total = 9_007_199_254_740_993
    # One key summed by the database (ten measures in one hour), one split in Python.
    rows = [
        measure(f"m{i}", total // 10, "2016-12-12T12:00Z", "2016-12-12T12:01Z") for i in range(9)
    ]
    rows.append(measure("m9", total - 9 * (total // 10), "2016-12-12T12:00Z", "2016-12-12T12:01Z"))
    rows += [
        measure(
            f"split{i}",
            10**15,
            "2016-12-12T12:00Z",
            "2016-12-12T13:00:00.001Z",
            resource_id="10.0.0.2",
        )
        for i in range(10)
    ]
    insert_events(engine, rows)
    run(engine, "2016-12-12T14:31Z", tmp_path)
    hour = t("2016-12-12T12:00Z")
    amounts = billed(engine)
    assert amounts[("acme", "ip", "10.0.0.1", "", "byte", hour)] == Decimal(total)
    # floor(10^15 x 3600000 / 3600001) per measure, ten of them: 9,999,997,222,222,990.
    assert amounts[("acme", "ip", "10.0.0.2", "", "byte", hour)] == Decimal(9999997222222990)
    assert amounts[("acme", "ip", "10.0.0.2", "", "byte", t("2016-12-12T13:00Z"))] == Decimal(
        10**16 - 9999997222222990
    )
    outcome = run(engine, "2016-12-12T14:31Z", tmp_path, since=t("2016-12-12T12:00Z"))
    assert sum(r.lines_written for r in outcome.runs) == 0
    with engine.connect() as conn:
        stored = sorted(q for (q,) in conn.execute(select(usage_lines.c.quantity)))
    assert Decimal(total) in stored and Decimal(9999997222222990) in stored


# -- item 8: anomalies the final order implies ----------------------------------------


def test_a_stop_orphaned_by_a_late_stop_is_recorded_once(engine: Engine, tmp_path: Path) -> None:
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00Z")])
    run(engine, "2016-12-12T12:31Z", tmp_path)
    insert_events(engine, [resource("s2", "stop", "2016-12-12T12:15Z")])
    run(engine, "2016-12-12T13:31Z", tmp_path)
    assert reasons(engine) == {}
    insert_events(engine, [resource("s1", "stop", "2016-12-12T11:00Z")])
    run(engine, "2016-12-12T14:31Z", tmp_path)
    run(engine, "2016-12-12T15:31Z", tmp_path)
    assert seconds(engine) == {"10": Decimal(3600)}
    found = reasons(engine)
    assert list(found) == ["s2"]
    assert "stop" in found["s2"]


def test_a_start_after_a_late_destroy_is_recorded_once(engine: Engine, tmp_path: Path) -> None:
    insert_events(
        engine,
        [resource("c", "create", "2016-12-12T10:00Z"), resource("s", "stop", "2016-12-12T10:30Z")],
    )
    run(engine, "2016-12-12T11:31Z", tmp_path)
    insert_events(engine, [resource("st", "start", "2016-12-12T12:00Z")])
    run(engine, "2016-12-12T12:31Z", tmp_path)
    insert_events(engine, [resource("d", "destroy", "2016-12-12T11:00Z")])
    run(engine, "2016-12-12T13:31Z", tmp_path)
    run(engine, "2016-12-12T14:31Z", tmp_path)
    assert seconds(engine) == {"10": Decimal(1800)}
    assert list(reasons(engine)) == ["st"]


# -- item 9: blank fields -------------------------------------------------------------

BLANKS = (" ", "\t", "\u00a0", " \n ")


@pytest.mark.parametrize("blank", BLANKS, ids=repr)
@pytest.mark.parametrize("column", ["account", "entity", "resource_id"])
def test_a_blank_required_field_is_missing(
    engine: Engine, tmp_path: Path, column: str, blank: str
) -> None:
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T10:00Z", **{column: blank}),
            measure("m", 5, "2016-12-12T10:00Z", "2016-12-12T10:01Z", **{column: blank}),
            measure("m2", 5, "2016-12-12T10:30Z", "2016-12-12T11:30Z", **{column: blank}),
        ],
    )
    run(engine, "2016-12-12T12:31Z", tmp_path)
    assert billed(engine) == {}
    assert reasons(engine) == {e: f"missing {column}" for e in ("c", "m", "m2")}


@pytest.mark.parametrize("blank", BLANKS, ids=repr)
def test_a_blank_offering_or_unit_takes_the_default(
    engine: Engine, tmp_path: Path, blank: str
) -> None:
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T10:00Z", offering="small"),
            resource("u", "update", "2016-12-12T10:30Z", offering=blank),
            measure("m", 5, "2016-12-12T10:00Z", "2016-12-12T10:01Z", unit=blank),
            measure("m2", 6, "2016-12-12T10:30Z", "2016-12-12T11:30Z", unit=blank),
        ],
    )
    run(engine, "2016-12-12T11:31Z", tmp_path)
    hour = t("2016-12-12T10:00Z")
    assert billed(engine) == {
        ("acme", "vm", "vm-1", "small", "second", hour): Decimal(3600),
        ("acme", "ip", "10.0.0.1", "", "byte", hour): Decimal(8),
    }


# -- item 14: a dry run does not block producers (SQLite) ----------------------------


def test_a_dry_run_lets_a_producer_write(sqlite_engine: Engine, tmp_path: Path) -> None:
    insert_events(sqlite_engine, [resource("c", "create", "2016-12-12T10:00Z")])
    writer_done: list[float] = []
    paused = threading.Event()
    go_on = threading.Event()

    def pause(where: str) -> None:
        if where == "write":
            paused.set()
            go_on.wait(30)

    def producer() -> None:
        paused.wait(30)
        started = time.monotonic()
        insert_events(sqlite_engine, [resource("s", "stop", "2016-12-12T13:00Z")])
        writer_done.append(time.monotonic() - started)
        go_on.set()

    thread = threading.Thread(target=producer)
    thread.start()
    try:
        execute(
            sqlite_engine,
            RunRequest(now=t("2016-12-12T12:31Z"), dry_run=True),
            lock_file=tmp_path / "lock",
            pause=pause,
        )
    finally:
        go_on.set()
        thread.join()
    assert writer_done and writer_done[0] < 5
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(usage_lines)).first() is None
        assert conn.execute(select(resource_state)).first() is None


# -- item 18: a backfill into the past is not a clock going back ---------------------


def test_a_backfill_with_until_before_the_watermark_is_not_a_clock_warning(
    engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00Z")])
    run(engine, "2016-12-12T14:31Z", tmp_path)
    outcome = run(
        engine,
        "2016-12-12T14:31Z",
        tmp_path,
        since=t("2016-12-12T10:00Z"),
        until=t("2016-12-12T12:00Z"),
    )
    assert not outcome.clock_stepped_back
    assert "clock_behind_watermark" not in capsys.readouterr().err


def test_check_reads_a_producer_destroy_time_as_an_instant(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    """`check` compares the first destroy with billed hours: as instants, not as text."""
    raw_insert(
        sqlite_engine,
        [
            raw_resource("c", "create", "2016-12-12 10:00:00"),
            raw_resource("d", "destroy", "2016-12-12T11:00:00Z"),
        ],
    )
    run(sqlite_engine, "2016-12-12T12:31Z", tmp_path)
    with sqlite_engine.begin() as conn:
        conn.execute(
            insert(usage_lines).values(
                run_id="forged",
                account="acme",
                entity="vm",
                resource_id="vm-1",
                offering="",
                unit="second",
                period_start=t("2016-12-12T11:00Z"),
                quantity=60,
                source="running",
            )
        )
    report = check_execute(sqlite_engine, now=t("2016-12-12T13:00Z"))
    assert {r.name: r.found for r in report.results}["billed-after-destroy"] == 1


# -- a backlog of days of such rows, read in windows (issue 12) ------------------------


def test_three_days_of_producer_rows_caught_up_in_windows(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three days nobody billed: resources started and stopped, measures in every form
    the database holds them (SQLite: text times without fraction or with an offset,
    REAL and TEXT quantities, some no whole number, blank names), read by the first
    run in windows of 7 ids. Billing equals the model; each bad row is rejected once."""
    sqlite = engine.dialect.name == "sqlite"

    def when(hour: int, minute: int) -> str:
        moment = datetime(2016, 12, 10, tzinfo=UTC) + timedelta(hours=hour, minutes=minute)
        if sqlite and hour % 2:
            return moment.astimezone(timezone(timedelta(hours=5))).isoformat()
        return moment.strftime("%Y-%m-%d %H:%M:%S")

    rows: list[dict[str, Any]] = []
    for hour in range(72):
        vm = f"vm-{hour % 5}"
        action = "start" if hour % 10 < 5 else "stop"
        rows.append(raw_resource(f"r{hour}", action, when(hour, 7), resource_id=vm))
        quantity: Any = 1000 + hour
        if sqlite:
            quantity = [quantity, float(quantity), str(quantity), quantity + 0.5][hour % 4]
        account = " " if hour % 17 == 0 else "acme"
        rows.append(
            raw_measure(f"m{hour}", quantity, when(hour, 10), when(hour, 40), account=account)
        )
    raw_insert(engine, rows)
    window = 7
    monkeypatch.setattr(run_module, "ID_WINDOW", window)
    monkeypatch.setattr(run_module, "ID_WINDOW_LIMITS", (window, window))
    outcome = run(engine, "2016-12-13T00:31Z", tmp_path)
    assert len([r for r in outcome.runs if r.last_event_id is not None]) > 10
    with engine.connect() as conn:
        ids = dict(conn.execute(select(usage_events.c.event_id, usage_events.c.id)).all())
    logical = []
    for row in sorted(rows, key=lambda r: ids[r["event_id"]]):
        value = dict.fromkeys(("offering", "unit", "period_start", "period_end"), None) | row
        value["quantity"] = parse_raw_quantity(row.get("quantity"))
        if not isinstance(value["quantity"], int):
            value["quantity"] = None
        for column in ("occurred_at", "period_start", "period_end"):
            if value[column] is not None:
                value[column] = from_ms(parse_raw_time(value[column]))  # type: ignore[arg-type]
        logical.append(value)
    assert billed(engine) == expected(logical, t("2016-12-13T00:00Z"))
    bad = {r["event_id"] for r in logical if not (billable_resource(r) or billable_measure(r))}
    found = reasons(engine)
    assert set(found) >= bad and bad
    assert all(e in bad or found[e] == "stop without start" for e in found)
