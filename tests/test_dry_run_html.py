"""`metering run --dry-run --format html`: the report page over the lines a run would write."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

from click.testing import CliRunner
from support import insert_events, measure, migrated, resource

from metering.cli import main


class Bars(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.bars: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "rect" and values.get("class") == "bar":
            self.bars.append(values)


def test_dry_run_html_bars_are_the_lines_per_account(sqlite_url: str, tmp_path: Path) -> None:
    engine = migrated(sqlite_url)
    insert_events(
        engine,
        [
            resource("a", "create", "2016-12-12T15:48:32Z", offering="medium"),
            resource("b", "create", "2016-12-12T16:30:00Z", account="zeta", resource_id="z1"),
            measure("m", 1001, "2016-12-12T15:59:30Z", "2016-12-12T16:00:30Z"),
            # Resized at 16:30: medium and large are two figures of the same hour.
            resource("c", "update", "2016-12-12T16:30:00Z", offering="large"),
        ],
    )
    args = ["--database-url", sqlite_url, "run", "--now", "2016-12-12T17:31Z", "--dry-run"]
    lock = ["--lock-file", str(tmp_path / "lock")]
    page = CliRunner().invoke(main, [*args, *lock, "--format", "html"])
    assert page.exit_code == 0, page.output
    csv_lines = CliRunner().invoke(main, [*args, *lock, "--format", "csv"]).stdout.splitlines()[1:]

    expected: dict[tuple[str, str, str, str], Decimal] = defaultdict(Decimal)
    for row in csv_lines:
        account, entity, _resource, _offering, unit, period, quantity = row.split(",")
        expected[(period, account, entity, unit)] += Decimal(quantity)
    parser = Bars()
    parser.feed(page.stdout)
    got = {
        (b["data-period"], b["data-series"], b["data-entity"], b["data-unit"]): Decimal(
            b["data-quantity"] or ""
        )
        for b in parser.bars
    }
    assert got == dict(expected)
    assert got[("2016-12-12T15:00:00.000Z", "acme", "vm", "second")] == Decimal("688")
    assert got[("2016-12-12T16:00:00.000Z", "acme", "ip", "byte")] == Decimal("501")
    # The table of accounts x offerings keeps the resize apart: 30 min each.
    head = "<th class=num>(no offering)</th><th class=num>large</th><th class=num>medium</th>"
    assert head in page.stdout
    cells = ["", "0 h 30 min", "0 h 41 min", "1 h 11 min"]  # 1800 s, 688 + 1800 s, both
    assert "<tr><td>acme</td>" + "".join(f'<td class="num">{c}</td>' for c in cells) in page.stdout
    assert "<script" not in page.stdout
