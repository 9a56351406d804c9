"""Property tests: the core against the reference model in model.py."""

from __future__ import annotations

import itertools
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from metering.core.events import HOUR, MAX_QUANTITY, Measure, ResourceEvent, ResourceKey
from metering.core.slicing import hour_of, measure_by_hour, running_by_hour, split_measure
from metering.core.spans import Replay, ResourceState, replay

from . import model
from .helpers import at

T0 = at("2016-12-12T12:00:00")
HOURS = 4
KEYS: list[ResourceKey] = [("acct", "vm", "r1"), ("acct", "vm", "r2"), ("other", "ip", "r1")]
OFFERINGS = [None, "", "small", "large", "xl"]

# Hour boundaries and their neighbours are where off-by-one errors live; a small
# pool of shared instants produces ties broken by id.
SPECIAL_TIMES = sorted(
    {T0 + h * HOUR + d for h in range(HOURS + 1) for d in (-1, 0, 1)} | {T0 + 1234, T0 + 777_777}
)
TIMES = st.one_of(
    st.integers(T0, T0 + HOURS * HOUR),
    st.sampled_from(SPECIAL_TIMES),
)
UNTILS = st.one_of(st.integers(T0, T0 + (HOURS + 1) * HOUR), st.sampled_from(SPECIAL_TIMES))


@st.composite
def event_sets(draw: st.DrawFn) -> list[ResourceEvent]:
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(KEYS),
                st.sampled_from(["create", "start", "stop", "destroy", "update"]),
                st.sampled_from(OFFERINGS),
                TIMES,
            ),
            max_size=25,
        )
    )
    ids = draw(
        st.lists(st.integers(1, 10_000), min_size=len(rows), max_size=len(rows), unique=True)
    )
    events = [
        ResourceEvent(id=i, key=k, action=a, offering=o, occurred_at=t)
        for i, (k, a, o, t) in zip(ids, rows, strict=True)
    ]
    return draw(st.permutations(events))


def by_key(events: list[ResourceEvent]) -> dict[ResourceKey, list[ResourceEvent]]:
    groups: dict[ResourceKey, list[ResourceEvent]] = defaultdict(list)
    for e in events:
        groups[e.key].append(e)
    return groups


def as_model(events: list[ResourceEvent]) -> list[model.ModelEvent]:
    return [(e.occurred_at, e.id, e.action, e.offering) for e in events]


def totals(replays: dict[ResourceKey, list[Replay]], end: int) -> dict[tuple[object, ...], int]:
    out: dict[tuple[object, ...], int] = {}
    for key, rs in replays.items():
        spans = [s for r in rs for s in r.spans]
        for (offering, hour), ms in running_by_hour(spans, 0, end).items():
            out[(key, offering, hour)] = ms
    return out


@settings(max_examples=300, deadline=None)
@given(event_sets(), UNTILS)
def test_replay_matches_model(events: list[ResourceEvent], until: int) -> None:
    got = totals({k: [replay(es, until)] for k, es in by_key(events).items()}, until)
    expected: dict[tuple[object, ...], int] = {}
    for key, es in by_key(events).items():
        for (offering, hour), ms in model.running_ms_by_hour(
            as_model(es), T0 - HOUR, until
        ).items():
            expected[(key, offering, hour)] = ms
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(event_sets(), UNTILS)
def test_replay_bookkeeping_matches_model(events: list[ResourceEvent], until: int) -> None:
    for es in by_key(events).values():
        r = replay(es, until)
        assert [(a.id, a.reason) for a in r.anomalies] == model.anomalies(as_model(es), until)
        later = [e.occurred_at for e in es if e.occurred_at >= until]
        assert r.pending_from == (min(later) if later else None)
        assert r.last_event_at == max(e.occurred_at for e in es)
        assert all(s.start < s.end <= until for s in r.spans)
        # Spans of one resource never overlap: no time is billed twice.
        ordered = sorted(r.spans, key=lambda s: s.start)
        assert all(a.end <= b.start for a, b in itertools.pairwise(ordered))
        offering_now = model.offering_at(as_model([e for e in es if e.occurred_at < until]), until)
        assert r.state.running == (offering_now is not None and not r.state.destroyed)
        if r.state.running:
            assert r.state.since == until
            assert (r.state.offering or "") == offering_now


