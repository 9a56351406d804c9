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
from contextlib import contextmanager
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
from metering.store.schema import inventory_snapshots, reconciliations, runs, usage_events
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

# The parts of the run user's block in docs/operations.md, each opened by its comment.
RUN_PART, INGEST_PART, RECONCILE_PART, PRUNE_PART, RATING_PART = (
    "-- the run's user",
    "-- only if this user runs `metering ingest`",
    "-- only if this user runs `metering reconcile`",
    "-- only if this user runs `metering prune`",
    "-- only if this user prices, invoices and exports",
)
# MariaDB's refusal as metering reports it (error 1142), quotes escaped in JSON logs.
DENIED = re.compile(
    r"(?P<privileges>[A-Z, ]+) command denied to user '[^']+'@'[^']+' "
    r"for table `[^`]+`\.`(?P<table>\w+)`"
)
# Commands that never open the configured database (demo makes its own SQLite).
NO_DATABASE = {("demo",)}


def documented_grants(database: str, user: str, password: str) -> dict[str, list[str]]:
    """The run user's statements of docs/operations.md, for this database and user, by
    part: "run" (every command but ingest and reconcile), "ingest", "reconcile"."""
    text = DOCS.read_text()
    section = text[text.index("## Least-privilege GRANTs") :]
    opening = section.index("```sql") + len("```sql")
    block = section[opening : section.index("```", opening)]
    bounds = [
        block.index(RUN_PART),
        block.index(INGEST_PART),
        block.index(RECONCILE_PART),
        block.index(PRUNE_PART),
        block.index(RATING_PART),
    ]
    parts = {}
    for name, begin, end in zip(
        ("run", "ingest", "reconcile", "prune", "rating"),
        bounds,
        [*bounds[1:], len(block)],
        strict=True,
    ):
        statements = re.sub(r"--[^\n]*", "", block[begin:end]).split(";")
        parts[name] = [
            s.strip()
            .replace(" metering.", f" `{database}`.")
            .replace("'metering'@'%'", f"'{user}'@'%'")
            .replace("IDENTIFIED BY '...'", f"IDENTIFIED BY '{password}'")
            for s in statements
            if s.strip()
        ]
    return parts


@contextmanager
def database_user(
    mariadb_url: str, admin: sa.Engine, parts: tuple[str, ...], without_table: str = ""
) -> Iterator[str]:
    """A user made with the documented statements of these parts (less the grant on
    without_table); yields its URL, drops it afterwards."""
    admin_url = make_url(mariadb_url)
    user, password = f"m_{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}"
    grants = documented_grants(str(admin_url.database), user, password)
    assert grants["run"][0].startswith("CREATE USER") and len(grants["run"]) == 11
    assert len(grants["ingest"]) == 1 and len(grants["reconcile"]) == 3
    assert len(grants["prune"]) == 1 and len(grants["rating"]) == 6
    statements = [s for part in parts for s in grants[part]]
    if without_table:
        kept = [s for s in statements if f"`.{without_table} " not in s]
        assert len(kept) == len(statements) - 1, without_table
        statements = kept
    try:
        with admin.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
        yield admin_url.set(username=user, password=password).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))


def runnable_commands() -> set[tuple[str, ...]]:
    found = set()
    for path in all_commands(main, []):
        command: click.Command = main
        for name in path:
            assert isinstance(command, click.Group)
            command = command.commands[name]
        if not isinstance(command, click.Group) or command.invoke_without_command:
            found.add(tuple(path))
    return found - {()}


def command_of(args: list[str]) -> tuple[str, ...]:
    """The command path an argument list invokes: ["runs", "show", "x"] -> ("runs", "show")."""
    path: list[str] = []
    command: click.Command = main
    for arg in args:
        if not isinstance(command, click.Group) or arg not in command.commands:
            break
        command = command.commands[arg]
        path.append(arg)
    return tuple(path)


