from __future__ import annotations

import pytest

from metering.core.events import HOUR, MAX_MEASURE_PERIOD, MAX_QUANTITY, MAX_TIME, Measure
from metering.core.slicing import hour_of, measure_by_hour, running_by_hour, split_measure
from metering.core.spans import Span

from .helpers import at

H12 = at("2016-12-12T12:00:00")
H13 = at("2016-12-12T13:00:00")


def test_hour_of() -> None:
    assert hour_of(0) == 0
    assert hour_of(HOUR - 1) == 0
    assert hour_of(HOUR) == HOUR
    assert hour_of(at("2016-12-12T15:48:32.123")) == at("2016-12-12T15:00:00")
    assert hour_of(MAX_TIME) == at("9999-12-31T23:00:00")


def test_running_by_hour_clips_to_window() -> None:
    spans = [Span("m", H12 - 10, H13 + 10)]
    assert running_by_hour(spans, H12, H13) == {("m", H12): HOUR}
    assert running_by_hour(spans, H12 + 5, H12 + 7) == {("m", H12): 2}
    assert running_by_hour(spans, H13 + 10, H13 + 20) == {}


def test_running_by_hour_sums_spans_and_omits_zero() -> None:
    spans = [
        Span("m", H12, H12 + 10),
        Span("m", H12 + 10, H12 + 30),
        Span("l", H12 + 30, H13 + 1),
        Span("x", H12 + 5, H12 + 5),
    ]
    assert running_by_hour(spans, 0, MAX_TIME) == {
        ("m", H12): 30,
        ("l", H12): HOUR - 30,
        ("l", H13): 1,
    }


def test_running_by_hour_boundaries_exact() -> None:
    spans = [Span("", H12 + HOUR - 1, H13 + 2 * HOUR + 1)]
    assert running_by_hour(spans, 0, MAX_TIME) == {
        ("", H12): 1,
        ("", H13): HOUR,
        ("", H13 + HOUR): HOUR,
        ("", H13 + 2 * HOUR): 1,
    }


def test_contract_example_1001_bytes() -> None:
    parts = split_measure(1001, at("2016-12-12T12:59:30"), at("2016-12-12T13:00:30"))
    assert parts == [(H12, 500), (H13, 501)]


def test_zero_length_period_goes_to_its_hour() -> None:
    t = at("2016-12-12T12:59:59.999")
    assert split_measure(42, t, t) == [(H12, 42)]
    assert split_measure(42, H13, H13) == [(H13, 42)]


def test_period_within_one_hour() -> None:
    assert split_measure(7, H12 + 1, H12 + 2) == [(H12, 7)]


def test_period_ending_on_boundary_does_not_touch_next_hour() -> None:
    assert split_measure(10, H12, H13) == [(H12, 10)]
    assert split_measure(10, H12 + HOUR // 2, H13 + HOUR) == [(H12, 3), (H13, 7)]


def test_period_starting_on_boundary() -> None:
    assert split_measure(3, H13, H13 + 1) == [(H13, 3)]


def test_many_hours_floor_each_rest_last() -> None:
    # 3 full hours: floor(10/3) = 3, 3, last gets 4.
    assert split_measure(10, H12, H12 + 3 * HOUR) == [
        (H12, 3),
        (H12 + HOUR, 3),
        (H12 + 2 * HOUR, 4),
    ]


def test_zero_parts_kept_so_hours_are_exact() -> None:
    assert split_measure(1, H12, H12 + 3 * HOUR) == [
        (H12, 0),
        (H12 + HOUR, 0),
        (H12 + 2 * HOUR, 1),
    ]


def test_largest_measure_is_exact() -> None:
    parts = split_measure(MAX_QUANTITY, 1, 1 + MAX_MEASURE_PERIOD)
    assert len(parts) == 366 * 24 + 1
    assert sum(a for _, a in parts) == MAX_QUANTITY
    assert all(isinstance(a, int) for _, a in parts)


def test_split_measure_rejects_reversed_period() -> None:
    with pytest.raises(ValueError):
        split_measure(1, H13, H12)


def test_measure_by_hour_sums_per_key_and_hour() -> None:
    k1 = ("acct", "ip", "1.2.3.4", "byte")
    k2 = ("acct", "ip", "1.2.3.4", "packet")
    measures = [
        Measure(1, k1, 1001, at("2016-12-12T12:59:30"), at("2016-12-12T13:00:30")),
        Measure(2, k1, 5, H13 + 1, H13 + 2),
        Measure(3, k2, 9, H12, H12),
        Measure(4, k2, 0, H12, H13),
    ]
    assert measure_by_hour(measures) == {
        (k1, H12): 500,
        (k1, H13): 506,
        (k2, H12): 9,
    }


def test_measure_by_hour_omits_zero_sums() -> None:
    k = ("a", "ip", "r", "byte")
    assert measure_by_hour([Measure(1, k, 1, H12, H12 + 3 * HOUR)]) == {(k, H12 + 2 * HOUR): 1}
