"""Conversions between UTC datetimes, ISO text and the core's epoch milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ms(value: datetime) -> int:
    """Epoch milliseconds of an aware (or naive UTC) datetime, truncating microseconds."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def parse_time(text: str) -> datetime:
    """Parse ISO 8601 ('2016-12-12T15:48:32.000Z', '2016-12-12 15:48', ...) as UTC.

    Offsets are honoured; a time without offset is taken as UTC.
    """
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    """'2016-12-12T15:00:00.000Z' (UTC, milliseconds) or None."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def floor_hour(value: datetime) -> datetime:
    return value.replace(minute=0, second=0, microsecond=0)
