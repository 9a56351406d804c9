"""The lock file and the lock-held outcome as operators see them: a lock file that
cannot be used is named with the fix (never taken for a held lock), and exit 75 -- the
normal outcome of overlapping cron runs -- is a warning of its own, not a failure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import filelock
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from metering.cli import main
from tests.support import insert_events, migrated, resource

NOW = "2016-12-12T13:30:00Z"
INVENTORY = b'{"entity": "vm", "account": "a", "resource_id": "v", "offering": "small"}\n'


@pytest.fixture
def url(database_url: str) -> str:
    engine = migrated(database_url)
    insert_events(engine, [resource("c", "create", "2016-12-12T10:15:00Z", offering="small")])
    engine.dispose()
    return database_url


def invoke(url: str, tmp_path: Path, *args: str) -> Result:
    env = {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "METERING_CONFIG": "",
        "METERING_LOCK_FILE": "",
        "METERING_DATABASE_URL": url,
    }
    return CliRunner().invoke(
        main, ["--log-format", "json", *args], env=env, input=INVENTORY, catch_exceptions=False
    )


def log_lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stderr.splitlines()]


def unusable_lock_files(tmp_path: Path) -> list[Path]:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    # /proc takes no new file: filelock retried until its timeout, reported as a held lock.
    return [directory, Path("/dev/null"), Path("/proc/metering.lock")]


@pytest.mark.parametrize(
    "command",
    [["run", "--now", NOW], ["reconcile", "--inventory", "-", "--at", NOW]],
    ids=["run", "reconcile"],
)
def test_an_unusable_lock_file_is_named_with_the_fix(
    url: str, tmp_path: Path, command: list[str]
) -> None:
    for lock_file in unusable_lock_files(tmp_path):
        result = invoke(url, tmp_path, *command, "--lock-file", str(lock_file))
        assert result.exit_code == 2, (lock_file, result.output)
        (line,) = log_lines(result)
        assert line["level"] == "error"
        assert f"lock file {lock_file}" in line["error"], line
        assert "--lock-file" in line["error"] and "METERING_LOCK_FILE" in line["error"], line
        assert "Errno" not in line["error"]


def test_a_held_file_lock_is_a_warning_of_its_own(url: str, tmp_path: Path) -> None:
    lock_file = tmp_path / "held.lock"
    with filelock.FileLock(str(lock_file)):
        result = invoke(url, tmp_path, "run", "--now", NOW, "--lock-file", str(lock_file))
    assert result.exit_code == 75, result.output
    (line,) = log_lines(result)
    assert line["event"] == "lock_held" and line["level"] == "warning", line
    assert str(lock_file) in line["message"]
    assert line["exit_code"] == 75


@pytest.mark.mariadb
def test_a_held_database_lock_is_a_warning_of_its_own(mariadb_url: str, tmp_path: Path) -> None:
    migrated(mariadb_url).dispose()
    holder = sa.create_engine(mariadb_url)
    try:
        with holder.connect() as conn:
            got = conn.execute(sa.text("SELECT GET_LOCK(CONCAT('metering:', DATABASE()), 0)"))
            assert got.scalar() == 1
            result = invoke(
                mariadb_url, tmp_path, "run", "--now", NOW, "--lock-file", str(tmp_path / "l")
            )
    finally:
        holder.dispose()
    assert result.exit_code == 75, result.output
    (line,) = log_lines(result)
    assert line["event"] == "lock_held" and line["level"] == "warning", line
    assert "database lock" in line["message"]
