"""Small builders shared by the core tests."""

from __future__ import annotations

from datetime import UTC, datetime

from metering.core.events import RawEvent, ResourceEvent, ResourceKey

KEY: ResourceKey = ("geneva-jug", "vm", "7a070a3d-66ff-4658-ab08-fe3cecd7c70f")


def at(text: str) -> int:
    """Epoch ms of an ISO time taken as UTC (independent of metering.timeutil)."""
    value = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return int(value.timestamp()) * 1000 + value.microsecond // 1000


def ev(
    id: int, action: str, t: int, offering: str | None = None, key: ResourceKey = KEY
) -> ResourceEvent:
    return ResourceEvent(id=id, key=key, action=action, offering=offering, occurred_at=t)


def raw(**overrides: object) -> RawEvent:
    """A valid resource RawEvent unless overridden."""
    fields: dict[str, object] = {
        "id": 1,
        "event_id": "e-1",
        "kind": "resource",
        "entity": "vm",
        "action": "create",
        "account": "geneva-jug",
        "resource_id": "7a070a3d",
        "offering": "medium",
        "occurred_at": at("2016-12-12T15:48:32"),
        "quantity": None,
        "unit": None,
        "period_start": None,
        "period_end": None,
    }
    fields.update(overrides)
    return RawEvent(**fields)  # type: ignore[arg-type]


def raw_quantity(**overrides: object) -> RawEvent:
    """A valid quantity RawEvent unless overridden."""
    base: dict[str, object] = {
        "kind": "quantity",
        "entity": "ip",
        "action": "measure",
        "resource_id": "159.100.251.251",
        "offering": None,
        "occurred_at": None,
        "quantity": 10485760,
        "unit": "byte",
        "period_start": at("2016-12-12T15:48:00"),
        "period_end": at("2016-12-12T15:49:00"),
    }
    base.update(overrides)
    return raw(**base)
