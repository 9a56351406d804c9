"""`metering runs`, `metering runs show RUN_ID` and `metering rejected`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import Engine, func, select

from metering.store.schema import usage_lines
from metering.store.types import to_decimal
from tests.support import migrated
from tests.test_report import FIRST_RUN, SECOND_RUN, invoke, make_scenario


@pytest.fixture
def scenario(database_url: str, tmp_path: Path) -> tuple[str, Engine]:
    engine = migrated(database_url)
    make_scenario(engine, tmp_path)
    return database_url, engine


def json_lines(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json.loads(s) for s in result.stdout.splitlines()]


def test_runs_lists_newest_first(scenario: tuple[str, Engine], env: dict[str, str]) -> None:
    url, _ = scenario
    runs = json_lines(invoke(url, env, "runs", "--format", "json"))
    assert [r["run_id"] for r in runs] == [SECOND_RUN, FIRST_RUN]
    assert runs[0]["hours_from"] == "2016-12-12T17:00:00.000Z"
    assert (runs[0]["corrections"], runs[1]["rejected"], runs[1]["anomalies"]) == (2, 1, 1)
    assert [
        r["run_id"]
        for r in json_lines(invoke(url, env, "runs", "--limit", "1", "--format", "json"))
    ] == [SECOND_RUN]
    table = invoke(url, env, "runs").stdout.splitlines()
    assert table[0].split()[:3] == ["run_id", "kind", "status"]
    assert table[2].startswith(SECOND_RUN) and table[3].startswith(FIRST_RUN)


def test_runs_on_a_fresh_database(sqlite_url: str, env: dict[str, str]) -> None:
    migrated(sqlite_url).dispose()
    assert invoke(sqlite_url, env, "runs").stdout == "no runs yet\n"


def test_show_billed_corrected_rejected(scenario: tuple[str, Engine], env: dict[str, str]) -> None:
    url, engine = scenario
    [detail] = json_lines(invoke(url, env, "runs", "show", SECOND_RUN, "--format", "json"))
    assert detail["run"]["run_id"] == SECOND_RUN
    with engine.connect() as conn:
        c = usage_lines.c
        sums = {
            (a, e, u): to_decimal(q)
            for a, e, u, q in conn.execute(
                select(c.account, c.entity, c.unit, func.sum(c.quantity))
                .where(c.run_id == SECOND_RUN)
                .group_by(c.account, c.entity, c.unit)
            )
        }
    assert {
        (t["account"], t["entity"], t["unit"]): Decimal(t["quantity"]) for t in detail["totals"]
    } == sums
    # The late stop at 15:30 gives back time in the hours the first run billed.
    assert [
        (c["period_start"], c["resource_id"], c["quantity"]) for c in detail["corrections"]
    ] == [
        ("2016-12-12T15:00:00.000Z", "vm-1", "-1800.000"),
        ("2016-12-12T16:00:00.000Z", "vm-1", "-3600.000"),
    ]
    assert detail["corrections_total"] == 2
    assert detail["rejected"] == []

    [first] = json_lines(invoke(url, env, "runs", "show", FIRST_RUN, "--format", "json"))
    assert first["corrections"] == []
    assert sorted((r["category"], r["event_id"]) for r in first["rejected"]) == [
        ("anomaly", "e5"),
        ("rejected", "e4"),
    ]
    table = invoke(url, env, "runs", "show", SECOND_RUN, "--limit", "1").stdout
    assert "corrected: 2 lines" in table and "-0 h 30 min" in table
    assert "... 1 more" in table


def test_show_unknown_run(scenario: tuple[str, Engine], env: dict[str, str]) -> None:
    url, _ = scenario
    result = invoke(url, env, "runs", "show", "nope")
    assert result.exit_code == 1
    assert "no run 'nope'" in result.stderr


def test_rejected_filters_and_mark_reviewed(
    scenario: tuple[str, Engine], env: dict[str, str]
) -> None:
    url, _ = scenario
    found = json_lines(invoke(url, env, "rejected", "--format", "json"))
    assert [(r["category"], r["event_id"], r["run_id"]) for r in found] == [
        ("anomaly", "e5", FIRST_RUN),
        ("rejected", "e4", FIRST_RUN),
    ]
    assert found[0]["reason"] and found[0]["resource_id"] == "vm-9"
    only = json_lines(invoke(url, env, "rejected", "--category", "rejected", "--format", "json"))
    assert [r["event_id"] for r in only] == ["e4"]
    assert json_lines(invoke(url, env, "rejected", "--run", SECOND_RUN, "--format", "json")) == []
    assert (
        json_lines(invoke(url, env, "rejected", "--since", "2100-01-01T00:00Z", "--format", "json"))
        == []
    )

    marked = invoke(url, env, "rejected", "--limit", "1", "--mark-reviewed")
    assert marked.exit_code == 0 and "e5" in marked.stdout and "e4" not in marked.stdout
    left = json_lines(invoke(url, env, "rejected", "--unreviewed", "--format", "json"))
    assert [r["event_id"] for r in left] == ["e4"]
    everything = json_lines(invoke(url, env, "rejected", "--format", "json"))
    assert [r["reviewed"] for r in everything] == [True, False]
    table = invoke(url, env, "rejected").stdout
    assert "unknown kind 'bogus'" in table


def test_subprocesses(sqlite_url: str, env: dict[str, str], tmp_path: Path) -> None:
    engine = migrated(sqlite_url)
    make_scenario(engine, tmp_path)
    engine.dispose()

    def metering(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "metering", *args],
            env={**os.environ, **env, "METERING_DATABASE_URL": sqlite_url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    listed = metering("runs", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(s)["run_id"] for s in listed.stdout.splitlines()] == [SECOND_RUN, FIRST_RUN]
    shown = metering("runs", "show", SECOND_RUN)
    assert shown.returncode == 0 and f"run {SECOND_RUN}" in shown.stdout
    rejected = metering("rejected", "--format", "json")
    assert rejected.returncode == 0
    assert len(rejected.stdout.splitlines()) == 2
