"""docs/rating.md's worked examples, executed: each section's price book versions, usage
and the invoice lines and totals it claims."""

from __future__ import annotations

import re
import tomllib
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from metering.core.rating import Usage, Version, month_bounds, parse_book, rate_month, to_ms
from metering.timeutil import parse_time

DOC = Path(__file__).resolve().parent.parent / "docs" / "rating.md"
BLOCK = re.compile(r"```(toml|usage|invoice)\n(.*?)```", re.S)


def examples() -> list[tuple[str, str]]:
    text = DOC.read_text().split("## Worked examples", 1)[1].split("\n## ", 1)[0]
    sections = re.split(r"^### ", text, flags=re.M)[1:]
    return [(s.splitlines()[0], s) for s in sections]


def test_the_doc_has_the_examples_the_issue_asks_for() -> None:
    titles = " / ".join(title for title, _ in examples()).lower()
    for topic in ("tiers", "price change", "override", "each rounding mode", "per invoice"):
        assert topic in titles


@pytest.mark.parametrize(("title", "section"), examples(), ids=[t for t, _ in examples()])
def test_worked_example(title: str, section: str) -> None:
    blocks = BLOCK.findall(section)
    books = [parse_book(tomllib.loads(body)) for kind, body in blocks if kind == "toml"]
    versions = []
    for number, book in enumerate(books, start=1):
        assert book.valid_from is not None
        versions.append(Version(number, to_ms(book.valid_from), book))
    usage: dict[tuple[str, str], list[Usage]] = defaultdict(list)
    for line in next(body for kind, body in blocks if kind == "usage").splitlines():
        account, entity, offering, unit, hour, quantity = line.split()
        when = parse_time(hour)
        usage[(when.strftime("%Y-%m"), account)].append(
            Usage(entity, "" if offering == "-" else offering, unit, to_ms(when), Decimal(quantity))
        )
    claims = next(body for kind, body in blocks if kind == "invoice").splitlines()
    assert claims
    for claim in claims:
        month, account, *what, amount = claim.split()
        start, end = month_bounds(month)
        rated = rate_month(account, usage[(month, account)], versions, to_ms(start), to_ms(end))
        if what == ["total"]:
            assert str(rated.total) == amount, claim
            continue
        key, version = what
        entity, offering, unit = key.split("/")
        (line,) = [
            x
            for x in rated.lines
            if (x.entity, x.offering or "-", x.unit, f"v{x.version}")
            == (entity, offering, unit, version)
        ]
        assert str(line.amount) == amount, claim
