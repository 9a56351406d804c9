"""`metering run` on MariaDB, end to end (issue 3's integration tests).

- Rows do not commit in id order: an insert held open in one transaction while
  later ids commit is billed once it commits within the settle lag (rule 12).
- Two `metering run` processes started together bill once (rule 11).
- A run killed with SIGKILL leaves nothing partial; the next run is exact (rule 10).
- `--dry-run` prints exactly the lines the following real run writes (rule 14).
"""

from __future__ import annotations

import csv
import io
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.engine import Connection, RootTransaction

from metering.store.schema import event_gaps, runs, usage_events, usage_lines
from metering.timeutil import iso
from tests.faults import scenario as sc
from tests.support import billed, insert_events, measure, migrated, resource, run, t

pytestmark = pytest.mark.mariadb

START = t("2016-12-12T00:00Z")


@pytest.fixture
def engine(mariadb_url: str) -> Iterator[Engine]:
    engine = migrated(mariadb_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _vm_seconds(engine: Engine, hour: str) -> Decimal | None:
    return billed(engine).get(("acme", "vm", "vm-1", "medium", "second", t(hour)))


def _held_open_stop(engine: Engine, tmp_path: Path) -> tuple[Connection, RootTransaction]:
    """vm-1 runs from 10:00, billed to 11:00. A stop at 11:20 is inserted in a
    transaction left open (its id assigned) while a later row commits and a run
    bills 11:00-12:00 past it. Returns the open connection and transaction."""
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00Z", offering="medium")])
    run(engine, "2016-12-12T11:32Z", tmp_path)
    held = engine.connect()
    tx = held.begin()
    held.execute(insert(usage_events), [resource("late-stop", "stop", "2016-12-12T11:20Z")])
    insert_events(engine, [measure("after", 5, "2016-12-12T11:10Z", "2016-12-12T11:11Z")])
    with engine.connect() as conn:
        ids = dict(conn.execute(select(usage_events.c.event_id, usage_events.c.id)).all())
        held_id = held.execute(
            select(usage_events.c.id).where(usage_events.c.event_id == "late-stop")
        ).scalar_one()
    assert held_id < ids["after"], "the held row must have the lower id"
    outcome = run(engine, "2016-12-12T12:32Z", tmp_path)
    assert outcome.runs[0].last_event_id == ids["after"]  # read past the held row
    assert _vm_seconds(engine, "2016-12-12T11:00Z") == Decimal("3600.000")
    with engine.connect() as conn:
        gaps = conn.execute(select(event_gaps.c.id_from, event_gaps.c.id_to)).all()
    assert [tuple(g) for g in gaps] == [(held_id, held_id)]
    return held, tx


def test_insert_committed_late_within_settle_lag_is_billed(engine: Engine, tmp_path: Path) -> None:
    held, tx = _held_open_stop(engine, tmp_path)
    tx.commit()
    held.close()
    outcome = run(engine, "2016-12-12T13:32Z", tmp_path)
    assert outcome.runs[0].corrections == 1
    assert _vm_seconds(engine, "2016-12-12T11:00Z") == Decimal("1200.000")
    assert _vm_seconds(engine, "2016-12-12T12:00Z") is None
    assert billed(engine) == sc.expected(engine, t("2016-12-12T13:00Z"))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(event_gaps)).scalar_one() == 0


def test_insert_committed_after_settle_lag_is_left_to_a_backfill(
    engine: Engine, tmp_path: Path
) -> None:
    """Past the settle lag a missing id is given up (it is most often a rolled-back
    insert, and gaps must not be re-read forever): a row that commits later still is
    below the watermark, so scheduled runs never read it. This pins the limit of
    rule 12; docs/reliability.md tells operators to keep the settle lag above their
    longest insert transaction, and that `metering run --since` recovers such a row
    for a known resource (a backfill re-derives it from its whole history)."""
    held, tx = _held_open_stop(engine, tmp_path)
    later = datetime.now(UTC) + timedelta(minutes=11)
    run(engine, "2016-12-12T13:32Z", tmp_path, wall_clock=lambda: later)  # gap expires
    tx.commit()
    held.close()
    run(engine, "2016-12-12T14:32Z", tmp_path)
    assert _vm_seconds(engine, "2016-12-12T11:00Z") == Decimal("3600.000")  # not billed
    assert billed(engine) != sc.expected(engine, t("2016-12-12T14:00Z"))

    backfill = run(engine, "2016-12-12T14:40Z", tmp_path, since=t("2016-12-12T11:00Z"))
    assert backfill.runs[0].kind == "backfill"
    assert _vm_seconds(engine, "2016-12-12T11:00Z") == Decimal("1200.000")
    assert billed(engine) == sc.expected(engine, t("2016-12-12T14:00Z"))


