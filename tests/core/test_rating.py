"""Pure rating: rounding modes, tiers, versions, overrides, unpriced usage, book validation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from metering.core.rating import (
    BookError,
    Invoiced,
    Rounding,
    Usage,
    Version,
    adjustment,
    book_document,
    check_new_version,
    parse_book,
    rate_month,
    round_amount,
    to_ms,
)
from metering.timeutil import parse_time

MARCH = (to_ms(parse_time("2024-03-01")), to_ms(parse_time("2024-04-01")))
GB = 10**9


def book(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "currency": "CHF",
        "rounding": {"precision": "0.01", "mode": "half-even", "per": "line"},
        "price": [
            {
                "entity": "vm",
                "offering": "medium",
                "unit": "second",
                "per": "hour",
                "price": "0.05",
            },
            {
                "entity": "ip",
                "unit": "byte",
                "per": "GB",
                "tiers": [{"up_to": "100", "price": "0"}, {"price": "0.02"}],
            },
        ],
    }
    data.update(extra)
    return data


def version(number: int, valid_from: str, data: dict[str, Any]) -> Version:
    return Version(number, to_ms(parse_time(valid_from)), parse_book(data))


def hour(text: str) -> int:
    return to_ms(parse_time(text))


def vm(when: str, seconds: str, offering: str = "medium") -> Usage:
    return Usage("vm", offering, "second", hour(when), Decimal(seconds))


def ip(when: str, amount: int) -> Usage:
    return Usage("ip", "", "byte", hour(when), Decimal(amount))


def rate(usages: Sequence[Usage], versions: Sequence[Version], account: str = "blue") -> Any:
    return rate_month(account, usages, versions, *MARCH)


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("half-even", "0.125", "0.12"),
        ("half-even", "0.135", "0.14"),
        ("half-even", "-0.125", "-0.12"),
        ("half-up", "0.125", "0.13"),
        ("half-up", "-0.125", "-0.13"),
        ("half-up", "0.1249", "0.12"),
        ("up", "0.121", "0.13"),
        ("up", "-0.121", "-0.13"),
        ("down", "0.129", "0.12"),
        ("down", "-0.129", "-0.12"),
        ("down", "0.12", "0.12"),
    ],
)
def test_each_rounding_mode(mode: str, value: str, expected: str) -> None:
    rounding = Rounding(Decimal("0.01"), mode, "line")
    assert str(round_amount(Fraction(Decimal(value)), rounding)) == expected


def test_rounding_to_a_step_that_is_no_power_of_ten() -> None:
    # Swiss francs round to 5 centimes.
    assert round_amount(Fraction("1.024"), Rounding(Decimal("0.05"), "half-up", "line")) == Decimal(
        "1.00"
    )
    assert round_amount(Fraction("1.025"), Rounding(Decimal("0.05"), "half-up", "line")) == Decimal(
        "1.05"
    )


def test_a_second_at_an_hourly_price_is_exact_until_rounded() -> None:
    # 1 s at 0.05/h is 1/72000: no decimal holds it, a sum of many still rounds right.
    rated = rate(
        [vm(f"2024-03-01T{h:02d}:00", "1") for h in range(24)], [version(1, "2024-03-01", book())]
    )
    line = rated.lines[0]
    assert line.exact == Fraction(24, 72000)
    assert line.amount == Decimal("0.00")
    rated = rate([vm("2024-03-01T00:00", "2520")], [version(1, "2024-03-01", book())])
    assert rated.lines[0].exact == Fraction(7, 200)  # 0.035
    assert rated.total == Decimal("0.04")  # half-even: 3.5 cents -> 4


def test_per_invoice_rounds_the_total_only() -> None:
    # Three lines of 0.004 each: per line 0.00 + 0.00 + 0.00, per invoice 0.012 -> 0.01.
    prices = [
        {"entity": e, "unit": "second", "per": "second", "price": "0.004"} for e in ("a", "b", "c")
    ]
    usages = [Usage(e, "", "second", hour("2024-03-01T00:00"), Decimal(1)) for e in "abc"]
    per_line = rate(usages, [version(1, "2024-03-01", book(price=prices))])
    assert per_line.total == Decimal("0.00")
    per_invoice = book(
        price=prices, rounding={"precision": "0.01", "mode": "half-even", "per": "invoice"}
    )
    rated = rate(usages, [version(1, "2024-03-01", per_invoice)])
    assert rated.total == Decimal("0.01")
    assert [line.amount for line in rated.lines] == [Decimal("0.0040000000")] * 3


def test_graduated_tiers_walk_the_month_hour_by_hour() -> None:
    rated = rate(
        [ip("2024-03-01T00:00", 60 * GB), ip("2024-03-02T00:00", 60 * GB)],
        [version(1, "2024-03-01", book())],
    )
    (line,) = rated.lines
    assert [(t.start, t.up_to, t.quantity) for t in line.tiers] == [
        (Decimal(0), Decimal(100), Fraction(100)),
        (Decimal(100), None, Fraction(20)),
    ]
    assert line.amount == Decimal("0.40")
    assert line.unit_price is None  # graduated: no single price


def test_a_price_change_mid_month_keeps_the_tier_position() -> None:
    second = book(
        price=[
            {
                "entity": "vm",
                "offering": "medium",
                "unit": "second",
                "per": "hour",
                "price": "0.06",
            },
            {
                "entity": "ip",
                "unit": "byte",
                "per": "GB",
                "tiers": [{"up_to": "100", "price": "0"}, {"price": "0.03"}],
            },
        ]
    )
    versions = [version(1, "2024-03-01", book()), version(2, "2024-03-15", second)]
    rated = rate(
        [
            ip("2024-03-10T00:00", 80 * GB),
            ip("2024-03-20T00:00", 50 * GB),
            vm("2024-03-14T23:00", "3600"),
            vm("2024-03-15T00:00", "3600"),
        ],
        versions,
    )
    amounts = {(line.entity, line.version): line.amount for line in rated.lines}
    # 80 GB free under version 1; of the next 50 GB, 20 are still free, 30 at 0.03.
    assert amounts == {
        ("ip", 1): Decimal("0.00"),
        ("ip", 2): Decimal("0.90"),
        ("vm", 1): Decimal("0.05"),
        ("vm", 2): Decimal("0.06"),
    }
    assert rated.total == Decimal("1.01")


def test_an_override_replaces_the_price_for_one_account() -> None:
    data = book(
        override=[{"account": "acme", "entity": "vm", "offering": "medium", "price": "0.04"}]
    )
    versions = [version(1, "2024-03-01", data)]
    usage = [vm("2024-03-01T00:00", "36000")]
    acme = rate(usage, versions, account="acme")
    blue = rate(usage, versions, account="blue")
    assert (acme.lines[0].amount, acme.lines[0].source, acme.lines[0].per) == (
        Decimal("0.40"),
        "override",
        "hour",
    )
    assert (blue.lines[0].amount, blue.lines[0].source) == (Decimal("0.50"), "price")


def test_unpriced_usage_is_listed_not_priced_zero() -> None:
    rated = rate(
        [vm("2024-03-01T00:00", "3600", offering="huge"), vm("2024-03-01T01:00", "3600")],
        [version(1, "2024-03-01T01:00", book())],
    )
    assert [(u.offering, u.quantity, u.reason) for u in rated.unpriced] == [
        ("huge", Decimal(3600), "no price book in force")
    ]
    assert rated.total == Decimal("0.05")
    later = rate(
        [vm("2024-03-02T00:00", "3600", offering="huge")], [version(1, "2024-03-01", book())]
    )
    assert later.lines == () and later.unpriced[0].reason == "no price in the book"


def test_adjustment_is_the_difference_from_what_was_invoiced() -> None:
    versions = [version(1, "2024-03-01", book())]
    again = rate([vm("2024-03-01T00:00", "1800")], versions)
    invoiced = Invoiced("2024-03", "inv-x", Decimal("0.05"), {}, 10)
    adj = adjustment(again, invoiced)
    # Half an hour now rates 0.025 -> 0.02 (half-even): 0.03 back.
    assert adj is not None and adj.amount == Decimal("-0.03") and adj.invoice_id == "inv-x"
    assert adjustment(rate([vm("2024-03-01T00:00", "3600")], versions), invoiced) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"currency": ""}, "currency must be a non-empty string"),
        ({"rounding": {"precision": "0.01", "mode": "nearest"}}, "mode must be one of"),
        ({"rounding": {"precision": 0.01, "mode": "up"}}, "precision must be a decimal string"),
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"price": [{"entity": "vm", "unit": "second", "per": "GB", "price": "1"}]}, "per 'GB'"),
        ({"price": [{"entity": "vm", "unit": "second"}]}, "exactly one of price and tiers"),
        (
            {"price": [{"entity": "ip", "unit": "byte", "tiers": [{"up_to": "5", "price": "1"}]}]},
            "the last tier has no up_to",
        ),
        (
            {
                "price": [
                    {"entity": "vm", "unit": "second", "price": "1"},
                    {"entity": "vm", "unit": "second", "price": "2"},
                ]
            },
            "price 2 prices the same usage as price 1",
        ),
    ],
)
def test_bad_books_are_refused_naming_the_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(BookError, match=message):
        parse_book(book(**change))


def test_the_stored_document_reads_back_as_the_same_book() -> None:
    parsed = parse_book(book(override=[{"account": "a", "entity": "vm", "price": "0.01"}]))
    assert parse_book(json.loads(book_document(parsed))) == parsed


def test_new_versions_keep_closed_months_and_one_policy_per_month() -> None:
    versions = [version(1, "2024-03-01", book())]
    other = parse_book(book(rounding={"precision": "0.01", "mode": "up", "per": "line"}))
    with pytest.raises(BookError, match="only from the first of a month"):
        check_new_version(versions, parse_time("2024-03-10T00:00"), other, None)
    check_new_version(versions, parse_time("2024-04-01T00:00"), other, None)
    with pytest.raises(BookError, match="inside a closed month"):
        check_new_version(
            versions, parse_time("2024-03-10T00:00"), parse_book(book()), parse_time("2024-04-01")
        )
    with pytest.raises(BookError, match="not on an hour"):
        check_new_version(versions, parse_time("2024-03-10T00:30"), parse_book(book()), None)
    with pytest.raises(BookError, match="one currency"):
        check_new_version(
            versions, parse_time("2024-04-01"), parse_book(book(currency="EUR")), None
        )
