"""The run's resource decisions (metering/core/resources.py) at core speed: a shell
simulated in memory (stored states and billed time as dicts) delivers events chunk
after chunk, late and out of order, and the billed time equals the model's.
"""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from metering.core import resources
from metering.core.events import HOUR, ResourceEvent, ResourceKey
from metering.core.resources import StoredResource

from .helpers import ev
from .model import running_ms_by_hour

T0 = 420_000 * HOUR
KEYS: list[ResourceKey] = [("a", "vm", "r1"), ("a", "vm", "r2"), ("b", "volume", "r1")]
ACTIONS = ["create", "start", "start", "stop", "stop", "update", "destroy"]


class Shell:
    """What run.py does around the core, with dicts for tables."""

    def __init__(self) -> None:
        self.read: list[ResourceEvent] = []
        self.stored: dict[ResourceKey, StoredResource] = {}
        self.billed: dict[ResourceKey, dict[tuple[str, int], int]] = defaultdict(dict)
        self.h0: int | None = None

    def chunk(self, new_events: list[ResourceEvent], h1: int) -> None:
        h0 = self.h0
        self.read.extend(new_events)
        new: dict[ResourceKey, list[ResourceEvent]] = defaultdict(list)
        for e in new_events:
            new[e.key].append(e)
        pending = [
            key
            for key, s in self.stored.items()
            if h0 is not None and s.pending_from is not None and s.pending_from < h1
        ]
        keys, future_only = resources.touched(new, pending, h1)
        stored = {k: self.stored[k] for k in keys + future_only if k in self.stored}
        records = resources.future_records(future_only, new, stored)
        if keys:
            plan = resources.classify(keys, future_only, new, stored, h0)
            histories = {k: [e for e in self.read if e.key == k] for k in plan.late}
            if h0 is not None:
                # As run.py: only resources with an event read earlier from h0 on
                # (pending_from) read their history again; the others reuse `new`.
                histories.update(resources.known_since(plan.recent, new, stored))
                for k in resources.unknown_since(plan.recent, stored):
                    histories[k] = [e for e in self.read if e.key == k and e.occurred_at >= h0]
            first = resources.starts(plan, histories, new, h0)
            billed = {
                k: {hk: ms for hk, ms in self.billed[k].items() if first[k] <= hk[1] < h1}
                for k in first
            }
            result = resources.bill(plan, first, histories, billed, stored, h1)
            for key, offering, hour, ms in result.amounts:
                self.add(key, offering, hour, ms)
            records += result.records
        if h0 is not None:
            running = [s for s in self.stored.values() if s.state.running]
            for key, offering, hour, ms in resources.continuing(running, frozenset(keys), h0, h1):
                self.add(key, offering, hour, ms)
        for record in records:
            self.stored[record.key] = record
        self.h0 = h1

    def add(self, key: ResourceKey, offering: str, hour: int, ms: int) -> None:
        line = self.billed[key]
        line[(offering, hour)] = line.get((offering, hour), 0) + ms

    def totals(self) -> dict[tuple[ResourceKey, str, int], int]:
        return {
            (key, offering, hour): ms
            for key, amounts in self.billed.items()
            for (offering, hour), ms in amounts.items()
            if ms
        }


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[ResourceEvent], list[int], list[int]]:
    count = draw(st.integers(1, 14))
    events = [
        ev(
            i + 1,
            draw(st.sampled_from(ACTIONS)),
            T0 + draw(st.integers(0, 6 * HOUR)),
            draw(st.sampled_from([None, "s", "m"])),
            draw(st.sampled_from(KEYS)),
        )
        for i in range(count)
    ]
    chunks = draw(st.integers(1, 5))
    # Chunk ends, increasing, in whole hours; the last one past every event.
    ends = sorted(draw(st.sets(st.integers(1, 6), min_size=chunks - 1, max_size=chunks - 1)))
    ends = [T0 + h * HOUR for h in ends] + [T0 + 7 * HOUR]
    arrival = [draw(st.integers(0, len(ends) - 1)) for _ in events]
    return events, ends, arrival


@settings(max_examples=300, deadline=None)
@given(deliveries())
def test_chunks_of_late_and_early_events_bill_what_the_model_says(
    case: tuple[list[ResourceEvent], list[int], list[int]],
) -> None:
    events, ends, arrival = case
    shell = Shell()
    for number, h1 in enumerate(ends):
        shell.chunk([e for e, at in zip(events, arrival, strict=True) if at == number], h1)
    want: dict[tuple[ResourceKey, str, int], int] = {}
    for key in KEYS:
        history = [(e.occurred_at, e.id, e.action, e.offering) for e in events if e.key == key]
        for (offering, hour), ms in running_ms_by_hour(history, T0, ends[-1]).items():
            if ms:
                want[(key, offering, hour)] = ms
    assert shell.totals() == want


def test_a_resource_with_only_future_events_is_not_billed_but_remembered() -> None:
    key = KEYS[0]
    new = {key: [ev(1, "create", T0 + 2 * HOUR, "s", key)]}
    keys, future_only = resources.touched(new, [], T0 + HOUR)
    assert (keys, future_only) == ([], [key])
    (record,) = resources.future_records(future_only, new, {})
    assert record.pending_from == record.last_event_at == T0 + 2 * HOUR
    assert not record.state.running


def test_a_late_event_re_derives_and_a_timely_one_continues() -> None:
    late_key, recent_key = KEYS[0], KEYS[1]
    stored = {
        k: StoredResource(k, resources.ResourceState(), None, None, None)
        for k in (late_key, recent_key)
    }
    new = {
        late_key: [ev(1, "stop", T0 + HOUR, None, late_key)],
        recent_key: [ev(2, "start", T0 + 3 * HOUR, None, recent_key)],
    }
    plan = resources.classify([late_key, recent_key], [], new, stored, T0 + 2 * HOUR)
    assert plan.late == (late_key,) and plan.recent == (recent_key,)
