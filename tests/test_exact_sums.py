"""Sums of usage lines are exact at any size, however SQLite stores the quantities.

SQLite has no decimal type: a quantity is stored as INTEGER, REAL or TEXT, and its
SUM of REAL or TEXT adds doubles. Lines here are written straight into the table in
each storage class; reports, `runs show`, `check` and the run's own diffs must see
the exact totals.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, insert

from metering.check import execute as check
from metering.cli import main
from metering.core.events import MAX_QUANTITY
from metering.store.schema import runs, usage_lines
from tests.support import insert_events, measure, migrated, resource, run, t

RUN_ID = "s20161212T10-20161212T11-v1"
HOUR = "2016-12-12 10:00:00.000"


def record_run(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(runs).values(
                run_id=RUN_ID,
                kind="scheduled",
                status="ok",
                clock=t("2016-12-12T11:30:00Z"),
                started_at=t("2016-12-12T11:30:00Z"),
                hours_from=t("2016-12-12T10:00:00Z"),
                hours_to=t("2016-12-12T11:00:00Z"),
                events_read=0,
                lines_written=0,
                corrections=0,
                rejected=0,
                anomalies=0,
            )
        )


def cli(url: str, *args: str) -> Any:
    result = CliRunner().invoke(main, ["--database-url", url, *args])
    return result


def grand_total(url: str) -> str:
    result = cli(url, "report", "--by", "month", "--format", "json")
    assert result.exit_code == 0, result.output
    (total,) = [
        o for o in map(json.loads, result.output.splitlines()) if o["type"] == "grand_total"
    ]
    return str(total["quantity"])


def run_total(url: str) -> str:
    result = cli(url, "runs", "show", RUN_ID, "--format", "json")
    assert result.exit_code == 0, result.output
    (total,) = json.loads(result.output)["totals"]
    return str(total["quantity"])


def test_a_report_over_300000_lines_is_exact(database_url: str) -> None:
    engine = migrated(database_url)
    record_run(engine)
    rows = [
        {
            "run_id": RUN_ID,
            "account": "acme",
            "entity": "vm",
            "resource_id": f"vm-{i}",
            "offering": "small",
            "unit": "second",
            "period_start": t("2016-12-12T10:00:00Z"),
            "quantity": Decimal("3599.999"),
            "source": "running",
        }
        for i in range(300_000)
    ]
    with engine.begin() as conn:
        conn.execute(insert(usage_lines), rows)
    assert grand_total(database_url) == "1079999700.000"
    assert run_total(database_url) == "1079999700.000"
    table = cli(database_url, "report", "--by", "month")
    assert "299999 h 55 min" in table.output
    raw = cli(database_url, "report", "--by", "month", "--units", "raw")
    assert "1079999700 s" in raw.output


# -- SQLite: each storage class -------------------------------------------------------------


def quantities_as_text(engine: Engine) -> None:
    """usage_lines.quantity with TEXT affinity: SQLite keeps every digit as written."""
    with engine.begin() as conn:
        ddl = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'usage_lines'"
        ).scalar_one()
        conn.exec_driver_sql("DROP TABLE usage_lines")
        conn.exec_driver_sql(re.sub(r"quantity NUMERIC\(\d+, 3\)", "quantity TEXT", ddl))


def write_raw(engine: Engine, values: list[Any], resource_id: str = "vm-1") -> None:
    """Lines of one resource and hour, each value bound as is (int, float or str)."""
    with engine.begin() as conn:
        for value in values:
            conn.exec_driver_sql(
                "INSERT INTO usage_lines (run_id, account, entity, resource_id, offering, unit,"
                " period_start, quantity, source)"
                " VALUES (?, 'acme', 'vm', ?, 'small', 'second', ?, ?, 'running')",
                (RUN_ID, resource_id, HOUR, value),
            )


STORED: dict[str, tuple[list[Any], str]] = {
    "integer": ([3600, -1200, 9007199254740993, 7], "9007199254743400.000"),
    "real": ([4503599627370.496, 4503599627370.495, 0.007, -0.5], "9007199254740.498"),
    "text": (
        [
            "98765432109876543.210",
            "0.001",
            "-0.500",
            "12.5",
            "7",
            "-12345678901234567.89",
            ".3",
            "1.5e+3",  # a REAL written into a TEXT column reads back so
            " 2.25 ",
        ],
        "86419753208643496.871",
    ),
}


@pytest.mark.parametrize("storage", sorted(STORED))
def test_sums_are_exact_whatever_sqlite_stores(sqlite_url: str, storage: str) -> None:
    engine = migrated(sqlite_url)
    if storage == "text":
        quantities_as_text(engine)
    record_run(engine)
    values, total = STORED[storage]
    write_raw(engine, values)
    with engine.connect() as conn:
        kinds = conn.exec_driver_sql("SELECT DISTINCT typeof(quantity) FROM usage_lines")
        assert kinds.scalars().all() == [storage]
    assert Decimal(total) == sum((Decimal(str(v)) for v in values), Decimal(0))
    assert grand_total(sqlite_url) == total
    assert run_total(sqlite_url) == total


def test_check_compares_exact_sums(sqlite_url: str) -> None:
    engine = migrated(sqlite_url)
    quantities_as_text(engine)
    record_run(engine)
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T09:00:00Z"),
            resource("d", "destroy", "2016-12-12T09:30:00Z"),
        ],
    )
    # As doubles the two cancel out; exactly, 0.001 s is billed after the destroy.
    write_raw(engine, ["9007199254740993.001", "-9007199254740993.000"])
    # 3600 s in all: not more than the hour has, whatever doubles make of it.
    write_raw(engine, ["1800.1", "1799.9", *["0.001"] * 10, "-0.010"], resource_id="vm-2")
    report = check(engine, now=t("2016-12-12T12:00:00Z"))
    found = {r.name: r.items for r in report.results if r.found}
    assert found == {
        "billed-after-destroy": [
            {
                "account": "acme",
                "entity": "vm",
                "resource_id": "vm-1",
                "hour": "2016-12-12T10:00:00.000Z",
                "seconds": "0.001",
                "destroyed_at": "2016-12-12T09:30:00.000Z",
            }
        ]
    }


def test_a_backfill_sees_the_exact_measures_billed(sqlite_url: str, tmp_path: Path) -> None:
    """Measures of one hour beyond 2^53 bytes in all, billed as TEXT: the backfill finds
    nothing to change."""
    engine = migrated(sqlite_url)
    quantities_as_text(engine)
    huge = 2**53 + 1
    amounts = [MAX_QUANTITY] * 9 + [huge - 9 * MAX_QUANTITY]
    insert_events(
        engine,
        [
            measure(f"m{i}", amount, "2016-12-12T10:00:00Z", "2016-12-12T10:30:00Z")
            for i, amount in enumerate(amounts)
        ],
    )
    run(engine, "2016-12-12T12:00:00Z", tmp_path)
    with engine.begin() as conn:
        # What the run wrote, every digit kept (metering passes SQLite a double today).
        conn.exec_driver_sql("UPDATE usage_lines SET quantity = ?", (f"{huge}.000",))
    dry = run(
        engine, "2016-12-12T12:00:00Z", tmp_path, since=t("2016-12-12T10:00:00Z"), dry_run=True
    )
    assert dry.lines == []
