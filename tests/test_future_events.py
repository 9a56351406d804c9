"""Events dated more than an hour after now (a producer's clock bug) wait unbilled:
`status` reports them and `check` flags them, in every output format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from sqlalchemy import Engine, select

from metering.cli import main
from metering.store.schema import usage_events
from tests.support import insert_events, migrated, resource

NOW = "2016-12-12T16:00:00Z"


def invoke(url: str, env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(
        main, ["--log-format", "json", "--database-url", url, *args, "--now", NOW], env=env
    )


def row_id(engine: Engine, event_id: str) -> int:
    with engine.connect() as conn:
        found = conn.execute(
            select(usage_events.c.id).where(usage_events.c.event_id == event_id)
        ).scalar_one()
    return int(found)


def future_of_check(result: Result) -> dict[str, Any]:
    (check,) = [c for c in json.loads(result.stdout)["checks"] if c["name"] == "future-events"]
    return dict(check)


def test_status_and_check_report_events_dated_in_the_future(
    database_url: str, env: dict[str, str]
) -> None:
    engine = migrated(database_url)
    insert_events(
        engine,
        [
            resource("past", "create", "2016-12-12T15:00:00Z"),
            resource("soon", "stop", "2016-12-12T16:59:59.999Z"),  # within the hour: fine
            resource("clock-bug", "start", "2030-01-01T00:00:00Z", resource_id="vm-2"),
            resource("just-over", "stop", "2016-12-12T17:00:00.001Z", resource_id="vm-2"),
        ],
    )
    first = row_id(engine, "clock-bug")

    status = invoke(database_url, env, "status", "--format", "json")
    assert status.exit_code == 0, status.output
    future = json.loads(status.stdout)["future_events"]
    assert future["after"] == "2016-12-12T17:00:00.000Z"
    assert future["count"] == 2
    assert future["first"] == {
        "id": first,
        "event_id": "clock-bug",
        "account": "acme",
        "entity": "vm",
        "resource_id": "vm-2",
        "occurred_at": "2030-01-01T00:00:00.000Z",
    }
    table = invoke(database_url, env, "status")
    assert table.exit_code == 0, table.output
    assert (
        "future:        2 events dated more than 1 h after now, unbilled until then "
        f"(first: id {first}, event_id clock-bug, occurred_at 2030-01-01T00:00:00.000Z)"
    ) in table.stdout

    check = invoke(database_url, env, "check", "--format", "json")
    assert check.exit_code == 1, check.output
    found = future_of_check(check)
    assert found["ok"] is False and found["found"] == 2
    assert [(i["id"], i["event_id"]) for i in found["items"]] == [
        (first, "clock-bug"),
        (row_id(engine, "just-over"), "just-over"),
    ]
    check_table = invoke(database_url, env, "check")
    assert check_table.exit_code == 1
    assert "PROBLEM  future-events" in check_table.stdout
    assert f"id={first}  event_id=clock-bug" in check_table.stdout


def test_nothing_in_the_future_is_healthy(database_url: str, env: dict[str, str]) -> None:
    engine = migrated(database_url)
    insert_events(engine, [resource("soon", "create", "2016-12-12T16:59:00Z")])
    status = invoke(database_url, env, "status", "--format", "json")
    assert json.loads(status.stdout)["future_events"]["count"] == 0
    assert json.loads(status.stdout)["future_events"]["first"] is None
    assert (
        "future:        no event dated more than 1 h after now"
        in invoke(database_url, env, "status").stdout
    )
    check = invoke(database_url, env, "check", "--format", "json")
    assert check.exit_code == 0, check.output
    assert future_of_check(check)["ok"] is True


def test_sqlite_text_times_in_any_iso_form_compare_as_instants(
    sqlite_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    engine = migrated(sqlite_url)
    forms = {
        "t-and-z": ("2016-12-12T16:30:00Z", False),  # as text, 'T' sorts after ' '
        "offset-east": ("2016-12-12 22:00:01+05:00", True),  # 17:00:01 UTC
        "offset-west": ("2016-12-12 12:00:00-08:00", True),  # 20:00 UTC, before as text
        "no-fraction": ("2016-12-12 17:00:00", False),  # exactly an hour ahead
        "t-no-seconds": ("2016-12-12T17:01", True),
    }
    with engine.begin() as conn:
        for event_id, (when, _) in forms.items():
            conn.exec_driver_sql(
                "INSERT INTO usage_events (event_id, kind, entity, action, account, resource_id,"
                " occurred_at, ingested_at)"
                " VALUES (?, 'resource', 'vm', 'start', 'acme', 'vm-1', ?, ?)",
                (event_id, when, "2016-12-12 16:00:00.000"),
            )
    check = invoke(sqlite_url, env, "check", "--format", "json")
    found = future_of_check(check)
    expected = [event_id for event_id, (_, future) in forms.items() if future]
    assert [i["event_id"] for i in found["items"]] == expected
    assert found["items"][0]["occurred_at"] == "2016-12-12T17:00:01.000Z"
