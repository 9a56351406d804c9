from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.core.events import (
    HOUR,
    MAX_MEASURE_PERIOD,
    MAX_QUANTITY,
    MAX_TEXT,
    MAX_TIME,
    MIN_TIME,
    WHITESPACE,
    Measure,
    RawEvent,
    Rejection,
    ResourceEvent,
    validate,
)

from .helpers import at, raw, raw_quantity


def reason(r: RawEvent) -> str:
    result = validate(r)
    assert isinstance(result, Rejection), result
    assert result.id == r.id and result.event_id == r.event_id
    return result.reason


def test_constants() -> None:
    assert HOUR == 3_600_000
    assert MIN_TIME == 946_684_800_000  # 2000-01-01T00:00:00Z
    end = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    assert (end - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1) == MAX_TIME
    assert MAX_QUANTITY == 10**15
    assert MAX_MEASURE_PERIOD == 366 * 24 * HOUR


def test_valid_resource_event() -> None:
    r = raw(id=7)
    assert validate(r) == ResourceEvent(
        id=7,
        key=("geneva-jug", "vm", "7a070a3d"),
        action="create",
        offering="medium",
        occurred_at=at("2016-12-12T15:48:32"),
    )


@pytest.mark.parametrize("action", ["create", "start", "stop", "destroy", "update"])
def test_every_resource_action_is_accepted(action: str) -> None:
    assert isinstance(validate(raw(action=action)), ResourceEvent)


@pytest.mark.parametrize("offering", ["", None])
def test_empty_offering_means_none(offering: str | None) -> None:
    result = validate(raw(offering=offering))
    assert isinstance(result, ResourceEvent) and result.offering is None


def test_valid_quantity_event() -> None:
    r = raw_quantity(id=9)
    assert validate(r) == Measure(
        id=9,
        key=("geneva-jug", "ip", "159.100.251.251", "byte"),
        quantity=10485760,
        period_start=at("2016-12-12T15:48:00"),
        period_end=at("2016-12-12T15:49:00"),
    )


@pytest.mark.parametrize("unit", ["", None])
def test_unit_defaults_to_byte(unit: str | None) -> None:
    result = validate(raw_quantity(unit=unit))
    assert isinstance(result, Measure) and result.key[3] == "byte"


def test_other_unit_kept() -> None:
    result = validate(raw_quantity(unit="packet"))
    assert isinstance(result, Measure) and result.key[3] == "packet"


def test_quantity_needs_no_occurred_at_and_ignores_its_range() -> None:
    assert isinstance(validate(raw_quantity(occurred_at=None)), Measure)
    assert isinstance(validate(raw_quantity(occurred_at=-5)), Measure)


def test_quantity_limits_inclusive() -> None:
    assert isinstance(validate(raw_quantity(quantity=0)), Measure)
    assert isinstance(validate(raw_quantity(quantity=MAX_QUANTITY)), Measure)
    s = at("2016-01-01T00:00:00")
    assert isinstance(validate(raw_quantity(period_start=s, period_end=s)), Measure)
    r = raw_quantity(period_start=s, period_end=s + MAX_MEASURE_PERIOD)
    assert isinstance(validate(r), Measure)
    r = raw_quantity(period_start=MIN_TIME, period_end=MIN_TIME)
    assert isinstance(validate(r), Measure)
    r = raw_quantity(period_start=MAX_TIME, period_end=MAX_TIME)
    assert isinstance(validate(r), Measure)


