from __future__ import annotations

import pytest

from metering.core.events import HOUR
from metering.core.slicing import running_by_hour
from metering.core.spans import Anomaly, ResourceState, Span, order_key, replay

from .helpers import at, ev

T = at("2016-12-12T15:00:00")
END = T + 10 * HOUR


def test_order_key() -> None:
    assert order_key(ev(5, "start", 10)) == (10, 5)


def test_create_then_stop() -> None:
    r = replay([ev(1, "create", T + 100, "medium"), ev(2, "stop", T + 900)], END)
    assert r.spans == (Span("medium", T + 100, T + 900),)
    assert r.state == ResourceState(running=False, offering="medium", since=None)
    assert r.anomalies == ()


def test_open_span_cut_at_until_and_state_carries_until() -> None:
    r = replay([ev(1, "start", T + 5, "small")], T + HOUR)
    assert r.spans == (Span("small", T + 5, T + HOUR),)
    assert r.state == ResourceState(running=True, offering="small", since=T + HOUR)


def test_no_offering_ever_known_gives_empty_offering() -> None:
    r = replay([ev(1, "start", T), ev(2, "stop", T + 1)], END)
    assert r.spans == (Span("", T, T + 1),)
    assert r.state.offering is None


def test_start_without_offering_uses_last_known() -> None:
    events = [ev(1, "create", T, "large"), ev(2, "stop", T + 10), ev(3, "start", T + 20)]
    r = replay(events, T + 30)
    assert r.spans == (Span("large", T, T + 10), Span("large", T + 20, T + 30))


def test_start_with_offering_replaces_known() -> None:
    events = [ev(1, "create", T, "large"), ev(2, "stop", T + 10), ev(3, "start", T + 20, "xl")]
    r = replay(events, T + 30)
    assert r.spans[-1] == Span("xl", T + 20, T + 30)
    assert r.state.offering == "xl"


def test_start_and_stop_in_same_millisecond_bill_nothing() -> None:
    r = replay([ev(1, "start", T + 7, "m"), ev(2, "stop", T + 7)], END)
    assert r.spans == ()
    assert r.state.running is False
    assert r.anomalies == ()


def test_stop_then_start_in_same_millisecond_ordered_by_id() -> None:
    # id order decides: stop (id 2) before start (id 3) -> keeps running.
    events = [ev(3, "start", T + 50), ev(2, "stop", T + 50), ev(1, "start", T, "m")]
    r = replay(events, T + 100)
    assert running_by_hour(r.spans, 0, END) == {("m", T): 100}
    assert r.anomalies == ()


def test_ties_in_occurred_at_ordered_by_id_not_input_order() -> None:
    # Same millisecond: start id 1, stop id 2 -> zero time. Reversed ids -> stop
    # without start, then a start that runs to `until`.
    a = replay([ev(2, "stop", T), ev(1, "start", T, "m")], T + 10)
    assert a.spans == () and a.anomalies == ()
    b = replay([ev(1, "stop", T), ev(2, "start", T, "m")], T + 10)
    assert b.spans == (Span("m", T, T + 10),)
    assert b.anomalies == (Anomaly(1, "stop without start"),)


def test_input_order_is_not_trusted() -> None:
    events = [
        ev(1, "start", T, "m"),
        ev(2, "stop", T + 5),
        ev(3, "start", T + 9),
        ev(4, "stop", T + 12),
    ]
    assert replay(list(reversed(events)), END) == replay(events, END)


def test_duplicate_start_changes_nothing_not_even_offering() -> None:
    events = [ev(1, "start", T, "m"), ev(2, "start", T + 10, "xl"), ev(3, "stop", T + 20)]
    r = replay(events, END)
    assert r.spans == (Span("m", T, T + 20),)
    assert r.state.offering == "m"
    assert r.anomalies == (Anomaly(2, "duplicate start"),)


def test_create_while_running_is_a_duplicate_start() -> None:
    r = replay([ev(1, "create", T, "m"), ev(2, "create", T + 1, "m")], T + 2)
    assert r.anomalies == (Anomaly(2, "duplicate start"),)
    assert r.spans == (Span("m", T, T + 2),)


def test_stop_without_start() -> None:
    r = replay([ev(4, "stop", T)], END)
    assert r.spans == ()
    assert r.anomalies == (Anomaly(4, "stop without start"),)
    assert r.state == ResourceState()


def test_second_stop_is_stop_without_start() -> None:
    r = replay([ev(1, "start", T), ev(2, "stop", T + 1), ev(3, "stop", T + 2)], END)
    assert r.anomalies == (Anomaly(3, "stop without start"),)


def test_destroy_closes_span() -> None:
    r = replay([ev(1, "create", T, "m"), ev(2, "destroy", T + HOUR)], END)
    assert r.spans == (Span("m", T, T + HOUR),)
    assert r.state == ResourceState(running=False, offering="m", since=None, destroyed=True)
    assert r.anomalies == ()


def test_destroy_while_stopped_no_anomaly() -> None:
    r = replay([ev(1, "destroy", T)], END)
    assert r.spans == () and r.anomalies == ()
    assert r.state.destroyed


def test_events_after_destroy_are_ignored() -> None:
    events = [
        ev(1, "create", T, "m"),
        ev(2, "destroy", T + 10),
        ev(3, "start", T + 20, "xl"),
        ev(4, "update", T + 30, "xxl"),
        ev(5, "stop", T + 40),
        ev(6, "destroy", T + 50),
    ]
    r = replay(events, END)
    assert r.spans == (Span("m", T, T + 10),)
    assert r.anomalies == tuple(Anomaly(i, "event after destroy") for i in (3, 4, 5, 6))
    assert r.state == ResourceState(running=False, offering="m", since=None, destroyed=True)


