"""`metering prune` by example, on SQLite and MariaDB: what it deletes, dry runs, bounded
batches, the locks, an interrupted prune, the horizon that backfills and reconciles
respect, the archive that ingest reads back, and `status`'s view of the events table."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, insert, select

from metering.cli import main
from metering.lock import database_lock, file_lock
from metering.prune import PruneRequest, prune
from metering.store.schema import event_gaps, usage_events
from tests.support import Database, billed, insert_events, measure, resource, run, t

NOW = "2016-12-12T13:00Z"  # billed until 12:00, the latest safe horizon
HORIZON = "2016-12-12T12:00Z"


def ten_minutes(n: int) -> tuple[str, str]:
    """The n-th of ten 5-minute periods, every ten minutes from 09:00."""
    hour, minute = 9 + n // 4, n % 4 * 10
    return f"2016-12-12T{hour:02d}:{minute:02d}Z", f"2016-12-12T{hour:02d}:{minute + 5:02d}Z"


def history() -> list[dict[str, Any]]:
    return [
        # Resized while stopped: what came before the start with its offering may go.
        resource("v1-c", "create", "2016-12-12T09:10Z", resource_id="vm-1", offering="small"),
        resource("v1-p", "stop", "2016-12-12T10:20Z", resource_id="vm-1"),
        resource("v1-s", "start", "2016-12-12T10:40Z", resource_id="vm-1", offering="large"),
        resource("v1-q", "stop", "2016-12-12T11:10Z", resource_id="vm-1"),
        # Running: keeps the event it runs from.
        resource("v2-c", "create", "2016-12-12T09:00Z", resource_id="vm-2", offering="medium"),
        # Destroyed: keeps its destroy.
        resource("v3-c", "create", "2016-12-12T09:30Z", resource_id="vm-3", offering="small"),
        resource("v3-d", "destroy", "2016-12-12T10:00Z", resource_id="vm-3"),
        *(measure(f"m{n}", 1000 + n, *ten_minutes(n)) for n in range(10)),
        # Across the horizon: a backfill from 12:00 needs it.
        measure("m-across", 1001, "2016-12-12T11:59:30Z", "2016-12-12T12:00:30Z"),
    ]


GONE = {"v1-c", "v1-p", "v3-c", *(f"m{n}" for n in range(10))}


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated database holding history(), billed until 12:00."""
    database: Database = request.getfixturevalue(f"{request.param}_database")
    insert_events(database.engine, history())
    run(database.engine, NOW, tmp_path)
    # The producer's current event, newer than every one the prune judges.
    insert_events(database.engine, [measure("now", 5, "2016-12-12T12:40Z", "2016-12-12T12:41Z")])
    yield database


def url_of(db: Database) -> str:
    return db.engine.url.render_as_string(hide_password=False)


def cli(db: Database, tmp_path: Path, *args: str) -> Result:
    env = {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "METERING_CONFIG": "",
        "METERING_LOCK_FILE": str(tmp_path / "metering.lock"),
    }
    return CliRunner().invoke(
        main, ["--log-format", "json", "--database-url", url_of(db), *args], env=env
    )


def event_ids(db: Database) -> set[str]:
    return {e["event_id"] for e in db.stored()}


