"""Usage events as read, and their validation into billable values (rules 4, 9)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

HOUR: Final[int] = 3_600_000
# 2000-01-01T00:00:00Z. Earlier times are a producer's bug (a missing timestamp
# sent as 0 is 1970-01-01), never real cloud usage: a start there would bill
# decades of running time. Hour-aligned, so the SQL side can compare hours.
MIN_TIME: Final[int] = 946_684_800_000
# 9999-12-31T23:59:59.999Z, the last instant DATETIME(3) can hold.
MAX_TIME: Final[int] = 253_402_300_799_999
# Bounds chosen so that quantity * overlap in split_measure stays far from
# anything a BIGINT or DECIMAL(20,3) column could not round-trip.
MAX_QUANTITY: Final[int] = 10**15
MAX_MEASURE_PERIOD: Final[int] = 366 * 24 * HOUR

# The VARCHAR widths of usage_events: SQLite does not enforce them, so a row
# that MySQL would have refused must not become billable here either.
MAX_TEXT: Final[dict[str, int]] = {
    "event_id": 64,
    "kind": 16,
    "entity": 32,
    "action": 16,
    "account": 64,
    "resource_id": 64,
    "offering": 64,
    "unit": 16,
}

RESOURCE_ACTIONS: Final[frozenset[str]] = frozenset(
    {"create", "start", "stop", "destroy", "update"}
)
_QUANTITY_ACTIONS: Final[frozenset[str]] = frozenset({"measure"})
DEFAULT_UNIT: Final[str] = "byte"

# Reasons are stored and logged; a hostile or broken producer must not be able
# to blow them up, so quoted values are cut.
_QUOTE_MAX: Final[int] = 40

ResourceKey = tuple[str, str, str]
QuantityKey = tuple[str, str, str, str]


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One usage_events row as read; nothing validated."""

    id: int
    event_id: str
    kind: str
    entity: str
    action: str
    account: str
    resource_id: str
    offering: str | None
    occurred_at: int | None
    quantity: int | None
    unit: str | None
    period_start: int | None
    period_end: int | None
    # Columns that hold a value which is not what the column means (a time that is no
    # time, a quantity that is no whole number: SQLite stores whatever it is given),
    # with that value as stored, so the rejection can quote it.
    unreadable: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ResourceEvent:
    id: int
    key: ResourceKey
    action: str
    offering: str | None
    occurred_at: int


@dataclass(frozen=True, slots=True)
class Measure:
    id: int
    key: QuantityKey
    quantity: int
    period_start: int
    period_end: int


@dataclass(frozen=True, slots=True)
class Rejection:
    id: int
    event_id: str
    reason: str


def _quote(value: str) -> str:
    # repr escapes control characters; cutting after repr bounds escapes too.
    text = repr(value)
    if len(text) > _QUOTE_MAX:
        return text[: _QUOTE_MAX - 4] + "..." + text[-1]
    return text


def is_blank(value: str | None) -> bool:
    """Absent, empty or only whitespace: a producer's way of writing nothing (rule 9)."""
    return value is None or not value.strip()


# The code points str.strip() removes (str.isspace), for the SQL that must agree
# with is_blank; tests/core/test_events.py holds the list to Python's own.
WHITESPACE: Final[tuple[int, ...]] = (
    *range(0x09, 0x0E), *range(0x1C, 0x21), 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
    0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
)  # fmt: skip


def _in_range(t: int) -> bool:
    return MIN_TIME <= t <= MAX_TIME


def _common_reason(raw: RawEvent) -> str | None:
    texts: dict[str, str | None] = {
        "event_id": raw.event_id,
        "kind": raw.kind,
        "entity": raw.entity,
        "action": raw.action,
        "account": raw.account,
        "resource_id": raw.resource_id,
        "offering": raw.offering,
        "unit": raw.unit,
    }
    for column, value in texts.items():
        limit = MAX_TEXT[column]
        if value is not None and len(value) > limit:
            return f"{column} longer than {limit} characters"
    if raw.kind not in ("resource", "quantity"):
        return f"unknown kind {_quote(raw.kind or '')}"
    allowed = RESOURCE_ACTIONS if raw.kind == "resource" else _QUANTITY_ACTIONS
    if raw.action not in allowed:
        return f"unknown action {_quote(raw.action or '')} for kind {_quote(raw.kind)}"
    for column in ("account", "entity", "resource_id"):
        if is_blank(texts[column]):
            return f"missing {column}"
    for column, value in raw.unreadable:
        if column in _IGNORED[raw.kind]:
            continue
        if column == "quantity":
            return f"quantity is not a whole number: {_quote(value)}"
        return f"unreadable {column} {_quote(value)}"
    return None


# Columns a kind does not bill from: what they hold does not matter.
_IGNORED: Final[dict[str, frozenset[str]]] = {
    "resource": frozenset({"quantity", "period_start", "period_end"}),
    "quantity": frozenset({"occurred_at"}),
}


def _resource(raw: RawEvent) -> ResourceEvent | str:
    if raw.occurred_at is None:
        return "missing occurred_at"
    if not _in_range(raw.occurred_at):
        return "occurred_at out of range"
    return ResourceEvent(
        id=raw.id,
        key=(raw.account, raw.entity, raw.resource_id),
        action=raw.action,
        # A blank offering column means "not given", not an offering named " ".
        offering=None if is_blank(raw.offering) else raw.offering,
        occurred_at=raw.occurred_at,
    )


def _measure(raw: RawEvent) -> Measure | str:
    # occurred_at plays no part in billing a measure, so it is not checked.
    quantity, start, end = raw.quantity, raw.period_start, raw.period_end
    if quantity is None:
        return "missing quantity"
    if quantity < 0:
        return "negative quantity"
    if quantity > MAX_QUANTITY:
        return "quantity too large"
    if start is None:
        return "missing period_start"
    if end is None:
        return "missing period_end"
    if not _in_range(start):
        return "period_start out of range"
    if not _in_range(end):
        return "period_end out of range"
    if end < start:
        return "period_end before period_start"
    if end - start > MAX_MEASURE_PERIOD:
        return "period longer than 366 days"
    return Measure(
        id=raw.id,
        key=(
            raw.account,
            raw.entity,
            raw.resource_id,
            DEFAULT_UNIT if raw.unit is None or is_blank(raw.unit) else raw.unit,
        ),
        quantity=quantity,
        period_start=start,
        period_end=end,
    )


def validate(raw: RawEvent) -> ResourceEvent | Measure | Rejection:
    """The billable value of `raw`, or why it cannot be billed (rule 9)."""
    reason = _common_reason(raw)
    if reason is None:
        result = _resource(raw) if raw.kind == "resource" else _measure(raw)
        if not isinstance(result, str):
            return result
        reason = result
    return Rejection(id=raw.id, event_id=raw.event_id, reason=reason)