def test_carried_destroyed_state_ignores_events() -> None:
    r = replay([ev(9, "start", T)], END, ResourceState(destroyed=True, offering="m"))
    assert r.spans == ()
    assert r.anomalies == (Anomaly(9, "event after destroy"),)


def test_update_splits_running_time() -> None:
    events = [ev(1, "create", T, "medium"), ev(2, "update", T + 30 * 60_000, "large")]
    r = replay(events, T + HOUR)
    assert r.spans == (
        Span("medium", T, T + 30 * 60_000),
        Span("large", T + 30 * 60_000, T + HOUR),
    )
    assert r.state == ResourceState(running=True, offering="large", since=T + HOUR)
    assert running_by_hour(r.spans, T, T + HOUR) == {
        ("medium", T): 30 * 60_000,
        ("large", T): 30 * 60_000,
    }


@pytest.mark.parametrize("offering", [None, "", "medium"])
def test_update_without_or_with_same_offering_does_nothing(offering: str | None) -> None:
    events = [ev(1, "create", T, "medium"), ev(2, "update", T + 10, offering)]
    r = replay(events, T + 20)
    assert r.spans == (Span("medium", T, T + 20),)
    assert r.anomalies == ()


def test_update_while_stopped_then_start_without_offering() -> None:
    events = [
        ev(1, "create", T, "medium"),
        ev(2, "stop", T + 10),
        ev(3, "update", T + 20, "large"),
        ev(4, "start", T + 30),
    ]
    r = replay(events, T + 40)
    assert r.spans == (Span("medium", T, T + 10), Span("large", T + 30, T + 40))
    assert r.anomalies == ()


def test_update_before_anything_sets_offering() -> None:
    r = replay([ev(1, "update", T, "large"), ev(2, "start", T + 5)], T + 10)
    assert r.spans == (Span("large", T + 5, T + 10),)


def test_update_at_start_instant_leaves_no_zero_span() -> None:
    r = replay([ev(1, "start", T, "a"), ev(2, "update", T, "b")], T + 10)
    assert r.spans == (Span("b", T, T + 10),)


def test_span_across_hours_cut_exactly_at_boundaries() -> None:
    start = at("2016-12-12T15:48:32.123")
    stop = at("2016-12-12T18:00:00.001")
    r = replay([ev(1, "create", start, "medium"), ev(2, "stop", stop)], END)
    assert running_by_hour(r.spans, 0, END) == {
        ("medium", at("2016-12-12T15:00:00")): 11 * 60_000 + 27_877,
        ("medium", at("2016-12-12T16:00:00")): HOUR,
        ("medium", at("2016-12-12T17:00:00")): HOUR,
        ("medium", at("2016-12-12T18:00:00")): 1,
    }


def test_pending_from_and_last_event_at() -> None:
    events = [
        ev(1, "start", T, "m"),
        ev(5, "stop", T + 3 * HOUR),
        ev(2, "stop", T + HOUR),  # exactly at until: not applied
        ev(3, "start", T + 2 * HOUR),
    ]
    r = replay(events, T + HOUR)
    assert r.spans == (Span("m", T, T + HOUR),)
    assert r.state.running and r.state.since == T + HOUR
    assert r.pending_from == T + HOUR
    assert r.last_event_at == T + 3 * HOUR


def test_pending_from_none_when_all_applied() -> None:
    r = replay([ev(1, "start", T), ev(2, "stop", T + 1)], T + 2)
    assert r.pending_from is None
    assert r.last_event_at == T + 1


def test_no_events() -> None:
    r = replay([], END)
    assert r.spans == () and r.anomalies == ()
    assert r.pending_from is None and r.last_event_at is None
    assert r.state == ResourceState()


def test_carried_running_state_starts_at_since() -> None:
    state = ResourceState(running=True, offering="m", since=T)
    r = replay([ev(1, "stop", T + 2 * HOUR + 5)], END, state)
    assert r.spans == (Span("m", T, T + 2 * HOUR + 5),)
    assert r.state == ResourceState(running=False, offering="m")
    r = replay([], T + HOUR, state)
    assert r.spans == (Span("m", T, T + HOUR),)
    assert r.state == ResourceState(running=True, offering="m", since=T + HOUR)


def test_carried_state_with_since_after_until_bills_nothing() -> None:
    state = ResourceState(running=True, offering="m", since=T + HOUR)
    r = replay([], T, state)
    assert r.spans == ()
    assert r.state == state


def test_running_state_without_since_is_a_caller_bug() -> None:
    with pytest.raises(ValueError):
        replay([], T, ResourceState(running=True))


def test_replay_in_two_pieces_equals_replay_at_once() -> None:
    until1 = T + 2 * HOUR
    until2 = T + 6 * HOUR
    events = [
        ev(1, "create", T + 1234, "medium"),
        ev(2, "update", T + HOUR + 5, "large"),
        ev(3, "stop", T + 2 * HOUR - 1),
        ev(4, "start", T + 2 * HOUR - 1),
        ev(5, "start", T + 2 * HOUR),  # duplicate, in the second piece
        ev(6, "update", T + 3 * HOUR + 17, "small"),
        ev(7, "stop", T + 4 * HOUR + 999),
        ev(8, "start", T + 5 * HOUR),
    ]
    first = replay([e for e in events if e.occurred_at < until1], until1)
    second = replay([e for e in events if e.occurred_at >= until1], until2, first.state)
    whole = replay(events, until2)
    assert first.state.running and first.state.since == until1
    pieces = running_by_hour(first.spans + second.spans, 0, until2)
    assert pieces == running_by_hour(whole.spans, 0, until2)
    assert first.anomalies + second.anomalies == whole.anomalies == (Anomaly(5, "duplicate start"),)
    assert second.state == whole.state
