"""Bad input in usage_events never stops a run and is never silently dropped (rule 9).

Rows are written straight into usage_events (no ingest in between), so they can be
anything the schema accepts. After a few runs every row is either billed exactly as
the reference model says, recorded in rejected_events with a reason, or legitimately
pending (its hour is not closed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, func, select, update

from metering.core.events import MAX_MEASURE_PERIOD, MAX_QUANTITY, MAX_TEXT, MAX_TIME, MIN_TIME
from metering.store import schema
from metering.store.schema import metering_state, rejected_events, usage_events, usage_lines
from metering.timeutil import floor_hour, from_ms
from tests.contract_model import expected
from tests.core.model import anomalies as model_anomalies
from tests.support import billed, event, insert_events, measure, migrated, resource, run, t

SQL = "'; DROP TABLE usage_lines; --"
BASE = datetime(2016, 10, 30, 0, 0, tzinfo=UTC)
NOWS = (BASE + timedelta(hours=20), BASE + timedelta(hours=40), BASE + timedelta(hours=60))
GRACE = timedelta(minutes=30)
FLOOR = from_ms(MIN_TIME)
CEILING = from_ms(MAX_TIME)
RESOURCE_ACTIONS = ("create", "start", "stop", "destroy", "update")

# Around the floor and the DATETIME range's ends; "near" times are where billing happens.
EXTREME_TIMES = (
    datetime(1000, 1, 1, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    FLOOR - timedelta(milliseconds=1),
    datetime(2100, 1, 1, tzinfo=UTC),
    datetime(5000, 6, 15, 12, 30, tzinfo=UTC),
    CEILING,
)


def _tables_to_empty() -> list[Any]:
    keep = {"metering_state", "alembic_version"}
    return [table for name, table in schema.metadata.tables.items() if name not in keep]


def reset(engine: Engine) -> None:
    """Back to a freshly migrated database, faster than migrating a new one."""
    with engine.begin() as conn:
        for table in _tables_to_empty():
            conn.execute(delete(table))
        conn.execute(
            update(metering_state).values(
                version=0,
                last_event_id=0,
                billed_until=None,
                max_measure_period_ms=0,
                last_run_id=None,
                updated_at=None,
            )
        )


# -- strategies --------------------------------------------------------------------


def near_times() -> st.SearchStrategy[datetime]:
    span = int(timedelta(hours=70).total_seconds() * 1000)
    return st.integers(-6 * 3_600_000, span).map(lambda ms: BASE + timedelta(milliseconds=ms))


def times() -> st.SearchStrategy[datetime]:
    return st.one_of(near_times(), near_times(), near_times(), st.sampled_from(EXTREME_TIMES))


def texts(column: str, pool: Sequence[str], *, overlong: bool) -> st.SearchStrategy[str]:
    limit = MAX_TEXT[column]
    fixed = [v for v in pool if len(v) <= limit]
    if overlong:
        fixed += ["a" * (limit + 1), "\U0001f600" * (limit + 1), "a\x00" + "b" * limit]
    return st.one_of(st.sampled_from(fixed), st.sampled_from(fixed), st.text(max_size=limit))


def identity_pool(column: str) -> list[str]:
    """Few values, so events collide on one resource; case and space variants differ."""
    limit = MAX_TEXT[column]
    return [
        "acme",
        "ACME",
        "acme ",
        " acme",
        "",
        " ",
        "é",
        "e\u0301",
        "\U0001f600" * limit,
        "x" * limit,
        SQL,
    ]


@st.composite
def clean_rows(draw: st.DrawFn) -> dict[str, Any]:
    """A row that should bill, though its names may be odd (case, spaces, emoji, SQL)."""
    kind = draw(st.sampled_from(["resource", "quantity"]))
    start = draw(near_times())
    return {
        "kind": kind,
        "action": draw(st.sampled_from(RESOURCE_ACTIONS if kind == "resource" else ("measure",))),
        "account": draw(st.sampled_from([v for v in identity_pool("account") if v.strip()])),
        "entity": draw(st.sampled_from(["vm", "VM", "vm ", "ip", SQL])),
        "resource_id": draw(
            st.sampled_from([v for v in identity_pool("resource_id") if v.strip()])
        ),
        "offering": draw(st.sampled_from([None, "small", "large", "", SQL])),
        "occurred_at": draw(near_times()),
        "quantity": draw(st.one_of(st.integers(0, 10**6), st.just(MAX_QUANTITY))),
        "unit": draw(st.sampled_from([None, "byte", "Byte", "", SQL[:16]])),
        "period_start": start,
        "period_end": start + timedelta(milliseconds=draw(st.integers(0, 3 * 3_600_000))),
        "attributes": None,
    }


@st.composite
def wild_rows(draw: st.DrawFn, overlong: bool) -> dict[str, Any]:
    kind = draw(
        st.one_of(
            st.sampled_from(["resource", "resource", "quantity", "quantity"]),
            texts("kind", ["", "Resource", "QUANTITY", "resource ", SQL[:16]], overlong=overlong),
        )
    )
    valid_actions = RESOURCE_ACTIONS if kind == "resource" else ("measure",)
    action = draw(
        st.one_of(
            st.sampled_from(valid_actions),
            st.sampled_from(valid_actions),
            texts(
                "action", ["", "Create", "create ", "measure", "stop", SQL[:16]], overlong=overlong
            ),
        )
    )
    start = draw(st.one_of(st.none(), times()))
    end: datetime | None
    if start is None:
        end = draw(st.one_of(st.none(), times()))
    else:
        delta = draw(
            st.one_of(
                st.integers(-3_600_000, 3 * 3_600_000),
                st.integers(0, 3_600_000),
                st.sampled_from([0, MAX_MEASURE_PERIOD, MAX_MEASURE_PERIOD + 1]),
            )
        )
        try:
            end = start + timedelta(milliseconds=delta)
        except OverflowError:
            end = None
        if end is not None and not datetime(1000, 1, 1, tzinfo=UTC) <= end <= CEILING:
            end = None
    return {
        "kind": kind,
        "action": action,
        "account": draw(texts("account", identity_pool("account"), overlong=overlong)),
        "entity": draw(texts("entity", ["vm", "VM", "vm ", "", "ip", SQL], overlong=overlong)),
        "resource_id": draw(texts("resource_id", identity_pool("resource_id"), overlong=overlong)),
        "offering": draw(
            st.one_of(
                st.none(),
                texts("offering", ["small", "large", "", "Large", SQL], overlong=overlong),
            )
        ),
        "occurred_at": draw(times()),
        "quantity": draw(
            st.one_of(
                st.none(),
                st.integers(0, 10**6),
                st.integers(-(2**63), 2**63 - 1),
                st.sampled_from([0, -1, MAX_QUANTITY, MAX_QUANTITY + 1, 2**63 - 1, -(2**63)]),
            )
        ),
        "unit": draw(
            st.one_of(
                st.none(),
                texts("unit", ["byte", "Byte", "", "second", SQL[:16]], overlong=overlong),
            )
        ),
        "period_start": start,
        "period_end": end,
        "attributes": draw(st.one_of(st.none(), st.just({"note": SQL}))),
    }


@st.composite
def rows(draw: st.DrawFn, overlong: bool) -> dict[str, Any]:
    """Mostly clean rows, some with one hostile value, some hostile throughout."""
    clean = draw(clean_rows())
    mode = draw(st.sampled_from(["clean", "clean", "one", "one", "wild"]))
    if mode == "clean":
        return clean
    wild = draw(wild_rows(overlong))
    if mode == "wild":
        return wild
    column = draw(st.sampled_from(sorted(clean)))
    return {**clean, column: wild[column]}


@st.composite
def scenarios(draw: st.DrawFn, overlong: bool) -> tuple[list[dict[str, Any]], int, int]:
    drawn = draw(st.lists(rows(overlong), min_size=1, max_size=25))
    ids = draw(
        st.lists(
            texts("event_id", ["", SQL, "e ", "E"], overlong=overlong),
            min_size=len(drawn),
            max_size=len(drawn),
            unique=True,
        )
    )
    for row, event_id in zip(drawn, ids, strict=True):
        row["event_id"] = event_id
    cut1 = draw(st.integers(0, len(drawn)))
    cut2 = draw(st.integers(cut1, len(drawn)))
    return drawn, cut1, cut2


# -- the reference -----------------------------------------------------------------


def in_range(value: datetime | None) -> bool:
    return value is not None and FLOOR <= value <= CEILING


def reference_valid(row: Mapping[str, Any]) -> bool:
    """The contract's rule 9 plus the documented limits, written out on its own."""
    if any(row[c] is not None and len(row[c]) > limit for c, limit in MAX_TEXT.items()):
        return False
    if not all(row[c].strip() for c in ("account", "entity", "resource_id")):
        return False
    if row["kind"] == "resource":
        return row["action"] in RESOURCE_ACTIONS and in_range(row["occurred_at"])
    if row["kind"] != "quantity" or row["action"] != "measure":
        return False
    q, start, end = row["quantity"], row["period_start"], row["period_end"]
    return (
        q is not None
        and 0 <= q <= MAX_QUANTITY
        and in_range(start)
        and in_range(end)
        and start <= end
        and end - start <= timedelta(milliseconds=MAX_MEASURE_PERIOD)
    )


