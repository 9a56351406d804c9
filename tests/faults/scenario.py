"""Shared by the fault tests: a realistic event history, its delivery over time, the
reference check, and a `metering run` subprocess with a fault hook.

The history: a few accounts, VMs going through create / stop / start / update /
destroy (plus anomalies such as a stop with no start), IP traffic measured per
minute (summed in SQL) and over periods spanning hours (streamed). Each event is
delivered (inserted) a little after it happened, some of them hours late, so the
runs that follow write corrections. The reference is tests/core/model.py (rules
1-4, written without looking at the core) applied to the stored rows, which are
read back so the (occurred_at, id) order is the database's own.

Run as a module, this file is the subprocess a crash test kills:
    python -m tests.faults.scenario URL NOW LOCK_FILE [options]
It calls metering.run.execute with a `pause` hook that SIGKILLs the process at a
chosen phase (or a random delay after it); see `main`.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select

from metering.store.schema import metering_state, runs, usage_events, usage_lines
from metering.timeutil import from_ms, to_ms
from tests.core import model
from tests.support import BilledKey, billed, event

ROOT = Path(__file__).resolve().parents[2]
HOUR = timedelta(hours=1)
GRACE = timedelta(minutes=30)
PHASES = ("read", "compute", "write", "commit")
OFFERINGS = ("small", "medium", "large")


@dataclass(frozen=True)
class Delivery:
    at: datetime  # when the platform inserts the row
    row: dict[str, Any]


@dataclass
class Feed:
    """Inserts the history's rows as (simulated) time passes, in delivery order."""

    deliveries: list[Delivery]
    sent: int = 0

    def deliver_until(self, engine: Engine, now: datetime) -> int:
        batch: list[dict[str, Any]] = []
        while self.sent < len(self.deliveries) and self.deliveries[self.sent].at <= now:
            batch.append(self.deliveries[self.sent].row)
            self.sent += 1
        for first in range(0, len(batch), 1000):
            with engine.begin() as conn:
                conn.execute(insert(usage_events), batch[first : first + 1000])
        return len(batch)

    @property
    def done(self) -> bool:
        return self.sent == len(self.deliveries)


def _at(ms: int) -> datetime:
    return from_ms(ms)


