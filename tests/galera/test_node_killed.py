"""A node dies (SIGKILL of its mariadbd) in the middle of a run through it.

The run exits 1 with one clear line (no traceback, no password); the two nodes left
are a majority and carry on, so the next run, through one of them, bills exactly.
The node is then restarted, rejoins (IST), and holds the same lines.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.faults import scenario as sc
from tests.faults.test_database_away import _assert_failed_cleanly
from tests.galera.conftest import Cluster, restart_stopped_nodes
from tests.galera.test_cluster import NOW, START, deliver, lines

pytestmark = [pytest.mark.galera, pytest.mark.slow]


def test_node_killed_mid_run(galera: Cluster, galera_dir: Path, tmp_path: Path) -> None:
    engine = galera.engine(1)
    deliver([engine], [d.row for d in sc.history(45, start=START, hours=4) if d.at <= NOW])
    before = sc.assert_consistent(engine)
    hold = tmp_path / "hold"
    hold.mkdir()
    lock = tmp_path / "metering.lock"
    proc = sc.spawn_hooked(galera.urls[2], NOW, lock, hold_at="write", hold_dir=hold)
    sc.wait_for(hold / "ready", proc)
    pid_file = galera_dir / "node3" / "mariadb.pid"
    try:
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        (hold / "go").touch()
        _assert_failed_cleanly(proc, "Lost connection", "gone away", "Can't connect")
        assert sc.assert_consistent(engine) == before

        # The same host's next run, pointed at a surviving node.
        done = sc.cli(galera.urls[0], "run", "--now", NOW.isoformat(), "--lock-file", str(lock))
        assert done.returncode == 0, done.stderr
        sc.assert_exact(engine, NOW)
    finally:
        restart_stopped_nodes(galera_dir)
    assert lines(galera.engine(3)) == lines(engine)