def model_anomaly_rows(valid: Sequence[tuple[int, Mapping[str, Any]]], until: datetime) -> set[int]:
    by_key: dict[tuple[str, str, str], list[tuple[int, int, str, str | None]]] = {}
    for row_id, row in valid:
        if row["kind"] == "resource":
            key = (row["account"], row["entity"], row["resource_id"])
            when = int(row["occurred_at"].timestamp() * 1000)
            by_key.setdefault(key, []).append((when, row_id, row["action"], row["offering"]))
    limit = int(until.timestamp() * 1000)
    return {row_id for evs in by_key.values() for row_id, _ in model_anomalies(evs, limit)}


def stored_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(select(usage_events.c.id).order_by(usage_events.c.id)).scalars())


def findings(engine: Engine) -> list[tuple[int, str, str]]:
    c = rejected_events.c
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(c.event_row_id, c.category, c.reason))]


def check_scenario(
    engine: Engine, tmp_path: Path, drawn: list[dict[str, Any]], cut1: int, cut2: int
) -> None:
    reset(engine)
    batches = (drawn[:cut1], drawn[cut1:cut2], drawn[cut2:])
    for batch, now in zip(batches, NOWS, strict=True):
        insert_events(engine, batch)
        run(engine, now, tmp_path)
    horizon = floor_hour(NOWS[-1] - GRACE)

    ids = stored_ids(engine)
    assert len(ids) == len(drawn)
    numbered = list(zip(ids, drawn, strict=True))
    valid = [(i, row) for i, row in numbered if reference_valid(row)]
    invalid = {i for i, row in numbered if not reference_valid(row)}

    found = findings(engine)
    rejected = Counter(i for i, category, _ in found if category == "rejected")
    anomalous = Counter(i for i, category, _ in found if category == "anomaly")
    assert all(reason.strip() for _, _, reason in found)
    assert set(rejected) == invalid, "every invalid row rejected, no valid row rejected"
    assert all(n == 1 for n in rejected.values()), "each rejection recorded once"
    valid_resource_ids = {i for i, row in valid if row["kind"] == "resource"}
    assert set(anomalous) <= valid_resource_ids
    if cut1 == len(drawn):
        # No late events, so no event's status changes after it was judged.
        assert set(anomalous) == model_anomaly_rows(valid, horizon)
        assert all(n == 1 for n in anomalous.values())

    truth = expected([row for _, row in valid], horizon)
    assert billed(engine) == truth
    note_event(f"billed keys {min(len(truth), 3)}, rejected {min(len(invalid), 3)}")

    # A backfill over the same, unchanged events writes nothing (rule 13).
    outcome = run(engine, NOWS[-1], tmp_path, since=BASE - timedelta(hours=12))
    assert sum(r.lines_written for r in outcome.runs) == 0


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        derandomize=True,
    )


