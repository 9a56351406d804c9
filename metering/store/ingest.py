"""SQL of `metering ingest`: which event_ids exist, and the duplicate-safe insert.

Every function takes a Connection inside a transaction the caller owns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, func, null, select
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.sql.dml import Insert

from metering.db import is_mysql
from metering.store.schema import usage_events

# Bound parameters per IN (...) list: far below SQLite's limit (32766), any batch size.
IN_CHUNK = 1000

# The columns ingest writes; id and ingested_at are the database's.
EVENT_COLUMNS = (
    "event_id",
    "kind",
    "entity",
    "action",
    "account",
    "resource_id",
    "offering",
    "occurred_at",
    "quantity",
    "unit",
    "period_start",
    "period_end",
    "attributes",
)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), IN_CHUNK):
        yield items[start : start + IN_CHUNK]


def existing_event_ids(conn: Connection, event_ids: Sequence[str]) -> set[str]:
    """The subset of event_ids already stored in usage_events."""
    found: set[str] = set()
    for chunk in _chunks(event_ids):
        query = select(usage_events.c.event_id).where(usage_events.c.event_id.in_(chunk))
        found.update(conn.execute(query).scalars())
    return found


def count_event_ids(conn: Connection, event_ids: Sequence[str]) -> int:
    """How many of event_ids the connection's transaction sees stored."""
    total = 0
    for chunk in _chunks(event_ids):
        query = (
            select(func.count()).select_from(usage_events).where(usage_events.c.event_id.in_(chunk))
        )
        total += int(conn.execute(query).scalar_one())
    return total


def _insert_ignoring_duplicates(conn: Connection) -> Insert:
    """INSERT that skips a row whose event_id is already stored (a racing ingest)."""
    if is_mysql(conn):
        # Not INSERT IGNORE: that would also turn data errors into warnings.
        my = mysql.insert(usage_events)
        return my.on_duplicate_key_update(id=my.table.c.id)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(usage_events).on_conflict_do_nothing(index_elements=["event_id"])
    raise NotImplementedError(f"ingest does not support the {conn.dialect.name} dialect")


def insert_events(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows (dicts of EVENT_COLUMNS); a row whose event_id exists is skipped.

    attributes None is stored as SQL NULL (not the JSON text 'null').
    """
    if not rows:
        return
    params = [
        {
            column: (
                null() if column == "attributes" and row.get(column) is None else row.get(column)
            )
            for column in EVENT_COLUMNS
        }
        for row in rows
    ]
    conn.execute(_insert_ignoring_duplicates(conn), params)
