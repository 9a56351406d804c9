"""Whole rows as MariaDB's readers make them (times as the server's text, parsed in
C; no checks for what only SQLite may hold) equal the driver's own reading that every
other path uses, for the values a producer can store: fractions, NULL periods, the
ends of DATETIME's range, and the zero dates a lax sql_mode lets in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, select, text

from metering.core.events import RawEvent
from metering.store import events as store_events
from metering.store.schema import usage_events
from tests.support import PROPERTY_SETTINGS, Database

pytestmark = pytest.mark.mariadb

TIMES = [
    "2016-12-12 10:00:00.000",
    "2016-12-12 10:59:59.999",
    "2016-12-12 11:00:00.001",
    "1000-01-01 00:00:00.000",
    "9999-12-31 23:59:59.999",
    "1970-01-01 00:00:00.000",
    "0000-00-00 00:00:00.000",
    "2016-00-00 00:00:00.000",
    None,
]


TIME_COLUMNS = ("occurred_at", "period_start", "period_end")


COLUMNS = ("event_id", "kind", "entity", "action", "account", "resource_id", "offering",
           "occurred_at", "quantity", "unit", "period_start", "period_end")  # fmt: skip


@st.composite
def stored_rows(draw: st.DrawFn) -> list[dict[str, object]]:
    out = []
    for i in range(draw(st.integers(1, 8))):
        out.append(
            {
                "event_id": f"e{i}",
                "kind": draw(st.sampled_from(["quantity", "resource", "Quantity"])),
                "entity": draw(st.sampled_from(["vm", "ip", ""])),
                "action": draw(st.sampled_from(["measure", "start", "stop"])),
                "account": draw(st.sampled_from(["acme", " ", "\u00e9", "a\x1fb", "\x1f"])),
                "resource_id": "r-1",
                "offering": draw(st.sampled_from([None, "", "medium"])),
                "occurred_at": draw(st.sampled_from([t for t in TIMES if t is not None])),
                "quantity": draw(st.sampled_from([None, 0, 5, -1, 2**63 - 1])),
                "unit": draw(st.sampled_from([None, "", "byte", " byte", "b\x1f"])),
                "period_start": draw(st.sampled_from(TIMES)),
                "period_end": draw(st.sampled_from(TIMES)),
            }
        )
    return out


def driver_reading(engine: Engine) -> list[RawEvent]:
    with engine.connect() as conn:
        query = select(*store_events._RAW_COLUMNS).order_by(usage_events.c.id)
        return [store_events._raw(row) for row in conn.execute(query)]


@settings(max_examples=60, **PROPERTY_SETTINGS)
@given(rows=stored_rows())
def test_mariadbs_readers_equal_the_drivers_reading(
    mariadb_database: Database, rows: list[dict[str, object]]
) -> None:
    engine = mariadb_database.engine
    with engine.begin() as conn:
        conn.execute(delete(usage_events))
        # Zero dates: what a producer's session without NO_ZERO_DATE may store.
        conn.execute(text("SET SESSION sql_mode = 'STRICT_TRANS_TABLES'"))
        conn.execute(
            text(
                f"INSERT INTO usage_events ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join(':' + c for c in COLUMNS)})"
            ),
            rows,
        )
        conn.execute(text("SET SESSION sql_mode = DEFAULT"))
    expected = driver_reading(engine)
    zero = any("-00-" in str(r[k]) or "0000-" in str(r[k]) for r in rows for k in TIME_COLUMNS)
    assert any(r.unreadable for r in expected) == zero
    ids = [r.id for r in expected]
    with engine.connect() as conn:
        by_id = list(store_events.events_by_id(conn, ids))
        other_kinds = list(store_events.read_other_kinds(conn, min(ids), max(ids)))
        keys = sorted({(r.account, r.entity, r.resource_id) for r in expected})
        history = store_events.resource_history(conn, keys)
    assert by_id == expected
    # Each exactly once; a row _unpack leaves to events_by_id comes after the others.
    assert sorted(other_kinds, key=lambda r: r.id) == [r for r in expected if r.kind != "quantity"]
    assert sorted((r for rs in history.values() for r in rs), key=lambda r: r.id) == [
        r for r in expected if r.kind == "resource"
    ]


@pytest.mark.parametrize("most", [64, 2], ids=["kinds sought", "too many kinds"])
def test_other_kinds_are_every_row_but_a_measures_kind(
    mariadb_database: Database, monkeypatch: pytest.MonkeyPatch, most: int
) -> None:
    # Past MAX_KINDS_SOUGHT the rows are found by testing each one's kind instead.
    monkeypatch.setattr(store_events, "MAX_KINDS_SOUGHT", most)
    kinds = ["resource", "quantity", "Quantity", "x", "quantity", "y", "resource"]
    rows = [
        {**dict.fromkeys(COLUMNS), "event_id": f"e{i}", "kind": kind, "entity": "vm",
         "action": "start", "account": "a", "resource_id": "r", "occurred_at": TIMES[0]}
        for i, kind in enumerate(kinds)
    ]  # fmt: skip
    with mariadb_database.engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO usage_events ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join(':' + c for c in COLUMNS)})"
            ),
            rows,
        )
    with mariadb_database.engine.connect() as conn:
        read = list(store_events.read_other_kinds(conn, 0, 10**9))
    assert [r.kind for r in read] == [k for k in kinds if k != "quantity"]
    assert [r.id for r in read] == sorted(r.id for r in read)
