"""Column types that behave the same on MySQL/MariaDB and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Integer, Numeric, String
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

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


class Quantity(TypeDecorator[Decimal]):
    """DECIMAL(20,3); SQLite stores numbers as INTEGER/REAL, so results are re-quantized."""

    impl = Numeric(20, 3)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Numeric(20, 3, asdecimal=False))
        return dialect.type_descriptor(Numeric(20, 3))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = Decimal(value).quantize(MILLI)
        if dialect.name == "sqlite":
            # Text keeps every digit; SQLite's NUMERIC affinity stores whole values as INTEGER.
            return str(value)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return to_decimal(value)


def to_decimal(value: Any) -> Decimal:
    """A database number (int, float from SQLite, Decimal, str) as a Decimal with 3 places."""
    if isinstance(value, float):
        return Decimal(repr(value)).quantize(MILLI)
    return Decimal(value).quantize(MILLI)
