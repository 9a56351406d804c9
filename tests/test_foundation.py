"""Issue 2: migrations on both databases, the head check, help texts, masking, the wheel."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import click
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import text

from metering import logs, migrate
from metering.cli import YOUNG_COLLECTION_THRESHOLD, main
from metering.core.events import MAX_TEXT
from metering.db import make_engine
from metering.settings import build_settings, mask_url
from metering.store.schema import metadata

ROOT = Path(__file__).resolve().parent.parent


def test_migrations_reach_head_and_match_the_schema(database_url: str) -> None:
    engine = make_engine(database_url)
    assert migrate.current(engine) is None
    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head()
    # The cheap head check of every command compares against this constant.
    assert migrate.head() == migrate.HEAD
    migrate.require_head(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    # Index and type rendering differ harmlessly across dialects; tables and columns must not.
    structural = [
        d for d in diff if d[0] in ("add_table", "remove_table", "add_column", "remove_column")
    ]
    assert structural == []


@pytest.mark.mariadb
def test_event_text_columns_are_no_wider_than_the_core_accepts(mariadb_url: str) -> None:
    # The range scan's MariaDB predicate skips length checks on this ground.
    engine = make_engine(mariadb_url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        widths = dict(
            conn.execute(
                text(
                    "SELECT column_name, character_maximum_length FROM information_schema.columns"
                    " WHERE table_schema = DATABASE() AND table_name = 'usage_events'"
                    " AND character_maximum_length IS NOT NULL"
                )
            ).all()
        )
    assert {name: widths[name] for name in MAX_TEXT} == MAX_TEXT


def test_db_commands_through_the_cli(database_url: str) -> None:
    runner = CliRunner()
    before = runner.invoke(main, ["--database-url", database_url, "db", "current"])
    assert before.exit_code == 1
    assert "metering db upgrade" in before.output
    upgraded = runner.invoke(main, ["db", "upgrade", "--database-url", database_url])
    assert upgraded.exit_code == 0, upgraded.output
    after = runner.invoke(main, ["--database-url", database_url, "db", "current"])
    assert after.exit_code == 0
    assert f"{migrate.head()} (at head)" in after.output


def test_commands_refuse_a_schema_not_at_head(sqlite_url: str) -> None:
    result = CliRunner().invoke(
        main, ["--database-url", sqlite_url, "run", "--now", "2016-12-12T17:00Z"]
    )
    assert result.exit_code == 1
    assert "metering db upgrade" in result.output


def _commands(
    group: click.Group, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = [(prefix, group)]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found.extend(_commands(command, (*prefix, name)))
        else:
            found.append(((*prefix, name), command))
    return found


@pytest.mark.parametrize(
    "path", [p for p, _ in _commands(main)], ids=lambda p: " ".join(p) or "metering"
)
def test_every_help_has_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output, f"`metering {' '.join(path)} --help` has no example"


def test_passwords_are_masked_in_urls_logs_and_errors(tmp_path: Path) -> None:
    url = "mysql+pymysql://metering:s3cr3t-pw@127.0.0.1:1/metering"
    assert "s3cr3t-pw" not in mask_url(url)
    assert "***" in mask_url(url)
    assert "s3cr3t-pw" not in build_settings(database_url=url, environ={}).masked_url

    stream = io.StringIO()
    logs.configure(json=True, stream=stream)
    logs.get_logger("t").info("connecting", url=url, note=f"to {url} now")
    logging_line = stream.getvalue()
    assert "s3cr3t-pw" not in logging_line
    assert (
        json.loads(logging_line.splitlines()[0])["url"]
        == "mysql+pymysql://metering:***@127.0.0.1:1/metering"
    )

    result = subprocess.run(
        [sys.executable, "-m", "metering", "--database-url", url, "db", "current"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "METERING_CONFIG": str(tmp_path / "none.toml")},
    )
    assert result.returncode != 0
    assert "s3cr3t-pw" not in result.stdout + result.stderr


# Run as `python -c`: at the command's start, what the collector holds and when it
# collects young objects.
COLLECTOR_AT_INVOKE = """
import gc
import click
from metering import cli
original = click.Group.invoke
def invoke(self, ctx):
    print("collector", gc.get_freeze_count(), gc.get_threshold()[0], flush=True)
    return original(self, ctx)
click.Group.invoke = invoke
cli.main(["db", "current"])
"""


def test_a_command_runs_with_its_imports_frozen_and_young_collections_rarer(
    tmp_path: Path,
) -> None:
    """A run's rows would otherwise set off hundreds of collections, each walking
    SQLAlchemy's import-time objects again (metering/cli.py)."""
    result = subprocess.run(
        [sys.executable, "-c", COLLECTOR_AT_INVOKE],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "METERING_DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}"},
    )
    line = next(x for x in result.stdout.splitlines() if x.startswith("collector"))
    frozen, threshold = map(int, line.split()[1:])
    assert frozen > 20_000  # SQLAlchemy, click and metering's modules: ~51k objects
    assert threshold == YOUNG_COLLECTION_THRESHOLD > 700


@pytest.mark.slow
def test_the_wheel_installs_and_migrates_an_empty_database(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=300,
    )
    wheel = next(dist.glob("metering-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=600)
    database = tmp_path / "fresh.db"
    # Run from an unrelated directory so nothing from the checkout is importable.
    upgraded = subprocess.run(
        [
            str(env_dir / "bin" / "metering"),
            "--database-url",
            f"sqlite:///{database}",
            "db",
            "upgrade",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    current = subprocess.run(
        [
            str(env_dir / "bin" / "metering"),
            "--database-url",
            f"sqlite:///{database}",
            "db",
            "current",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert current.returncode == 0
    assert "(at head)" in current.stdout
    located = subprocess.run(
        [str(python), "-c", "import metering.migrate as m; print(m.migrations_dir())"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert str(env_dir) in located.stdout