def test_occurred_at_limits_inclusive() -> None:
    assert isinstance(validate(raw(occurred_at=MIN_TIME)), ResourceEvent)
    assert isinstance(validate(raw(occurred_at=MAX_TIME)), ResourceEvent)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"kind": "x"}, "unknown kind 'x'"),
        ({"kind": "Resource"}, "unknown kind 'Resource'"),
        ({"kind": " resource"}, "unknown kind ' resource'"),
        ({"kind": ""}, "unknown kind ''"),
        ({"action": "x"}, "unknown action 'x' for kind 'resource'"),
        ({"action": "measure"}, "unknown action 'measure' for kind 'resource'"),
        ({"action": "Start"}, "unknown action 'Start' for kind 'resource'"),
        ({"account": ""}, "missing account"),
        ({"resource_id": ""}, "missing resource_id"),
        ({"entity": ""}, "missing entity"),
        ({"occurred_at": None}, "missing occurred_at"),
        ({"occurred_at": -1}, "occurred_at out of range"),
        ({"occurred_at": MAX_TIME + 1}, "occurred_at out of range"),
        ({"offering": "o" * 65}, "offering longer than 64 characters"),
    ],
)
def test_resource_rejections(overrides: dict[str, object], expected: str) -> None:
    assert reason(raw(**overrides)) == expected


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"action": "start"}, "unknown action 'start' for kind 'quantity'"),
        ({"account": ""}, "missing account"),
        ({"resource_id": ""}, "missing resource_id"),
        ({"entity": ""}, "missing entity"),
        ({"quantity": None}, "missing quantity"),
        ({"quantity": -1}, "negative quantity"),
        ({"quantity": MAX_QUANTITY + 1}, "quantity too large"),
        ({"period_start": None}, "missing period_start"),
        ({"period_end": None}, "missing period_end"),
        ({"period_start": -1}, "period_start out of range"),
        ({"period_end": MAX_TIME + 1}, "period_end out of range"),
        (
            {"period_start": at("2016-12-12T15:49:00"), "period_end": at("2016-12-12T15:48:59")},
            "period_end before period_start",
        ),
        (
            {"period_start": MIN_TIME, "period_end": MIN_TIME + MAX_MEASURE_PERIOD + 1},
            "period longer than 366 days",
        ),
        ({"unit": "u" * 17}, "unit longer than 16 characters"),
    ],
)
def test_quantity_rejections(overrides: dict[str, object], expected: str) -> None:
    assert reason(raw_quantity(**overrides)) == expected


@pytest.mark.parametrize(("column", "limit"), sorted(MAX_TEXT.items()))
def test_text_length_limits(column: str, limit: int) -> None:
    assert (
        MAX_TEXT[column]
        == {
            "event_id": 64,
            "kind": 16,
            "entity": 32,
            "action": 16,
            "account": 64,
            "resource_id": 64,
            "offering": 64,
            "unit": 16,
        }[column]
    )
    for make in (raw, raw_quantity):
        assert reason(make(**{column: "x" * (limit + 1)})) == (
            f"{column} longer than {limit} characters"
        )
        # len counts characters, not bytes.
        ok = make(**{column: "é" * limit})
        if column not in ("kind", "action"):
            assert not isinstance(validate(ok), Rejection), column


def test_reason_truncates_long_values() -> None:
    r = reason(raw(kind="k" * 16))
    assert r.startswith("unknown kind 'kkk") and r.endswith("'")
    r = reason(raw(action="\x00" * 16))
    assert len(r) < 100
    assert "\x00" not in r


TEXT = st.one_of(st.none(), st.text(max_size=80))
INT = st.one_of(st.none(), st.integers(min_value=-(2**64), max_value=2**64))


@settings(max_examples=300)
@given(
    st.builds(
        RawEvent,
        id=st.integers(min_value=1, max_value=2**63),
        event_id=st.text(max_size=80),
        kind=st.sampled_from(["resource", "quantity", "other", ""]),
        entity=st.text(max_size=40),
        action=st.sampled_from(["create", "start", "stop", "destroy", "update", "measure", "x"]),
        account=st.text(max_size=80),
        resource_id=st.text(max_size=80),
        offering=TEXT,
        occurred_at=INT,
        quantity=INT,
        unit=TEXT,
        period_start=INT,
        period_end=INT,
    )
)
def test_validate_never_raises_and_reasons_are_bounded(r: RawEvent) -> None:
    result = validate(r)
    if isinstance(result, Rejection):
        assert 0 < len(result.reason) <= 100
        assert result.id == r.id and result.event_id == r.event_id
    elif isinstance(result, ResourceEvent):
        assert r.kind == "resource" and r.occurred_at is not None
        assert MIN_TIME <= result.occurred_at <= MAX_TIME
        assert all(result.key) and result.offering != ""
    else:
        assert r.kind == "quantity" and r.action == "measure"
        assert 0 <= result.quantity <= MAX_QUANTITY
        assert 0 <= result.period_end - result.period_start <= MAX_MEASURE_PERIOD
        assert all(result.key)


def test_whitespace_is_what_python_strips() -> None:
    assert tuple(c for c in range(0x110000) if chr(c).isspace()) == WHITESPACE


@pytest.mark.parametrize("blank", [" ", "\t", "\u00a0", "\u3000 \n"])
def test_blank_names_are_missing_and_blank_options_default(blank: str) -> None:
    assert reason(raw_quantity(account=blank)) == "missing account"
    measure = validate(raw_quantity(unit=blank))
    assert isinstance(measure, Measure) and measure.key[3] == "byte"
