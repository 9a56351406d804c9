"""A chunk's decisions about resources, pure: which resources it touches, which it
re-derives from their whole history (a late event) and which it continues from their
stored state, where re-billing starts, what each is worth in [start, h1) minus what
is billed, and the state each is left in.

The run's shell gathers (new events, stored states, histories, billed time), calls
these in order, and writes what they return; tests/core/test_resources.py holds them
to the model at core speed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from metering.core import billing
from metering.core.events import ResourceEvent, ResourceKey
from metering.core.spans import Anomaly, ResourceState

HourKey = billing.HourKey


@dataclass(frozen=True, slots=True)
class StoredResource:
    """A resource's state as stored between runs (resource_state)."""

    key: ResourceKey
    state: ResourceState
    pending_from: int | None  # earliest known event at or after billed_until
    last_event_at: int | None
    last_seen_at: int | None  # last inventory snapshot that listed it


@dataclass(frozen=True, slots=True)
class Touched:
    """The resources a chunk billing [h0, h1) must look at, and how."""

    late: tuple[ResourceKey, ...]  # re-derived from their whole history
    recent: tuple[ResourceKey, ...]  # continued from their stored state, events from h0
    future_only: tuple[ResourceKey, ...]  # every new event at or after h1: nothing to bill

    @property
    def billed(self) -> frozenset[ResourceKey]:
        return frozenset(self.late) | frozenset(self.recent)


def touched(
    new: Mapping[ResourceKey, Sequence[ResourceEvent]],
    pending: Iterable[ResourceKey],
    h1: int,
) -> tuple[list[ResourceKey], list[ResourceKey]]:
    """(keys to bill, keys whose new events all fall at or after h1): a resource is
    billed when something happened to it before h1, or an event read earlier (while
    its hour was open) now falls before h1."""
    billed = {key for key, events in new.items() if min(e.occurred_at for e in events) < h1}
    billed.update(pending)
    return sorted(billed), [key for key in new if key not in billed]


def classify(
    keys: Sequence[ResourceKey],
    future_only: Sequence[ResourceKey],
    new: Mapping[ResourceKey, Sequence[ResourceEvent]],
    stored: Mapping[ResourceKey, StoredResource],
    h0: int | None,
) -> Touched:
    """A resource whose new events all fall at or after billed_until (h0) continues
    from its stored state; a late event, or no stored state, re-derives its history."""

    def is_late(key: ResourceKey) -> bool:
        if h0 is None or key not in stored:
            return True
        return min((e.occurred_at for e in new.get(key, ())), default=h0) < h0

    late = tuple(key for key in keys if is_late(key))
    late_set = set(late)
    recent = tuple(key for key in keys if key not in late_set)
    return Touched(late, recent, tuple(future_only))


def future_records(
    keys: Iterable[ResourceKey],
    new: Mapping[ResourceKey, Sequence[ResourceEvent]],
    stored: Mapping[ResourceKey, StoredResource],
) -> list[StoredResource]:
    """Resources with only events at or after h1: their state is unchanged, but the
    run remembers when their next event falls (pending_from) and their latest one."""
    records: list[StoredResource] = []
    for key in keys:
        old = stored.get(key)
        times = [e.occurred_at for e in new[key]]
        records.append(
            StoredResource(
                key=key,
                state=old.state if old else ResourceState(),
                pending_from=min(_with(times, old.pending_from if old else None)),
                last_event_at=max(_with(times, old.last_event_at if old else None)),
                last_seen_at=old.last_seen_at if old else None,
            )
        )
    return records


def unknown_since(
    recent: Iterable[ResourceKey], stored: Mapping[ResourceKey, StoredResource]
) -> list[ResourceKey]:
    """Resources continued from their state that may have events from billed_until on
    beyond those just read: an earlier run read one while its hour was open
    (pending_from). Their events since billed_until must be read again."""
    return [key for key in recent if stored[key].pending_from is not None]


def known_since(
    recent: Iterable[ResourceKey],
    new: Mapping[ResourceKey, Sequence[ResourceEvent]],
    stored: Mapping[ResourceKey, StoredResource],
) -> dict[ResourceKey, list[ResourceEvent]]:
    """The others' events from billed_until on: exactly those just read (a resource
    continued from its state has no new event before billed_until)."""
    return {key: list(new.get(key, ())) for key in recent if stored[key].pending_from is None}


def starts(
    plan: Touched,
    histories: Mapping[ResourceKey, Sequence[ResourceEvent]],
    new: Mapping[ResourceKey, Sequence[ResourceEvent]],
    h0: int | None,
) -> dict[ResourceKey, int]:
    """The first hour to re-derive per resource: from its earliest new event (or its
    first event ever) for a late one, from h0 for one continued from its state."""
    found: dict[ResourceKey, int] = {}
    for key in plan.late:
        if histories[key]:
            found[key] = billing.rebill_start(histories[key], new.get(key, []), h0)
    if h0 is not None:
        for key in plan.recent:
            found[key] = h0
    return found


@dataclass(frozen=True, slots=True)
class Billed:
    """What a chunk writes for its resources."""

    amounts: list[tuple[ResourceKey, str, int, int]]  # (key, offering, hour, ms)
    anomalies: list[Anomaly]  # every one the replays imply; the shell keeps the new ones
    records: list[StoredResource]


def bill(
    plan: Touched,
    first_hours: Mapping[ResourceKey, int],
    histories: Mapping[ResourceKey, Sequence[ResourceEvent]],
    billed: Mapping[ResourceKey, Mapping[HourKey, int]],
    stored: Mapping[ResourceKey, StoredResource],
    h1: int,
) -> Billed:
    """Truth over [start, h1) minus what is billed, per resource, and its next state."""
    late = set(plan.late)
    amounts: list[tuple[ResourceKey, str, int, int]] = []
    anomalies: list[Anomaly] = []
    records: list[StoredResource] = []
    for key, start in first_hours.items():
        old = stored.get(key)
        continued = key not in late and old is not None
        rebilled = billing.rebill_resource(
            histories[key],
            start=start,
            until=h1,
            billed={k: v for k, v in billed.get(key, {}).items() if k[1] >= start},
            state=old.state if continued and old else ResourceState(),
        )
        amounts.extend(
            (key, offering, hour, ms)
            for (offering, hour), ms in sorted(
                rebilled.amounts.items(), key=lambda item: (item[0][1], item[0][0])
            )
        )
        anomalies.extend(rebilled.replay.anomalies)
        last_event_at = rebilled.replay.last_event_at
        if continued and old and old.last_event_at is not None:
            last_event_at = max(old.last_event_at, last_event_at or old.last_event_at)
        records.append(
            StoredResource(
                key=key,
                state=rebilled.replay.state,
                pending_from=rebilled.replay.pending_from,
                last_event_at=last_event_at,
                last_seen_at=old.last_seen_at if old else None,
            )
        )
    return Billed(amounts, anomalies, records)


def continuing(
    running: Iterable[StoredResource], billed: frozenset[ResourceKey], h0: int, h1: int
) -> list[tuple[ResourceKey, str, int, int]]:
    """Resources running at h0 that nothing happened to: every hour of [h0, h1), under
    their offering, from their stored state alone (no history is read)."""
    return [
        (record.key, offering, hour, ms)
        for record in running
        if record.key not in billed
        for (offering, hour), ms in billing.continue_running(record.state, h0, h1).items()
    ]


def _with(times: list[int], old: int | None) -> list[int]:
    return times if old is None else [*times, old]
