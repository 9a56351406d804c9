"""metering/core/retention.py: which events a prune may delete, by example and held to
the reference model (tests/core/model.py): whatever happens from the horizon on, the
kept events bill every hour from the horizon exactly as the whole history does."""

from __future__ import annotations

from hypothesis import event, given, settings
from hypothesis import strategies as st

from metering.core.events import HOUR, Measure, ResourceEvent
from metering.core.retention import horizon, latest_safe, measure_may_go, resource_may_lose
from tests.core import model
from tests.core.helpers import at, ev

T = at("2016-12-12 12:00")
M = 60_000


def test_a_stopped_resource_whose_offering_a_later_start_names_again_loses_its_past() -> None:
    history = [
        ev(1, "create", T - 300 * M, "medium"),
        ev(2, "stop", T - 200 * M),
        ev(3, "start", T - 100 * M, "large"),
        ev(4, "stop", T + 5 * M),
    ]
    assert resource_may_lose(history, T) == [1, 2]


def test_a_start_without_offering_keeps_the_event_that_named_it() -> None:
    history = [
        ev(1, "create", T - 300 * M, "medium"),
        ev(2, "stop", T - 200 * M),
        ev(3, "start", T - 100 * M),
    ]
    assert resource_may_lose(history, T) == []


def test_a_running_resource_keeps_the_start_it_runs_from() -> None:
    history = [
        ev(1, "create", T - 300 * M),
        ev(2, "stop", T - 200 * M),
        ev(3, "start", T - 100 * M),
        ev(4, "update", T - 50 * M, "large"),
    ]
    # Stopped with no offering known before the start: everything before it may go.
    assert resource_may_lose(history, T) == [1, 2]


def test_a_destroyed_resource_keeps_its_first_destroy_and_what_follows() -> None:
    history = [
        ev(1, "create", T - 300 * M, "medium"),
        ev(2, "update", T - 250 * M, "large"),
        ev(3, "destroy", T - 200 * M),
        ev(4, "start", T - 100 * M),
    ]
    assert resource_may_lose(history, T) == [1, 2]


def test_the_latest_event_before_the_horizon_always_stays() -> None:
    assert resource_may_lose([ev(1, "create", T - 300 * M)], T) == []
    assert resource_may_lose([ev(1, "create", T - 3 * M), ev(2, "destroy", T - 2 * M)], T) == [1]


def test_events_from_the_horizon_on_are_never_judged() -> None:
    history = [ev(1, "create", T, "s"), ev(2, "stop", T + 1), ev(3, "destroy", T + 2)]
    assert resource_may_lose(history, T) == []


def measure(start: int, end: int) -> Measure:
    return Measure(
        id=1, key=("a", "ip", "r", "byte"), quantity=10, period_start=start, period_end=end
    )


def test_a_measure_goes_when_all_of_it_lies_before_the_horizon() -> None:
    assert measure_may_go(measure(T - HOUR, T), T)
    assert not measure_may_go(measure(T - M, T + M), T)
    assert not measure_may_go(measure(T, T), T)  # zero length at T: billed in T's hour
    assert measure_may_go(measure(T - 1, T - 1), T)


def test_the_horizon_is_an_hour_no_later_than_billed_and_settled() -> None:
    assert horizon(T + 59 * M) == T
    assert latest_safe(None, T, 30 * M, 10 * M) is None
    assert latest_safe(T + 5 * HOUR, T + 2 * HOUR, 30 * M, 10 * M) == T + HOUR
    assert latest_safe(T, T + 5 * HOUR, 30 * M, 10 * M) == T


# -- held to the reference model ----------------------------------------------------

ACTIONS = st.sampled_from(["create", "start", "start", "stop", "stop", "destroy", "update"])
OFFERINGS = st.sampled_from([None, "s", "m", "l"])
SPAN = 10 * HOUR


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[ResourceEvent], list[ResourceEvent], int]:
    """(the stored history, the events that arrive from the horizon on, the horizon)."""
    cut = T + draw(st.integers(1, 9)) * HOUR
    times = st.one_of(
        st.integers(0, SPAN // M).map(lambda m: T + m * M),
        st.sampled_from([cut - 1, cut, cut + 1]),
    )
    stored = draw(st.lists(st.tuples(ACTIONS, OFFERINGS, times), max_size=14))
    later = draw(
        st.lists(st.tuples(ACTIONS, OFFERINGS, st.integers(cut, T + SPAN + HOUR)), max_size=6)
    )
    first = [ev(i, a, t, o) for i, (a, o, t) in enumerate(stored, start=1)]
    then = [ev(100 + i, a, t, o) for i, (a, o, t) in enumerate(later)]
    return first, then, cut


def as_model(events: list[ResourceEvent]) -> list[model.ModelEvent]:
    return [(e.occurred_at, e.id, e.action, e.offering) for e in events]


@given(histories())
@settings(max_examples=600)
def test_the_kept_events_bill_every_hour_from_the_horizon_like_the_whole_history(
    case: tuple[list[ResourceEvent], list[ResourceEvent], int],
) -> None:
    stored, later, cut = case
    gone = set(resource_may_lose(stored, cut))
    event(f"deleted {'some' if gone else 'none'}")
    assert all(e.occurred_at < cut for e in stored if e.id in gone)
    whole = as_model(stored + later)
    kept = as_model([e for e in stored if e.id not in gone] + later)
    end = T + SPAN + 2 * HOUR
    assert model.running_ms_by_hour(kept, cut, end) == model.running_ms_by_hour(whole, cut, end)
    assert set(model.anomalies(kept, end)) <= set(model.anomalies(whole, end))
    if stored:
        assert max(e[0] for e in kept) == max(e[0] for e in whole)
