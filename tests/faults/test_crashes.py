"""Crashes: `metering run` SIGKILLed at 30+ moments across hours of catch-up.

Each kill is followed by a consistency check (billing equals the reference for
exactly what the stored state says was read and billed, every line belongs to a
committed run): a killed run leaves nothing partial. After the kills of each cron
tick a run is let finish and billing must be exact for every closed hour.
"""

from __future__ import annotations

import random
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from metering import run as run_module
from tests.faults import scenario as sc
from tests.support import t

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

START = t("2016-12-12T00:00Z")


def _kill_at_phase(url: str, now: datetime, lock: Path, rng: random.Random) -> tuple[str, int]:
    phase = rng.choice(sc.PHASES)
    return f"at {phase}", sc.fork_run(url, now, lock, sc.killer(phase))


def _kill_inside(url: str, now: datetime, lock: Path, rng: random.Random) -> tuple[str, int]:
    phase = rng.choice(("write", "commit"))
    delay = rng.randint(1, 30)
    return f"{delay} ms after {phase}", sc.fork_run(
        url, now, lock, sc.killer(phase, after_ms=delay)
    )


def _kill_wall_clock(url: str, now: datetime, lock: Path, rng: random.Random) -> tuple[str, int]:
    proc = sc.spawn_cli(url, "run", "--now", now.isoformat(), "--lock-file", str(lock))
    delay = rng.uniform(0.3, 1.0)  # the interpreter takes ~0.5 s to start
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    return f"{delay:.2f} s after start", proc.returncode


def test_sigkill_at_random_moments_of_catch_up(
    engine: Engine, mariadb_url: str, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    feed = sc.Feed(sc.history(seed, start=START, hours=8, vms=40, per_minute_every=2))
    lock = tmp_path / "metering.lock"
    now = START + timedelta(hours=4, minutes=32)  # cron was down: 4 hours to catch up
    killed: list[str] = []
    for _tick in range(9):
        feed.deliver_until(engine, now)
        # Kills at a phase land before anything commits, so four of them land in every
        # tick; the two timed kills after them may land or let the run finish.
        plan = [_kill_at_phase] * 4 + [_kill_inside, _kill_wall_clock]
        for attempt in plan:
            for _retry in range(50):
                moment, code = attempt(mariadb_url, now, lock, rng)
                # 75: the server had not yet dropped the killed run's GET_LOCK.
                assert code in (-signal.SIGKILL, 0, 75), (moment, code, f"seed={seed}")
                if code != 75:
                    break
                time.sleep(0.05)
            sc.assert_consistent(engine)
            if code == -signal.SIGKILL:
                killed.append(moment)
            if code == 0:
                break
        done = sc.cli(
            mariadb_url, "run", "--now", now.isoformat(), "--lock-file", str(lock), "--wait", "10"
        )
        assert done.returncode == 0, done.stderr
        sc.assert_exact(engine, now)
        now += timedelta(hours=1)
    assert feed.done
    assert len(killed) >= 30, killed


def test_sigkill_during_a_first_run_over_days_loses_only_the_chunk_in_flight(
    engine: Engine, mariadb_url: str, tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run on a 2-day history reads it in windows of ids, a chunk (one
    transaction) each: a kill in the k-th chunk keeps the k-1 before it, and the next
    run resumes from them and ends exact (issue 12)."""
    rng = random.Random(seed)
    feed = sc.Feed(sc.history(seed, start=START, hours=48, vms=20, per_minute_every=4))
    now = START + timedelta(hours=54, minutes=32)  # every late delivery is in by then
    feed.deliver_until(engine, now)
    assert feed.done
    # Small windows, fixed: the forked child shares this module state.
    window = 400
    monkeypatch.setattr(run_module, "ID_WINDOW", window)
    monkeypatch.setattr(run_module, "ID_WINDOW_LIMITS", (window, window))
    lock = tmp_path / "metering.lock"
    committed = 0
    for kill in range(4):
        # The first kill lands past the first chunk, so the resume always has some to keep.
        chunk = rng.randint(2 if kill == 0 else 1, 3)
        phase = rng.choice(sc.PHASES)
        code = sc.fork_run(mariadb_url, now, lock, sc.killer(phase, occurrence=chunk))
        if code == 0:
            break
        assert code == -signal.SIGKILL, (phase, chunk, code, f"seed={seed}")
        state = sc.assert_consistent(engine)
        # The chunks before the one killed committed; the killed one left nothing.
        assert state.version == committed + chunk - 1, (phase, chunk, f"seed={seed}")
        committed = state.version
    assert committed > 0
    done = sc.cli(mariadb_url, "run", "--now", now.isoformat(), "--lock-file", str(lock))
    assert done.returncode == 0, done.stderr
    sc.assert_exact(engine, now)
