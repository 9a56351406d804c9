"""`metering run` on the command line: exit codes, dry-run output formats, --help, and
the one summary log line per run."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, select

from metering.cli import main
from metering.db import make_engine
from metering.store.schema import usage_lines
from tests.support import insert_events, measure, migrated, resource

NOW = "2016-12-12T13:30:00Z"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No user config leaks in; the lock file lives in the test's directory."""
    return {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "METERING_CONFIG": "",
        "METERING_LOCK_FILE": str(tmp_path / "metering.lock"),
    }


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = migrated(database_url)
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T10:15:00Z", offering="medium"),
            resource("p", "stop", "2016-12-12T12:45:00Z"),
            resource("c2", "create", "2016-12-12T11:00:00Z", account="zeta", resource_id="v2"),
            measure("m", 1001, "2016-12-12T11:59:30Z", "2016-12-12T12:00:30Z"),
        ],
    )
    try:
        yield engine
    finally:
        engine.dispose()


def cli(url: str, env: dict[str, str], *args: str) -> Result:
    runner = CliRunner()
    return runner.invoke(
        main,
        ["--log-format", "json", "--database-url", url, "run", *args],
        env=env,
        catch_exceptions=False,
    )


def log_lines(output: str) -> list[dict[str, Any]]:
    found = []
    for text in output.splitlines():
        if text.startswith("{"):
            found.append(json.loads(text))
    return found


def written(engine: Engine) -> list[tuple[Any, ...]]:
    c = usage_lines.c
    query = select(
        c.account, c.entity, c.resource_id, c.offering, c.unit, c.period_start, c.quantity
    )
    with engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(query))


def test_dry_run_formats_match_the_lines_written(
    engine: Engine, database_url: str, env: dict[str, str]
) -> None:
    outputs = {}
    for fmt in ("table", "json", "csv"):
        result = cli(database_url, env, "--now", NOW, "--dry-run", "--format", fmt)
        assert result.exit_code == 0, result.output
        outputs[fmt] = result.stdout
    assert written(engine) == []
    assert cli(database_url, env, "--now", NOW).exit_code == 0
    lines = written(engine)
    assert len(lines) == 7

    def as_tuple(r: dict[str, str]) -> tuple[Any, ...]:
        from tests.support import t

        return (
            r["account"],
            r["entity"],
            r["resource_id"],
            r["offering"],
            r["unit"],
            t(r["period_start"]),
            Decimal(r["quantity"]),
        )

    rows = [json.loads(x) for x in outputs["json"].splitlines()]
    assert sorted(as_tuple(r) for r in rows if r["type"] == "line") == lines
    totals = {
        (r["account"], r["entity"], r["unit"]): Decimal(r["quantity"])
        for r in rows
        if r["type"] == "total"
    }
    assert totals == {
        ("acme", "vm", "second"): Decimal("9000.000"),
        ("acme", "ip", "byte"): Decimal("1001.000"),
        ("zeta", "vm", "second"): Decimal("7200.000"),
    }
    parsed = list(csv.DictReader(io.StringIO(outputs["csv"])))
    assert sorted(as_tuple(r) for r in parsed) == lines
    table = outputs["table"].splitlines()
    assert table[0].split() == [
        "account",
        "entity",
        "resource_id",
        "offering",
        "unit",
        "period_start",
        "quantity",
    ]
    body = [x.split() for x in table[2 : 2 + len(lines)]]
    assert sorted(
        (
            r[0],
            r[1],
            r[2],
            *((r[3], r[4], r[5], r[6]) if len(r) == 7 else ("", r[3], r[4], r[5])),
        )
        for r in body
    ) == sorted(
        (a, e, rid, o, u, h.strftime("%Y-%m-%dT%H:%M:%S.000Z"), f"{q:.3f}")
        for a, e, rid, o, u, h, q in lines
    )
    assert "totals per account and entity:" in outputs["table"]
    assert "acme     vm      2 h 30 min" in outputs["table"]
    assert "zeta     vm      2 h 00 min" in outputs["table"]


