"""Contention: many runs at once, two hosts on one database, a lock left behind by a
killed run, and a race with the database lock turned off, where only the commit
fence (watermark compare-and-set + unique run id) stands between two writers."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from metering.errors import ConcurrentRun
from metering.run import RunOutcome, RunRequest, execute
from metering.store.schema import runs
from tests.faults import scenario as sc
from tests.support import t

pytestmark = pytest.mark.mariadb

START = t("2016-12-12T00:00Z")
NOW = START + timedelta(hours=4, minutes=32)


def _runs(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(runs)).scalar_one())


def _start_together(url: str, now_: str, locks: list[Path], *extra: str) -> list[int]:
    procs = [
        sc.spawn_cli(url, "run", "--now", now_, "--lock-file", str(lock), *extra) for lock in locks
    ]
    codes = []
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert "Traceback" not in stderr, stderr
        codes.append(proc.returncode)
    return codes


@pytest.mark.slow
def test_eight_runs_started_at_once_on_one_host(
    engine: Engine, mariadb_url: str, tmp_path: Path
) -> None:
    feed = sc.Feed(sc.history(31, start=START, hours=5))
    lock = tmp_path / "metering.lock"
    feed.deliver_until(engine, NOW)
    codes = _start_together(mariadb_url, NOW.isoformat(), [lock] * 8)
    # 75: found the lock held; 0: did the work, or came after it with nothing to do.
    assert set(codes) <= {0, 75} and 0 in codes, codes
    assert _runs(engine) == 1
    sc.assert_exact(engine, NOW)


def test_two_hosts_on_one_database(engine: Engine, mariadb_url: str, tmp_path: Path) -> None:
    """Separate lock files: only GET_LOCK (and the commit fence) keeps them apart."""
    feed = sc.Feed(sc.history(32, start=START, hours=5))
    hosts = [tmp_path / "host-a.lock", tmp_path / "host-b.lock"]
    now = NOW
    for tick in range(3):
        feed.deliver_until(engine, now)
        codes = _start_together(mariadb_url, now.isoformat(), hosts)
        assert set(codes) <= {0, 75} and 0 in codes, codes
        assert _runs(engine) == tick + 1
        sc.assert_exact(engine, now)
        now += timedelta(hours=1)


def test_lock_left_by_a_killed_run_is_not_held(
    engine: Engine, mariadb_url: str, tmp_path: Path
) -> None:
    """Killed while holding the lock file, GET_LOCK and an open transaction: the file
    stays on disk, but the kernel dropped the flock and the server the GET_LOCK, so
    the next run (not told to wait) gets both at once."""
    sc.Feed(sc.history(33, start=START, hours=4)).deliver_until(engine, NOW)
    lock = tmp_path / "metering.lock"
    hold = tmp_path / "hold"
    hold.mkdir()
    proc = sc.spawn_hooked(mariadb_url, NOW, lock, hold_at="write", hold_dir=hold)
    sc.wait_for(hold / "ready", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert lock.exists()
    assert sc.assert_consistent(engine).version == 0
    done = sc.cli(mariadb_url, "run", "--now", NOW.isoformat(), "--lock-file", str(lock))
    assert done.returncode == 0, done.stderr
    sc.assert_exact(engine, NOW)


@pytest.mark.parametrize("second", ["after-first-commit", "while-first-uncommitted"])
def test_commit_fence_stops_the_second_writer_without_locks(
    engine: Engine, tmp_path: Path, second: str
) -> None:
    """Both runs read the same state before either writes; no lock keeps them apart
    (separate lock files, GET_LOCK off). The second to commit must fail, writing nothing.

    after-first-commit: the second goes on once the first committed.
    while-first-uncommitted: the second goes on while the first holds its commit,
    so it blocks on the first's row locks and finds the fence moved once released.
    """
    feed = sc.Feed(sc.history(34, start=START, hours=5))
    first_now = NOW - timedelta(hours=1)
    feed.deliver_until(engine, first_now)
    execute(engine, RunRequest(now=first_now), lock_file=tmp_path / "warm.lock")
    feed.deliver_until(engine, NOW)

    both_read = threading.Barrier(2, timeout=60)
    first_done = threading.Event()
    first_at_commit = threading.Event()
    second_going = threading.Event()

    def first_hook(where: str) -> None:
        if where == "compute":
            both_read.wait()
        if where == "commit" and second == "while-first-uncommitted":
            first_at_commit.set()
            assert second_going.wait(60)
            time.sleep(0.5)  # let the second reach the rows the first holds

    def second_hook(where: str) -> None:
        if where == "compute":
            both_read.wait()
            if second == "after-first-commit":
                assert first_done.wait(60)
            else:
                # Taking no row lock before the first holds all of its own: otherwise
                # the first could wait on the second while the second waits here.
                assert first_at_commit.wait(60)
                second_going.set()

    results: dict[str, RunOutcome | BaseException] = {}

    def go(name: str, hook: Callable[[str], None]) -> None:
        try:
            results[name] = execute(
                engine,
                RunRequest(now=NOW),
                lock_file=tmp_path / f"{name}.lock",
                use_database_lock=False,
                pause=hook,
            )
        except BaseException as exc:
            results[name] = exc
        finally:
            if name == "first":
                first_done.set()

    threads = [
        threading.Thread(target=go, args=("first", first_hook)),
        threading.Thread(target=go, args=("second", second_hook)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    first, lost = results["first"], results["second"]
    assert isinstance(first, RunOutcome) and len(first.runs) == 1, first
    assert isinstance(lost, ConcurrentRun), repr(lost)
    assert lost.exit_code == 75
    assert _runs(engine) == 2
    sc.assert_exact(engine, NOW)


def test_race_without_database_lock_exits_75(
    engine: Engine, mariadb_url: str, tmp_path: Path
) -> None:
    """The same race through `metering run --no-database-lock` in two processes,
    released together after both read: one exits 0, the other 75 with one warning."""
    sc.Feed(sc.history(35, start=START, hours=4)).deliver_until(engine, NOW)
    holds = [tmp_path / "hold-a", tmp_path / "hold-b"]
    procs = []
    for hold in holds:
        hold.mkdir()
        procs.append(
            sc.spawn_hooked(
                mariadb_url,
                NOW,
                tmp_path / f"{hold.name}.lock",
                hold_at="compute",
                hold_dir=hold,
                extra=["--no-database-lock"],
            )
        )
    for hold, proc in zip(holds, procs, strict=True):
        sc.wait_for(hold / "ready", proc)
    for hold in holds:
        (hold / "go").touch()
    outcomes = [(proc.communicate(timeout=120)[1], proc.returncode) for proc in procs]
    assert sorted(code for _, code in outcomes) == [0, 75], outcomes
    loser = next(err for err, code in outcomes if code == 75)
    assert "Traceback" not in loser
    # Overlapping runs are normal: one warning of its own, no error.
    assert loser.count('"event": "lock_held"') == 1, loser
    assert '"level": "error"' not in loser, loser
    assert _runs(engine) == 1
    sc.assert_exact(engine, NOW)