EVENTS: list[dict[str, Any]] = [
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


def events_file(directory: Path) -> Path:
    path = directory / "events.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in EVENTS))
    return path


def event_ids(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.scalars(sa.select(usage_events.c.event_id)))


@pytest.mark.mariadb
def test_least_privilege_user_runs_the_whole_cycle(mariadb_url: str, clean_env: Path) -> None:
    """Every command that opens the database, as the user of docs/operations.md with
    all four parts of its grants, and what each one did."""
    admin = migrated(mariadb_url)  # migrations: by the admin user
    events = events_file(clean_env)
    inventory = clean_env / "inventory.csv"
    # vm-1 runs on; vm-2 was never announced: reconcile starts it at 13:00.
    inventory.write_text(
        "account,entity,resource_id,offering\nacme,vm,vm-1,small\nacme,vm,vm-2,large\n"
    )
    book = clean_env / "prices.toml"
    book.write_text(
        'currency = "CHF"\nvalid_from = 2016-12-01T00:00:00Z\n'
        '[rounding]\nprecision = "0.01"\nmode = "half-even"\nper = "line"\n'
        '[[price]]\nentity = "vm"\nunit = "second"\nper = "hour"\nprice = "0.05"\n'
    )
    try:
        parts = ("run", "ingest", "reconcile", "prune", "rating")
        with database_user(mariadb_url, admin, parts) as url:
            base = ["--log-format", "json", "--database-url", url]
            done: set[tuple[str, ...]] = set()

            def step(*args: str, expect: int = 0) -> Result:
                result = invoke([*base, *args])
                assert result.exit_code == expect, (
                    args,
                    result.stdout[-600:],
                    result.stderr[-600:],
                )
                done.add(command_of(list(args)))
                return result

            assert "head" in step("db", "current").stdout
            step("db", "upgrade")  # already at head: no DDL, so no grant needed
            step("ingest", str(events))
            step("ingest", str(events))  # duplicates: the ON DUPLICATE KEY UPDATE path
            step("run", "--now", "2016-12-12T12:30Z")
            dry = step("run", "--now", "2016-12-12T13:30Z", "--dry-run", "--format", "csv")
            assert "2016-12-12T12:00" in dry.stdout
            step("run", "--now", "2016-12-12T13:30Z")
            step("run", "--since", "2016-12-12T00:00Z", "--now", "2016-12-12T13:30Z")
            step("run", "--now", "2016-12-12T13:45Z", "--no-database-lock")
            reconcile = ["reconcile", "--inventory", str(inventory), "--at", "2016-12-12T13:00Z"]
            stored = event_ids(admin)
            assert "would insert 1 events" in step(*reconcile, "--dry-run").stdout
            assert event_ids(admin) == stored
            step(*reconcile)
            assert len(event_ids(admin) - stored) == 1
            # The platform's own snapshot at 14:00 misses vm-1: stopped at 14:00.
            with admin.begin() as conn:
                conn.execute(
                    sa.insert(inventory_snapshots),
                    [
                        {
                            "snapshot_id": "s14",
                            "taken_at": t("2016-12-12T14:00Z"),
                            "account": "acme",
                            "entity": "vm",
                            "resource_id": "vm-2",
                            "offering": "large",
                        }
                    ],
                )
            step("reconcile", "--from-table", "--policy", "never-underbill")
            assert "already applied" in step("reconcile", "--from-table").stdout
            step("run", "--now", "2016-12-12T15:30Z")
            status = json.loads(
                step("status", "--now", "2016-12-12T15:30Z", "--format", "json").stdout
            )
            assert status, status
            step("status", "--now", "2016-12-12T15:30Z", "--max-lag", "2h")
            # Counting needs SELECT alone; the prune itself the documented DELETE.
            pruning = step("prune", "--before", "2016-12-12T12:00Z", "--now", "2016-12-12T15:30Z",
                           "--dry-run")  # fmt: skip
            assert "would delete" in pruning.stdout
            pruned = step("prune", "--before", "2016-12-12T12:00Z", "--now", "2016-12-12T15:30Z")
            assert "deleted" in pruned.stdout
            step("status", "--now", "2016-12-12T19:30Z", "--max-lag", "2h", expect=1)
            report = step("report", "--format", "csv", "--group", "resource").stdout
            assert "vm-2" in report
            runs = [
                json.loads(line) for line in step("runs", "--format", "json").stdout.splitlines()
            ]
            assert len(runs) == 4 and runs[0]["clock"] == "2016-12-12T15:30:00.000Z"
            step("runs", "show", str(runs[0]["run_id"]))
            assert "explode" in step("rejected").stdout
            step("rejected", "--mark-reviewed")
            assert "explode" not in step("rejected", "--unreviewed").stdout
            step("check", "--now", "2016-12-12T15:30Z")
            step("prices", "load", str(book))
            assert "CHF" in step("prices", "list").stdout
            preview = step("invoice", "preview", "--month", "2016-12", "--format", "json")
            assert '"kind": "unpriced"' in preview.stdout  # ip traffic has no price
            step("invoice", "close", "--month", "2016-12", expect=1)  # not fully billed
            step("invoice", "close", "--month", "2016-11")  # billed, nothing in it
            step("invoice", "show", "inv-2016-11-none", expect=1)
            lago = step("export", "--month", "2016-12", "--to", "lago").stdout
            assert "transaction_id" in lago
            assert step("export", "--month", "2016-12", "--to", "lago", "--new-only").stdout == ""
        assert done == runnable_commands() - NO_DATABASE
        assert billed(admin) == {
            ("acme", "vm", "vm-1", "small", "second", t("2016-12-12T10:00Z")): 1800,
            ("acme", "vm", "vm-1", "small", "second", t("2016-12-12T11:00Z")): 3600,
            ("acme", "vm", "vm-1", "small", "second", t("2016-12-12T12:00Z")): 3600,
            ("acme", "vm", "vm-1", "small", "second", t("2016-12-12T13:00Z")): 3600,
            ("acme", "vm", "vm-2", "large", "second", t("2016-12-12T13:00Z")): 3600,
            ("acme", "vm", "vm-2", "large", "second", t("2016-12-12T14:00Z")): 3600,
            ("acme", "ip", "10.0.0.1", "", "byte", t("2016-12-12T10:00Z")): 500,
            ("acme", "ip", "10.0.0.1", "", "byte", t("2016-12-12T11:00Z")): 501,
        }
    finally:
        admin.dispose()


@pytest.mark.mariadb
def test_least_privilege_user_cannot_change_the_schema(mariadb_url: str) -> None:
    admin = migrated(mariadb_url)
    try:
        with database_user(mariadb_url, admin, ("run", "ingest", "reconcile")) as url:
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
        admin.dispose()


def ingested(mariadb_url: str, directory: Path) -> sa.Engine:
    """A migrated database holding EVENTS, stored by the admin user."""
    admin = migrated(mariadb_url)
    result = invoke(["--database-url", mariadb_url, "ingest", str(events_file(directory))])
    assert result.exit_code == 0, result.stderr
    return admin


@pytest.mark.mariadb
def test_run_user_without_ingest_and_reconcile_grants(mariadb_url: str, clean_env: Path) -> None:
    """The platform writes usage_events itself: the run's user, with only the first part
    of the grants, runs everything else, and ingest and reconcile fail with the
    server's refusal, storing nothing."""
    admin = ingested(mariadb_url, clean_env)
    inventory = clean_env / "inventory.csv"
    inventory.write_text("account,entity,resource_id,offering\nacme,vm,vm-2,large\n")
    try:
        stored = event_ids(admin)
        with database_user(mariadb_url, admin, ("run",)) as url:
            base = ["--log-format", "json", "--database-url", url]
            for args in (
                ["db", "current"],
                ["run", "--now", "2016-12-12T12:30Z"],
                ["run", "--since", "2016-12-12T00:00Z", "--now", "2016-12-12T12:30Z"],
                ["status", "--now", "2016-12-12T12:30Z"],
                ["report"],
                ["runs"],
                ["rejected", "--mark-reviewed"],
                ["check", "--now", "2016-12-12T12:30Z"],
            ):
                result = invoke([*base, *args])
                assert result.exit_code == 0, (args, result.stderr[-600:])
            refused = [
                ["ingest", "-"],
                ["reconcile", "--inventory", str(inventory), "--at", "2016-12-12T13:00Z"],
            ]
            for args in refused:
                # Events not stored yet: ingest skips duplicates before inserting.
                result = invoke([*base, *args], input=json.dumps({**EVENTS[0], "event_id": "new"}))
                assert result.exit_code == 1, (args, result.stdout, result.stderr[-600:])
                denied = DENIED.search(result.stderr)
                assert denied, (args, result.stderr[-600:])
                assert denied["privileges"].startswith("INSERT")
                assert denied["table"] == "usage_events"
        assert event_ids(admin) == stored
        with admin.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(reconciliations)) == 0
        assert (
            billed(admin)[("acme", "vm", "vm-1", "small", "second", t("2016-12-12T11:00Z"))] == 3600
        )
    finally:
        admin.dispose()


