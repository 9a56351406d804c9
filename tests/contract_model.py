"""A reference model of billing-contract rules 1-4 at the database level, for the tests.

Written independently of metering.core and kept deliberately naive: given the events
in insertion order (the table's id order) and a horizon, it returns what the contract
says each key must be billed, in the shape of tests.support.billed(). It uses
datetimes and Decimal seconds rather than epoch milliseconds, so it shares no
arithmetic with the code under test.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from tests.support import BilledKey

ONE_HOUR = timedelta(hours=1)
RESOURCE_ACTIONS = {"create", "start", "stop", "destroy", "update"}


def hour_start(when: datetime) -> datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def _ms(delta: timedelta) -> int:
    return delta // timedelta(milliseconds=1)


def blank(value: str | None) -> bool:
    """Rule 9: a text field of only whitespace is missing."""
    return value is None or value.strip() == ""


def billable_resource(e: Mapping[str, Any]) -> bool:
    return (
        e["kind"] == "resource"
        and e["action"] in RESOURCE_ACTIONS
        and not blank(e["account"])
        and not blank(e["entity"])
        and not blank(e["resource_id"])
        and e["occurred_at"] is not None
    )


def billable_measure(e: Mapping[str, Any]) -> bool:
    return (
        e["kind"] == "quantity"
        and e["action"] == "measure"
        and not blank(e["account"])
        and not blank(e["entity"])
        and not blank(e["resource_id"])
        and e["quantity"] is not None
        and e["quantity"] >= 0
        and e["period_start"] is not None
        and e["period_end"] is not None
        and e["period_end"] >= e["period_start"]
    )


def running_spans(
    events: Sequence[Mapping[str, Any]],
) -> list[tuple[str, datetime, datetime | None]]:
    """(offering, start, end) of one resource's running time; end None while it still runs.

    `events` are that resource's events in insertion order; rule 1 orders them by
    occurred_at, then by that order.
    """
    ordered = sorted(enumerate(events), key=lambda pair: (pair[1]["occurred_at"], pair[0]))
    spans: list[tuple[str, datetime, datetime | None]] = []
    running_since: datetime | None = None
    offering = ""
    destroyed = False
    for _, e in ordered:
        if destroyed:
            break
        when, given = e["occurred_at"], "" if blank(e["offering"]) else e["offering"]
        action = e["action"]
        if action in ("create", "start"):
            if running_since is None:
                running_since = when
                offering = given or offering
        elif action in ("stop", "destroy"):
            if running_since is not None:
                spans.append((offering, running_since, when))
                running_since = None
            destroyed = action == "destroy"
        elif action == "update" and given and given != offering:
            if running_since is not None:
                spans.append((offering, running_since, when))
                running_since = when
            offering = given
    if running_since is not None:
        spans.append((offering, running_since, None))
    return spans


def measure_parts(quantity: int, start: datetime, end: datetime) -> dict[datetime, int]:
    """Rule 4: hour -> whole units; floor for every overlapped hour but the last."""
    if start == end:
        return {hour_start(start): quantity}
    overlapped: list[tuple[datetime, int]] = []
    hour = hour_start(start)
    while hour < end:
        overlap = _ms(min(hour + ONE_HOUR, end) - max(hour, start))
        if overlap > 0:
            overlapped.append((hour, overlap))
        hour += ONE_HOUR
    length = _ms(end - start)
    parts = {hour: quantity * overlap // length for hour, overlap in overlapped[:-1]}
    parts[overlapped[-1][0]] = quantity - sum(parts.values())
    return parts


def expected(events: Sequence[Mapping[str, Any]], until: datetime) -> dict[BilledKey, Decimal]:
    """SUM per key the contract promises for the hours before `until` (an hour start).

    `events` are the stored rows (duplicates already dropped) in insertion order.
    """
    totals: dict[BilledKey, Decimal] = defaultdict(Decimal)
    by_resource: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for e in events:
        if billable_resource(e):
            by_resource[(e["account"], e["entity"], e["resource_id"])].append(e)
        elif billable_measure(e):
            unit = "byte" if blank(e["unit"]) else e["unit"]
            for hour, amount in measure_parts(
                e["quantity"], e["period_start"], e["period_end"]
            ).items():
                if hour < until:
                    key = (e["account"], e["entity"], e["resource_id"], "", unit, hour)
                    totals[key] += Decimal(amount)
    for (account, entity, resource_id), history in by_resource.items():
        for offering, start, end in running_spans(history):
            stop = until if end is None else min(end, until)
            moment = start
            while moment < stop:
                hour = hour_start(moment)
                cut = min(hour + ONE_HOUR, stop)
                key = (account, entity, resource_id, offering, "second", hour)
                totals[key] += Decimal(_ms(cut - moment)) / 1000
                moment = cut
    return {k: v.quantize(Decimal("0.001")) for k, v in totals.items() if v != 0}
