"""Running time of one resource: pairing starts and stops, offerings (rules 1, 2)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from metering.core.events import ResourceEvent

DUPLICATE_START = "duplicate start"
STOP_WITHOUT_START = "stop without start"
EVENT_AFTER_DESTROY = "event after destroy"


@dataclass(frozen=True, slots=True)
class ResourceState:
    running: bool = False
    offering: str | None = None
    since: int | None = None
    destroyed: bool = False


@dataclass(frozen=True, slots=True)
class Span:
    """Running time [start, end) under `offering` ("" when none was ever known)."""

    offering: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Anomaly:
    id: int
    reason: str


@dataclass(frozen=True, slots=True)
class Replay:
    spans: tuple[Span, ...]
    state: ResourceState
    anomalies: tuple[Anomaly, ...]
    pending_from: int | None
    last_event_at: int | None


def order_key(e: ResourceEvent) -> tuple[int, int]:
    # id breaks ties because it is ingest order: the only order both a first
    # run and a later backfill are guaranteed to agree on.
    return (e.occurred_at, e.id)


def replay(
    events: Iterable[ResourceEvent], until: int, state: ResourceState = ResourceState()
) -> Replay:
    """Apply the events before `until` to `state`; running time is cut at `until`.

    Events at or after `until` are left for a later replay, which continues from
    the returned state: replaying in pieces gives the same spans as at once.
    """
    if state.running and state.since is None:
        # A caller bug, not bad input: billing from a guessed instant would be wrong.
        raise ValueError("a running ResourceState needs `since`")
    ordered = sorted(events, key=order_key)
    running, offering = state.running, state.offering
    since, destroyed = state.since, state.destroyed
    spans: list[Span] = []
    anomalies: list[Anomaly] = []
    pending_from: int | None = None

    def close(end: int) -> None:
        # Non-positive spans are dropped rather than rejected: a start and stop in
        # the same millisecond ran for nothing, and a state carried over from a
        # later `until` than this event's time must not bill negative time.
        if since is not None and end > since:
            spans.append(Span(offering or "", since, end))

    for e in ordered:
        t = e.occurred_at
        if t >= until:
            pending_from = t
            break
        if destroyed:
            anomalies.append(Anomaly(e.id, EVENT_AFTER_DESTROY))
            continue
        given = e.offering or None
        if e.action in ("create", "start"):
            if running:
                anomalies.append(Anomaly(e.id, DUPLICATE_START))
                continue
            running, since = True, t
            if given is not None:
                offering = given
        elif e.action in ("stop", "destroy"):
            if running:
                close(t)
                running, since = False, None
            elif e.action == "stop":
                anomalies.append(Anomaly(e.id, STOP_WITHOUT_START))
            if e.action == "destroy":
                destroyed = True
        elif e.action == "update" and given is not None and given != offering:
            if running:
                close(t)
                # max: a late update must not reopen time already cut at an earlier `until`.
                since = t if since is None else max(since, t)
            offering = given
        # Any other action (validate() admits none) is inert.

    if running:
        close(until)
        # The time up to `until` is now in `spans`; the next replay continues from it.
        since = until if since is None else max(since, until)
    last_event_at = max((e.occurred_at for e in ordered), default=None)
    return Replay(
        spans=tuple(spans),
        state=ResourceState(running=running, offering=offering, since=since, destroyed=destroyed),
        anomalies=tuple(anomalies),
        pending_from=pending_from,
        last_event_at=last_event_at,
    )
