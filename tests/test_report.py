"""`metering report`: sums per period and group equal the billed amounts, in every format."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, select

from metering.cli import main
from metering.render import render_lines
from metering.store.schema import runs
from metering.store.usage import Line
from metering.timeutil import iso, to_ms
from tests.support import billed, insert_events, measure, migrated, resource, run, t

FIRST_RUN = "sstart-20161212T17-v0"
SECOND_RUN = "s20161212T17-20161212T18-v1"


def make_scenario(engine: Engine, tmp_path: Path) -> None:
    """Two accounts, a measure over an hour boundary, one rejected event, one anomaly,
    then a stop that arrives after its hours were billed (negative corrections)."""
    insert_events(
        engine,
        [
            resource("e1", "create", "2016-12-12T14:15:00Z", offering="medium"),
            resource(
                "e2",
                "start",
                "2016-12-12T14:00:00Z",
                account="geneva-jug",
                resource_id="vm-2",
                offering="large",
            ),
            measure(
                "e3",
                1001,
                "2016-12-12T15:59:30Z",
                "2016-12-12T16:00:30Z",
                account="geneva-jug",
            ),
            {**resource("e4", "create", "2016-12-12T14:20:00Z"), "kind": "bogus"},
            resource("e5", "stop", "2016-12-12T14:30:00Z", resource_id="vm-9"),
        ],
    )
    run(engine, "2016-12-12T17:45:00Z", tmp_path)
    insert_events(engine, [resource("e6", "stop", "2016-12-12T15:30:00Z")])
    run(engine, "2016-12-12T18:45:00Z", tmp_path)


@pytest.fixture
def scenario(database_url: str, tmp_path: Path) -> tuple[str, Engine]:
    engine = migrated(database_url)
    make_scenario(engine, tmp_path)
    return database_url, engine


def invoke(url: str, env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(
        main,
        ["--log-format", "json", *args],
        env={**env, "METERING_DATABASE_URL": url},
        catch_exceptions=False,
    )


def truncate(hour: datetime, by: str) -> datetime:
    if by == "day":
        return hour.replace(hour=0)
    if by == "month":
        return hour.replace(day=1, hour=0)
    return hour


# The billed key's fields: account, entity, resource_id, offering, unit, hour.
KEY_INDEX = {"account": 0, "entity": 1, "resource_id": 2, "offering": 3, "unit": 4}


def expected(engine: Engine, by: str, columns: tuple[str, ...]) -> dict[tuple[Any, ...], Decimal]:
    """The billed amounts (tests/support.billed) summed per (period, columns...)."""
    sums: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    for key, quantity in billed(engine).items():
        picked = tuple(key[KEY_INDEX[c]] for c in columns)
        sums[(iso(truncate(key[5], by)), *picked)] += quantity
    return {k: v for k, v in sums.items() if v != 0}


def reported(text: str, columns: tuple[str, ...]) -> dict[tuple[Any, ...], Decimal]:
    found = {}
    for line in text.splitlines():
        row = json.loads(line)
        assert set(row) >= {"quantity", *(columns if row["type"] == "usage" else ())}
        if row["type"] == "usage" and Decimal(row["quantity"]) != 0:
            key = (row["period"], *(row[c] for c in columns))
            found[key] = Decimal(row["quantity"])
    return found


# --group as given, and the columns rows are summed over: entity and unit always.
GROUPINGS = {
    "account": ("account", "entity", "unit"),
    "resource": ("account", "entity", "resource_id", "unit"),
    "offering": ("entity", "offering", "unit"),
    "unit": ("entity", "unit"),
    "account,offering": ("account", "entity", "offering", "unit"),
    "account,entity,resource,offering,unit": (
        "account",
        "entity",
        "resource_id",
        "offering",
        "unit",
    ),
}


@pytest.mark.parametrize(
    ("by", "group"),
    [
        ("hour", "resource"),
        ("day", "account"),
        ("month", "offering"),
        ("day", "unit"),
        ("hour", "account,offering"),
        ("day", "account,entity,resource,offering,unit"),
    ],
)
def test_json_sums_equal_the_billed_amounts(
    scenario: tuple[str, Engine], env: dict[str, str], by: str, group: str
) -> None:
    url, engine = scenario
    result = invoke(url, env, "report", "--by", by, "--group", group, "--format", "json")
    assert result.exit_code == 0, result.output
    assert reported(result.stdout, GROUPINGS[group]) == expected(engine, by, GROUPINGS[group])


def test_default_group_is_account_entity_offering_unit(
    scenario: tuple[str, Engine], env: dict[str, str]
) -> None:
    url, engine = scenario
    result = invoke(url, env, "report", "--format", "json")
    columns = ("account", "entity", "offering", "unit")
    assert reported(result.stdout, columns) == expected(engine, "day", columns)
    grand = [json.loads(s) for s in result.stdout.splitlines()]
    # Seconds of VMs and bytes are never one figure, nor two entities' seconds.
    assert {(g["entity"], g["unit"]) for g in grand if g["type"] == "grand_total"} == {
        ("vm", "second"),
        ("ip", "byte"),
    }


def test_unknown_group_is_a_usage_error(scenario: tuple[str, Engine], env: dict[str, str]) -> None:
    url, _ = scenario
    result = invoke(url, env, "report", "--group", "account,colour")
    assert result.exit_code == 2
    (error,) = [json.loads(s) for s in result.stderr.splitlines()]
    assert "colour" in error["error"] and error["help"] == "metering report --help"


def test_hourly_report_has_the_exact_amounts(
    scenario: tuple[str, Engine], env: dict[str, str]
) -> None:
    url, _ = scenario
    result = invoke(url, env, "report", "--by", "hour", "--group", "account", "--format", "json")
    rows = {
        (r["period"], r["account"], r["unit"]): r
        for r in map(json.loads, result.stdout.splitlines())
        if r["type"] == "usage"
    }
    # acme vm-1: created 14:15, its stop at 15:30 arrived late -> corrections.
    assert rows[("2016-12-12T14:00:00.000Z", "acme", "second")]["quantity"] == "2700.000"
    fifteen = rows[("2016-12-12T15:00:00.000Z", "acme", "second")]
    assert (fifteen["quantity"], fifteen["lines"], fifteen["corrections"]) == ("1800.000", 2, 1)
    sixteen = rows[("2016-12-12T16:00:00.000Z", "acme", "second")]
    assert (sixteen["quantity"], sixteen["corrections"]) == ("0.000", 1)
    assert rows[("2016-12-12T14:00:00.000Z", "acme", "second")]["corrections"] == 0
    assert rows[("2016-12-12T15:00:00.000Z", "geneva-jug", "byte")]["quantity"] == "500.000"
    assert rows[("2016-12-12T16:00:00.000Z", "geneva-jug", "byte")]["quantity"] == "501.000"
    totals = {
        (r["account"], r["unit"]): r["quantity"]
        for r in map(json.loads, result.stdout.splitlines())
        if r["type"] == "total"
    }
    assert totals[("acme", "second")] == "4500.000"
    assert totals[("geneva-jug", "second")] == f"{4 * 3600}.000"


def test_filters(scenario: tuple[str, Engine], env: dict[str, str]) -> None:
    url, _ = scenario

    def keys(*args: str) -> set[tuple[str, str, str]]:
        result = invoke(url, env, "report", "--by", "hour", "--format", "json", *args)
        assert result.exit_code == 0
        return {
            (r["period"][11:13], r["account"], r["unit"])
            for r in map(json.loads, result.stdout.splitlines())
            if r["type"] == "usage"
        }

    assert {a for _, a, _ in keys("--account", "acme")} == {"acme"}
    assert {u for _, _, u in keys("--entity", "ip")} == {"byte"}
    assert keys("--resource", "vm-2") == {
        (h, "geneva-jug", "second") for h in ["14", "15", "16", "17"]
    }
    assert keys("--offering", "large") == keys("--resource", "vm-2")
    window = keys("--since", "2016-12-12T15:00Z", "--until", "2016-12-12T16:00Z")
    assert {h for h, _, _ in window} == {"15"}


def test_table_shows_hours_and_minutes_totals_and_corrections(
    scenario: tuple[str, Engine], env: dict[str, str]
) -> None:
    url, _ = scenario
    result = invoke(url, env, "report", "--by", "hour")
    assert result.exit_code == 0
    text = result.stdout
    line_15 = next(s for s in text.splitlines() if s.startswith("2016-12-12 15:00  acme"))
    assert line_15.endswith("0 h 30 min *      2")
    line_14 = next(s for s in text.splitlines() if s.startswith("2016-12-12 14:00  acme"))
    assert "0 h 45 min" in line_14 and "*" not in line_14
    assert "totals per account, entity, offering, unit:" in text
    assert "4 h 00 min" in text  # geneva-jug's vm
    assert "* corrected" in text
    # 1001 bytes: too little for thousandths of a GB, and said so; raw keeps them.
    assert "< 0.001 GB" in text and "1001" not in text
    raw = invoke(url, env, "report", "--units", "raw").stdout
    assert "1001 byte" in raw and "4500 s" in raw


def test_csv(scenario: tuple[str, Engine], env: dict[str, str]) -> None:
    url, engine = scenario
    result = invoke(url, env, "report", "--group", "resource", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == [
        "period",
        "account",
        "entity",
        "resource_id",
        "unit",
        "quantity",
        "lines",
        "corrections",
    ]
    # Exact raw quantities whatever --units says.
    assert (
        result.stdout
        == invoke(
            url, env, "report", "--group", "resource", "--format", "csv", "--units", "iec"
        ).stdout
    )
    found = {
        (r["period"], r["account"], r["entity"], r["resource_id"], r["unit"]): Decimal(
            r["quantity"]
        )
        for r in rows
        if Decimal(r["quantity"]) != 0
    }
    assert found == expected(engine, "day", ("account", "entity", "resource_id", "unit"))


class ChartParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.bars: list[dict[str, str | None]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.append((tag, values))
        if tag == "rect" and values.get("class") == "bar":
            self.bars.append(values)


def bars(page: str) -> tuple[ChartParser, dict[tuple[str, ...], dict[str, str | None]]]:
    parser = ChartParser()
    parser.feed(page)
    found = {
        (
            b["data-period"] or "",
            b["data-series"] or "",
            b["data-entity"] or "",
            b["data-unit"] or "",
        ): b
        for b in parser.bars
    }
    assert len(found) == len(parser.bars)
    return parser, found


def test_html_bars_are_the_lines_per_account_entity_and_unit(
    scenario: tuple[str, Engine], env: dict[str, str], tmp_path: Path
) -> None:
    url, engine = scenario
    out = tmp_path / "report.html"
    result = invoke(url, env, "report", "--by", "hour", "--format", "html", "-o", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    page = out.read_text(encoding="utf-8")
    parser, found = bars(page)
    got = {k: Decimal(b["data-quantity"] or "") for k, b in found.items()}
    columns = ("account", "entity", "unit")
    assert {k: v for k, v in got.items() if v != 0} == expected(engine, "hour", columns)
    # A correction that cancels an hour is still there, marked.
    cancelled = found[("2016-12-12T16:00:00.000Z", "acme", "vm", "second")]
    assert (cancelled["data-quantity"], cancelled["data-corrections"]) == ("0.000", "1")
    assert "stroke-dasharray" in cancelled
    # One colour per account in every chart.
    colours = defaultdict(set)
    for bar in parser.bars:
        colours[bar["data-series"]].add(bar["fill"])
    assert all(len(c) == 1 for c in colours.values()) and len(colours) == 2
    # The header: period, filters, database, when.
    assert "2016-12-12 14:00 to 2016-12-12 17:00" in page and url.split("://")[0] in page
    # Self-contained: nothing is fetched.
    assert not [tag for tag, attrs in parser.tags if "src" in attrs or "href" in attrs]
    assert {tag for tag, _ in parser.tags}.isdisjoint({"script", "link", "img", "iframe"})


def test_html_charts_follow_the_group(scenario: tuple[str, Engine], env: dict[str, str]) -> None:
    url, _ = scenario
    page = invoke(url, env, "report", "--group", "offering", "--format", "html").stdout
    _, found = bars(page)
    assert {(series, entity) for _, series, entity, _ in found} == {
        ("medium", "vm"),
        ("large", "vm"),
        ("-", "ip"),
    }


def test_html_of_an_empty_database(sqlite_url: str, env: dict[str, str]) -> None:
    migrated(sqlite_url).dispose()
    result = invoke(sqlite_url, env, "report", "--format", "html")
    assert result.exit_code == 0
    assert "No usage lines." in result.stdout and "<rect" not in result.stdout


def test_report_needs_a_migrated_database(sqlite_url: str, env: dict[str, str]) -> None:
    result = invoke(sqlite_url, env, "report")
    assert result.exit_code == 1
    assert "metering db upgrade" in result.stderr


def test_dry_run_lines_in_every_format() -> None:
    hour = to_ms(t("2016-12-12T15:00Z"))
    lines = [
        Line("acme", "vm", "vm-1", "medium", "second", hour, Decimal("2700"), "running"),
        Line("acme", "ip", "1.2.3.4", "", "byte", hour, Decimal("500"), "measure"),
    ]
    table = render_lines(lines, "table")
    # The lines exact, their totals for people.
    assert "2700.000" in table and "500.000" in table
    assert "acme     vm      0 h 45 min" in table and "acme     ip      < 0.001 GB" in table
    rows = list(csv.DictReader(io.StringIO(render_lines(lines, "csv"))))
    assert [r["quantity"] for r in rows] == ["2700.000", "500.000"]
    objects = [json.loads(s) for s in render_lines(lines, "json").splitlines()]
    assert [o["type"] for o in objects] == ["line", "line", "total", "total"]


def test_dry_run_cli_csv(sqlite_url: str, env: dict[str, str]) -> None:
    engine = migrated(sqlite_url)
    insert_events(engine, [resource("e1", "create", "2016-12-12T14:15:00Z", offering="medium")])
    result = invoke(
        sqlite_url, env, "run", "--now", "2016-12-12T16:00Z", "--dry-run", "--format", "csv"
    )
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["period_start"], r["quantity"]) for r in rows] == [
        ("2016-12-12T14:00:00.000Z", "2700.000")
    ]
    assert billed(engine) == {}


def test_subprocess(sqlite_url: str, env: dict[str, str], tmp_path: Path) -> None:
    engine = migrated(sqlite_url)
    make_scenario(engine, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "metering", "report", "--by", "month", "--format", "json"],
        env={**os.environ, **env, "METERING_DATABASE_URL": sqlite_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    columns = ("account", "entity", "offering", "unit")
    assert reported(done.stdout, columns) == expected(engine, "month", columns)


def test_written_after_lists_what_later_runs_wrote(
    scenario: tuple[str, Engine], env: dict[str, str]
) -> None:
    """The stop of 15:30 arrived after the first run: an invoice cut after it needs the
    second run's lines, the late corrections told apart from the new hour."""
    url, engine = scenario
    args = ("report", "--by", "hour", "--group", "resource", "--format", "json")
    after_run = invoke(url, env, *args, "--written-after", FIRST_RUN)
    assert after_run.exit_code == 0, after_run.output
    rows = [json.loads(s) for s in after_run.stdout.splitlines()]
    usage = {
        (r["period"][11:13], r["resource_id"], r["quantity"], r["correction"])
        for r in rows
        if r["type"] == "usage"
    }
    assert usage == {
        ("15", "vm-1", "-1800.000", True),
        ("16", "vm-1", "-3600.000", True),
        ("17", "vm-2", "3600.000", False),
    }
    with engine.connect() as conn:
        cut = conn.execute(
            select(runs.c.finished_at).where(runs.c.run_id == FIRST_RUN)
        ).scalar_one()
    # The same lines by the time the invoice was cut; nothing after the last run.
    after_time = invoke(url, env, *args, "--written-after", iso(cut) or "")
    assert after_time.stdout == after_run.stdout
    assert reported(invoke(url, env, *args, "--written-after", SECOND_RUN).stdout, ()) == {}
    table = invoke(url, env, "report", "--by", "hour", "--written-after", FIRST_RUN).stdout
    head, *_ = table.splitlines()
    assert head.split()[-1] == "correction"
    assert [s.split()[-1] for s in table.splitlines()[2:5]] == ["yes", "yes", "no"]
    as_csv = invoke(url, env, *args[:-1], "csv", "--written-after", FIRST_RUN).stdout
    assert [r["correction"] for r in csv.DictReader(io.StringIO(as_csv))] == ["yes", "yes", "no"]
    unknown = invoke(url, env, *args, "--written-after", "s-no-such-run")
    assert unknown.exit_code == 1 and "no run 's-no-such-run'" in unknown.stderr


