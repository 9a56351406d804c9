"""Retention, pure: which stored events can no longer change any later run's lines.

`metering prune --before T` deletes events older than the horizon T (a whole hour).
What stays must bill every hour from T on exactly as the whole history would, for
any later run: a scheduled run that reads a late event of the same resource (dated
T or later) and re-derives its whole history, a backfill --since T or later, and a
reconcile of a snapshot taken at T or later. Those all replay a resource's kept
events from an empty state (metering/core/spans.replay), so a resource may lose the
oldest part of its history only when replaying the rest alone reaches, at T, the
state the whole history reaches: the same running, destroyed and offering, and no
anomaly the whole history does not imply. docs/operations.md ("Retention") gives
the rule with its reasons.
"""

from __future__ import annotations

from collections.abc import Sequence

from metering.core.events import Measure, ResourceEvent
from metering.core.slicing import hour_of
from metering.core.spans import ResourceState, order_key, replay


def horizon(before: int) -> int:
    """The hour T starts: re-derivation works in whole hours, so a horizon inside an
    hour would leave that hour's earlier part to a history that no longer has it."""
    return hour_of(before)


def latest_safe(billed_until: int | None, now: int, grace: int, settle_lag: int) -> int | None:
    """The latest horizon a prune may take: every hour before it billed, and closed for
    longer than the grace and the settle lag (no event of it may still commit)."""
    if billed_until is None:
        return None
    return min(billed_until, hour_of(now - grace - settle_lag))


def measure_may_go(measure: Measure, before: int) -> bool:
    """A measure is billed once, when read, into the hours its period overlaps; it is
    re-read only by a backfill of those hours. One whose every part lies before the
    horizon is needed by no later run."""
    return measure.period_end <= before and measure.period_start < before


def resource_may_lose(events: Sequence[ResourceEvent], before: int) -> list[int]:
    """Ids of the events of one resource (its valid history, all of it or at least
    every event dated before `before`) that may go: the longest run of its oldest
    events before the horizon whose loss leaves the state at the horizon unchanged.

    The last event before the horizon always stays (it keeps last_event_at, what
    reconcile calls the last evidence). A cut is taken only where the state between
    two events is plain enough to restart from nothing:
    - stopped and not destroyed, with no offering known, or one that a kept event
      sets again (a start with an offering, an update) or makes moot (a destroy);
    - just before the first destroy: replayed alone, it leaves the resource destroyed,
      and everything after it is an anomaly either way.
    The chosen cut is then checked by replaying both histories; any doubt keeps all.
    """
    older = sorted((e for e in events if e.occurred_at < before), key=order_key)
    if len(older) < 2:
        return []
    # sets[i]: some event from i on, replayed in the whole history, sets the offering
    # or destroys the resource; states[i]: the state before event i.
    states: list[ResourceState] = []
    sets_flags: list[bool] = []
    state = ResourceState()
    for e in older:
        states.append(state)
        sets_flags.append(_sets_offering(state, e))
        state = replay([e], e.occurred_at + 1, state).state if not state.destroyed else state
    later_sets = [False] * (len(older) + 1)
    for i in range(len(older) - 1, -1, -1):
        later_sets[i] = later_sets[i + 1] or sets_flags[i]
    cut = 0
    for i in range(len(older) - 1, 0, -1):
        before_i = states[i]
        if before_i.destroyed:
            continue
        first_destroy = older[i].action == "destroy"
        plain = not before_i.running and (before_i.offering is None or later_sets[i])
        if first_destroy or plain:
            cut = i
            break
    if cut == 0 or not _same_at(older, cut, before):
        return []
    return [e.id for e in older[:cut]]


def _sets_offering(state: ResourceState, e: ResourceEvent) -> bool:
    if state.destroyed:
        return False
    if e.action == "destroy":
        return True
    if e.action in ("create", "start"):
        return not state.running and e.offering is not None
    return e.action == "update" and e.offering is not None


def _same_at(older: Sequence[ResourceEvent], cut: int, before: int) -> bool:
    """Replaying the kept events alone reaches the whole history's state at `before`,
    with no anomaly the whole history does not imply."""
    whole = replay(older, before)
    kept = replay(older[cut:], before)
    a, b = whole.state, kept.state
    if a.destroyed or b.destroyed:
        same = a.destroyed == b.destroyed
    else:
        same = (a.running, a.offering) == (b.running, b.offering)
    return same and set(kept.anomalies) <= set(whole.anomalies)
