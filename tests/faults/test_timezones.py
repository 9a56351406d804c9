"""The machine's time zone changes nothing: metering run with TZ=Europe/Zurich and
TZ=America/New_York, across their DST changes, writes the very lines it writes with
TZ=UTC (MariaDB sessions use time_zone '+00:00' whatever the server's zone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from metering.store.schema import runs, usage_lines
from tests.contract_model import expected
from tests.support import billed, event, migrated, t

ZONES = ("UTC", "Europe/Zurich", "America/New_York")


def line(**values: Any) -> dict[str, Any]:
    return values


def vm(
    event_id: str, action: str, when: str, rid: str, offering: str | None = None
) -> dict[str, Any]:
    return line(
        event_id=event_id,
        kind="resource",
        entity="vm",
        action=action,
        account="acme",
        resource_id=rid,
        offering=offering,
        occurred_at=when,
    )


def traffic(event_id: str, quantity: int, start: str, end: str) -> dict[str, Any]:
    return line(
        event_id=event_id,
        kind="quantity",
        entity="ip",
        action="measure",
        account="acme",
        resource_id="10.0.0.1",
        quantity=quantity,
        period_start=start,
        period_end=end,
        occurred_at=end,
    )


# Around the DST changes (UTC instants in comments). Offsets are the local ones, so
# the same local wall time appears twice in autumn; times without offset are UTC.
EVENTS = [
    # Zurich, spring forward at 2016-03-27 01:00Z (02:00 local -> 03:00)
    vm("z1", "create", "2016-03-27T01:30:00+01:00", "zs", "small"),  # 00:30Z
    vm("z2", "update", "2016-03-27T03:15:00+02:00", "zs", "large"),  # 01:15Z
    vm("z3", "stop", "2016-03-27T02:45:00Z", "zs"),
    traffic("zt1", 1001, "2016-03-27T01:59:30+01:00", "2016-03-27T03:00:30+02:00"),
    # Zurich, fall back at 2016-10-30 01:00Z (03:00 local -> 02:00): 02:30 twice
    vm("z4", "create", "2016-10-30T02:30:00+02:00", "za", "small"),  # 00:30Z
    vm("z5", "stop", "2016-10-30T02:30:00+01:00", "za"),  # 01:30Z
    traffic("zt2", 7, "2016-10-30T02:59:00+02:00", "2016-10-30T02:01:00+01:00"),
    # New York, spring forward at 2016-03-13 07:00Z
    vm("n1", "create", "2016-03-13T06:50:00", "ns"),  # no offset: UTC
    vm("n2", "stop", "2016-03-13T03:10:00-04:00", "ns"),  # 07:10Z
    # New York, fall back at 2016-11-06 06:00Z (02:00 EDT -> 01:00 EST): 01:30 twice
    vm("n3", "create", "2016-11-06T01:30:00-04:00", "na", "small"),  # 05:30Z
    vm("n4", "stop", "2016-11-06T01:30:00-05:00", "na"),  # 06:30Z
    traffic("nt", 120, "2016-11-06T01:59:00-04:00", "2016-11-06T01:01:00-05:00"),
]

# Scheduled runs landing inside each change, given in local and naive (UTC) forms.
NOWS = [
    "2016-03-13T03:45:00-04:00",
    "2016-03-27T03:45:00+02:00",
    "2016-10-30T02:45:00+01:00",
    "2016-11-06T01:45:00-05:00",
    "2016-11-07T00:00:00",
]
FINAL_HORIZON = t("2016-11-06T23:00:00Z")

DRIVER = """
import json, sys, time
from metering.cli import main
print(*(time.strftime("%Z", time.localtime(at)) for at in (1477787400, 1478413800)))
for args in json.loads(sys.argv[1]):
    main(args, standalone_mode=False)
"""


def run_in_zone(url: str, zone: str, tmp_path: Path, events_file: Path) -> str:
    """ingest + the runs above + a dry run and a backfill, in one process with TZ=zone."""
    base = ["--log-format", "json", "--database-url", url]
    steps = [[*base, "ingest", str(events_file)]]
    steps += [[*base, "run", "--now", now] for now in NOWS]
    steps.append([*base, "run", "--now", NOWS[-1], "--dry-run", "--format", "csv"])
    steps.append([*base, "run", "--now", NOWS[-1], "--since", "2016-03-01T00:00:00"])
    env = {
        **os.environ,
        "TZ": zone,
        "METERING_CONFIG": "",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "METERING_LOCK_FILE": str(tmp_path / f"{zone.replace('/', '-')}.lock"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(steps)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def lines_and_runs(engine: Engine) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    c, r = usage_lines.c, runs.c
    with engine.connect() as conn:
        lines = conn.execute(
            select(
                c.run_id,
                c.account,
                c.entity,
                c.resource_id,
                c.offering,
                c.unit,
                c.period_start,
                c.quantity,
                c.source,
            ).order_by(c.id)
        ).all()
        windows = conn.execute(
            select(r.run_id, r.kind, r.clock, r.hours_from, r.hours_to, r.lines_written).order_by(
                r.run_id
            )
        ).all()
    return [tuple(x) for x in lines], [tuple(x) for x in windows]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def test_same_lines_in_every_time_zone(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    results = {}
    for zone in ZONES:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path}/{zone.replace('/', '-')}.db"
        else:
            url = request.getfixturevalue("mariadb_url_factory")()
        engine = migrated(url)
        printed = run_in_zone(url, zone, tmp_path, events_file)
        # The zone really was in force: local names around 2016-10-30 00:30Z / 2016-11-06 06:30Z.
        assert (
            printed.split()[:2]
            == {
                "UTC": ["UTC", "UTC"],
                "Europe/Zurich": ["CEST", "CET"],
                "America/New_York": ["EDT", "EST"],
            }[zone]
        )
        results[zone] = (billed(engine), lines_and_runs(engine))
        engine.dispose()
    utc_billed, utc_rows = results["UTC"]
    rows = [event(**e) for e in EVENTS]  # event() parses the ISO times as ingest does
    assert utc_billed == expected(rows, FINAL_HORIZON)
    assert utc_billed[("acme", "vm", "za", "small", "second", t("2016-10-30T00:00:00Z"))] == 1800
    assert utc_billed[("acme", "vm", "za", "small", "second", t("2016-10-30T01:00:00Z"))] == 1800
    for zone in ZONES[1:]:
        assert results[zone][0] == utc_billed, zone
        assert results[zone][1] == utc_rows, zone
