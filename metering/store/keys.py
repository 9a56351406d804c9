"""Matching many resources at once: (account, entity, resource_id) = any of a set.

A few are matched by an OR of ANDs, written as SQL text with numbered parameters:
building it as SQLAlchemy expressions costs about a millisecond per resource. The
text for a batch size is built once. Many are joined as a temporary table.

Both keep the statements' shapes few: SQLAlchemy caches every compiled statement (up
to 500), so a table named anew per use, or a clause per batch length, made a catch-up
keep ~1 MB more per chunk (121 MB after 3 chunks, 145 MB after 22 of 7 days).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from itertools import chain, repeat
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
    """A WHERE clause for a single-table query over a table with those three columns.
    Its length is a power of two (the last key repeated), so few shapes are cached."""
    if not keys:
        raise ValueError("key_match needs at least one key")
    size = 1 << (len(keys) - 1).bit_length()
    params: dict[str, str] = {}
    for i, (account, entity, resource_id) in enumerate(chain(keys, repeat(keys[-1]))):
        if i == size:
            break
        params[f"ka{i}"] = account
        params[f"ke{i}"] = entity
        params[f"kr{i}"] = resource_id
    return text(_fragment(size)).bindparams(**params)


# Past this many resources a query joins them as a temporary table: the OR of ANDs
# costs MariaDB's range optimizer more per key the longer it gets (a busy hour of 10k
# resources spent 8 s in 352 such queries), where a join looks each key up in the index.
MANY = 200


@contextmanager
def key_table(conn: Connection, keys: Iterable[ResourceKey]) -> Iterator[Table]:
    """A temporary table holding `keys` for the length of the block.

    TEMPORARY on both statements: on MySQL/MariaDB a plain CREATE or DROP TABLE
    would commit the run's transaction half-way. One Table object per nesting depth
    (and server options), reused: SQLAlchemy's cache knows a table by its object."""
    depth: list[int] = conn.info.setdefault("metering_key_tables", [0])
    table = _key_table(depth[0], tuple(sorted(cached_options(conn).items())))
    table.create(conn)
    depth[0] += 1
    try:
        insert_rows(conn, table, ("account", "entity", "resource_id"), sorted(set(keys)))
        yield table
    finally:
        depth[0] -= 1
        temporary = "" if conn.dialect.name == "sqlite" else "TEMPORARY "
        conn.exec_driver_sql(f"DROP {temporary}TABLE {table.name}")


@lru_cache(maxsize=64)
def _key_table(depth: int, options: tuple[tuple[str, Any], ...]) -> Table:
    return Table(
        f"metering_keys_{depth}",
        MetaData(),
        Column("account", String(64), primary_key=True),
        Column("entity", String(32), primary_key=True),
        Column("resource_id", String(64), primary_key=True),
        prefixes=["TEMPORARY"],
        **dict(options),
    )


def cached_options(conn: Connection) -> dict[str, Any]:
    """The server's table options, asked once per connection (a run makes key tables
    in every chunk)."""
    options: dict[str, Any] = conn.info.setdefault("metering_table_options", {})
    if not options and conn.dialect.name != "sqlite":
        options.update(table_options(conn))
    return options


def same_key(table: Table, keys: Table) -> ColumnElement[bool]:
    """The join condition of a table with (account, entity, resource_id) and a key table."""
    return and_(*(table.c[name] == keys.c[name] for name in ("account", "entity", "resource_id")))
