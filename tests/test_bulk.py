"""store/bulk.py: the literal multi-row INSERT of MariaDB stores exactly what the
driver's executemany stores, whatever the text, quantity or time."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from metering.store import bulk
from metering.store.schema import resource_state, usage_lines
from tests.support import PROPERTY_SETTINGS, Database, migrated

LINE_COLUMNS = ("run_id", "account", "entity", "resource_id", "offering", "unit",
                "period_start", "quantity", "source")  # fmt: skip

# Text as a producer may send it: quotes, backslashes, NUL, line breaks, `%` (a
# placeholder to a driver that formats), and characters outside the BMP.
texts = st.text(
    alphabet=st.one_of(
        st.sampled_from(["'", '"', "\\", "\x00", "\n", "\r", "\x1a", "%", "s", "😀", "é"]),
        st.characters(codec="utf-8"),
    ),
    max_size=16,
)
quantities = st.decimals(
    min_value=Decimal("-" + "9" * 25), max_value=Decimal("9" * 25), places=3, allow_nan=False
)
hours = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2199, 12, 31), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))
line_rows = st.lists(
    st.tuples(
        texts, texts, texts, texts, texts, st.text(max_size=16), hours, quantities,
        st.sampled_from(["running", "measure"]),
    ),
    min_size=1,
    max_size=30,
)  # fmt: skip


def _stored(database: Database) -> list[tuple[Any, ...]]:
    columns = [usage_lines.c[name] for name in LINE_COLUMNS]
    with database.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(*columns).order_by(usage_lines.c.id))]


@pytest.mark.mariadb
@settings(max_examples=40, **PROPERTY_SETTINGS)
@given(rows=line_rows)
def test_literal_inserts_store_what_executemany_stores(
    mariadb_database: Database, rows: list[tuple[Any, ...]]
) -> None:
    stored = []
    for insert in ("literal", "many"):
        mariadb_database.reset()
        with mariadb_database.engine.begin() as conn:
            if insert == "literal":
                written = bulk.insert_rows(conn, usage_lines, LINE_COLUMNS, rows)
            else:
                processors = [
                    bulk._processor(usage_lines.c[name].type, conn.dialect) for name in LINE_COLUMNS
                ]
                bound = (
                    [v if p is None else p(v) for p, v in zip(processors, row, strict=True)]
                    for row in rows
                )
                written = bulk._insert_many(conn, usage_lines, LINE_COLUMNS, bound)
        assert written == len(rows)
        stored.append(_stored(mariadb_database))
    literal, many = stored
    assert literal == many
    assert [(row[1], row[6], row[7]) for row in literal] == [
        (row[1], row[6], row[7]) for row in rows
    ]


@pytest.mark.mariadb
def test_statements_are_split_by_size_and_booleans_and_nulls_are_kept(
    mariadb_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "STATEMENT_BYTES", 200)
    columns = ("account", "entity", "resource_id", "running", "offering", "since", "destroyed")
    rows = [
        (f"a{i}", "vm", f"r{i}", i % 2 == 0, None if i % 3 else "big", None, False)
        for i in range(25)
    ]
    with mariadb_database.engine.begin() as conn:
        assert bulk.insert_rows(conn, resource_state, columns, rows) == 25
    with mariadb_database.engine.connect() as conn:
        stored = conn.execute(
            select(*(resource_state.c[name] for name in columns)).order_by(
                resource_state.c.resource_id
            )
        ).all()
    assert sorted(tuple(row) for row in stored) == sorted(rows)


@pytest.mark.mariadb
def test_remembered_renderings_survive_being_forgotten(
    mariadb_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Text and times are rendered once per value and remembered; with room for three,
    # the memory is emptied again and again while keys come back.
    monkeypatch.setattr(bulk, "REMEMBERED", 3)
    rows = [
        ("run-1", f"acct-{i % 7}", "ip", f"10.0.0.{i % 5}", "", "byte",
         datetime(2024, 1, 1, i % 4, tzinfo=UTC), Decimal(i * 1000), "measure")
        for i in range(40)
    ]  # fmt: skip
    with mariadb_database.engine.begin() as conn:
        assert bulk.insert_rows(conn, usage_lines, LINE_COLUMNS, rows) == 40
    assert _stored(mariadb_database) == rows


def test_replacing_rows_updates_stored_keys_in_place_and_adds_new_ones(database_url: str) -> None:
    engine = migrated(database_url)
    columns = ("account", "entity", "resource_id", "running", "offering", "destroyed")
    first = [("a", "vm", f"r{i}", True, "small", False) for i in range(4)]
    second = [("a", "vm", "r1", False, None, True), ("a", "vm", "r9", True, "big", False)]
    try:
        with engine.begin() as conn:
            bulk.insert_rows(conn, resource_state, columns, first)
        with engine.begin() as conn:
            bulk.insert_rows(conn, resource_state, columns, second, replace=True)
        with engine.connect() as conn:
            stored = conn.execute(select(*(resource_state.c[name] for name in columns))).all()
    finally:
        engine.dispose()
    assert sorted(tuple(row) for row in stored) == sorted([*first[:1], *first[2:], *second])
