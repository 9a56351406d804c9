"""Many-row inserts through the driver's executemany, in batches.

At tens of thousands of rows per run, SQLAlchemy's per-row parameter handling costs
the hourly run a quarter more than this (1M events, 27k usage lines: 0.65 s through
Connection.execute, 0.50 s this way; benchmarks/scan_parts.py). The column types' own
bind processors still convert every value, so what is stored does not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.types import TypeEngine

from metering.store.types import UTCDateTime

BATCH = 5000


def insert_rows(
    conn: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """Insert `rows` (values in `columns` order); returns how many."""
    compiled = insert(table).compile(dialect=conn.dialect, column_keys=list(columns))
    processors = [_processor(table.c[name].type, conn.dialect) for name in columns]
    order: list[int] | None = None
    if compiled.positional:
        assert compiled.positiontup is not None
        where = {name: i for i, name in enumerate(columns)}
        order = [where[name] for name in compiled.positiontup]
    statement = str(compiled)

    def bind(row: Sequence[Any]) -> Any:
        values = [
            value if p is None else p(value) for p, value in zip(processors, row, strict=True)
        ]
        if order is not None:
            return tuple(values[i] for i in order)
        return dict(zip(columns, values, strict=True))

    written = 0
    batch: list[Any] = []
    for row in rows:
        batch.append(bind(row))
        if len(batch) == BATCH:
            conn.exec_driver_sql(statement, batch)
            written += len(batch)
            batch = []
    if batch:
        conn.exec_driver_sql(statement, batch)
        written += len(batch)
    return written


def _processor(column_type: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    # The dialect's own variant: a TypeDecorator's bind_processor alone chains the
    # generic impl's processor (Numeric's turns every quantity into a double on SQLite).
    process = column_type.dialect_impl(dialect).bind_processor(dialect)
    if process is None or not isinstance(column_type, UTCDateTime):
        return process
    # Remembered: a run's lines share a few hours, and converting a datetime is the
    # costliest of the processors.
    seen: dict[Any, Any] = {}

    def remembered(value: Any) -> Any:
        if value not in seen:
            seen[value] = process(value)
        return seen[value]

    return remembered
