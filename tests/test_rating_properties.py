"""Property (both databases): per account and month, the closed invoice's total equals the
rated sum of its usage lines under the book's rounding policy, computed here another way:
each key's month total priced at once (graduated tiers are an integral, so the order of
hours cannot matter) and rounded by Decimal's own modes."""

from __future__ import annotations

import itertools
from collections import defaultdict
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP, Decimal, localcontext
from fractions import Fraction
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from metering import invoice, prices
from metering.core.rating import month_bounds, parse_book
from metering.store.schema import invoices
from tests.support import migrated
from tests.test_invoice import add_lines, billed_until

MODES = {"half-even": ROUND_HALF_EVEN, "half-up": ROUND_HALF_UP, "up": ROUND_UP, "down": ROUND_DOWN}
GB = 10**9

quantities = st.decimals(min_value=-5000, max_value=200_000, places=3, allow_nan=False)
lines = st.lists(
    st.tuples(
        st.sampled_from(["acme", "blue"]),
        st.sampled_from([("vm", "medium", "second"), ("ip", "", "byte")]),
        st.integers(min_value=0, max_value=27 * 24),  # hour of the month
        quantities,
        st.integers(min_value=0, max_value=GB),  # extra bytes, so ip crosses tiers
    ),
    min_size=1,
    max_size=25,
)
books = st.fixed_dictionaries(
    {
        "precision": st.sampled_from(["1", "0.1", "0.01", "0.001"]),
        "mode": st.sampled_from(sorted(MODES)),
        "per": st.sampled_from(["line", "invoice"]),
        "vm": st.decimals(min_value=0, max_value=3, places=4),
        "tiers": st.lists(st.decimals(min_value=0, max_value=1, places=3), min_size=1, max_size=3),
    }
)


def book_of(drawn: dict[str, Any]) -> dict[str, Any]:
    tiers: list[dict[str, str]] = [
        {"up_to": str(Decimal(i + 1) / 2), "price": str(p)}
        for i, p in enumerate(drawn["tiers"][:-1])
    ]
    tiers.append({"price": str(drawn["tiers"][-1])})
    return {
        "currency": "CHF",
        "rounding": {"precision": drawn["precision"], "mode": drawn["mode"], "per": drawn["per"]},
        "price": [
            {
                "entity": "vm",
                "offering": "medium",
                "unit": "second",
                "per": "hour",
                "price": str(drawn["vm"]),
            },
            {"entity": "ip", "unit": "byte", "per": "GB", "tiers": tiers},
        ],
    }


def expected_total(drawn: dict[str, Any], totals: dict[str, Fraction]) -> Decimal:
    amounts = []
    for entity, quantity in sorted(totals.items()):
        if entity == "vm":
            amounts.append(quantity * Fraction(drawn["vm"]) / 3600)
            continue
        gb, tier_prices = quantity / GB, drawn["tiers"]
        if gb < 0:  # below zero (corrections past the month's start): the first tier
            amounts.append(gb * Fraction(tier_prices[0]))
            continue
        amount, low = Fraction(0), Fraction(0)
        for i, price in enumerate(tier_prices):
            high = Fraction(i + 1, 2) if i < len(tier_prices) - 1 else None
            top = gb if high is None else min(gb, high)
            amount += max(Fraction(0), top - low) * Fraction(price)
            low = high if high is not None else low
        amounts.append(amount)

    def rounded(value: Fraction) -> Decimal:
        with localcontext() as ctx:
            ctx.prec = 100
            exact = Decimal(value.numerator) / Decimal(value.denominator)
            return exact.quantize(Decimal(drawn["precision"]), rounding=MODES[drawn["mode"]])

    if drawn["per"] == "line":
        return sum((rounded(a) for a in amounts), Decimal(0))
    return rounded(sum(amounts, Fraction(0)))


def test_invoice_total_is_the_rated_sum_of_its_usage_lines(
    database_url: str, tmp_path: Path
) -> None:
    engine = migrated(database_url)
    months = (f"{2001 + n // 12}-{n % 12 + 1:02d}" for n in itertools.count())

    @settings(
        max_examples=20 if database_url.startswith("sqlite") else 12,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(drawn=books, drawn_lines=lines)
    def check(drawn: dict[str, Any], drawn_lines: list[Any]) -> None:
        month = next(months)
        start, end = month_bounds(month)
        prices.load(
            engine, parse_book(book_of(drawn)), source="property", now=start, valid_from=start
        )
        totals: dict[str, dict[str, Fraction]] = defaultdict(lambda: defaultdict(Fraction))
        rows = []
        for account, (entity, offering, unit), hour, quantity, extra in drawn_lines:
            amount = quantity if entity == "vm" else quantity.to_integral_value() * 1000 + extra
            when = start.replace(day=1 + hour // 24, hour=hour % 24)
            rows.append((account, entity, offering, unit, when.isoformat(), amount))
            totals[account][entity] += Fraction(amount)
        add_lines(engine, *rows, run_id=f"run-{month}")
        billed_until(engine, end.isoformat())
        invoice.close(engine, month, now=end, lock_file=tmp_path / "lock", allow_unpriced=False)
        with engine.connect() as conn:
            stored = dict(
                conn.execute(
                    select(invoices.c.account, invoices.c.usage_total).where(
                        invoices.c.month == month
                    )
                ).all()
            )
        expected = {
            account: expected_total(drawn, per_entity)
            for account, per_entity in totals.items()
            if any(per_entity.values())
        }
        assert {a: Decimal(v) for a, v in stored.items() if a in expected} == expected
        # An account whose lines net to nothing per key may still have an invoice: of 0.
        assert all(Decimal(v) == 0 for a, v in stored.items() if a not in expected)

    check()