@fuzz(60)
@given(case=scenarios(overlong=True))
def test_fuzzed_rows_sqlite(
    sqlite_engine: Engine, tmp_path: Path, case: tuple[list[dict[str, Any]], int, int]
) -> None:
    check_scenario(sqlite_engine, tmp_path, *case)


@pytest.mark.mariadb
@fuzz(30)
@given(case=scenarios(overlong=False))
def test_fuzzed_rows_mariadb(
    mariadb_engine: Engine, tmp_path: Path, case: tuple[list[dict[str, Any]], int, int]
) -> None:
    check_scenario(mariadb_engine, tmp_path, *case)


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Engine:
    return migrated(sqlite_url)


@pytest.fixture
def mariadb_engine(mariadb_url: str) -> Engine:
    return migrated(mariadb_url)


# -- explicit cases ----------------------------------------------------------------


def test_sql_looking_values_are_stored_and_billed_literally(
    database_url: str, tmp_path: Path
) -> None:
    engine = migrated(database_url)
    short = SQL[:16]
    insert_events(
        engine,
        [
            resource(
                SQL,
                "create",
                "2016-12-12T15:30:00Z",
                account=SQL,
                entity=SQL,
                resource_id=SQL,
                offering=SQL,
            ),
            measure(
                SQL + "m",
                7,
                "2016-12-12T15:10:00Z",
                "2016-12-12T15:20:00Z",
                account=SQL,
                entity=SQL,
                resource_id=SQL,
                unit=short,
            ),
            event(
                event_id=SQL + "k",
                kind=short,
                entity=SQL,
                action=short,
                account=SQL,
                resource_id=SQL,
                occurred_at="2016-12-12T15:00:00Z",
                attributes={"x": SQL},
            ),
        ],
    )
    run(engine, "2016-12-12T17:30:00Z", tmp_path)
    hour = t("2016-12-12T15:00:00Z")
    later = t("2016-12-12T16:00:00Z")
    assert billed(engine) == {
        (SQL, SQL, SQL, SQL, "second", hour): 1800,
        (SQL, SQL, SQL, SQL, "second", later): 3600,
        (SQL, SQL, SQL, "", short, hour): 7,
    }
    ((row_id, category, reason),) = findings(engine)
    assert category == "rejected" and reason.startswith("unknown kind")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(usage_lines)).scalar_one() == 3
        assert (
            conn.execute(
                select(usage_events.c.event_id).where(usage_events.c.id == row_id)
            ).scalar_one()
            == SQL + "k"
        )