@pytest.mark.parametrize("locks", ["same-lock-file", "separate-lock-files"])
def test_two_processes_started_together_bill_once(
    engine: Engine, mariadb_url: str, tmp_path: Path, locks: str
) -> None:
    feed = sc.Feed(sc.history(51, start=START, hours=4))
    now = START + timedelta(hours=4, minutes=32)
    feed.deliver_until(engine, now)
    files = [tmp_path / "a.lock", tmp_path / ("a.lock" if locks == "same-lock-file" else "b.lock")]
    procs = [
        sc.spawn_cli(mariadb_url, "run", "--now", now.isoformat(), "--lock-file", str(f))
        for f in files
    ]
    results = [(p.communicate(timeout=120)[1], p.returncode) for p in procs]
    codes = sorted(code for _, code in results)
    # The loser found a lock held (75), or came after the winner: nothing to do (0).
    assert codes in ([0, 0], [0, 75]), results
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(runs)).scalar_one() == 1
    sc.assert_exact(engine, now)


def _connected(engine: Engine) -> bool:
    """Whether a run (any session but ours) is connected to this test's database."""
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
                " WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
            )
        ).scalar_one()
    return int(found) > 0


@pytest.mark.slow
def test_run_killed_at_a_random_moment_leaves_nothing_partial(
    engine: Engine, mariadb_url: str, tmp_path: Path
) -> None:
    rng = random.Random()
    feed = sc.Feed(sc.history(52, start=START, hours=6, vms=60, per_minute_every=1))
    now = START + timedelta(hours=6, minutes=32)  # six hours of catch-up in one run
    assert feed.deliver_until(engine, now) > 3000
    lock = tmp_path / "metering.lock"
    engine.dispose()
    for _ in range(3):
        proc = sc.spawn_cli(mariadb_url, "run", "--now", now.isoformat(), "--lock-file", str(lock))
        while not _connected(engine) and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.4))  # somewhere in reading, computing, writing, committing
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        engine.dispose()
        sc.assert_consistent(engine)
    done = sc.cli(
        mariadb_url, "run", "--now", now.isoformat(), "--lock-file", str(lock), "--wait", "10"
    )
    assert done.returncode == 0, done.stderr
    sc.assert_exact(engine, now)


def test_dry_run_prints_exactly_what_the_real_run_writes(
    engine: Engine, mariadb_url: str, tmp_path: Path
) -> None:
    feed = sc.Feed(sc.history(53, start=START, hours=6, late_share=0.3))
    now = START + timedelta(hours=3, minutes=32)
    lock = tmp_path / "metering.lock"
    for _ in range(2):
        feed.deliver_until(engine, now)
        assert (
            sc.cli(
                mariadb_url, "run", "--now", now.isoformat(), "--lock-file", str(lock)
            ).returncode
            == 0
        )
        now += timedelta(hours=1)
    feed.deliver_until(engine, now)  # late rows: the next run writes corrections too
    before = sc.state(engine)
    billed_before = billed(engine)
    with engine.connect() as conn:
        runs_before = list(conn.execute(select(runs.c.run_id)).scalars())

    dry = sc.cli(mariadb_url, "run", "--dry-run", "--format", "csv", "--now", now.isoformat())
    assert dry.returncode == 0, dry.stderr
    assert sc.state(engine) == before and billed(engine) == billed_before
    printed = Counter(tuple(row.values()) for row in csv.DictReader(io.StringIO(dry.stdout)))

    real = sc.cli(mariadb_url, "run", "--now", now.isoformat(), "--lock-file", str(lock))
    assert real.returncode == 0, real.stderr
    lines = usage_lines.c
    with engine.connect() as conn:
        written = Counter(
            (a, e, r, o, u, iso(hour), f"{q:.3f}")
            for a, e, r, o, u, hour, q in conn.execute(
                select(
                    lines.account,
                    lines.entity,
                    lines.resource_id,
                    lines.offering,
                    lines.unit,
                    lines.period_start,
                    lines.quantity,
                ).where(lines.run_id.not_in(runs_before))
            )
        )
    assert written, "the real run wrote nothing: the comparison would prove nothing"
    assert any(q.startswith("-") for *_, q in written), "no correction line in the window"
    assert printed == written
