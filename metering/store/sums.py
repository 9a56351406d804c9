"""Exact SUMs of usage_lines.quantity on MySQL/MariaDB and SQLite alike.

MariaDB sums DECIMAL exactly. SQLite has no decimal type: SUM over REAL values, or
over text it converts to REAL, adds doubles (300,000 lines of 3599.999 s sum to
1079999699.995). There each value is split into its integer part and its thousandths,
two integers SQLite adds exactly, whatever the value's storage class:

- INTEGER: itself, no thousandths;
- REAL (or text in exponent form, a REAL written into a TEXT column): its integer
  part (CAST truncates toward zero) and the rest in thousandths, rounded: exact for
  any value a double holds to the thousandth (|q| < 2^53 / 1000);
- TEXT of a decimal number ('-12.5', '123456789012345678.123'): the digits before
  the point and the first three after it, signed like the text, so every digit counts.

A total beyond 2^63 units makes SQLite's SUM fail with "integer overflow" rather
than round. That is fine for a report, not for the run: `grouped_sums`, which the
run's own diffs against what is billed use, adds up the stored values in Python on
SQLite instead (Decimals: no limit, exact for every value SQLite stores).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    String,
    and_,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement, TextClause

from metering.store.types import MILLI, to_decimal

# Literals typed here, not bound through the column's Quantity type (which would
# turn 1000 into the text '1000.000' on SQLite).
_THOUSAND = literal_column("1000", Integer)
_ZERO = literal_column("0", Integer)


def _parts(column: Any) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """SQLite: the value's integer part and its thousandths, both integers of the same sign."""
    kind = func.typeof(column)
    text = func.trim(type_coerce(column, String))
    # A REAL written into a TEXT column reads back as '9.00719925474099e+15'.
    as_double = or_(kind == "real", and_(kind == "text", func.instr(func.lower(text), "e") > 0))
    double = cast(column, Float)
    whole = case((as_double, cast(double, Integer)), else_=cast(column, Integer))
    point = func.instr(text, ".")
    sign = case((func.substr(text, 1, 1) == "-", -1), else_=1)
    thousandths = case(
        (as_double, cast(func.round((double - whole) * _THOUSAND), Integer)),
        (or_(kind == "integer", point == 0), _ZERO),
        else_=sign * cast(func.substr(text + "000", point + 1, 3), Integer),
    )
    return whole, thousandths


def exact_sum(conn: Connection, column: Any) -> ColumnElement[Any]:
    """SUM(column) of a quantity column; read its value with `sum_value`. On SQLite it is
    the text 'units thousandths' (two exact integer SUMs)."""
    if conn.dialect.name != "sqlite":
        return func.sum(column)
    whole, thousandths = _parts(column)
    return type_coerce(func.sum(whole), String) + " " + type_coerce(func.sum(thousandths), String)


def sum_value(value: Any) -> Decimal:
    """An `exact_sum` as a Decimal with 3 places (0 for the SUM of no rows)."""
    if value is None:
        return Decimal(0).quantize(MILLI)
    if isinstance(value, str) and " " in value:
        units, thousandths = value.split(" ")
        return (Decimal(int(units)) + Decimal(int(thousandths)).scaleb(-3)).quantize(MILLI)
    return to_decimal(value)


def sum_above(conn: Connection, column: Any, limit: int) -> ColumnElement[bool]:
    """SUM(column) > limit, exactly, for a HAVING clause."""
    if conn.dialect.name != "sqlite":
        return func.sum(column) > limit
    whole, thousandths = _parts(column)
    return func.sum(whole) * _THOUSAND + func.sum(thousandths) > limit * 1000


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
