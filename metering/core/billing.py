"""The per-run billing decisions, pure: what a resource or a measure is worth in the
hours a run closes, minus what is already billed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

from metering.core.diff import diff
from metering.core.events import HOUR, MIN_TIME, Measure, QuantityKey, ResourceEvent
from metering.core.slicing import hour_of, measure_by_hour, running_by_hour
from metering.core.spans import Anomaly, Replay, ResourceState, replay

HourKey = tuple[str, int]  # (offering, hour start)
PartKey = tuple[QuantityKey, int]  # (quantity key, hour start)


@dataclass(frozen=True, slots=True)
class Rebilled:
    amounts: dict[HourKey, int]  # milliseconds to write (negative: a correction)
    replay: Replay


def rebill_start(
    events: Sequence[ResourceEvent], new: Sequence[ResourceEvent], billed_until: int | None
) -> int:
    """The first hour a run must re-derive for a resource it touches.

    Everything from the earliest new event on may have changed; hours from
    billed_until on are billed for the first time and must be derived as well.
    """
    if billed_until is None:
        return hour_of(min(e.occurred_at for e in events))
    if not new:
        return billed_until
    return min(billed_until, hour_of(min(e.occurred_at for e in new)))


def rebill_resource(
    events: Sequence[ResourceEvent],
    *,
    start: int,
    until: int,
    billed: Mapping[HourKey, int],
    state: ResourceState | None = None,
) -> Rebilled:
    """Truth over [start, until), minus `billed`: from the resource's whole history, or
    from its `state` at billed_until and the events from then on."""
    result = replay(events, until, state or ResourceState())
    truth = running_by_hour(result.spans, start, until)
    return Rebilled(diff(truth, billed), result)


def unrecorded(anomalies: Iterable[Anomaly], recorded: Set[tuple[int, str]]) -> list[Anomaly]:
    """The anomalies not yet on record: each (event, reason) is recorded once, by the
    run whose replay first implies it -- when it reads the event, when it first
    applies it (read while its hour was open), or when a late event re-orders the
    history so that an event read long ago becomes one (rule 9)."""
    return [a for a in dict.fromkeys(anomalies) if (a.id, a.reason) not in recorded]


def rederive_resource(
    events: Sequence[ResourceEvent], *, start: int, until: int, billed: Mapping[HourKey, int]
) -> dict[HourKey, int]:
    """A backfill's view: truth over [start, until) minus billed; no state, no anomalies."""
    return diff(running_by_hour(replay(events, until).spans, start, until), billed)


def continue_running(state: ResourceState, start: int, end: int) -> dict[HourKey, int]:
    """A resource running since before `start` with no event in [start, end): whole hours."""
    if not state.running or state.destroyed:
        return {}
    offering = state.offering or ""
    return {(offering, hour): HOUR for hour in range(start, end, HOUR)}


def add_parts(into: dict[PartKey, int], parts: Mapping[PartKey, int]) -> None:
    """Add `parts` into `into`, in place: at millions of events per hour a run's parts
    are tens of thousands, and each copy of them would cost megabytes."""
    for key, amount in parts.items():
        into[key] = into.get(key, 0) + amount


def take_open(parts: dict[PartKey, int], until: int) -> dict[PartKey, int]:
    """Remove from `parts`, and return, the parts of hours not closed yet (>= until)."""
    open_keys = [key for key in parts if key[1] >= until]
    return {key: parts.pop(key) for key in open_keys}


def rederive_measures(
    measures: Iterable[Measure], *, start: int, end: int, billed: Mapping[PartKey, int]
) -> dict[PartKey, int]:
    """A backfill's view of measures: their parts in [start, end) minus billed."""
    truth = {
        (key, hour): amount
        for (key, hour), amount in measure_by_hour(measures).items()
        if start <= hour < end
    }
    return diff(truth, billed)


def chunk_end(billed_until: int, horizon: int, running: int, line_budget: int) -> int:
    """How far one transaction bills: bounded so its lines stay near line_budget."""
    hours = max(1, line_budget // max(1, running))
    return min(horizon, billed_until + hours * HOUR)


def window_end(billed_until: int | None, end: int, reached: int | None) -> int:
    """Where a chunk that read only a window of the unread ids stops billing: at the
    hour `reached` by the window's last event (that hour is not complete yet), never
    past `end` nor before billed_until. An unreadable time bills no new hour."""
    if reached is None:
        return MIN_TIME if billed_until is None else billed_until
    stop = max(MIN_TIME, min(end, hour_of(reached)))
    return stop if billed_until is None else max(billed_until, stop)


def next_window(
    window: int, read: int, parts: int, part_budget: int, limits: tuple[int, int]
) -> int:
    """The next id window: sized so that it would hold about `part_budget` measure
    parts at the density the last window had, within `limits`."""
    if read <= 0:
        return window
    low, high = limits
    return max(low, min(high, part_budget * read // max(parts, 1)))
