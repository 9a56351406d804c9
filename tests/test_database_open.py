"""Which database a command opens: only `db upgrade` creates one (and only the default
data directory), every other command refuses a missing SQLite file in one line, and
`status` and `db current` say which database they looked at, password masked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy.engine import make_url

from metering import migrate
from metering.cli import main
from metering.settings import mask_url
from tests.support import migrated

NOW = "2016-12-12T13:30:00Z"
INVENTORY = b'{"entity": "vm", "account": "a", "resource_id": "v", "offering": "small"}\n'


def invoke(env: dict[str, str], *args: str, stdin: bytes = b"") -> Result:
    return CliRunner().invoke(
        main, ["--log-format", "json", *args], env=env, input=stdin, catch_exceptions=False
    )


def log_lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stderr.splitlines()]


COMMANDS = [
    ["status"],
    ["status", "--format", "json"],
    ["report"],
    ["runs"],
    ["runs", "show", "r-1"],
    ["rejected"],
    ["check"],
    ["db", "current"],
    ["run", "--now", NOW],
    ["run", "--dry-run", "--now", NOW],
    ["ingest", "-"],
    ["reconcile", "--inventory", "-", "--at", NOW],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_only_db_upgrade_creates_a_database(
    tmp_path: Path, isolated_env: dict[str, str], command: list[str]
) -> None:
    missing = tmp_path / "nonexistent" / "dir" / "m.db"
    default = tmp_path / "data" / "metering" / "metering.db"
    for database, args in (
        (missing, ["--database-url", f"sqlite:///{missing}"]),
        (default, []),  # no setting at all: the default file
    ):
        result = invoke(isolated_env, *args, *command, stdin=INVENTORY)
        assert result.exit_code == 1, (command, result.output)
        assert result.stdout == ""
        (line,) = log_lines(result)
        assert line["error"] == (
            f"no database at sqlite:///{database}, run `metering db upgrade`"
        ), line
        assert not database.exists()
    assert not (tmp_path / "nonexistent").exists()
    assert not (tmp_path / "data").exists()


def test_db_upgrade_creates_the_default_database_and_its_directory(
    tmp_path: Path, isolated_env: dict[str, str]
) -> None:
    result = invoke(isolated_env, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "metering" / "metering.db").is_file()
    assert invoke(isolated_env, "status", "--now", NOW).exit_code == 0


def test_db_upgrade_creates_no_other_directory(
    tmp_path: Path, isolated_env: dict[str, str]
) -> None:
    missing = tmp_path / "nonexistent" / "dir" / "m.db"
    result = invoke(isolated_env, "--database-url", f"sqlite:///{missing}", "db", "upgrade")
    assert result.exit_code == 1, result.output
    (line,) = log_lines(result)
    assert f"directory {missing.parent} does not exist" in line["error"], line
    assert not (tmp_path / "nonexistent").exists()
    # In an existing directory the file is created.
    (tmp_path / "nonexistent" / "dir").mkdir(parents=True)
    assert (
        invoke(isolated_env, "--database-url", f"sqlite:///{missing}", "db", "upgrade").exit_code
        == 0
    )
    assert missing.is_file()


def test_status_and_db_current_show_the_database_masked(
    database_url: str, isolated_env: dict[str, str]
) -> None:
    migrated(database_url).dispose()
    env = {**isolated_env, "METERING_DATABASE_URL": database_url}
    shown = mask_url(database_url)
    password = make_url(database_url).password

    table = invoke(env, "status", "--now", NOW)
    assert f"database:      {shown}\n" in table.stdout, table.stdout
    as_json = json.loads(invoke(env, "status", "--now", NOW, "--format", "json").stdout)
    assert as_json["database"] == shown
    current = invoke(env, "db", "current")
    assert current.exit_code == 0
    assert current.stdout == f"{migrate.HEAD} (at head)\ndatabase: {shown}\n"
    for result in (table, current):
        assert not password or password not in result.output


def test_status_shows_the_database_of_an_empty_schema_too(
    database_url: str, isolated_env: dict[str, str]
) -> None:
    env = {**isolated_env, "METERING_DATABASE_URL": database_url}
    if database_url.startswith("sqlite"):
        Path(make_url(database_url).database or "").touch()  # an empty SQLite database
    result = invoke(env, "status", "--now", NOW)
    assert result.exit_code == 1
    assert f"database:      {mask_url(database_url)}\n" in result.stdout
    assert "empty (never migrated)" in result.stdout
    current = invoke(env, "db", "current")
    assert current.exit_code == 1
    assert f"database: {mask_url(database_url)}\n" in current.stdout
