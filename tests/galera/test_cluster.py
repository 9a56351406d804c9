"""metering on a 3-node Galera cluster: each node is a server of its own to the run.

GET_LOCK is local to a node, so two runs connected to different nodes both get it;
the commit fence (metering_state compare-and-set, unique run ids) is then what keeps
billing single, and on Galera the loser learns it at COMMIT: a certification failure,
error 1213, which must read as a lost race (exit 75, nothing written). A node applies
the other nodes' commits a little after they return, which metering's sessions wait
for (wsrep_sync_wait) so that a run on any node reads what was ingested on another.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, func, select, text

from metering.store import ingest as store_ingest
from metering.store.schema import runs, usage_lines
from metering.store.types import to_decimal
from tests.faults import scenario as sc
from tests.galera.conftest import Cluster
from tests.support import Database, t

pytestmark = pytest.mark.galera

START = t("2016-12-12T00:00Z")
NOW = START + timedelta(hours=3, minutes=32)
SAMPLE = sc.ROOT / "metering" / "sample_data" / "day.jsonl"

Line = tuple[str, ...]


def lines(engine: Engine) -> list[Line]:
    """Every usage line but its surrogate id: run ids are deterministic (window and state
    version), so two databases billed alike hold equal lists."""
    c = usage_lines.c
    query = select(
        c.run_id, c.account, c.entity, c.resource_id, c.offering, c.unit, c.period_start
    ).add_columns(c.quantity, c.source)
    with engine.connect() as conn:
        return sorted(
            (*map(str, row[:7]), str(to_decimal(row[7]).normalize()), row[8])
            for row in conn.execute(query)
        )


def deliver(engines: Sequence[Engine], rows: Sequence[dict[str, Any]], batch: int = 40) -> None:
    """Rows in batches through the given nodes in turn, as `metering ingest` stores them:
    event_ids already stored are skipped (asked first, so a redelivery through another
    node finds the row its first delivery committed there)."""
    for n, first in enumerate(range(0, len(rows), batch)):
        chunk = rows[first : first + batch]
        with engines[n % len(engines)].begin() as conn:
            known = store_ingest.existing_event_ids(conn, [r["event_id"] for r in chunk])
            store_ingest.insert_events(conn, [r for r in chunk if r["event_id"] not in known])


def run_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(runs)).scalar_one())


def start_runs(targets: Sequence[tuple[str, Path]], now: datetime) -> list[int]:
    """One run per (URL, lock file), in forked children started back to back; their
    exit codes (a MeteringError's, or -signal)."""
    pids = []
    for url, lock in targets:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                from metering.db import make_engine
                from metering.errors import MeteringError
                from metering.run import RunRequest, execute

                try:
                    execute(make_engine(url), RunRequest(now=now), lock_file=lock)
                    code = 0
                except MeteringError as exc:
                    code = exc.exit_code
            finally:
                os._exit(code)
        pids.append(pid)
    codes = []
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        codes.append(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
    return codes


def log_events(stderr: str) -> list[dict[str, Any]]:
    assert "Traceback" not in stderr, stderr
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def test_end_to_end_ingest_on_node1_run_on_node2_lines_on_node3(
    galera: Cluster, tmp_path: Path
) -> None:
    """`metering db upgrade` (again: the fixture migrated through node 1), the sample day
    ingested through node 1, billed by a run through node 2; node 3 holds exactly the
    lines a single SQLite database gets from the same file and clock."""
    node1, node2, _ = galera.urls
    now = "2016-12-13T00:40Z"
    upgrade = sc.cli(node1, "db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    ingested = sc.cli(node1, "ingest", str(SAMPLE))
    assert ingested.returncode == 0, ingested.stderr
    billed = sc.cli(node2, "run", "--now", now, "--lock-file", str(tmp_path / "node2.lock"))
    assert billed.returncode == 0, billed.stderr

    single = f"sqlite:///{tmp_path}/single.db"
    for args in (("db", "upgrade"), ("ingest", str(SAMPLE))):
        assert sc.cli(single, *args).returncode == 0
    alone = sc.cli(single, "run", "--now", now, "--lock-file", str(tmp_path / "single.lock"))
    assert alone.returncode == 0, alone.stderr

    want = lines(sa.create_engine(single))
    assert len(want) > 100
    assert lines(galera.engine(3)) == want


@pytest.mark.slow
def test_two_runs_started_at_once_on_two_nodes_bill_once(galera: Cluster, tmp_path: Path) -> None:
    """Two hosts (separate lock files) on nodes 1 and 2: both get their node's GET_LOCK,
    and only the fence stands between them. 25 trials from the same events; each ends
    with the lines of a single run, one run recorded, exit codes 0 and 0 or 75."""
    db = Database(galera.engine(1))
    engines = [galera.engine(n) for n in (1, 2, 3)]
    rows = [
        d.row
        for d in sc.history(41, start=START, hours=4, vms=8, ips=3, per_minute_every=6)
        if d.at <= NOW
    ]

    def fresh() -> None:
        db.reset()
        deliver(engines, rows)

    fresh()
    assert start_runs([(galera.urls[2], tmp_path / "alone.lock")], NOW) == [0]
    sc.assert_exact(galera.engine(1), NOW)
    single = lines(galera.engine(1))
    assert single

    hosts = [(galera.urls[0], tmp_path / "host-a.lock"), (galera.urls[1], tmp_path / "host-b.lock")]
    outcomes = []
    for trial in range(25):
        fresh()
        codes = start_runs(hosts, NOW)
        outcomes.append(tuple(codes))
        assert sorted(codes) in ([0, 0], [0, 75]), (trial, codes)
        assert run_count(galera.engine(3)) == 1, (trial, codes)
        assert lines(galera.engine(3)) == single, (trial, codes)
    print("exit codes of the 25 races:", sorted(outcomes))


@pytest.mark.parametrize("held_at", ["compute", "commit"])
def test_commit_lost_to_another_node_exits_75_and_writes_nothing(
    galera: Cluster, tmp_path: Path, held_at: str
) -> None:
    """A run through node 2 is held after its reads (compute) or with all its writes
    done, before COMMIT (commit), while a run through node 3 bills the same hours and
    commits. Held at commit, node 2's transaction is aborted by the write set it
    conflicts with: its COMMIT fails certification (1213). Either way: exit 75, one
    lock_held warning, nothing written, and the next run is exact."""
    engine = galera.engine(1)
    deliver([engine], [d.row for d in sc.history(42, start=START, hours=4) if d.at <= NOW])
    hold = tmp_path / "hold"
    hold.mkdir()
    held = sc.spawn_hooked(
        galera.urls[1], NOW, tmp_path / "host-b.lock", hold_at=held_at, hold_dir=hold
    )
    sc.wait_for(hold / "ready", held)
    winner = sc.cli(
        galera.urls[2], "run", "--now", NOW.isoformat(), "--lock-file", str(tmp_path / "c.lock")
    )
    assert winner.returncode == 0, winner.stderr
    sc.assert_exact(engine, NOW)
    won = sc.assert_consistent(engine)
    before = lines(engine)
    (hold / "go").touch()
    _, stderr = held.communicate(timeout=120)
    assert held.returncode == 75, stderr
    warnings = [e for e in log_events(stderr) if e["event"] == "lock_held"]
    assert len(warnings) == 1, stderr
    assert not [e for e in log_events(stderr) if e["level"] in ("error", "critical")], stderr
    if held_at == "commit":
        assert "1213" in warnings[0]["message"], warnings
    assert sc.assert_consistent(engine) == won
    assert lines(galera.engine(2)) == before

    later = NOW + timedelta(hours=1)
    deliver([engine], [d.row for d in sc.history(42, start=START, hours=4) if NOW < d.at <= later])
    again = sc.cli(
        galera.urls[1], "run", "--now", later.isoformat(), "--lock-file", str(hold / "b.lock")
    )
    assert again.returncode == 0, again.stderr
    sc.assert_exact(galera.engine(3), later)


def _query_waiting(probe: Engine, database: str) -> bool:
    """Some connection to `database` has been inside one statement for a second."""
    with probe.connect() as conn:
        busy = conn.execute(
            text(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
                " WHERE DB = :db AND COMMAND = 'Query' AND TIME >= 1"
            ),
            {"db": database},
        ).scalar_one()
    return int(busy) > 0


def test_run_waits_for_what_other_nodes_committed(galera: Cluster, tmp_path: Path) -> None:
    """Node 2 stops applying (FLUSH TABLES WITH READ LOCK desyncs and pauses it) while
    the events are ingested through node 1, and a run through node 2 starts. Its reads
    must wait until node 2 has applied them (wsrep_sync_wait): read at once, they would
    miss every event and bill nothing for hours now closed."""
    rows = [d.row for d in sc.history(43, start=START, hours=4) if d.at <= NOW]
    url2 = sa.engine.make_url(galera.urls[1])
    # Plain connections: the probe must not wait for node 2 to catch up itself.
    probe = sa.create_engine(url2.set(database="information_schema"), poolclass=sa.pool.NullPool)
    pause = probe.connect()
    try:
        pause.execute(text("FLUSH TABLES WITH READ LOCK"))
        deliver([galera.engine(1)], rows)
        proc = sc.spawn_cli(
            galera.urls[1], "run", "--now", NOW.isoformat(), "--lock-file", str(tmp_path / "l")
        )
        deadline = time.monotonic() + 60
        while not _query_waiting(probe, str(url2.database)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never reached the database"
            time.sleep(0.2)
    finally:
        pause.execute(text("UNLOCK TABLES"))
        pause.close()
        probe.dispose()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    sc.assert_exact(galera.engine(3), NOW)


@pytest.mark.slow
def test_replay_through_three_nodes_with_late_duplicate_and_concurrent_deliveries(
    galera: Cluster, tmp_path: Path
) -> None:
    """The fault suite's history (late deliveries, anomalies, long measures) delivered
    every 40 minutes through the three nodes in turn, a tenth of what came before
    delivered again through another node, and each tick two runs started at once on two
    nodes. After each tick nothing is partial; at the end every closed hour is exact."""
    seed = 44
    rng = random.Random(seed)
    engines = [galera.engine(n) for n in (1, 2, 3)]
    feed = sc.history(seed, start=START, hours=4, vms=20, ips=4, per_minute_every=4)
    sent = 0
    now = START + timedelta(hours=1, minutes=32)
    end = feed[-1].at + timedelta(minutes=45)
    tick = 0
    codes_seen: list[int] = []
    while now <= end:
        due = [d.row for d in feed[sent:] if d.at <= now]
        again = rng.sample([d.row for d in feed[:sent]], k=sent // 10)
        sent += len(due)
        rotated = engines[tick % 3 :] + engines[: tick % 3]
        deliver(rotated, due, batch=25)
        deliver(rotated[1:], again, batch=25)
        pair = [(galera.urls[(tick + k) % 3], tmp_path / f"host-{k}.lock") for k in (0, 1)]
        codes = start_runs(pair, now)
        codes_seen.extend(codes)
        assert sorted(codes) in ([0, 0], [0, 75]), (now, codes)
        sc.assert_consistent(engines[(tick + 2) % 3])
        now += timedelta(minutes=40)
        tick += 1
    last = now - timedelta(minutes=40)
    assert sent == len(feed)
    for engine in engines:
        sc.assert_exact(engine, last)
    print("exit codes:", sorted(codes_seen))
