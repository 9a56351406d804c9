"""metering reconcile (contract rule 15) against real SQLite and MariaDB."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, insert, select

from metering.cli import main
from metering.core.events import ResourceKey
from metering.core.reconcile import NEVER_UNDERBILL, RULE_START, RULE_STOP, RULE_UPDATE
from metering.errors import LockHeld, UsageError
from metering.reconcile import (
    Inventory,
    InventoryError,
    ReconcileOutcome,
    ReconcileRequest,
    execute,
    parse_inventory,
)
from metering.store.schema import inventory_snapshots, reconciliations, resource_state, usage_events
from metering.timeutil import to_ms
from tests.support import billed, insert_events, migrated, resource, run, t

VM1: ResourceKey = ("acme", "vm", "vm-1")
VM2: ResourceKey = ("acme", "vm", "vm-2")


def apply(
    engine: Engine,
    tmp_path: Path,
    running: dict[ResourceKey, str | None],
    at: str,
    **options: Any,
) -> ReconcileOutcome:
    request = ReconcileRequest(inventory=Inventory(running, None), at=t(at), **options)
    return execute(engine, request, lock_file=tmp_path / "metering.lock")


def seconds(engine: Engine, key: ResourceKey = VM1) -> Decimal:
    return sum(
        (q for k, q in billed(engine).items() if k[:3] == key and k[4] == "second"), Decimal(0)
    )


def synthetic_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        query = (
            select(usage_events)
            .where(usage_events.c.event_id.like("reconcile:%"))
            .order_by(usage_events.c.id)
        )
        return list(conn.execute(query))


def event_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(usage_events)).scalar_one())


# -- rule 15, case by case --------------------------------------------------------------


def test_running_but_unknown_gets_a_start_at_t_billed_by_the_next_run(
    database_url: str, tmp_path: Path
) -> None:
    engine = migrated(database_url)
    outcome = apply(engine, tmp_path, {VM1: "medium"}, "2016-12-12T12:30:00Z")
    assert [(e.action, e.key, e.offering, e.rule) for e in outcome.events] == [
        ("start", VM1, "medium", RULE_START)
    ]
    assert outcome.inserted == 1
    (row,) = synthetic_rows(engine)
    assert (row.kind, row.action, row.offering) == ("resource", "start", "medium")
    assert to_ms(row.occurred_at) == to_ms(t("2016-12-12T12:30:00Z"))
    assert len(row.event_id) <= 64 and row.event_id.startswith("reconcile:")
    attributes = row.attributes if isinstance(row.attributes, dict) else json.loads(row.attributes)
    assert attributes["source"] == "reconcile"
    assert attributes["snapshot_id"] == outcome.snapshot_id
    assert attributes["rule"] == RULE_START
    run(engine, "2016-12-12T14:30:00Z", tmp_path)
    assert billed(engine) == {
        ("acme", "vm", "vm-1", "medium", "second", t("2016-12-12T12:00:00Z")): Decimal(1800),
        ("acme", "vm", "vm-1", "medium", "second", t("2016-12-12T13:00:00Z")): Decimal(3600),
    }


def test_known_running_but_absent_stops_at_its_last_event_as_a_correction(
    database_url: str, tmp_path: Path
) -> None:
    engine = migrated(database_url)
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T10:00:00Z", offering="small"),
            resource("u", "update", "2016-12-12T10:15:00Z", offering="small"),
        ],
    )
    run(engine, "2016-12-12T13:00:00Z", tmp_path)
    assert seconds(engine) == 2 * 3600  # billed 10:00-12:00, its stop was lost
    outcome = apply(engine, tmp_path, {}, "2016-12-12T12:45:00Z", allow_empty=True)
    assert [(e.action, e.occurred_at, e.rule) for e in outcome.events] == [
        ("stop", to_ms(t("2016-12-12T10:15:00Z")), RULE_STOP)
    ]
    run(engine, "2016-12-12T14:00:00Z", tmp_path)
    assert seconds(engine) == 15 * 60  # the correction gave back everything after 10:15


def test_last_seen_by_a_snapshot_is_later_evidence_than_the_last_event(
    database_url: str, tmp_path: Path
) -> None:
    engine = migrated(database_url)
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00:00Z", offering="small")])
    assert apply(engine, tmp_path, {VM1: "small", VM2: None}, "2016-12-12T11:00:00Z").events
    with engine.connect() as conn:
        seen = conn.execute(
            select(resource_state.c.resource_id, resource_state.c.last_seen_at).order_by(
                resource_state.c.resource_id
            )
        ).all()
    assert [(r, to_ms(s)) for r, s in seen] == [
        ("vm-1", to_ms(t("2016-12-12T11:00:00Z"))),
        ("vm-2", to_ms(t("2016-12-12T11:00:00Z"))),
    ]
    outcome = apply(engine, tmp_path, {VM2: None}, "2016-12-12T13:00:00Z")
    assert [(e.key, e.action, e.occurred_at) for e in outcome.events] == [
        (VM1, "stop", to_ms(t("2016-12-12T11:00:00Z")))
    ]
    run(engine, "2016-12-12T15:00:00Z", tmp_path)
    assert seconds(engine) == 3600


def test_policy_never_underbill_stops_at_snapshot_time(database_url: str, tmp_path: Path) -> None:
    engine = migrated(database_url)
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00:00Z")])
    outcome = apply(
        engine,
        tmp_path,
        {VM2: None},
        "2016-12-12T12:30:00Z",
        policy=NEVER_UNDERBILL,
    )
    stops = [e for e in outcome.events if e.action == "stop"]
    assert [(e.key, e.occurred_at) for e in stops] == [(VM1, to_ms(t("2016-12-12T12:30:00Z")))]
    run(engine, "2016-12-12T15:00:00Z", tmp_path)
    assert seconds(engine) == Decimal(2.5 * 3600)


def test_other_offering_gets_an_update_at_t(database_url: str, tmp_path: Path) -> None:
    engine = migrated(database_url)
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00:00Z", offering="small")])
    outcome = apply(engine, tmp_path, {VM1: "large"}, "2016-12-12T10:30:00Z")
    assert [(e.action, e.offering, e.rule) for e in outcome.events] == [
        ("update", "large", RULE_UPDATE)
    ]
    # A listed resource without an offering keeps its own.
    assert not apply(engine, tmp_path, {VM1: None}, "2016-12-12T10:40:00Z").events
    run(engine, "2016-12-12T12:00:00Z", tmp_path)
    hour = t("2016-12-12T10:00:00Z")
    assert billed(engine) == {
        ("acme", "vm", "vm-1", "small", "second", hour): Decimal(1800),
        ("acme", "vm", "vm-1", "large", "second", hour): Decimal(1800),
    }


def test_applying_the_same_snapshot_twice_changes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    engine = migrated(database_url)
    insert_events(
        engine,
        [
            resource("c1", "create", "2016-12-12T10:00:00Z", offering="small"),
            resource("c2", "create", "2016-12-12T10:00:00Z", resource_id="vm-2"),
        ],
    )
    running: dict[ResourceKey, str | None] = {VM1: "large", ("acme", "vm", "vm-3"): "xl"}
    first = apply(engine, tmp_path, running, "2016-12-12T11:00:00Z")
    assert sorted(e.action for e in first.events) == ["start", "stop", "update"]
    run(engine, "2016-12-12T13:00:00Z", tmp_path)
    before, events = billed(engine), event_count(engine)
    second = apply(engine, tmp_path, running, "2016-12-12T11:00:00Z")
    assert second.events == () and second.inserted == 0
    assert second.snapshot_id == first.snapshot_id
    run(engine, "2016-12-12T14:00:00Z", tmp_path)
    assert event_count(engine) == events
    assert {k: v for k, v in billed(engine).items() if k[5] < t("2016-12-12T12:00:00Z")} == before


def test_listed_but_destroyed_is_reported_not_restarted(database_url: str, tmp_path: Path) -> None:
    engine = migrated(database_url)
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T10:00:00Z"),
            resource("d", "destroy", "2016-12-12T10:30:00Z"),
        ],
    )
    outcome = apply(engine, tmp_path, {VM1: None}, "2016-12-12T11:00:00Z")
    assert outcome.events == ()
    assert [s.key for s in outcome.skipped] == [VM1]


def test_events_no_run_has_read_yet_are_part_of_the_stored_state(
    database_url: str, tmp_path: Path
) -> None:
    engine = migrated(database_url)
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00:00Z")])
    run(engine, "2016-12-12T11:00:00Z", tmp_path)
    insert_events(
        engine,
        [
            resource("s", "stop", "2016-12-12T11:10:00Z"),  # unread, before T
            resource("c2", "create", "2016-12-12T11:20:00Z", resource_id="vm-2"),  # unread
        ],
    )
    assert apply(engine, tmp_path, {VM2: None}, "2016-12-12T11:30:00Z").events == ()


def test_a_snapshot_earlier_than_what_is_billed_uses_the_state_at_its_time(
    database_url: str, tmp_path: Path
) -> None:
    engine = migrated(database_url)
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T10:00:00Z"),  # vm-1 runs throughout
            resource("c2", "create", "2016-12-12T09:00:00Z", resource_id="vm-2"),
            resource("s2", "stop", "2016-12-12T12:10:00Z", resource_id="vm-2"),
        ],
    )
    run(engine, "2016-12-12T14:00:00Z", tmp_path)
    # At 11:00 vm-2 still ran by its events; the snapshot says it did not.
    outcome = apply(engine, tmp_path, {VM1: None}, "2016-12-12T11:00:00Z")
    assert [(e.key, e.action, e.occurred_at) for e in outcome.events] == [
        (VM2, "stop", to_ms(t("2016-12-12T09:00:00Z")))
    ]
    run(engine, "2016-12-12T15:00:00Z", tmp_path)
    assert seconds(engine, VM2) == 0  # its later stop is a stop without start now


def test_entities_limit_what_is_compared(database_url: str, tmp_path: Path) -> None:
    engine = migrated(database_url)
    insert_events(
        engine, [resource("v", "create", "2016-12-12T10:00:00Z", entity="volume", resource_id="d")]
    )
    outcome = apply(engine, tmp_path, {VM1: None}, "2016-12-12T11:00:00Z", entities=("vm",))
    assert [(e.key, e.action) for e in outcome.events] == [(VM1, "start")]


def test_dry_run_prints_what_it_would_do_and_changes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    engine = migrated(database_url)
    outcome = apply(engine, tmp_path, {VM1: None}, "2016-12-12T11:00:00Z", dry_run=True)
    assert [e.action for e in outcome.events] == ["start"]
    assert outcome.inserted == 0
    assert event_count(engine) == 0
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(resource_state)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(reconciliations)).scalar_one() == 0


def test_an_empty_file_snapshot_needs_allow_empty(sqlite_url: str, tmp_path: Path) -> None:
    engine = migrated(sqlite_url)
    with pytest.raises(UsageError, match="allow-empty"):
        apply(engine, tmp_path, {}, "2016-12-12T11:00:00Z")


def test_reconcile_refuses_while_a_run_holds_the_lock(sqlite_url: str, tmp_path: Path) -> None:
    from metering.lock import run_lock

    engine = migrated(sqlite_url)
    with run_lock(engine, tmp_path / "metering.lock"), pytest.raises(LockHeld):
        apply(engine, tmp_path, {VM1: None}, "2016-12-12T11:00:00Z")
    assert event_count(engine) == 0


# -- snapshots from inventory_snapshots ------------------------------------------------------


def platform_writes(engine: Engine, snapshot_id: str, at: str, keys: list[ResourceKey]) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(inventory_snapshots),
            [
                {
                    "snapshot_id": snapshot_id,
                    "taken_at": t(at),
                    "account": a,
                    "entity": e,
                    "resource_id": r,
                    "offering": "small",
                }
                for a, e, r in keys
            ],
        )


def from_table(engine: Engine, tmp_path: Path, snapshot_id: str | None = None) -> ReconcileOutcome:
    request = ReconcileRequest(snapshot_id=snapshot_id)
    return execute(engine, request, lock_file=tmp_path / "metering.lock")


def test_from_table_applies_the_latest_snapshot_once(database_url: str, tmp_path: Path) -> None:
    engine = migrated(database_url)
    assert from_table(engine, tmp_path).messages == ["inventory_snapshots holds no snapshot"]
    platform_writes(engine, "snap-1", "2016-12-12T10:00:00Z", [VM1])
    platform_writes(engine, "snap-2", "2016-12-12T11:00:00Z", [VM1, VM2])
    first = from_table(engine, tmp_path)
    assert first.snapshot_id == "snap-2"
    assert sorted((e.key, e.action) for e in first.events) == [(VM1, "start"), (VM2, "start")]
    assert all(e.occurred_at == to_ms(t("2016-12-12T11:00:00Z")) for e in first.events)
    again = from_table(engine, tmp_path)
    assert again.already_applied and again.events == ()
    # An explicit, older snapshot still converges: vm-1 ran at 10:00 already.
    older = from_table(engine, tmp_path, "snap-1")
    assert [(e.key, e.action, e.occurred_at) for e in older.events] == [
        (VM1, "start", to_ms(t("2016-12-12T10:00:00Z")))
    ]
    with engine.connect() as conn:
        rows = conn.execute(select(reconciliations).order_by(reconciliations.c.taken_at)).all()
    assert [(r.snapshot_id, r.source, r.starts) for r in rows] == [
        ("snap-1", "table", 1),
        ("snap-2", "table", 2),
    ]


def test_from_table_rejects_a_snapshot_with_two_times(sqlite_url: str, tmp_path: Path) -> None:
    engine = migrated(sqlite_url)
    platform_writes(engine, "snap", "2016-12-12T10:00:00Z", [VM1])
    platform_writes(engine, "snap", "2016-12-12T10:05:00Z", [VM2])
    with pytest.raises(InventoryError, match="disagree"):
        from_table(engine, tmp_path)
    with pytest.raises(UsageError, match="no snapshot"):
        from_table(engine, tmp_path, "nope")
    assert event_count(engine) == 0


# -- parsing ------------------------------------------------------------------------------


def test_parse_json_lines_and_csv_alike() -> None:
    jsonl = (
        b'{"account": "acme", "entity": "vm", "resource_id": "vm-1", "offering": "small"}\n\n'
        b'{"account": "acme", "entity": "vm", "resource_id": "vm-2", "offering": null}\n'
    )
    csv_text = (
        b"\xef\xbb\xbfaccount,entity,resource_id,offering\nacme,vm,vm-1,small\nacme,vm,vm-2,\n"
    )
    expected = {VM1: "small", VM2: None}
    assert parse_inventory(jsonl).running == expected
    assert parse_inventory(csv_text).running == expected
    assert parse_inventory(csv_text, "csv").running == expected


def test_parse_reads_taken_at_from_the_file() -> None:
    text = b"account,entity,resource_id,taken_at\nacme,vm,vm-1,2016-12-12T11:00:00Z\n"
    assert parse_inventory(text).taken_at == to_ms(t("2016-12-12T11:00:00Z"))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"account": "acme", "entity": "vm"}\n', "line 1: missing resource_id"),
        (b'{"account": "a", "entity": "vm", "resource_id": "r"}\nnot json\n', "line 2: not valid"),
        (b"account,entity\nacme,vm\n", "header lacks resource_id"),
        (b"account,entity,resource_id,offering\na,vm,r,x\na,vm,r,y\n", "different offerings"),
        (
            b"account,entity,resource_id,taken_at\na,vm,r,2016-12-12T11:00Z\n"
            b"a,vm,s,2016-12-12T12:00Z\n",
            "disagree on taken_at",
        ),
        (b"account,entity,resource_id\n" + b"a" * 65 + b",vm,r\n", "longer than 64"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_a_bad_line_rejects_the_whole_file(data: bytes, reason: str) -> None:
    with pytest.raises(InventoryError, match=reason):
        parse_inventory(data)


# -- the command line ----------------------------------------------------------------------


def test_cli_reconcile_from_stdin_then_again(sqlite_url: str, tmp_path: Path) -> None:
    engine = migrated(sqlite_url)
    runner = CliRunner()
    args = [
        "--database-url",
        sqlite_url,
        "reconcile",
        "--inventory",
        "-",
        "--at",
        "2016-12-12T11:00:00Z",
        "--lock-file",
        str(tmp_path / "lock"),
    ]
    stdin = "account,entity,resource_id,offering\nacme,vm,vm-1,small\n"
    dry = runner.invoke(main, [*args, "--dry-run"], input=stdin)
    assert dry.exit_code == 0, dry.output
    assert "would insert 1 events" in dry.output and event_count(engine) == 0
    done = runner.invoke(main, [*args, "--format", "json"], input=stdin)
    assert done.exit_code == 0, done.output
    data = json.loads(done.output.splitlines()[-1])
    assert data["inserted"] == 1 and data["events"][0]["action"] == "start"
    again = runner.invoke(main, args, input=stdin)
    assert again.exit_code == 0 and "nothing to change" in again.output
    assert event_count(engine) == 1


def test_cli_reconcile_usage_errors(sqlite_url: str, tmp_path: Path) -> None:
    migrated(sqlite_url)
    runner = CliRunner()
    base = ["--database-url", sqlite_url, "reconcile", "--lock-file", str(tmp_path / "lock")]
    assert runner.invoke(main, base).exit_code == 2
    no_time = runner.invoke(
        main, [*base, "--inventory", "-"], input="account,entity,resource_id\na,vm,r\n"
    )
    assert no_time.exit_code == 2
    bad = runner.invoke(
        main, [*base, "--inventory", "-", "--at", "2016-12-12T11:00Z"], input="{broken\n"
    )
    assert bad.exit_code == 1


# -- reconcile and run together ----------------------------------------------------------------


@pytest.mark.mariadb
def test_reconcile_waits_for_a_run_and_neither_corrupts_the_other(
    mariadb_url: str, tmp_path: Path
) -> None:
    engine = migrated(mariadb_url)
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00:00Z")])
    in_write = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def pause(where: str) -> None:
        if where == "write":
            in_write.set()
            release.wait(10)

    def background_run() -> None:
        try:
            run(engine, "2016-12-12T13:00:00Z", tmp_path, pause=pause)
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    runner = threading.Thread(target=background_run)
    runner.start()
    assert in_write.wait(10)
    # The run holds the locks: reconcile refuses at once, or waits for them.
    with pytest.raises(LockHeld):
        apply(engine, tmp_path, {}, "2016-12-12T12:30:00Z", allow_empty=True)
    waited: list[ReconcileOutcome] = []
    waiter = threading.Thread(
        target=lambda: waited.append(
            execute(
                engine,
                ReconcileRequest(
                    inventory=Inventory({}, None), at=t("2016-12-12T12:30:00Z"), allow_empty=True
                ),
                lock_file=tmp_path / "metering.lock",
                wait=20,
            )
        )
    )
    waiter.start()
    release.set()
    runner.join(20)
    waiter.join(30)
    assert not errors
    assert [e.action for e in waited[0].events] == ["stop"]
    run(engine, "2016-12-12T14:00:00Z", tmp_path)
    assert seconds(engine) == 0  # stopped at its only event: its create


@pytest.mark.mariadb
@pytest.mark.slow
def test_run_and_reconcile_processes_started_together(mariadb_url: str, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    engine = migrated(mariadb_url)
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00:00Z")])  # stop lost
    snapshot = tmp_path / "inventory.csv"
    snapshot.write_text("account,entity,resource_id,offering\nacme,vm,vm-2,small\n")
    env = {**os.environ, "METERING_DATABASE_URL": mariadb_url}
    common = [sys.executable, "-m", "metering", "--log-format", "json"]
    lock = ["--lock-file", str(tmp_path / "metering.lock")]
    reconcile_args = [
        *common,
        "reconcile",
        "--inventory",
        str(snapshot),
        "--at",
        "2016-12-12T12:00:00Z",
        *lock,
    ]
    procs = [
        subprocess.Popen([*common, "run", "--now", "2016-12-12T14:30:00Z", *lock], env=env),
        subprocess.Popen(reconcile_args, env=env),
    ]
    assert {p.wait(60) for p in procs} <= {0, 75}
    # Whatever the interleaving, once both have run to completion the result is exact.
    assert subprocess.run([*reconcile_args, "--wait", "30"], env=env).returncode == 0
    assert (
        subprocess.run(
            [*common, "run", "--now", "2016-12-12T14:30:00Z", "--wait", "30", *lock], env=env
        ).returncode
        == 0
    )
    assert seconds(engine, VM1) == 0
    assert seconds(engine, VM2) == 2 * 3600


# -- synthetic event ids -----------------------------------------------------------------------


PIPE_A: ResourceKey = ("a|b", "vm", "r1")
PIPE_B: ResourceKey = ("a", "b|vm", "r1")


def legacy_event_id(snapshot_id: str, key: ResourceKey, action: str) -> str:
    """The id metering 0.x gave a synthetic event: the fields joined with '|'."""
    import hashlib

    text = "|".join((snapshot_id, *key, action))
    return "reconcile:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def test_resources_whose_fields_join_alike_get_distinct_ids_and_both_are_billed(
    database_url: str, tmp_path: Path
) -> None:
    engine = migrated(database_url)
    inventory = tmp_path / "inventory.csv"
    inventory.write_text('account,entity,resource_id\n"a|b",vm,r1\na,"b|vm",r1\n')
    result = CliRunner().invoke(
        main,
        [
            "--database-url",
            database_url,
            "reconcile",
            "--inventory",
            str(inventory),
            "--at",
            "2016-12-12T11:00:00Z",
            "--lock-file",
            str(tmp_path / "lock"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "inserted 2 events (2 start" in result.output
    rows = synthetic_rows(engine)
    assert sorted((r.account, r.entity, r.resource_id) for r in rows) == sorted([PIPE_A, PIPE_B])
    run(engine, "2016-12-12T13:00:00Z", tmp_path)
    assert seconds(engine, PIPE_A) == seconds(engine, PIPE_B) == 3600


def test_ids_without_a_pipe_in_any_field_are_those_of_earlier_versions(
    database_url: str, tmp_path: Path
) -> None:
    """Upgrading keeps the ids of snapshots applied before: re-applying one after the
    upgrade finds its events stored under the same ids."""
    engine = migrated(database_url)
    outcome = apply(engine, tmp_path, {VM1: "small"}, "2016-12-12T11:00:00Z")
    (row,) = synthetic_rows(engine)
    assert row.event_id == legacy_event_id(outcome.snapshot_id or "", VM1, "start")


def test_after_upgrade_reapplying_bills_the_resource_an_old_colliding_id_lost(
    database_url: str, tmp_path: Path
) -> None:
    engine = migrated(database_url)
    running: dict[ResourceKey, str | None] = {PIPE_A: None, PIPE_B: None}
    at = "2016-12-12T11:00:00Z"
    snapshot_id = apply(engine, tmp_path, running, at, dry_run=True).snapshot_id or ""
    # What an earlier version stored: one start under the id both resources shared.
    shared = legacy_event_id(snapshot_id, PIPE_A, "start")
    assert shared == legacy_event_id(snapshot_id, PIPE_B, "start")
    insert_events(engine, [{**resource(shared, "start", at, account="a|b", resource_id="r1")}])
    outcome = apply(engine, tmp_path, running, at)
    assert [(e.key, e.action) for e in outcome.events] == [(PIPE_B, "start")]
    assert outcome.inserted == 1
    assert event_count(engine) == 2
    again = apply(engine, tmp_path, running, at)
    assert again.events == () and event_count(engine) == 2


def test_inserted_counts_only_the_events_stored(database_url: str, tmp_path: Path) -> None:
    from metering.store import inventory as store_inventory

    engine = migrated(database_url)
    row = resource("reconcile:x", "start", "2016-12-12T11:00:00Z")
    insert_events(engine, [resource("reconcile:y", "start", "2016-12-12T11:00:00Z")])
    with engine.begin() as conn:
        stored = store_inventory.insert_events(
            conn, [row, {**row, "resource_id": "vm-2"}, {**row, "event_id": "reconcile:y"}]
        )
    assert stored == 1 and event_count(engine) == 2


def test_an_event_already_stored_by_the_same_snapshot_is_not_counted_as_inserted(
    database_url: str, tmp_path: Path
) -> None:
    from metering.reconcile import render

    engine = migrated(database_url)
    at = "2016-12-12T11:00:00Z"
    assert apply(engine, tmp_path, {VM1: None}, at).inserted == 1
    # A stop at T, delivered late, undoes the synthetic start: the snapshot asks for the
    # same start again, whose id is stored already.
    insert_events(engine, [resource("late-stop", "stop", at)])
    again = apply(engine, tmp_path, {VM1: None}, at)
    assert [e.action for e in again.events] == ["start"] and again.inserted == 0
    assert "inserted 0 of 1 events (1 start, 0 stop, 0 update): 1 already stored" in render(
        again, "table"
    )
    assert event_count(engine) == 2


# -- the file's format and emptiness ----------------------------------------------------------


def reconcile_file(url: str, tmp_path: Path, name: str, data: bytes, *extra: str) -> Any:
    inventory = tmp_path / name
    inventory.write_bytes(data)
    args = ["--inventory", str(inventory), "--at", "2016-12-12T11:00:00Z", *extra]
    return CliRunner().invoke(
        main,
        ["--database-url", url, "reconcile", "--lock-file", str(tmp_path / "lock"), *args],
    )


@pytest.mark.parametrize("name", ["running.jsonl", "running"])
@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf\n  \n"])
def test_an_empty_inventory_file_is_refused_as_empty_unless_allowed(
    database_url: str, tmp_path: Path, name: str, data: bytes
) -> None:
    engine = migrated(database_url)
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00:00Z")])
    refused = reconcile_file(database_url, tmp_path, name, data)
    assert refused.exit_code == 2, refused.output
    assert "the inventory file is empty" in refused.output
    assert "--allow-empty" in refused.output and "header" not in refused.output
    assert event_count(engine) == 1
    allowed = reconcile_file(database_url, tmp_path, name, data, "--allow-empty")
    assert allowed.exit_code == 0, allowed.output
    assert [r.action for r in synthetic_rows(engine)] == ["stop"]


def test_auto_format_follows_the_file_extension(sqlite_url: str, tmp_path: Path) -> None:
    migrated(sqlite_url)
    csv_named_jsonl = reconcile_file(
        sqlite_url, tmp_path, "running.JSONL", b"account,entity,resource_id\nacme,vm,vm-1\n"
    )
    assert csv_named_jsonl.exit_code == 1
    assert "line 1: not valid JSON" in csv_named_jsonl.output
    # A CSV whose first column name starts with "{" is still CSV when the name says so.
    odd_header = b"{note},account,entity,resource_id\nx,acme,vm,vm-1\n"
    as_csv = reconcile_file(sqlite_url, tmp_path, "running.csv", odd_header, "--dry-run")
    assert as_csv.exit_code == 0, as_csv.output
    assert "would insert 1 events" in as_csv.output
    # Without a known extension, the first character decides, as before.
    jsonl = b'{"account": "acme", "entity": "vm", "resource_id": "vm-1"}\n'
    unnamed = reconcile_file(sqlite_url, tmp_path, "running.txt", jsonl, "--dry-run")
    assert unnamed.exit_code == 0 and "would insert 1 events" in unnamed.output
