"""`metering status`: what it reports, and its exit codes as a health check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from sqlalchemy import text

from metering import migrate
from metering.cli import main
from tests.support import insert_events, migrated, resource, run
from tests.test_report import make_scenario


def invoke(url: str, env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(
        main,
        ["--log-format", "json", "status", *args],
        env={**env, "METERING_DATABASE_URL": url},
        catch_exceptions=False,
    )


def as_json(result: Result) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_never_migrated(database_url: str, env: dict[str, str]) -> None:
    if database_url.startswith("sqlite"):
        # An empty database; a missing file is refused (tests/test_database_open.py).
        Path(database_url.removeprefix("sqlite:///")).touch()
    result = invoke(database_url, env)
    assert result.exit_code == 1
    assert "empty (never migrated)" in result.stdout
    data = as_json(invoke(database_url, env, "--format", "json"))
    assert data["healthy"] is False
    assert data["schema"] == {"current": None, "head": migrate.head(), "at_head": False}
    assert data["watermark"] is None


def test_schema_not_at_head_is_reported_not_a_crash(sqlite_url: str, env: dict[str, str]) -> None:
    engine = migrated(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000_older'"))
    result = invoke(sqlite_url, env, "--max-lag", "2h")
    assert result.exit_code == 1
    assert "0000_older" in result.stdout and "metering db upgrade" in result.stdout


def test_fresh_database(database_url: str, env: dict[str, str]) -> None:
    migrated(database_url).dispose()
    plain = invoke(database_url, env, "--now", "2016-12-12T18:00Z")
    assert plain.exit_code == 0, plain.output
    assert "nothing billed yet" in plain.stdout and "last runs:     none yet" in plain.stdout
    check = invoke(database_url, env, "--now", "2016-12-12T18:00Z", "--max-lag", "2h")
    assert check.exit_code == 1
    assert "nothing was ever billed" in check.stdout


def test_current_and_lagging(database_url: str, env: dict[str, str], tmp_path: Path) -> None:
    engine = migrated(database_url)
    make_scenario(engine, tmp_path)  # billed until 18:00, last run at 18:45
    current = invoke(database_url, env, "--now", "2016-12-12T18:45Z", "--max-lag", "2h")
    assert current.exit_code == 0, current.output
    assert "health:        ok" in current.stdout
    data = as_json(invoke(database_url, env, "--now", "2016-12-12T18:45Z", "--format", "json"))
    assert data["watermark"]["billed_until"] == "2016-12-12T18:00:00.000Z"
    assert data["watermark"]["last_event_id"] == 6
    assert (data["lag_seconds"], data["hours_behind"]) == (15 * 60, 0)
    assert data["counts"]["running_resources"] == 1  # vm-2; vm-1 was stopped
    assert data["counts"]["unreviewed_rejected"] == 1
    assert data["counts"]["unreviewed_anomalies"] == 1
    assert data["counts"]["events_unread"] == 0
    assert [r["run_id"] for r in data["last_runs"]] == [
        "s20161212T17-20161212T18-v1",
        "sstart-20161212T17-v0",
    ]
    assert data["last_runs"][1]["rejected"] == 1

    # Two hourly runs missed: 20:40 - 30 min grace is 2 h 10 min after 18:00.
    lagging = invoke(database_url, env, "--now", "2016-12-12T20:40Z", "--max-lag", "2h")
    assert lagging.exit_code == 1
    assert "2 h 10 min behind" in lagging.stdout
    data = as_json(
        invoke(
            database_url, env, "--now", "2016-12-12T20:40Z", "--max-lag", "2h", "--format", "json"
        )
    )
    assert (data["healthy"], data["hours_behind"], data["lag_seconds"]) == (False, 2, 7800)
    assert invoke(database_url, env, "--now", "2016-12-12T20:40Z", "--max-lag", "3h").exit_code == 0


def test_unread_events_and_reviewed_findings(
    sqlite_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    engine = migrated(sqlite_url)
    make_scenario(engine, tmp_path)
    insert_events(engine, [resource("late", "start", "2016-12-12T18:10:00Z", resource_id="vm-3")])
    marked = CliRunner().invoke(
        main,
        ["rejected", "--category", "anomaly", "--mark-reviewed"],
        env={**env, "METERING_DATABASE_URL": sqlite_url},
    )
    assert marked.exit_code == 0
    counts = as_json(invoke(sqlite_url, env, "--now", "2016-12-12T18:45Z", "--format", "json"))[
        "counts"
    ]
    assert (counts["events_unread"], counts["unreviewed_anomalies"]) == (1, 0)
    assert counts["unreviewed_rejected"] == 1


def test_grace_moves_the_lag(sqlite_url: str, env: dict[str, str], tmp_path: Path) -> None:
    engine = migrated(sqlite_url)
    insert_events(engine, [resource("e1", "create", "2016-12-12T14:15:00Z")])
    run(engine, "2016-12-12T16:00:00Z", tmp_path)  # billed until 15:00
    args = ("--now", "2016-12-12T17:10Z", "--format", "json")
    assert as_json(invoke(sqlite_url, env, *args))["lag_seconds"] == 100 * 60
    assert as_json(invoke(sqlite_url, env, *args, "--grace", "10m"))["lag_seconds"] == 120 * 60


def test_bad_max_lag_is_a_usage_error(sqlite_url: str, env: dict[str, str]) -> None:
    migrated(sqlite_url).dispose()
    assert invoke(sqlite_url, env, "--max-lag", "soon").exit_code == 2


def test_subprocess_health_check(sqlite_url: str, env: dict[str, str], tmp_path: Path) -> None:
    engine = migrated(sqlite_url)
    make_scenario(engine, tmp_path)
    engine.dispose()

    def status(now: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "metering", "status", "--now", now, "--max-lag", "2h"],
            env={**os.environ, **env, "METERING_DATABASE_URL": sqlite_url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert status("2016-12-12T19:00Z").returncode == 0
    late = status("2016-12-12T23:00Z")
    assert late.returncode == 1
    assert "unhealthy" in late.stderr and "FAILING" in late.stdout
