"""metering check: each sanity check finds its problem, on SQLite and MariaDB."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import Engine, delete, insert, update

from metering.check import CheckReport, execute
from metering.cli import main
from metering.store.schema import rejected_events, resource_state, runs, usage_lines
from tests.support import insert_events, migrated, resource, run, t

NOW = t("2016-12-12T15:00:00Z")


def found(engine: Engine, **options: int) -> dict[str, int]:
    report: CheckReport = execute(engine, now=NOW, **options)
    return {r.name: r.found for r in report.results if r.found}


def line(run_id: str, resource_id: str, hour: str, seconds: int, offering: str = "small") -> dict:
    return {
        "run_id": run_id,
        "account": "acme",
        "entity": "vm",
        "resource_id": resource_id,
        "offering": offering,
        "unit": "second",
        "period_start": t(hour),
        "quantity": seconds,
        "source": "running",
    }


def test_each_check_finds_its_problem(database_url: str, tmp_path: Path) -> None:
    engine = migrated(database_url)
    insert_events(
        engine,
        [
            resource("c1", "create", "2016-12-12T10:00:00Z", offering="small"),
            resource("c2", "create", "2016-12-12T10:00:00Z", resource_id="vm-2"),
            resource("d2", "destroy", "2016-12-12T11:30:00Z", resource_id="vm-2"),
            resource("bad", "stop", "2016-12-12T10:10:00Z", resource_id="vm-3"),
        ],
    )
    outcome = run(engine, "2016-12-12T14:00:00Z", tmp_path)
    run_id = outcome.runs[0].run_id
    # A stop without start is an anomaly the runs recorded; once reviewed, the store is sane.
    assert found(engine) == {"unreviewed-rejections": 1}
    with engine.begin() as conn:
        conn.execute(update(rejected_events).values(reviewed=True))
    assert found(engine) == {}

    # vm-1 has run since 10:00 with no later event: stale once that is old enough.
    assert found(engine, stale_days=1) == {}
    report = execute(engine, now=NOW + timedelta(days=2), stale_days=1)
    stale = next(r for r in report.results if r.name == "stale-running")
    assert [i["resource_id"] for i in stale.items] == ["vm-1"]
    with engine.begin() as conn:
        # A snapshot listed it yesterday: alive, not stale.
        conn.execute(
            update(resource_state)
            .where(resource_state.c.resource_id == "vm-1")
            .values(last_seen_at=NOW + timedelta(days=1))
        )
    assert found(engine) == {}
    assert "stale-running" not in {
        r.name
        for r in execute(engine, now=NOW + timedelta(days=2), stale_days=1).results
        if r.found
    }

    with engine.begin() as conn:
        # Destroyed at 11:30: the 11:00 hour may bill, 12:00 may not.
        conn.execute(insert(usage_lines), [line(run_id, "vm-2", "2016-12-12T12:00:00Z", 60)])
    assert found(engine) == {"billed-after-destroy": 1}
    with engine.begin() as conn:
        # A correction cancels it: what counts is the sum.
        conn.execute(insert(usage_lines), [line(run_id, "vm-2", "2016-12-12T12:00:00Z", -60)])
        # vm-1 is billed 3600 s in 12:00 already; 1 s more under another offering is too much.
        conn.execute(
            insert(usage_lines), [line(run_id, "vm-1", "2016-12-12T12:00:00Z", 1, "large")]
        )
    assert found(engine) == {"over-an-hour": 1}
    with engine.begin() as conn:
        conn.execute(
            insert(usage_lines), [line(run_id, "vm-1", "2016-12-12T12:00:00Z", -1, "large")]
        )
        conn.execute(delete(runs).where(runs.c.run_id == run_id))
    report = execute(engine, now=NOW)
    orphans = next(r for r in report.results if r.name == "lines-without-run")
    assert orphans.found == 1 and orphans.items[0]["run_id"] == run_id
    assert not report.ok


def test_cli_check_json_and_exit_codes(sqlite_url: str, tmp_path: Path) -> None:
    engine = migrated(sqlite_url)
    runner = CliRunner()
    args = ["--database-url", sqlite_url, "check", "--now", "2016-12-12T15:00:00Z"]
    clean = runner.invoke(main, [*args, "--format", "json"])
    assert clean.exit_code == 0, clean.output
    data = json.loads(clean.output)
    assert data["ok"] is True and len(data["checks"]) == 6
    insert_events(engine, [resource("s", "stop", "2016-12-12T10:00:00Z")])
    run(engine, "2016-12-12T12:00:00Z", tmp_path)
    problem = runner.invoke(main, [*args, "--format", "json"])
    assert problem.exit_code == 1
    data = json.loads(problem.output)
    assert data["ok"] is False
    (unreviewed,) = [c for c in data["checks"] if not c["ok"]]
    assert unreviewed["name"] == "unreviewed-rejections"
    assert unreviewed["items"][0]["reason"] == "stop without start"
    table = runner.invoke(main, args)
    assert table.exit_code == 1 and "PROBLEM  unreviewed-rejections" in table.output
