"""The database goes away during a run: its connection is killed from another session
(while reading, while committing), or the whole server is stopped and restarted.

The run must exit 1 with one clear log line (no traceback unless --verbose), leave
the state and the lines exactly as the last committed run left them, and the next
run after the database returns must bill exactly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from tests.faults import scenario as sc
from tests.support import migrated, t

pytestmark = pytest.mark.mariadb

START = t("2016-12-12T00:00Z")
FIRST = START + timedelta(hours=2, minutes=32)
NOW = START + timedelta(hours=4, minutes=32)
MARIADB_SH = sc.ROOT / "scripts" / "mariadb.sh"


def _prepare(engine: Engine, url: str, lock: Path, seed: int) -> None:
    """Billed up to FIRST; events up to NOW waiting for the run that will fail."""
    feed = sc.Feed(sc.history(seed, start=START, hours=4))
    feed.deliver_until(engine, FIRST)
    done = sc.cli(url, "run", "--now", FIRST.isoformat(), "--lock-file", str(lock))
    assert done.returncode == 0, done.stderr
    feed.deliver_until(engine, NOW)


def _log_lines(stderr: str) -> list[dict[str, Any]]:
    """stderr of a non-verbose run: JSON lines only (a traceback would not parse)."""
    assert "Traceback" not in stderr, stderr
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def _assert_failed_cleanly(proc: subprocess.Popen[str], *needles: str) -> None:
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    errors = [e for e in _log_lines(stderr) if e["level"] in ("error", "critical")]
    assert len(errors) == 1, stderr
    assert errors[0]["event"] == "failed", errors
    assert any(n in errors[0]["error"] for n in needles), errors
    assert "metering-test-pw" not in stderr


def _run_connection(engine: Engine) -> int:
    """The connection of the run in progress on this database: the one in a transaction."""
    engine.dispose()
    with engine.connect() as conn:
        ids = (
            conn.execute(
                text(
                    "SELECT t.trx_mysql_thread_id FROM information_schema.INNODB_TRX t"
                    " JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id"
                    " WHERE p.DB = DATABASE() AND p.ID <> CONNECTION_ID()"
                )
            )
            .scalars()
            .all()
        )
    assert len(ids) == 1, ids
    return int(ids[0])


@pytest.mark.parametrize("phase", ["read", "commit"])
def test_connection_killed(engine: Engine, mariadb_url: str, tmp_path: Path, phase: str) -> None:
    lock = tmp_path / "metering.lock"
    _prepare(engine, mariadb_url, lock, 21)
    before = sc.assert_consistent(engine)
    hold = tmp_path / "hold"
    hold.mkdir()
    proc = sc.spawn_hooked(mariadb_url, NOW, lock, hold_at=phase, hold_dir=hold)
    sc.wait_for(hold / "ready", proc)
    victim = _run_connection(engine)
    with engine.connect() as conn:
        conn.execute(text(f"KILL CONNECTION {victim}"))
    (hold / "go").touch()
    _assert_failed_cleanly(proc, "Lost connection", "gone away", "Connection was killed")
    assert sc.assert_consistent(engine) == before
    done = sc.cli(mariadb_url, "run", "--now", NOW.isoformat(), "--lock-file", str(lock))
    assert done.returncode == 0, done.stderr
    sc.assert_exact(engine, NOW)


@dataclass
class Server:
    dir: Path
    url: str

    def stop(self) -> None:
        subprocess.run(["bash", str(MARIADB_SH), "stop", str(self.dir)], check=True, timeout=60)

    def start(self) -> str:
        done = subprocess.run(
            ["bash", str(MARIADB_SH), "start", str(self.dir)],
            check=True,
            timeout=120,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def server(mysql_url: object) -> Iterator[Server]:
    """A private MariaDB of this test's own (stopping it must not disturb the others)."""
    if shutil.which("mariadbd") is None and not Path("/usr/sbin/mariadbd").exists():
        pytest.skip("mariadbd not installed")
    where = Path(tempfile.mkdtemp(prefix="mdb-away-", dir="/tmp"))
    instance = Server(where, "")
    try:
        instance.url = instance.start()
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(where, ignore_errors=True)


@pytest.mark.slow
def test_server_stopped_during_run_then_restarted(server: Server, tmp_path: Path) -> None:
    url = server.url
    engine = migrated(url)
    lock = tmp_path / "metering.lock"
    _prepare(engine, url, lock, 22)
    before = sc.assert_consistent(engine)
    hold = tmp_path / "hold"
    hold.mkdir()
    proc = sc.spawn_hooked(url, NOW, lock, hold_at="write", hold_dir=hold)
    sc.wait_for(hold / "ready", proc)
    engine.dispose()
    server.stop()
    (hold / "go").touch()
    _assert_failed_cleanly(proc, "Lost connection", "gone away", "Can't connect", "shutdown")

    # While it is down: the same single line, at once.
    down = sc.cli(url, "run", "--now", NOW.isoformat(), "--lock-file", str(lock))
    assert down.returncode == 1, down.stderr
    errors = [e for e in _log_lines(down.stderr) if e["level"] == "error"]
    assert len(errors) == 1, down.stderr
    assert "metering-test-pw" not in down.stderr

    # Same datadir, same port: the URL the operator configured works again.
    again = server.start()
    assert make_url(again) == make_url(url)
    assert sc.assert_consistent(engine) == before
    done = sc.cli(url, "run", "--now", NOW.isoformat(), "--lock-file", str(lock))
    assert done.returncode == 0, done.stderr
    sc.assert_exact(engine, NOW)
    engine.dispose()