def test_account_x_offering_totals_of_a_resized_vm(
    database_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    """Resized at 01:30: medium 1800 s + large 1800 s in that hour, never 3600 s of one."""
    engine = migrated(database_url)
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T00:00:00Z", offering="medium"),
            resource("u", "update", "2016-12-12T01:30:00Z", offering="large"),
            resource("s", "stop", "2016-12-12T03:00:00Z"),
            resource(
                "v",
                "create",
                "2016-12-12T00:00:00Z",
                entity="volume",
                resource_id="d1",
                offering="ssd-20g",
            ),
        ],
    )
    run(engine, "2016-12-12T04:00:00Z", tmp_path)
    url = database_url
    result = invoke(url, env, "report", "--group", "account,offering", "--format", "json")
    totals = {
        (r["account"], r["entity"], r["offering"]): r["quantity"]
        for r in map(json.loads, result.stdout.splitlines())
        if r["type"] == "total"
    }
    assert totals == {
        ("acme", "vm", "medium"): "5400.000",
        ("acme", "vm", "large"): "5400.000",
        ("acme", "volume", "ssd-20g"): "10800.000",  # hours 00-02 are closed at 04:00
    }
    hourly = invoke(url, env, "report", "--by", "hour", "--group", "offering", "--format", "json")
    one_thirty = {
        r["offering"]: r["quantity"]
        for r in map(json.loads, hourly.stdout.splitlines())
        if r["type"] == "usage" and r["period"].startswith("2016-12-12T01") and r["entity"] == "vm"
    }
    assert one_thirty == {"medium": "1800.000", "large": "1800.000"}
    table = invoke(url, env, "report", "--group", "account,offering").stdout
    assert "acme     vm      large     second  1 h 30 min" in table
    assert "acme     volume  ssd-20g   second  3 h 00 min" in table