@settings(max_examples=300, deadline=None)
@given(event_sets(), st.lists(UNTILS, min_size=1, max_size=4))
def test_replay_in_pieces_equals_replay_at_once(
    events: list[ResourceEvent], cuts: list[int]
) -> None:
    cuts = sorted(cuts)
    final = cuts[-1]
    pieces: dict[ResourceKey, list[Replay]] = {}
    for key, es in by_key(events).items():
        state = ResourceState()
        done: list[Replay] = []
        lower = None
        for cut in cuts:
            batch = [
                e for e in es if (lower is None or e.occurred_at >= lower) and e.occurred_at < cut
            ]
            done.append(replay(batch, cut, state))
            state = done[-1].state
            lower = cut
        whole = replay(es, final)
        assert state == whole.state
        assert tuple(a for r in done for a in r.anomalies) == whole.anomalies
        pieces[key] = done
    at_once = {k: [replay(es, final)] for k, es in by_key(events).items()}
    assert totals(pieces, final) == totals(at_once, final)


@settings(max_examples=200, deadline=None)
@given(event_sets(), UNTILS, st.integers(T0, T0 + HOURS * HOUR), st.integers(0, 2 * HOUR))
def test_events_at_or_after_until_do_not_matter(
    events: list[ResourceEvent], until: int, lo: int, width: int
) -> None:
    for es in by_key(events).values():
        a = replay(es, until)
        b = replay([e for e in es if e.occurred_at < until], until)
        assert (a.spans, a.state, a.anomalies) == (b.spans, b.state, b.anomalies)
        # A window of running_by_hour is a plain restriction of the full result.
        full = running_by_hour(a.spans, 0, until)
        window = running_by_hour(a.spans, lo, lo + width)
        assert sum(window.values()) <= sum(full.values())
        for k, v in window.items():
            assert v <= full[k]


QUANTITIES = st.one_of(
    st.integers(0, 10_000), st.integers(0, MAX_QUANTITY), st.sampled_from([0, 1, MAX_QUANTITY])
)
STARTS = st.one_of(st.integers(T0, T0 + 2 * HOUR), st.sampled_from(SPECIAL_TIMES))
LENGTHS = st.one_of(
    st.integers(0, 3), st.integers(0, 5 * HOUR), st.sampled_from([HOUR - 1, HOUR, HOUR + 1])
)


@settings(max_examples=500, deadline=None)
@given(QUANTITIES, STARTS, LENGTHS)
def test_split_measure_properties(quantity: int, start: int, length: int) -> None:
    end = start + length
    parts = split_measure(quantity, start, end)
    assert sum(a for _, a in parts) == quantity
    assert all(a >= 0 for _, a in parts)
    if length == 0:
        assert parts == [(start - start % HOUR, quantity)]
        return
    overlapped = [
        h for h in range(start - start % HOUR, end, HOUR) if min(h + HOUR, end) - max(h, start) > 0
    ]
    assert [h for h, _ in parts] == overlapped
    for h, amount in parts[:-1]:
        overlap = min(h + HOUR, end) - max(h, start)
        assert amount == quantity * overlap // length
    assert dict(parts) == model.measure_parts(quantity, start, end)


MEASURE_KEYS = [
    ("a", "ip", "1.2.3.4", "byte"),
    ("a", "ip", "1.2.3.4", "packet"),
    ("b", "vol", "v", "byte"),
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(MEASURE_KEYS), QUANTITIES, STARTS, LENGTHS), max_size=12))
def test_measure_by_hour_matches_model(
    rows: list[tuple[tuple[str, str, str, str], int, int, int]],
) -> None:
    measures = [Measure(i, k, q, s, s + n) for i, (k, q, s, n) in enumerate(rows)]
    expected = model.measures_by_hour((k, q, s, s + n) for k, q, s, n in rows)
    assert measure_by_hour(measures) == expected


@given(st.integers(0, 2**62))
def test_hour_of(t: int) -> None:
    h = hour_of(t)
    assert h % HOUR == 0 and h <= t < h + HOUR
