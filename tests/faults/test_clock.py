"""Clock trouble: a clock stepped back does nothing (with a warning); a clock that
jumps a year ahead catches up in bounded chunks, with bounded memory, exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from metering.run import LINE_BUDGET
from metering.store.schema import metering_state, runs, usage_events, usage_lines
from tests.contract_model import expected
from tests.support import billed, insert_events, measure, migrated, resource, t
from tests.support import run as run_in_process

START = "2016-01-01T00:00:00Z"


def metering(url: str, tmp_path: Path, *args: str) -> tuple[int, list[dict[str, Any]], int]:
    """Run the CLI as a child process: exit code, JSON log lines, peak RSS in KiB."""
    env = {
        **os.environ,
        "METERING_DATABASE_URL": url,
        "METERING_CONFIG": "",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "METERING_LOCK_FILE": str(tmp_path / "metering.lock"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "metering", "--log-format", "json", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    stderr = proc.stderr
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(stderr.read()))
    reader.start()
    # VmHWM of the child itself, polled while it runs: ru_maxrss from wait4 would
    # also count the pytest process it was forked from, before its exec.
    peak = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            break
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
        time.sleep(0.02)
    proc.wait()
    reader.join()
    return proc.returncode, [json.loads(line) for line in "".join(err).splitlines()], peak


def snapshot(engine: Engine) -> tuple[Any, ...]:
    with engine.connect() as conn:
        state = tuple(conn.execute(select(metering_state)).one())
        counts = tuple(
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (runs, usage_lines)
        )
    return state, counts


def test_clock_stepped_back_is_a_noop_with_a_warning(database_url: str, tmp_path: Path) -> None:
    engine = migrated(database_url)
    events = [
        resource("c", "create", "2016-12-12T09:10:00Z"),
        measure("m", 100, "2016-12-12T09:00:00Z", "2016-12-12T09:30:00Z"),
    ]
    insert_events(engine, events)
    run_in_process(engine, "2016-12-12T14:00:00Z", tmp_path)
    before = snapshot(engine)
    late = [
        resource("s", "stop", "2016-12-12T10:00:00Z"),
        measure("m2", 7, "2016-12-12T11:00:00Z", "2016-12-12T11:30:00Z"),
    ]
    insert_events(engine, late)

    code, logs, _ = metering(database_url, tmp_path, "run", "--now", "2016-12-11T14:00Z")
    assert code == 0
    warnings = [e for e in logs if e["level"] == "warning"]
    assert [e["event"] for e in warnings] == ["clock_behind_watermark"]
    assert warnings[0]["billed_until"] == "2016-12-12T13:00:00.000Z"
    assert snapshot(engine) == before, "nothing read, nothing written"

    # The clock is right again: the late events are billed as usual.
    run_in_process(engine, "2016-12-12T15:00:00Z", tmp_path)
    assert billed(engine) == expected(events + late, t("2016-12-12T14:00:00Z"))


@pytest.mark.mariadb
@pytest.mark.slow
def test_a_year_ahead_catches_up_in_chunks_with_bounded_memory(
    mariadb_url: str, tmp_path: Path
) -> None:
    engine = migrated(mariadb_url)
    # 23 resources: a year takes several chunks of about LINE_BUDGET lines each.
    running = 23
    events = [
        resource(f"c{i}", "create", START, resource_id=f"vm-{i}", offering="small")
        for i in range(running)
    ]
    insert_events(engine, events)
    first = t(START) + timedelta(hours=2)
    run_in_process(engine, first, tmp_path)
    # While the clock was stuck, a year of events arrived: stops, resizes, traffic.
    late = [
        resource(f"s{i}", "stop", f"2016-{1 + i % 12:02d}-15T12:34:56.789Z", resource_id=f"vm-{i}")
        for i in range(0, running, 7)
    ]
    late += [
        resource(f"u{i}", "update", "2016-07-01T00:30:00Z", resource_id=f"vm-{i}", offering="large")
        for i in range(1, running, 5)
    ]
    late += [
        measure(
            f"m{day}",
            10**9 + day,
            f"2016-{1 + day % 12:02d}-{1 + day % 28:02d}T23:59:30Z",
            f"2016-{1 + day % 12:02d}-{2 + day % 28:02d}T00:00:30Z",
        )
        for day in range(200)
    ]
    insert_events(engine, late)

    now = "2017-01-01T00:40:00Z"
    code, logs, peak_kib = metering(mariadb_url, tmp_path, "run", "--now", now)
    assert code == 0, logs
    chunks = [e for e in logs if e["event"] == "run_finished"]
    assert len(chunks) >= 2
    for chunk in chunks:
        # Running resources at the chunk's start bound its hours; the few lines
        # beyond are traffic and the resources events touched.
        assert chunk["lines_written"] <= LINE_BUDGET + 2_000
    assert t(chunks[0]["window_to"]) - t(chunks[0]["window_from"]) <= timedelta(
        hours=LINE_BUDGET // running
    )
    assert chunks[-1]["window_to"] == "2017-01-01T00:00:00.000Z"
    assert peak_kib < 200 * 1024, f"peak RSS {peak_kib // 1024} MiB"
    print(f"peak RSS of the catch-up: {peak_kib // 1024} MiB, {len(chunks)} chunks")

    assert billed(engine) == expected(events + late, t("2017-01-01T00:00:00Z"))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(usage_events)).scalar_one() == len(
            events + late
        )