def test_nothing_to_do_exits_0(engine: Engine, database_url: str, env: dict[str, str]) -> None:
    assert cli(database_url, env, "--now", NOW).exit_code == 0
    again = cli(database_url, env, "--now", NOW)
    assert again.exit_code == 0
    assert any(x["event"] == "nothing_to_do" for x in log_lines(again.stderr))
    early = cli(database_url, env, "--now", "2016-12-12T11:00:00Z")
    assert early.exit_code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--now", "yesterday"],
        ["--now", NOW, "--until", "2016-12-12T14:00:00Z"],
        ["--now", NOW, "--since", "2016-12-12T13:00:00Z"],
        ["--now", NOW, "--format", "xml", "--dry-run"],
        ["--now", NOW, "--grace", "soon"],
    ],
)
def test_bad_usage_exits_2(
    engine: Engine, database_url: str, env: dict[str, str], args: list[str]
) -> None:
    result = cli(database_url, env, *args)
    assert result.exit_code == 2, result.output
    assert written(engine) == []


def test_schema_not_at_head_exits_1_naming_the_upgrade(tmp_path: Path, env: dict[str, str]) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    make_engine(url).dispose()
    result = cli(url, env, "--now", NOW)
    assert result.exit_code == 1
    assert "metering db upgrade" in result.output


def test_help_has_an_example(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["run", "--help"], env=env)
    assert result.exit_code == 0
    assert "Example" in result.output
    assert "metering run --dry-run" in result.output


def test_one_summary_line_per_run(engine: Engine, database_url: str, env: dict[str, str]) -> None:
    insert_events(engine, [measure("bad", -1, "2016-12-12T10:00:00Z", "2016-12-12T10:10:00Z")])
    insert_events(engine, [resource("x", "stop", "2016-12-12T10:00:00Z", resource_id="lost")])
    result = cli(database_url, env, "--now", NOW)
    assert result.exit_code == 0
    (summary,) = [x for x in log_lines(result.stderr) if x["event"] == "run_finished"]
    assert summary["run_id"] == "sstart-20161212T13-v0"
    assert summary["window_to"] == "2016-12-12T13:00:00.000Z"
    assert summary["events_read"] == 6
    assert summary["lines_written"] == 7
    assert summary["corrections"] == 0
    assert summary["rejected"] == 1
    assert summary["anomalies"] == 1
    assert isinstance(summary["duration_ms"], int)
    assert "window_from" in summary
    insert_events(
        engine, [resource("late", "stop", "2016-12-12T11:30:00Z", account="zeta", resource_id="v2")]
    )
    later = cli(database_url, env, "--now", "2016-12-12T15:30:00Z")
    runs = [x for x in log_lines(later.stderr) if x["event"] == "run_finished"]
    assert [(x["window_from"], x["window_to"]) for x in runs] == [
        ("2016-12-12T13:00:00.000Z", "2016-12-12T15:00:00.000Z")
    ]
    assert runs[0]["corrections"] == 2


def test_real_process(engine: Engine, database_url: str, env: dict[str, str]) -> None:
    """Not a TTY: JSON log lines on stderr; the database URL from the environment."""
    full_env = {**os.environ, **env, "METERING_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "metering", "run", "--now", NOW],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (summary,) = [x for x in log_lines(done.stderr) if x["event"] == "run_finished"]
    assert summary["lines_written"] == len(written(engine)) == 7
    again = subprocess.run(
        [sys.executable, "-m", "metering", "run", "--now", "2016-12-12T10:00:00Z", "--until", "x"],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 2


@pytest.mark.mariadb
def test_a_run_says_goodbye_on_every_connection(mariadb_url: str, env: dict[str, str]) -> None:
    """Each connection a run opens (the lock's, its own, the side scan's) is closed
    with the protocol's goodbye, also when the run fails: a connection cut by the
    process's exit is logged by MariaDB as aborted and counted in Aborted_clients."""
    engine = migrated(mariadb_url)
    insert_events(engine, [resource("c", "create", "2016-12-12T10:15:00Z", offering="m")])
    full_env = {**os.environ, **env, "METERING_DATABASE_URL": mariadb_url}

    def aborted() -> int:
        with engine.connect() as conn:
            row = conn.exec_driver_sql("SHOW GLOBAL STATUS LIKE 'Aborted_clients'").one()
        return int(row[1])

    def metering(*args: str) -> int:
        return subprocess.run(
            [sys.executable, "-m", "metering", *args],
            env=full_env,
            capture_output=True,
            timeout=120,
            check=False,
        ).returncode

    try:
        before = aborted()
        assert metering("run", "--now", NOW) == 0
        assert metering("run", "--now", "2016-12-12T10:00:00Z", "--until", "x") == 2
        assert metering("status") == 0
        assert aborted() == before
    finally:
        engine.dispose()
