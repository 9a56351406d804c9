"""Matching many resources at once: (account, entity, resource_id) = any of a set.

A few are matched by an OR of ANDs, written as SQL text with numbered parameters:
building it as SQLAlchemy expressions costs about a millisecond per resource. The
text for a batch size is built once. Many are joined as a temporary table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from itertools import count
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, TextClause, and_, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from metering.core.events import ResourceKey
from metering.store.bulk import insert_rows
from metering.store.ddl import table_options


@lru_cache(maxsize=32)
def _fragment(size: int) -> str:
    return (
        "("
        + " OR ".join(
            f"(account = :ka{i} AND entity = :ke{i} AND resource_id = :kr{i})" for i in range(size)
        )
        + ")"
    )


def key_match(keys: Sequence[ResourceKey]) -> TextClause:
    """A WHERE clause for a single-table query over a table with those three columns."""
    params: dict[str, str] = {}
    for i, (account, entity, resource_id) in enumerate(keys):
        params[f"ka{i}"] = account
        params[f"ke{i}"] = entity
        params[f"kr{i}"] = resource_id
    return text(_fragment(len(keys))).bindparams(**params)


# Past this many resources a query joins them as a temporary table: the OR of ANDs
# costs MariaDB's range optimizer more per key the longer it gets (a busy hour of 10k
# resources spent 8 s in 352 such queries), where a join looks each key up in the index.
MANY = 200
_names = count()


@contextmanager
def key_table(conn: Connection, keys: Iterable[ResourceKey]) -> Iterator[Table]:
    """A temporary table holding `keys` for the length of the block.

    TEMPORARY on both statements: on MySQL/MariaDB a plain CREATE or DROP TABLE
    would commit the run's transaction half-way."""
    table = Table(
        f"metering_keys_{next(_names)}",
        MetaData(),
        Column("account", String(64), primary_key=True),
        Column("entity", String(32), primary_key=True),
        Column("resource_id", String(64), primary_key=True),
        prefixes=["TEMPORARY"],
        **_options(conn),
    )
    table.create(conn)
    try:
        insert_rows(conn, table, ("account", "entity", "resource_id"), sorted(set(keys)))
        yield table
    finally:
        temporary = "" if conn.dialect.name == "sqlite" else "TEMPORARY "
        conn.exec_driver_sql(f"DROP {temporary}TABLE {table.name}")


def _options(conn: Connection) -> dict[str, Any]:
    """The server's table options, asked once per connection (a run makes key tables
    in every chunk)."""
    options: dict[str, Any] = conn.info.setdefault("metering_table_options", {})
    if not options and conn.dialect.name != "sqlite":
        options.update(table_options(conn))
    return options


def same_key(table: Table, keys: Table) -> ColumnElement[bool]:
    """The join condition of a table with (account, entity, resource_id) and a key table."""
    return and_(*(table.c[name] == keys.c[name] for name in ("account", "entity", "resource_id")))
