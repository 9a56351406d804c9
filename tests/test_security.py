"""Secrets and privileges: the database password never shows (logs, errors, --help, the
process title), a readable config file holding one draws a warning, and the run works
with exactly the least-privilege GRANTs of docs/operations.md."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import filelock
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy.engine import make_url

from metering.cli import main
from metering.proctitle import masked
from tests.support import billed, migrated, t

SECRET = "Pw-7q!Zr9x"
# Nothing listens on port 1; .invalid never resolves (RFC 2606).
REFUSED = f"mysql+pymysql://metering:{SECRET}@127.0.0.1:1/metering"
UNRESOLVABLE = f"mysql+pymysql://metering:{SECRET}@db.invalid:3306/metering"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def invoke(args: list[str], env: dict[str, str] | None = None, **kwargs: Any) -> Result:
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False, **kwargs)


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No user config, lock files under tmp_path."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("METERING_LOCK_FILE", str(tmp_path / "metering.lock"))
    monkeypatch.delenv("METERING_DATABASE_URL", raising=False)
    monkeypatch.delenv("METERING_CONFIG", raising=False)
    return tmp_path


COMMANDS = [
    ["run", "--now", "2016-12-12T17:00Z"],
    ["run", "--dry-run", "--now", "2016-12-12T17:00Z"],
    ["run", "--since", "2016-12-12T00:00Z", "--now", "2016-12-12T17:00Z"],
    ["db", "upgrade"],
    ["db", "current"],
    ["ingest", "-"],
]


@pytest.mark.parametrize("log_format", ["json", "console"])
@pytest.mark.parametrize("url", [REFUSED, UNRESOLVABLE], ids=["refused", "unresolvable"])
@pytest.mark.parametrize("how", ["option", "env", "config"])
def test_password_not_in_logs_or_errors(
    clean_env: Path, log_format: str, url: str, how: str
) -> None:
    config = clean_env / "metering.toml"
    config.write_text(f'[metering]\ndatabase_url = "{url}"\n')
    config.chmod(0o600)
    given = {
        "option": (["--database-url", url], {}),
        "env": ([], {"METERING_DATABASE_URL": url}),
        "config": (["--config", str(config)], {}),
    }[how]
    for command in COMMANDS:
        result = invoke(
            ["--verbose", "--log-format", log_format, *given[0], *command],
            env=given[1],
            input=b"",
        )
        out = result.stdout + result.stderr
        assert result.exit_code == 1, (command, out)
        assert SECRET not in out, (command, out)
        assert "metering:***@" in out or "db.invalid" in out or "127.0.0.1" in out, out


def test_password_not_in_errors_of_a_real_server(mariadb_url: str, clean_env: Path) -> None:
    """A live server that refuses the password, and one whose schema is missing."""
    url = make_url(mariadb_url)
    wrong = url.set(password=SECRET).render_as_string(hide_password=False)
    real_password = str(url.password)
    for target, expect in ((wrong, "Access denied"), (mariadb_url, "metering db upgrade")):
        for log_format in ("json", "console"):
            result = invoke(
                ["-v", "--log-format", log_format, "--database-url", target, "run"], input=b""
            )
            out = result.stdout + result.stderr
            assert result.exit_code == 1
            assert expect in out
            assert SECRET not in out and real_password not in out


def all_commands(group: click.Group, prefix: list[str]) -> Iterator[list[str]]:
    yield prefix
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from all_commands(command, [*prefix, name])
        else:
            yield [*prefix, name]


def test_password_not_in_help(clean_env: Path) -> None:
    config = clean_env / "metering.toml"
    config.write_text(f'[metering]\ndatabase_url = "{REFUSED}"\n')
    config.chmod(0o600)
    env = {"METERING_DATABASE_URL": REFUSED, "METERING_CONFIG": str(config)}
    commands = list(all_commands(main, []))
    assert len(commands) >= 5
    for command in commands:
        result = invoke([*command, "--help"], env=env)
        assert result.exit_code == 0, command
        assert SECRET not in result.output, command


@pytest.mark.parametrize(
    ("mode", "password", "warned"),
    [
        (0o644, True, True),
        (0o640, True, True),
        (0o604, True, True),
        (0o600, True, False),
        (0o400, True, False),
        (0o644, False, False),
    ],
)
def test_readable_config_with_password_warns(
    clean_env: Path, mode: int, password: bool, warned: bool
) -> None:
    url = REFUSED if password else "mysql+pymysql://metering@127.0.0.1:1/metering"
    config = clean_env / "metering.toml"
    config.write_text(f'[metering]\ndatabase_url = "{url}"\n')
    config.chmod(mode)
    result = invoke(["--log-format", "json", "--config", str(config), "db", "current"])
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    warnings = [e for e in entries if e["event"] == "config_warning"]
    assert bool(warnings) == warned
    if warned:
        (warning,) = warnings
        assert warning["level"] == "warning"
        assert f"chmod 600 {config}" in warning["message"]
    assert SECRET not in result.stderr + result.stdout
    assert stat.S_IMODE(config.stat().st_mode) == mode


# -- the process title -------------------------------------------------------------


def test_masked_title() -> None:
    line = (
        "python -m metering --database-url mysql+pymysql://u:p%40ss@db:3306/m "
        "run --database-url=mysql://x:a@b@db/m --lock-file /tmp/x@y"
    )
    assert masked(line) == (
        "python -m metering --database-url mysql+pymysql://u:***@db:3306/m "
        "run --database-url=mysql://x:***@db/m --lock-file /tmp/x@y"
    )
    assert masked("metering --database-url sqlite:////tmp/m.db run") == (
        "metering --database-url sqlite:////tmp/m.db run"
    )


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_password_not_in_process_title(mariadb_url: str, tmp_path: Path) -> None:
    migrated(mariadb_url).dispose()
    password = str(make_url(mariadb_url).password)
    lock_file = tmp_path / "held.lock"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "METERING_CONFIG": ""}
    env.pop("METERING_DATABASE_URL", None)
    with filelock.FileLock(str(lock_file)):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "metering",
                "--log-format",
                "json",
                "--database-url",
                mariadb_url,
                "run",
                "--wait",
                "60",
                "--lock-file",
                str(lock_file),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            title = cmdline(proc.pid)
            while "***" not in title and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
                title = cmdline(proc.pid)
            assert proc.poll() is None, proc.communicate()
            # Still blocked on the lock: the title stays rewritten for the whole run.
            time.sleep(0.5)
            title = cmdline(proc.pid)
            ps = subprocess.run(
                ["ps", "-ww", "-o", "args=", "-p", str(proc.pid)], capture_output=True, text=True
            ).stdout
        finally:
            proc.kill()
            proc.communicate()
    assert password not in title and password not in ps
    assert "metering:***@" in title and "run --wait 60" in title
    assert "metering:***@" in ps


# -- least privilege ---------------------------------------------------------------


def documented_run_grants(database: str, user: str, password: str) -> list[str]:
    """The run user's statements of docs/operations.md, for this database and user."""
    text = DOCS.read_text()
    section = text[text.index("## Least-privilege GRANTs") :]
    block = section[
        section.index("```sql") + len("```sql") : section.index("```", section.index("```sql") + 6)
    ]
    run_part = block[
        block.index("-- the run's user") : block.index(
            "-- only if this user runs `metering reconcile`"
        )
    ]
    statements = [s.strip() for s in re.sub(r"--[^\n]*", "", run_part).split(";") if s.strip()]
    out = []
    for statement in statements:
        statement = statement.replace(" metering.", f" `{database}`.")
        statement = statement.replace("'metering'@'%'", f"'{user}'@'%'")
        out.append(statement.replace("IDENTIFIED BY '...'", f"IDENTIFIED BY '{password}'"))
    return out


