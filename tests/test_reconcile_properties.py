"""Property tests of reconciliation: lost events, snapshots of the true state, runs.

The database examples copy one migrated SQLite file per example (a migration per
example would dominate the run time).
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from metering.core.events import HOUR, ResourceEvent, ResourceKey
from metering.core.reconcile import NEVER_OVERBILL, Known, Snapshot, plan
from metering.core.slicing import running_by_hour
from metering.core.spans import replay
from metering.db import make_engine
from metering.reconcile import Inventory, ReconcileRequest, execute
from metering.store.schema import usage_events
from metering.timeutil import from_ms
from tests.support import billed, insert_events, migrated, resource, run

T0 = 1_481_529_600_000  # 2016-12-12T08:00:00Z
HOURS = 8
KEYS: list[ResourceKey] = [("acme", "vm", "a"), ("acme", "vm", "b"), ("beta", "volume", "a")]
OFFERING = {key: f"size-{i}" for i, key in enumerate(KEYS)}


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[ResourceEvent, bool]]:
    """True events (create, then stop/start alternating), at most one per resource and
    hour and never on an hour boundary, each with whether it was lost."""
    out: list[tuple[ResourceEvent, bool]] = []
    next_id = 1
    for key in KEYS:
        hours = sorted(draw(st.sets(st.integers(0, HOURS - 1), max_size=5)))
        for n, hour in enumerate(hours):
            action = "create" if n == 0 else ("stop" if n % 2 else "start")
            when = T0 + hour * HOUR + draw(st.integers(1, HOUR - 1))
            event = ResourceEvent(next_id, key, action, OFFERING[key], when)
            out.append((event, draw(st.booleans())))
            next_id += 1
    return out


def running_at(events: list[ResourceEvent], at: int) -> dict[ResourceKey, str | None]:
    by_key: dict[ResourceKey, list[ResourceEvent]] = defaultdict(list)
    for e in events:
        by_key[e.key].append(e)
    return {key: OFFERING[key] for key, evs in by_key.items() if replay(evs, at + 1).state.running}


# -- the pure core ----------------------------------------------------------------------


@given(histories(), st.integers(0, HOURS), st.sampled_from(["never-overbill", "never-underbill"]))
def test_plan_converges_and_a_second_plan_is_empty(
    history: list[tuple[ResourceEvent, bool]], hour: int, policy: str
) -> None:
    truth = [e for e, _ in history]
    stored = [e for e, lost in history if not lost]
    at = T0 + hour * HOUR
    snapshot = Snapshot("snap", at, running_at(truth, at))
    known = {key: Known(tuple(e for e in stored if e.key == key)) for key in KEYS}
    first = plan(snapshot, known, policy=policy)
    synthetic = [
        ResourceEvent(1000 + i, s.key, s.action, s.offering, s.occurred_at)
        for i, s in enumerate(first.events)
    ]
    after = {key: Known(tuple(e for e in [*stored, *synthetic] if e.key == key)) for key in KEYS}
    assert running_at([*stored, *synthetic], at) == snapshot.running
    assert plan(snapshot, after, policy=policy).events == ()
    ids = [s.event_id for s in first.events]
    assert len(ids) == len(set(ids)) and all(len(i) <= 64 for i in ids)


# -- through the database --------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("template") / "metering.db"
    engine = migrated(f"sqlite:///{path}")
    engine.dispose()
    yield path


def fresh(template: Path, directory: Path) -> Engine:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "metering.db"
    for suffix in ("-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    shutil.copyfile(template, target)
    return make_engine(f"sqlite:///{target}")


def row(e: ResourceEvent) -> dict[str, object]:
    account, entity, resource_id = e.key
    return resource(
        f"e{e.id}",
        e.action,
        from_ms(e.occurred_at).isoformat(),
        account=account,
        entity=entity,
        resource_id=resource_id,
        offering=e.offering,
    )


def per_resource_hour(engine: Engine) -> dict[tuple[ResourceKey, datetime], Decimal]:
    sums: dict[tuple[ResourceKey, datetime], Decimal] = defaultdict(Decimal)
    for (a, e, r, _offering, unit, hour), quantity in billed(engine).items():
        assert unit == "second"
        sums[((a, e, r), hour)] += quantity
    return sums


def count_events(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(usage_events)).scalar_one())


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories())
def test_reconcile_then_run_never_bills_more_than_the_truth(
    template: Path, tmp_path: Path, history: list[tuple[ResourceEvent, bool]]
) -> None:
    directory = tmp_path / f"ex{abs(hash(tuple(history)))}"
    engine = fresh(template, directory)
    truth = [e for e, _ in history]
    try:
        for hour in range(1, HOURS + 2):
            at = T0 + hour * HOUR
            # The events of the hour just ended arrive (those not lost), then the
            # platform's snapshot at the boundary is applied, then the hourly run.
            insert_events(
                engine,
                [row(e) for e, lost in history if not lost and at - HOUR < e.occurred_at < at],
            )
            request = ReconcileRequest(
                inventory=Inventory(running_at(truth, at), None),
                at=from_ms(at),
                policy=NEVER_OVERBILL,
                allow_empty=True,
            )
            execute(engine, request, lock_file=directory / "lock")
            stored = count_events(engine)
            again = execute(engine, request, lock_file=directory / "lock")
            assert again.events == () and count_events(engine) == stored
            run(engine, from_ms(at + 45 * 60_000), directory)

        end = T0 + (HOURS + 1) * HOUR
        by_key: dict[ResourceKey, list[ResourceEvent]] = defaultdict(list)
        for e in truth:
            by_key[e.key].append(e)
        expected: dict[tuple[ResourceKey, datetime], int] = {}
        for key, evs in by_key.items():
            for (_offering, hour_ms), ms in running_by_hour(
                replay(evs, end).spans, T0, end
            ).items():
                expected[(key, from_ms(hour_ms))] = ms
        for (key, hour), seconds in per_resource_hour(engine).items():
            assert seconds >= 0
            assert seconds * 1000 <= expected.get((key, hour), 0), (key, hour)
        # A resource whose last stop was lost bills nothing after the next snapshot.
        for key, evs in by_key.items():
            last = max(evs, key=lambda e: e.occurred_at)
            if last.action == "stop" and (last, True) in history:
                cutoff = from_ms(last.occurred_at - last.occurred_at % HOUR + HOUR)
                assert all(
                    q == 0
                    for (k, h), q in per_resource_hour(engine).items()
                    if k == key and h >= cutoff
                )
    finally:
        engine.dispose()