# Each table grant of the run part, and what `metering run` needs it for.
RUN_TABLE_GRANTS = [
    "metering.alembic_version",
    "metering.usage_events",
    "metering.usage_lines",
    "metering.runs",
    "metering.metering_state",
    "metering.event_gaps",
    "metering.resource_state",
    "metering.pending_usage",
    "metering.rejected_events",
]


@pytest.mark.mariadb
@pytest.mark.parametrize("table", [g.split(".")[1] for g in RUN_TABLE_GRANTS])
def test_run_without_one_grant_fails_clearly(mariadb_url: str, clean_env: Path, table: str) -> None:
    """With one table's grant missing, `metering run` exits 1 naming the refusal and
    bills nothing: no grant of the run part is superfluous, none fails silently."""
    admin = ingested(mariadb_url, clean_env)
    try:
        with database_user(mariadb_url, admin, ("run",), without_table=table) as url:
            result = invoke(
                ["--log-format", "json", "--database-url", url, "run", "--now", "2016-12-12T12:30Z"]
            )
        assert result.exit_code == 1, result.stderr[-600:]
        denied = DENIED.search(result.stderr)
        assert denied and denied["table"] == table, result.stderr[-600:]
        assert billed(admin) == {}
        with admin.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(runs)) == 0
    finally:
        admin.dispose()