@pytest.mark.mariadb
def test_least_privilege_user_runs_the_whole_cycle(mariadb_url: str, clean_env: Path) -> None:
    admin_url = make_url(mariadb_url)
    database = str(admin_url.database)
    user, password = f"m_{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}"
    statements = documented_run_grants(database, user, password)
    assert statements[0].startswith("CREATE USER") and len(statements) == 11
    admin = migrated(mariadb_url)  # migrations: by the admin user
    try:
        with admin.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
        url = admin_url.set(username=user, password=password).render_as_string(hide_password=False)
        events = clean_env / "events.jsonl"
        rows = [
            {
                "event_id": "c",
                "kind": "resource",
                "entity": "vm",
                "action": "create",
                "account": "acme",
                "resource_id": "vm-1",
                "offering": "small",
                "occurred_at": "2016-12-12T10:30:00Z",
            },
            {
                "event_id": "m",
                "kind": "quantity",
                "entity": "ip",
                "action": "measure",
                "account": "acme",
                "resource_id": "10.0.0.1",
                "quantity": 1001,
                "period_start": "2016-12-12T10:59:30Z",
                "period_end": "2016-12-12T11:00:30Z",
                "occurred_at": "2016-12-12T11:00:30Z",
            },
            {
                "event_id": "bad",
                "kind": "resource",
                "entity": "vm",
                "action": "explode",
                "account": "acme",
                "resource_id": "vm-1",
                "occurred_at": "2016-12-12T10:40:00Z",
            },
        ]
        events.write_text("".join(json.dumps(r) + "\n" for r in rows))
        base = ["--log-format", "json", "--database-url", url]
        steps = [
            ["db", "current"],
            ["ingest", str(events)],
            ["ingest", str(events)],  # duplicates: the ON DUPLICATE KEY UPDATE path
            ["run", "--now", "2016-12-12T12:30Z"],
            ["run", "--now", "2016-12-12T13:30Z", "--dry-run"],
            ["run", "--now", "2016-12-12T13:30Z"],
            ["run", "--since", "2016-12-12T00:00Z", "--now", "2016-12-12T13:30Z"],
            ["run", "--now", "2016-12-12T13:45Z", "--no-database-lock"],
        ]
        for step in steps:
            result = invoke([*base, *step])
            assert result.exit_code == 0, (step, result.stderr[-600:])
        assert billed(admin) == {
            ("acme", "vm", "vm-1", "small", "second", t("2016-12-12T10:00Z")): 1800,
            ("acme", "vm", "vm-1", "small", "second", t("2016-12-12T11:00Z")): 3600,
            ("acme", "vm", "vm-1", "small", "second", t("2016-12-12T12:00Z")): 3600,
            ("acme", "ip", "10.0.0.1", "", "byte", t("2016-12-12T10:00Z")): 500,
            ("acme", "ip", "10.0.0.1", "", "byte", t("2016-12-12T11:00Z")): 501,
        }
        # The grants are least: the run's user cannot migrate or drop anything.
        assert invoke([*base, "db", "upgrade"]).exit_code == 0  # already at head: no DDL
        restricted = sa.create_engine(url)
        try:
            with restricted.connect() as conn:
                for ddl in (
                    "DROP TABLE usage_lines",
                    "CREATE TABLE x (id INT)",
                    "DELETE FROM usage_events",
                    "ALTER TABLE usage_lines ADD COLUMN x INT",
                ):
                    with pytest.raises(sa.exc.DBAPIError, match="denied"):
                        conn.execute(sa.text(ddl))
        finally:
            restricted.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
        admin.dispose()
