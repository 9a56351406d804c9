"""Column types that behave the same on MySQL/MariaDB and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Integer, Numeric, String
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine, UserDefinedType

MILLI = Decimal("0.001")

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = (
    BigInteger()
    .with_variant(Integer(), "sqlite")
    .with_variant(mysql.BIGINT(unsigned=True), "mysql", "mariadb")
)


class UTCDateTime(TypeDecorator[datetime]):
    """DATETIME(3) holding UTC; Python sees aware UTC datetimes.

    On SQLite the value is ISO text 'YYYY-MM-DD HH:MM:SS.fff' (sortable as text);
    reading accepts any ISO form (a 'T', a 'Z', 0-6 fraction digits) so rows written
    by other tools still parse.
    """

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=3))
        return dialect.type_descriptor(String(23))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        value = value.replace(microsecond=value.microsecond // 1000 * 1000)
        if dialect.name in ("mysql", "mariadb"):
            return value
        return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if not isinstance(value, datetime):
            raise TypeError(f"unexpected datetime value {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class _SqliteNumber(UserDefinedType[Any]):
    """A numeric column SQLite gets values for untouched: Numeric's own processors
    would turn every bound value into a double."""

    cache_ok = True

    def __init__(self, spec: str) -> None:
        self.spec = spec

    def get_col_spec(self, **_: Any) -> str:
        return self.spec


# Line capacity: 25 digits before the point. Valid measures are at most 10^15 each
# (metering.core.events.MAX_QUANTITY), so no key-hour of fewer than 10^10 of them can
# reach it; and 28 digits are what Python's default Decimal context holds exactly.
LINE_DIGITS = 28
_INT64 = 2**63


class Quantity(TypeDecorator[Decimal]):
    """DECIMAL(28,3), exact on both databases.

    SQLite has no decimals: a NUMERIC column turns '9007199254740993.000' into a
    double (...992). Whole values that fit 64 bits are bound as integers, which it
    stores exactly; others as text, which it stores as a double (exact for the
    millisecond fractions of running time; the rest only past 2^63 units an hour).
    """

    impl = Numeric(LINE_DIGITS, 3)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return _SqliteNumber(f"NUMERIC({LINE_DIGITS}, 3)")
        return dialect.type_descriptor(Numeric(LINE_DIGITS, 3))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = Decimal(value).quantize(MILLI)
        if dialect.name == "sqlite":
            whole = int(value)
            if whole == value and -_INT64 <= whole < _INT64:
                return whole
            return str(value)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return to_decimal(value)


class WholeQuantity(TypeDecorator[int]):
    """DECIMAL(28,0) for sums of measure parts (pending_usage): a BIGINT would
    overflow where a line does not."""

    impl = Numeric(LINE_DIGITS, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return _SqliteNumber("BIGINT")
        return dialect.type_descriptor(Numeric(LINE_DIGITS, 0))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite" and not -_INT64 <= value < _INT64:
            return str(value)
        return int(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return int(to_decimal(value))


def to_decimal(value: Any) -> Decimal:
    """A database number (int, float from SQLite, Decimal, str) as a Decimal with 3 places."""
    if isinstance(value, float):
        # A whole double is converted exactly (past 2^53 repr would round it); others
        # are fractions of at most 15 digits, which repr gives back as written.
        exact = Decimal(int(value)) if value.is_integer() else Decimal(repr(value))
        return exact.quantize(MILLI)
    return Decimal(value).quantize(MILLI)


class Money(TypeDecorator[Decimal]):
    """An amount, exact: DECIMAL(30,10) on MySQL/MariaDB; decimal text on SQLite, whose
    NUMERIC affinity would turn it into a double. Never summed in SQL: invoices store
    their totals."""

    impl = Numeric(30, 10)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(30, 10))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"expected a Decimal amount, got {type(value).__name__}")
        return f"{value:f}" if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        # MariaDB pads to 10 places: readers quantize to the invoice's rounding step.
        return Decimal(value)