def test_times_before_the_floor_are_rejected_at_the_floor_billed(
    database_url: str, tmp_path: Path
) -> None:
    """Policy: nothing before 2000-01-01T00:00Z is billed (a producer's zero timestamp
    must not bill decades of running time); the floor itself is billable."""
    engine = migrated(database_url)
    insert_events(
        engine,
        [
            resource("epoch", "create", "1970-01-01T00:00:00Z", resource_id="zero"),
            resource("y1000", "create", "1000-01-01T00:00:00Z", resource_id="old"),
            resource("justbefore", "create", "1999-12-31T23:59:59.999Z", resource_id="b"),
            resource("floor", "create", "2000-01-01T00:00:00Z", resource_id="f"),
            resource("floor-stop", "stop", "2000-01-01T01:00:00.5Z", resource_id="f"),
            measure("m-old", 5, "1999-12-31T23:59:00Z", "1999-12-31T23:59:30Z"),
            measure("m-floor", 5, "2000-01-01T00:00:00Z", "2000-01-01T00:00:30Z"),
        ],
    )
    run(engine, "2000-01-01T03:00:00Z", tmp_path)
    h0, h1 = t("2000-01-01T00:00:00Z"), t("2000-01-01T01:00:00Z")
    assert billed(engine) == {
        ("acme", "vm", "f", "", "second", h0): 3600,
        ("acme", "vm", "f", "", "second", h1): Decimal("0.5"),
        ("acme", "ip", "10.0.0.1", "", "byte", h0): 5,
    }
    reasons = sorted(reason for _, category, reason in findings(engine) if category == "rejected")
    assert reasons == [
        "occurred_at out of range",
        "occurred_at out of range",
        "occurred_at out of range",
        "period_start out of range",
    ]


def test_events_for_destroyed_resources_are_anomalies(database_url: str, tmp_path: Path) -> None:
    engine = migrated(database_url)
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T10:00:00Z"),
            resource("d", "destroy", "2016-12-12T10:30:00Z"),
            resource("s", "start", "2016-12-12T11:00:00Z"),
            resource("u", "update", "2016-12-12T11:10:00Z", offering="large"),
        ],
    )
    run(engine, "2016-12-12T13:00:00Z", tmp_path)
    assert billed(engine) == {("acme", "vm", "vm-1", "", "second", t("2016-12-12T10:00:00Z")): 1800}
    got = sorted((category, reason) for _, category, reason in findings(engine))
    assert got == [("anomaly", "event after destroy"), ("anomaly", "event after destroy")]


@pytest.mark.parametrize("column", ["event_id", "account", "entity", "resource_id", "unit"])
def test_overlong_text_with_a_nul_is_rejected_on_sqlite(
    sqlite_url: str, tmp_path: Path, column: str
) -> None:
    """SQLite's length() stops at a NUL: the database's sum of simple measures must
    not take such a row for a short, valid one (found by the fuzzing above)."""
    engine = migrated(sqlite_url)
    row = measure("m", 5, "2016-12-12T15:10:00Z", "2016-12-12T15:20:00Z")
    row[column] = "a\x00" + "b" * MAX_TEXT[column]
    insert_events(engine, [row])
    run(engine, "2016-12-12T17:00:00Z", tmp_path)
    assert billed(engine) == {}
    ((_, category, reason),) = findings(engine)
    assert (category, reason) == ("rejected", f"{column} longer than {MAX_TEXT[column]} characters")
