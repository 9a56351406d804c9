"""One grammar across commands: --format is the output format, --output/-o a file,
--limit, table/csv/json for every listing, usage errors exit 2 in one shape, old
spellings still work with a warning, NO_COLOR, shell completion."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, func, select

from metering import logs
from metering.cli import main
from metering.store.schema import usage_events, usage_lines
from tests.support import migrated, read_terminal
from tests.test_report import FIRST_RUN, SECOND_RUN, invoke, make_scenario

METERING = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "metering")


@pytest.fixture
def scenario(database_url: str, tmp_path: Path) -> tuple[str, Engine]:
    engine = migrated(database_url)
    make_scenario(engine, tmp_path)
    return database_url, engine


def errors(result: Result) -> list[dict[str, Any]]:
    """The log lines of a usage error: the only shape there is."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(e["event"], e["exit_code"]) for e in lines] == [("failed", 2)]
    return lines


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_usage_errors_have_one_shape(scenario: tuple[str, Engine], env: dict[str, str]) -> None:
    url, engine = scenario
    lines = count(engine, usage_lines)
    cases = {
        ("report", "--bogus"): "No such option '--bogus'",
        ("report", "--by", "week"): "'week' is not one of",
        ("report", "--since", "2016-12-13", "--until", "2016-12-12"): "must be before --until",
        ("report", "--since", "2016-12-12", "--until", "2016-12-12"): "must be before --until",
        ("rejected", "--since", "yesterday"): "not an ISO 8601 time",
        ("run", "--since", "2016-12-12T15:00Z", "--until", "2016-12-12T14:00Z"): "before",
        ("run", "--now", "2016-12-12T19:00Z", "--format", "csv"): "--format goes with --dry-run",
        ("run", "--now", "2016-12-12T19:00Z", "-o", "x.csv"): "--output goes with --dry-run",
        ("status", "--limit", "-1"): "--limit",
    }
    for args, message in cases.items():
        [error] = errors(invoke(url, env, *args))
        assert message in error["error"], (args, error)
        assert error["help"] == f"metering {args[0]} --help"
    # A refused run wrote nothing.
    assert count(engine, usage_lines) == lines


def test_usage_error_of_the_group_through_the_executable(sqlite_url: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [METERING, "--log-format", "xml", "status"],
        env={**os.environ, "METERING_CONFIG": "", "METERING_DATABASE_URL": sqlite_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    [error] = [json.loads(line) for line in done.stderr.splitlines()]
    assert "'xml' is not one of" in error["error"] and error["help"] == "metering --help"
    assert "Usage:" not in done.stderr


def test_every_listing_in_table_csv_and_json(
    scenario: tuple[str, Engine], env: dict[str, str], tmp_path: Path
) -> None:
    url, _ = scenario
    for command in (("runs",), ("rejected",), ("report",)):
        as_json = [
            json.loads(s)
            for s in invoke(url, env, *command, "--format", "json").stdout.splitlines()
        ]
        out = tmp_path / f"{command[0]}.csv"
        assert invoke(url, env, *command, "--format", "csv", "-o", str(out)).stdout == ""
        as_csv = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
        listed = [o for o in as_json if o.get("type", "usage") == "usage"]
        assert len(as_csv) == len(listed) > 0, command
        key = {"runs": "run_id", "rejected": "event_id", "report": "quantity"}[command[0]]
        assert [r[key] for r in as_csv] == [str(o[key]) for o in listed]
        assert invoke(url, env, *command, "--format", "table").exit_code == 0
    runs = [json.loads(s) for s in invoke(url, env, "runs", "--format", "json").stdout.splitlines()]
    assert [r["run_id"] for r in runs] == [SECOND_RUN, FIRST_RUN]


def test_limit_everywhere_and_runs_the_old_spelling(
    scenario: tuple[str, Engine], env: dict[str, str]
) -> None:
    url, _ = scenario
    now = ("--now", "2016-12-12T19:00Z", "--format", "json")
    one = json.loads(invoke(url, env, "status", *now, "--limit", "1").stdout)
    assert [r["run_id"] for r in one["last_runs"]] == [SECOND_RUN]
    old = invoke(url, env, "status", *now, "--runs", "1")
    assert json.loads(old.stdout)["last_runs"] == one["last_runs"]
    [warning] = [json.loads(s) for s in old.stderr.splitlines()]
    assert warning["event"] == "deprecated_option" and "--limit" in warning["message"]
    for command in (("runs",), ("rejected",), ("check", "--now", "2016-12-12T19:00Z")):
        limited = invoke(url, env, *command, "--limit", "1", "--format", "json")
        assert limited.exit_code in (0, 1), limited.output


def test_reconcile_input_format_and_the_old_spellings(
    database_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    engine = migrated(database_url)
    inventory = tmp_path / "running.txt"  # no extension: the format must be told
    inventory.write_text("account,entity,resource_id,offering\nacme,vm,vm-1,small\n")
    base = (
        "reconcile",
        "--inventory",
        str(inventory),
        "--at",
        "2016-12-12T11:00Z",
        "--dry-run",
        "--lock-file",
        str(tmp_path / "lock"),
    )
    new = invoke(database_url, env, *base, "--input-format", "csv", "--format", "json")
    assert new.exit_code == 0, new.output
    assert json.loads(new.stdout)["events"][0]["resource_id"] == "vm-1"
    assert new.stderr == ""
    old = invoke(database_url, env, *base, "--format", "csv", "--output", "json")
    assert old.exit_code == 0, old.output
    assert old.stdout == new.stdout
    warnings = [json.loads(s) for s in old.stderr.splitlines()]
    assert [w["event"] for w in warnings] == ["deprecated_option", "deprecated_option"]
    assert "--input-format csv" in warnings[0]["message"]
    out = tmp_path / "plan.json"
    to_file = invoke(
        database_url, env, *base, "--input-format", "csv", "--format", "json", "-o", str(out)
    )
    assert to_file.stdout == "" and out.read_text(encoding="utf-8") == new.stdout
    assert count(engine, usage_events) == 0  # all dry runs


def test_help_lists_only_the_current_spellings() -> None:
    text = CliRunner().invoke(main, ["reconcile", "--help"]).output
    assert "--input-format" in text and "[table|json]" in text
    status = CliRunner().invoke(main, ["status", "--help"]).output
    assert "--limit" in status and "--runs" not in status


def test_no_color(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert logs.use_color(Terminal())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not logs.use_color(Terminal())

    def stderr_on_a_terminal(extra: dict[str, str]) -> bytes:
        master, slave = pty.openpty()
        inherited = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
        environ = {**inherited, "METERING_CONFIG": "", **extra}
        with subprocess.Popen(
            [METERING, "--database-url", sqlite_url, "status"],
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=slave,
        ) as proc:
            os.close(slave)
            output = read_terminal(master)
            proc.wait(timeout=60)
        return output

    # No database there: the error is logged on the terminal, in colour unless NO_COLOR.
    assert b"\x1b[" in stderr_on_a_terminal({})
    plain = stderr_on_a_terminal({"NO_COLOR": "1"})
    assert b"no database at" in plain and b"\x1b[" not in plain


def test_shell_completion_as_documented() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert 'eval "$(_METERING_COMPLETE=bash_source metering)"' in readme
    done = subprocess.run(
        [METERING],
        env={**os.environ, "_METERING_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "_metering_completion" in done.stdout
    words = subprocess.run(
        [METERING],
        env={
            **os.environ,
            "_METERING_COMPLETE": "bash_complete",
            "COMP_WORDS": "metering rep",
            "COMP_CWORD": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "report" in words.stdout