def history(
    seed: int,
    *,
    start: datetime,
    hours: int,
    vms: int = 30,
    ips: int = 8,
    per_minute_every: int = 3,
    late_share: float = 0.08,
) -> list[Delivery]:
    """Events of `hours` hours from `start`, each with a delivery time, sorted by it."""
    rng = random.Random(seed)
    t0 = to_ms(start)
    span = hours * 3_600_000
    out: list[Delivery] = []
    n = 0

    def add(when_ms: int, row: dict[str, Any]) -> None:
        nonlocal n
        n += 1
        row["event_id"] = f"{seed}-{n}"
        late = rng.random() < late_share
        delay = rng.randint(3_600_000, 3 * 3_600_000) if late else rng.randint(0, 240_000)
        out.append(Delivery(_at(when_ms + delay), row))

    for i in range(vms):
        account = f"acct-{i % 3}"
        rid = f"vm-{seed}-{i}"
        when = t0 + rng.randint(0, span // 2)
        offering = rng.choice(OFFERINGS)
        actions = ["create"]
        for _ in range(rng.randint(1, 7)):
            actions.append(rng.choice(["stop", "start", "update", "start", "stop"]))
        if rng.random() < 0.4:
            actions.append("destroy")
        if rng.random() < 0.1:
            actions.insert(0, "stop")  # a stop with no start: an anomaly, bills nothing
        for action in actions:
            if when >= t0 + span:
                break
            given = rng.choice(OFFERINGS) if action in ("create", "update") else None
            if action == "create":
                given = offering
            add(
                when,
                event(
                    kind="resource",
                    entity="vm",
                    action=action,
                    account=account,
                    resource_id=rid,
                    offering=given,
                    occurred_at=_at(when),
                ),
            )
            when += rng.randint(1, span // 4)
    for i in range(ips):
        account = f"acct-{i % 3}"
        rid = f"10.{seed % 250}.0.{i}"
        for minute in range(0, hours * 60, per_minute_every):
            begin = t0 + minute * 60_000
            add(
                begin + 60_000,
                _measure(account, rid, rng.randint(0, 10**7), begin, begin + 60_000),
            )
        for _ in range(hours):
            begin = t0 + rng.randint(0, span - 60_000)
            length = rng.choice([0, 1_000, 60_000, 3_600_000, 2 * 3_600_000 + 7])
            add(
                begin + length, _measure(account, rid, rng.randint(0, 10**9), begin, begin + length)
            )
    out.sort(key=lambda d: d.at)
    return out


def _measure(account: str, rid: str, quantity: int, begin: int, end: int) -> dict[str, Any]:
    return event(
        kind="quantity",
        entity="ip",
        action="measure",
        account=account,
        resource_id=rid,
        quantity=quantity,
        unit="byte",
        period_start=_at(begin),
        period_end=_at(end),
        occurred_at=_at(end),
    )


def horizon(now: datetime) -> datetime:
    """The first hour a run at `now` (default grace) does not bill yet."""
    closed = now - GRACE
    return closed.replace(minute=0, second=0, microsecond=0)


def expected(
    engine: Engine, until: datetime, *, up_to_id: int | None = None
) -> dict[BilledKey, Decimal]:
    """What rules 1-4 bill for the hours before `until`, on the stored rows (ids <= up_to_id)."""
    ev = usage_events.c
    query = select(usage_events).order_by(ev.id)
    if up_to_id is not None:
        query = query.where(ev.id <= up_to_id)
    end = to_ms(until)
    resources: dict[tuple[str, str, str], list[model.ModelEvent]] = defaultdict(list)
    measures: list[tuple[tuple[str, str, str, str], int, int, int]] = []
    with engine.connect() as conn:
        for r in conn.execute(query):
            if r.kind == "resource":
                resources[(r.account, r.entity, r.resource_id)].append(
                    (to_ms(r.occurred_at), r.id, r.action, r.offering)
                )
            else:
                key = (r.account, r.entity, r.resource_id, r.unit or "byte")
                measures.append((key, r.quantity, to_ms(r.period_start), to_ms(r.period_end)))
    out: dict[BilledKey, Decimal] = {}
    for (account, entity, rid), events in resources.items():
        first = min(e[0] for e in events) // 3_600_000 * 3_600_000
        if first >= end:
            continue
        for (offering, hour), ms in model.running_ms_by_hour(events, first, end).items():
            out[(account, entity, rid, offering, "second", from_ms(hour))] = Decimal(ms) / 1000
    for (key, hour), amount in model.measures_by_hour(measures).items():
        if hour < end:
            out[(key[0], key[1], key[2], "", key[3], from_ms(hour))] = Decimal(amount)
    return {k: v.quantize(Decimal("0.001")) for k, v in out.items() if v != 0}


@dataclass(frozen=True)
class State:
    version: int
    last_event_id: int
    billed_until: datetime | None


def state(engine: Engine) -> State:
    with engine.connect() as conn:
        row = conn.execute(select(metering_state).where(metering_state.c.id == 1)).one()
    return State(int(row.version), int(row.last_event_id), row.billed_until)


def diff(got: dict[BilledKey, Decimal], want: dict[BilledKey, Decimal]) -> list[str]:
    """The keys where billed and reference differ, readable (empty when equal)."""
    return [
        f"{k}: billed {got.get(k)} expected {want.get(k)}"
        for k in sorted(set(got) | set(want))
        if got.get(k) != want.get(k)
    ][:20]


def assert_consistent(engine: Engine) -> State:
    """Nothing partial: billing equals the reference for exactly what the state says
    was read and billed, every line belongs to a recorded run, one run per version."""
    st = state(engine)
    with engine.connect() as conn:
        orphans = conn.execute(
            select(func.count())
            .select_from(usage_lines)
            .where(usage_lines.c.run_id.not_in(select(runs.c.run_id)))
        ).scalar_one()
        recorded = conn.execute(select(func.count()).select_from(runs)).scalar_one()
    assert orphans == 0, f"{orphans} usage lines without a committed run"
    assert recorded == st.version, f"{recorded} runs recorded for state version {st.version}"
    if st.billed_until is None:
        assert billed(engine) == {}
        return st
    want = expected(engine, st.billed_until, up_to_id=st.last_event_id)
    problems = diff(billed(engine), want)
    assert not problems, "billed != reference:\n" + "\n".join(problems)
    return st


def assert_exact(engine: Engine, now: datetime) -> None:
    """After the runs at `now` finished: every closed hour billed exactly, all events read."""
    st = assert_consistent(engine)
    assert st.billed_until == horizon(now), (st.billed_until, horizon(now))
    with engine.connect() as conn:
        top = conn.execute(select(func.max(usage_events.c.id))).scalar_one()
    assert st.last_event_id == top


# -- subprocesses --------------------------------------------------------------------------


def cli(
    url: str, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`metering --database-url URL ARGS...` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "metering", "--database-url", url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def spawn_cli(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "metering", "--database-url", url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def spawn_hooked(
    url: str,
    now: datetime,
    lock_file: Path,
    *,
    kill_at: str | None = None,
    kill_after_ms: int = 0,
    occurrence: int = 1,
    hold_at: str | None = None,
    hold_dir: Path | None = None,
    extra: Sequence[str] = (),
) -> subprocess.Popen[str]:
    """This module as a process: one run with a fault hook (see main)."""
    args = [sys.executable, "-m", "tests.faults.scenario", url, now.isoformat(), str(lock_file)]
    if kill_at:
        args += ["--kill-at", kill_at, "--kill-after-ms", str(kill_after_ms)]
        args += ["--occurrence", str(occurrence)]
    if hold_at and hold_dir:
        args += ["--hold-at", hold_at, "--hold-dir", str(hold_dir)]
    args += extra
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )


def fork_run(url: str, now: datetime, lock_file: Path, pause: Callable[[str], None]) -> int:
    """One run in a forked child (no interpreter start-up: cheap enough for dozens of
    kills); returns its exit status, or -signal when it was killed."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            from metering.db import make_engine
            from metering.errors import MeteringError
            from metering.run import RunRequest, execute

            try:
                execute(make_engine(url), RunRequest(now=now), lock_file=lock_file, pause=pause)
                code = 0
            except MeteringError as exc:
                code = exc.exit_code
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def killer(phase: str, *, after_ms: int = 0, occurrence: int = 1) -> Callable[[str], None]:
    """A pause hook that SIGKILLs its process at a phase (or `after_ms` later)."""
    return _hook(phase, after_ms, occurrence, None, None)


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}): {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.02)


def _hook(
    kill_at: str | None,
    kill_after_ms: int,
    occurrence: int,
    hold_at: str | None,
    hold_dir: Path | None,
) -> Callable[[str], None]:
    seen: dict[str, int] = defaultdict(int)

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def pause(where: str) -> None:
        seen[where] += 1
        if where == kill_at and seen[where] == occurrence:
            if kill_after_ms:
                # Lands somewhere inside the statements (or the COMMIT) that follow.
                threading.Timer(kill_after_ms / 1000, die).start()
            else:
                die()
        if hold_dir is not None and where == hold_at and seen[where] == 1:
            (hold_dir / "ready").touch()
            while not (hold_dir / "go").exists():
                time.sleep(0.02)

    return pause


def main(argv: Sequence[str] | None = None) -> None:
    """One `metering run` (through the CLI, so exit codes and logs are the real ones)
    whose phases (read, compute, write, commit) call a hook: SIGKILL at the Nth
    occurrence of a phase, optionally after a delay; or, at `--hold-at`, create
    HOLD_DIR/ready and wait for HOLD_DIR/go (the test meanwhile does something to
    the database). Arguments after the known ones go to `metering run`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("now")
    parser.add_argument("lock_file")
    parser.add_argument("--kill-at", choices=PHASES)
    parser.add_argument("--kill-after-ms", type=int, default=0)
    parser.add_argument("--occurrence", type=int, default=1)
    parser.add_argument("--hold-at", choices=PHASES)
    parser.add_argument("--hold-dir", type=Path)
    opts, extra = parser.parse_known_args(argv)

    import metering.run
    from metering.cli import main as cli_main

    pause = _hook(opts.kill_at, opts.kill_after_ms, opts.occurrence, opts.hold_at, opts.hold_dir)
    real = metering.run.execute

    def hooked(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **{**kwargs, "pause": pause})

    metering.run.execute = hooked  # type: ignore[assignment]
    cli_main(
        [
            "--database-url",
            opts.url,
            "run",
            "--now",
            datetime.fromisoformat(opts.now).astimezone(UTC).isoformat(),
            "--lock-file",
            opts.lock_file,
            *extra,
        ]
    )


if __name__ == "__main__":
    main()
