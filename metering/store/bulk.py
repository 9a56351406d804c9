"""Many-row inserts, in batches: on MariaDB as multi-row INSERT statements whose values
are written here as literals, elsewhere through the driver's executemany.

Lines are most of what a run writes (550k for a day of 1M events). PyMySQL's
executemany builds the same multi-row statement, but escapes each value through its
generic converters: 200k lines took 4.4/5.2 s that way and 3.1/3.7 s with the values
rendered here on a quiet machine (benchmarks/lines_insert.py, two each, interleaved),
8.2/8.8 s against 3.6/4.7 s on a loaded one; the difference is Python. The column
types' own bind processors still convert every value first, so what is stored does
not change; tests/test_bulk.py holds both paths to the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from typing import Any

from pymysql.constants import SERVER_STATUS
from pymysql.converters import escape_string
from sqlalchemy import Table, insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.types import String, TypeEngine

from metering.store.types import UTCDateTime

BATCH = 5000
# Well under MariaDB's default max_allowed_packet (16 MB).
STATEMENT_BYTES = 1_000_000
# Renderings one column remembers (a few MB at most).
REMEMBERED = 50_000


def insert_rows(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    replace: bool = False,
) -> int:
    """Insert `rows` (values in `columns` order); returns how many. `rows` must not
    use the connection: on MariaDB it is read while a statement runs. `replace`: a
    row whose primary key is stored already takes the place of the stored one (the
    columns not given keep their value)."""
    types = [table.c[name].type for name in columns]
    updated = [name for name in columns if not table.c[name].primary_key] if replace else []
    if conn.dialect.name in ("mysql", "mariadb"):
        return _insert_literal(conn, table, columns, types, rows, updated)
    processors = [_processor(column_type, conn.dialect) for column_type in types]

    def bind(row: Sequence[Any]) -> list[Any]:
        return [value if p is None else p(value) for p, value in zip(processors, row, strict=True)]

    return _insert_many(conn, table, columns, (bind(row) for row in rows), updated)


def _insert_many(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Iterable[list[Any]],
    updated: Sequence[str] = (),
) -> int:
    statement: Any = insert(table)
    if updated:
        statement = sqlite_insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=list(table.primary_key.columns),
            set_={name: statement.excluded[name] for name in updated},
        )
    compiled = statement.compile(dialect=conn.dialect, column_keys=list(columns))
    statement = str(compiled)
    order: list[int] | None = None
    if compiled.positional:
        assert compiled.positiontup is not None
        where = {name: i for i, name in enumerate(columns)}
        order = [where[name] for name in compiled.positiontup]

    def params(values: list[Any]) -> Any:
        if order is not None:
            return tuple(values[i] for i in order)
        return dict(zip(columns, values, strict=True))

    written = 0
    batch: list[Any] = []
    for values in rows:
        batch.append(params(values))
        if len(batch) == BATCH:
            conn.exec_driver_sql(statement, batch)
            written += len(batch)
            batch = []
    if batch:
        conn.exec_driver_sql(statement, batch)
        written += len(batch)
    return written


def _insert_literal(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    types: Sequence[TypeEngine[Any]],
    rows: Iterable[Sequence[Any]],
    updated: Sequence[str] = (),
) -> int:
    preparer = conn.dialect.identifier_preparer
    head = (
        f"INSERT INTO {preparer.format_table(table)} "
        f"({', '.join(preparer.quote(name) for name in columns)}) VALUES "
    )
    tail = ""
    if updated:
        quoted = [preparer.quote(name) for name in updated]
        tail = " ON DUPLICATE KEY UPDATE " + ", ".join(f"{q} = VALUES({q})" for q in quoted)
    literal = _literal_writer(conn)
    renderers = [_renderer(column_type, conn.dialect, literal) for column_type in types]
    written = 0
    batch: list[str] = []
    size = 0
    # One statement runs on the connection while the next is rendered here: the
    # server's inserting takes about as long as Python's rendering (~0.3 s each for a
    # busy hour's 26k measure lines). Never two at once, and the pool waits for the
    # one in flight on every way out, so the connection is the caller's again when
    # this returns or raises.
    with ThreadPoolExecutor(1, thread_name_prefix="metering-insert") as pool:
        running: Future[int] | None = None
        for values in rows:
            text = "(" + ",".join([r(v) for r, v in zip(renderers, values, strict=True)]) + ")"
            batch.append(text)
            size += len(text) + 1
            if len(batch) == BATCH or size >= STATEMENT_BYTES:
                if running is not None:
                    written += running.result()
                running = pool.submit(_execute, conn, head, batch, tail)
                batch, size = [], 0
        if running is not None:
            written += running.result()
    if batch:
        written += _execute(conn, head, batch, tail)
    return written


def _renderer(
    column_type: TypeEngine[Any], dialect: Dialect, literal: Callable[[Any], str]
) -> Callable[[Any], str]:
    """A column's value as literal SQL text, through its bind processor. Text and times
    repeat across a run's lines (one run id, a few hours, a key per many lines): those
    columns remember what they rendered, which halves the Python time per line."""
    process = _processor(column_type, dialect)

    def render(value: Any) -> str:
        return literal(value if process is None else process(value))

    if not isinstance(column_type, String | UTCDateTime):
        return render
    return _Remembered(render).__getitem__


class _Remembered(dict[Any, str]):
    """value -> its rendering, computed once; emptied when full, so a long run's
    distinct keys never pile up."""

    def __init__(self, render: Callable[[Any], str]) -> None:
        super().__init__()
        self.render = render

    def __missing__(self, value: Any) -> str:
        if len(self) >= REMEMBERED:
            self.clear()
        text = self[value] = self.render(value)
        return text


def _execute(conn: Connection, head: str, batch: list[str], tail: str) -> int:
    # no_parameters: the driver must not read `%` in the data as a placeholder.
    conn.exec_driver_sql(head + ",".join(batch) + tail, execution_options={"no_parameters": True})
    return len(batch)


def _literal_writer(conn: Connection) -> Callable[[Any], str]:
    """MariaDB literals of the values the bind processors produce."""
    dbapi = conn.connection.dbapi_connection
    no_backslash = bool(
        getattr(dbapi, "server_status", 0) & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES
    )
    times: dict[datetime, str] = {}

    def literal(value: Any) -> str:
        kind = type(value)
        if kind is str:
            text: str = value.replace("'", "''") if no_backslash else escape_string(value)
            return "'" + text + "'"
        if kind is int:
            return str(value)
        if value is None:
            return "NULL"
        if kind is bool:
            return "1" if value else "0"
        if kind is Decimal:
            # Fixed point: str() may give an exponent ('1E+3'), which MariaDB reads as
            # a double.
            return format(value, "f")
        if kind is datetime:
            moment = times.get(value)
            if moment is None:
                if value.tzinfo is not None:
                    raise ValueError(f"aware datetime reached the literal writer: {value!r}")
                moment = times[value] = "'" + value.isoformat(" ", "microseconds") + "'"
            return moment
        raise TypeError(f"no MariaDB literal for {kind.__name__}")

    return literal


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
