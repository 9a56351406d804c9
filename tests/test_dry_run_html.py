"""`metering run --dry-run --format html`: the report page over the lines a run would write."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

from click.testing import CliRunner
from support import insert_events, measure, migrated, resource

from metering.cli import main


class Points(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.points: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "circle" and values.get("class") == "point":
            self.points.append(values)


def test_dry_run_html_chart_has_the_lines_per_account(sqlite_url: str, tmp_path: Path) -> None:
    engine = migrated(sqlite_url)
    insert_events(
        engine,
        [
            resource("a", "create", "2016-12-12T15:48:32Z", offering="medium"),
            resource("b", "create", "2016-12-12T16:30:00Z", account="zeta", resource_id="z1"),
            measure("m", 1001, "2016-12-12T15:59:30Z", "2016-12-12T16:00:30Z"),
        ],
    )
    args = ["--database-url", sqlite_url, "run", "--now", "2016-12-12T17:31Z", "--dry-run"]
    lock = ["--lock-file", str(tmp_path / "lock")]
    page = CliRunner().invoke(main, [*args, *lock, "--format", "html"])
    assert page.exit_code == 0, page.output
    csv_lines = CliRunner().invoke(main, [*args, *lock, "--format", "csv"]).stdout.splitlines()[1:]

    expected: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for row in csv_lines:
        account, _entity, _resource, _offering, unit, period, quantity = row.split(",")
        expected[(period, account, unit)] += Decimal(quantity)
    parser = Points()
    parser.feed(page.stdout)
    got = {
        (p["data-period"], p["data-account"], p["data-unit"]): Decimal(p["data-quantity"] or "")
        for p in parser.points
    }
    assert got == dict(expected)
    assert got[("2016-12-12T15:00:00.000Z", "acme", "second")] == Decimal("688")
    assert got[("2016-12-12T16:00:00.000Z", "acme", "byte")] == Decimal("501")
    assert "<script" not in page.stdout
