"""SUM per group, exact on both databases.

MariaDB sums DECIMAL and BIGINT columns exactly. SQLite sums through a double as
soon as one value is REAL (3599.999 s lines), which drifts at scale, and fails with
"integer overflow" past 2^63 when all are integers; so on SQLite the rows come back
and are added up here, as Decimals.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import TextClause, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from metering.store.types import to_decimal


def grouped_sums(
    conn: Connection,
    keys: Sequence[ColumnElement[Any]],
    value: ColumnElement[Any],
    *where: ColumnElement[bool] | TextClause,
) -> Iterator[tuple[tuple[Any, ...], Decimal]]:
    """(group key values, SUM(value)) for each group of rows matching `where`."""
    width = len(keys)
    if conn.dialect.name != "sqlite":
        query = select(*keys, func.sum(value)).where(*where).group_by(*keys)
        for row in conn.execute(query):
            yield tuple(row[:width]), to_decimal(row[width])
        return
    totals: dict[tuple[Any, ...], Decimal] = {}
    for row in conn.execute(select(*keys, value).where(*where)):
        group = tuple(row[:width])
        totals[group] = totals.get(group, Decimal(0)) + to_decimal(row[width])
    yield from totals.items()