def archived(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def test_prune_deletes_what_no_later_run_needs_and_archives_it_first(
    db: Database, tmp_path: Path
) -> None:
    before = event_ids(db)
    archive = tmp_path / "events.jsonl.gz"
    result = cli(
        db, tmp_path, "prune", "--before", HORIZON, "--now", NOW, "--archive", str(archive)
    )
    assert result.exit_code == 0, result.output
    assert "deleted 13 events before 2016-12-12T12:00Z (3 resource events, 10 measures)" in (
        result.stdout
    )
    assert event_ids(db) == before - GONE
    assert {e["event_id"] for e in archived(archive)} == GONE
    summary = [json.loads(x) for x in result.stderr.splitlines() if '"prune_summary"' in x]
    assert summary and summary[0]["deleted"] == 13


def test_a_dry_run_counts_and_deletes_nothing(db: Database, tmp_path: Path) -> None:
    snapshot = db.snapshot()
    result = cli(db, tmp_path, "prune", "--before", HORIZON, "--now", NOW, "--dry-run",
                 "--archive", str(tmp_path / "a.jsonl.gz"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "would delete 13 events" in result.stdout
    assert db.snapshot() == snapshot
    assert not (tmp_path / "a.jsonl.gz").exists()


@pytest.mark.parametrize(("size", "batches"), [(4, [4, 4, 4, 1]), (11, [10, 3])])
def test_batches_are_bounded_and_each_is_archived(
    db: Database, tmp_path: Path, size: int, batches: list[int]
) -> None:
    archive = tmp_path / "events.jsonl.gz"
    request = PruneRequest(before=t(HORIZON), now=t(NOW), archive=archive, batch_size=size)
    outcome = prune(db.engine, request, lock_file=tmp_path / "metering.lock")
    # In index order: the ten measures, vm-1's cut (two events, never split), vm-3's.
    assert outcome.batches == batches
    assert len(archived(archive)) == outcome.deleted == 13


def test_an_interrupted_prune_loses_nothing(db: Database, tmp_path: Path) -> None:
    everything = event_ids(db)
    archive = tmp_path / "events.jsonl.gz"
    commits = 0

    def crash(where: str) -> None:
        nonlocal commits
        commits += 1
        if commits == 2:
            raise KeyboardInterrupt

    request = PruneRequest(before=t(HORIZON), now=t(NOW), archive=archive, batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        prune(db.engine, request, lock_file=tmp_path / "metering.lock", pause=crash)
    in_archive = {e["event_id"] for e in archived(archive)}
    assert len(in_archive) == 8  # the second batch is archived, its delete rolled back
    assert len(everything - event_ids(db)) == 4
    assert event_ids(db) | in_archive == everything
    # Again: done, and the archive's second copy of a batch is only duplicates to ingest.
    prune(db.engine, request, lock_file=tmp_path / "metering.lock")
    assert event_ids(db) == everything - GONE
    assert {e["event_id"] for e in archived(archive)} == GONE


def test_a_damaged_archive_is_not_appended_to(db: Database, tmp_path: Path) -> None:
    archive = tmp_path / "events.jsonl.gz"
    archive.write_bytes(gzip.compress(b'{"a": 1}\n' * 100)[:-20])
    before = event_ids(db)
    result = cli(
        db, tmp_path, "prune", "--before", HORIZON, "--now", NOW, "--archive", str(archive)
    )
    assert result.exit_code == 1
    assert "does not read to its end" in result.stderr
    assert event_ids(db) == before


def test_prune_exits_75_while_a_run_holds_the_lock(db: Database, tmp_path: Path) -> None:
    before = event_ids(db)
    with file_lock(tmp_path / "metering.lock", 0):
        result = cli(db, tmp_path, "prune", "--before", HORIZON, "--now", NOW)
    assert result.exit_code == 75, result.output
    if db.engine.dialect.name != "sqlite":
        # Another host's run: only the database lock is shared.
        with database_lock(db.engine, 0):
            result = cli(db, tmp_path, "prune", "--before", HORIZON, "--now", NOW)
        assert result.exit_code == 75, result.output
    assert event_ids(db) == before


def test_a_horizon_later_than_is_safe_is_refused(db: Database, tmp_path: Path) -> None:
    result = cli(
        db, tmp_path, "prune", "--before", "2016-12-12T12:00Z", "--now", "2016-12-12T12:35Z"
    )
    assert result.exit_code == 2
    assert "the latest safe horizon is 2016-12-12T11:00:00.000Z" in result.stderr
    result = cli(db, tmp_path, "prune", "--before", "2016-12-12T13:00Z", "--now", NOW)
    assert result.exit_code == 2
    assert "billed until 2016-12-12T12:00:00.000Z" in result.stderr


def test_a_backfill_or_reconcile_before_the_horizon_is_refused(
    db: Database, tmp_path: Path
) -> None:
    assert cli(db, tmp_path, "prune", "--before", HORIZON, "--now", NOW).exit_code == 0
    result = cli(db, tmp_path, "run", "--since", "2016-12-12T11:00Z", "--now", NOW)
    assert result.exit_code == 2
    assert "before the pruned horizon 2016-12-12T12:00:00.000Z" in result.stderr
    dry = cli(db, tmp_path, "run", "--since", "2016-12-12T11:59Z", "--now", NOW, "--dry-run")
    assert dry.exit_code == 2
    later = "2016-12-12T14:00Z"
    assert cli(db, tmp_path, "run", "--now", later).exit_code == 0
    sums = billed(db.engine)
    assert cli(db, tmp_path, "run", "--since", HORIZON, "--now", later).exit_code == 0
    assert billed(db.engine) == sums  # from the horizon on, nothing to correct
    inventory = tmp_path / "inventory.jsonl"
    inventory.write_text('{"account": "acme", "entity": "vm", "resource_id": "vm-2"}\n')
    reconcile = ["reconcile", "--inventory", str(inventory), "--at"]
    result = cli(db, tmp_path, *reconcile, "2016-12-12T11:00Z")
    assert result.exit_code == 2
    assert "before the pruned horizon" in result.stderr
    assert cli(db, tmp_path, *reconcile, "2016-12-12T12:30Z", "--dry-run").exit_code == 0


def test_status_shows_the_events_table(db: Database, tmp_path: Path) -> None:
    def table() -> dict[str, Any]:
        result = cli(db, tmp_path, "status", "--now", NOW, "--format", "json")
        assert result.exit_code == 0, result.output
        found: dict[str, Any] = json.loads(result.stdout)["events_table"]
        return found

    first = table()
    assert first["size_bytes"] > 0 and first["first_occurred_at"] and not first["pruned_before"]
    mariadb = db.engine.dialect.name != "sqlite"
    assert first["rows_estimated"] is mariadb
    assert first["rows"] == (first["rows"] if mariadb else 19)
    assert cli(db, tmp_path, "prune", "--before", HORIZON, "--now", NOW).exit_code == 0
    after = table()
    assert after["pruned_before"] == "2016-12-12T12:00:00.000Z"
    if not mariadb:
        assert after["rows"] == 19 - 13
    text = cli(db, tmp_path, "status", "--now", NOW).stdout
    assert "events table:" in text and "pruned before: 2016-12-12T12:00:00.000Z" in text


def test_prune_then_ingest_the_archive_as_real_processes(
    sqlite_database: Database, tmp_path: Path
) -> None:
    """The crontab's way: `metering prune` and `metering ingest` as subprocesses."""
    db = sqlite_database
    insert_events(db.engine, history())
    run(db.engine, NOW, tmp_path)
    insert_events(db.engine, [measure("now", 5, "2016-12-12T12:40Z", "2016-12-12T12:41Z")])
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "METERING_CONFIG": "",
        "METERING_LOCK_FILE": str(tmp_path / "metering.lock"),
    }
    archive = tmp_path / "events.jsonl.gz"

    def metering(url: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "metering", "--database-url", url, *args],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    pruned = metering(
        url_of(db), "prune", "--before", HORIZON, "--now", NOW, "--archive", str(archive)
    )
    assert pruned.returncode == 0, pruned.stderr
    assert "deleted 13 events" in pruned.stdout
    other = f"sqlite:///{tmp_path}/other.db"
    assert metering(other, "db", "upgrade").returncode == 0
    loaded = metering(other, "ingest", str(archive))
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "read 13, inserted 13, duplicates 0, malformed 0"
    with db.engine.connect() as conn:
        left = conn.execute(select(func.count()).select_from(usage_events)).scalar_one()
    assert left == len(history()) + 1 - 13


def test_an_archive_is_refused_by_the_database_it_came_from(db: Database, tmp_path: Path) -> None:
    """Back in its own database, an archive's events would be read as late events and
    its measures billed twice: ingest refuses every line dated before the horizon."""
    archive = tmp_path / "events.jsonl.gz"
    pruned = cli(
        db, tmp_path, "prune", "--before", HORIZON, "--now", NOW, "--archive", str(archive)
    )
    assert pruned.exit_code == 0, pruned.output
    kept = event_ids(db)
    result = cli(db, tmp_path, "ingest", str(archive))
    assert result.exit_code == 1
    assert "read 13, inserted 0, duplicates 0, malformed 13" in result.stdout
    assert "before the pruned horizon 2016-12-12T12:00:00.000Z" in result.stderr
    assert event_ids(db) == kept
    later = tmp_path / "later.jsonl"
    start = {"event_id": "new", "kind": "resource", "entity": "vm", "action": "start",
             "account": "acme", "resource_id": "vm-9", "occurred_at": HORIZON}  # fmt: skip
    later.write_text(json.dumps(start) + "\n")
    assert cli(db, tmp_path, "ingest", str(later)).exit_code == 0


def test_ids_in_strided_gap_rows_stay_and_read_ids_among_them_go(
    sqlite_database: Database, tmp_path: Path
) -> None:
    # Ids of one Galera node (1, 4, 7, ...): the others' ids are strided gap rows whose
    # spans cover every read id, so membership must follow step and width.
    engine = sqlite_database.engine
    rows = [{**row, "id": 1 + 3 * i} for i, row in enumerate(history())]
    with engine.begin() as conn:
        conn.execute(insert(usage_events), rows)
    run(engine, NOW, tmp_path)
    with engine.connect() as conn:
        steps = set(conn.execute(select(event_gaps.c.step)).scalars())
    assert steps == {3}
    late = {**measure("now", 5, "2016-12-12T12:40Z", "2016-12-12T12:41Z"), "id": 3 * len(rows) + 1}
    with engine.begin() as conn:
        conn.execute(insert(usage_events), [late])
    before = event_ids(sqlite_database)
    result = cli(sqlite_database, tmp_path, "prune", "--before", HORIZON, "--now", NOW)
    assert result.exit_code == 0, result.output
    assert event_ids(sqlite_database) == before - GONE
