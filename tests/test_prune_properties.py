"""Pruning never changes a later run's lines, on SQLite and MariaDB.

Two databases get the same events and runs: histories with late events, resizes,
resources left running, measures, bad events, and events still unread when the
prune comes. One of them is pruned at a random safe horizon (in small batches);
then both get the same later events (dated from the horizon on: late corrections of
billed hours, new usage), scheduled runs and backfills from the horizon on. Every
later run must write the same lines in both, and the final sums must agree. A third
database, empty, gets the prune's archive and the events the prune kept: it bills
the same as the one never pruned.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from metering.ingest import ingest
from metering.prune import PruneRequest, prune
from metering.store.schema import rejected_events
from metering.store.usage import lines_of_runs
from tests.support import PROPERTY_SETTINGS, Database, billed, migrated, run
from tests.support import event as row

T0 = datetime(2016, 12, 12, tzinfo=UTC)
HOUR_MS = 3_600_000
MIN_MS = 60_000
OLD_HOURS = 8  # the events the prune judges are dated in [T0, T0 + 8 h)
PRUNE_AT = T0 + timedelta(hours=9)  # billed until T0 + 8 h, the latest safe horizon
LATER_RUNS = [T0 + timedelta(hours=h, minutes=40) for h in (10, 12, 14)]
FINAL = T0 + timedelta(hours=20)


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def instants(lo: int, hi: int) -> st.SearchStrategy[int]:
    """Minutes, hour boundaries and a millisecond either side of them, in [lo, hi)."""
    return st.one_of(
        st.integers(lo // MIN_MS, (hi - 1) // MIN_MS).map(lambda m: m * MIN_MS),
        st.integers(lo // HOUR_MS + 1, (hi - 1) // HOUR_MS).flatmap(
            lambda h: st.sampled_from([h * HOUR_MS - 1, h * HOUR_MS, h * HOUR_MS + 1])
        ),
    )


@st.composite
def resource_events(draw: st.DrawFn, lo: int, hi: int) -> dict[str, Any]:
    return row(
        kind="resource",
        entity="vm",
        action=draw(
            st.sampled_from(["create", "start", "start", "stop", "stop", "destroy", "update"])
        ),
        account="a",
        resource_id=draw(st.sampled_from(["r1", "r2"])),
        offering=draw(st.sampled_from([None, "s", "m", "l", "l"])),
        occurred_at=at(draw(instants(lo, hi))),
    )


@st.composite
def measures(draw: st.DrawFn, lo: int, hi: int) -> dict[str, Any]:
    start = draw(instants(lo, hi))
    length = draw(st.sampled_from([0, 1, MIN_MS, HOUR_MS // 2, HOUR_MS, 2 * HOUR_MS]))
    return row(
        kind="quantity",
        entity="ip",
        action="measure",
        account="a",
        resource_id=draw(st.sampled_from(["r1", "r2"])),
        quantity=draw(st.integers(0, 10**6)),
        unit="byte",
        period_start=at(start),
        period_end=at(start + length),
        occurred_at=at(start + length),
    )


def bad() -> st.SearchStrategy[dict[str, Any]]:
    return st.just(
        row(
            kind="resource",
            entity="vm",
            action="reboot",
            account="a",
            resource_id="r1",
            occurred_at=at(HOUR_MS),
        )
    )


@dataclass(frozen=True)
class Scenario:
    old: list[dict[str, Any]]
    old_slots: list[int]  # per old event: 0-2 before the runs at 3, 6, 9 h; 3 unread
    horizon_hour: int
    batch_size: int
    later: list[dict[str, Any]]
    later_slots: list[int]  # per later event: before which later step
    backfills: list[int | None]  # per later step: a backfill --since hour, or a run


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    span = OLD_HOURS * HOUR_MS
    old = draw(
        st.lists(
            st.one_of(
                resource_events(0, span),
                resource_events(0, span),
                resource_events(0, span),
                measures(0, span),
                bad(),
            ),
            min_size=4,
            max_size=24,
        )
    )
    # Now and then some old events are still unread when the prune comes.
    slots = [0, 1, 1, 2, 2, 2, 2, 2, 3] if draw(st.booleans()) else [0, 1, 1, 2, 2, 2]
    horizon_hour = draw(st.one_of(st.integers(1, OLD_HOURS), st.integers(6, OLD_HOURS)))
    lo = horizon_hour * HOUR_MS
    later = draw(
        st.lists(
            st.one_of(resource_events(lo, 13 * HOUR_MS), measures(lo, 13 * HOUR_MS)), max_size=8
        )
    )
    for number, e in enumerate([*old, *later]):
        e["event_id"] = f"e{number}"
    return Scenario(
        old=old,
        old_slots=draw(st.lists(st.sampled_from(slots), min_size=len(old), max_size=len(old))),
        horizon_hour=horizon_hour,
        batch_size=draw(st.integers(1, 6)),
        later=later,
        later_slots=draw(
            st.lists(st.integers(0, len(LATER_RUNS) - 1), min_size=len(later), max_size=len(later))
        ),
        backfills=draw(
            st.lists(
                st.one_of(st.none(), st.integers(horizon_hour, OLD_HOURS + 1)),
                min_size=len(LATER_RUNS),
                max_size=len(LATER_RUNS),
            )
        ),
    )


CURRENT = row(
    event_id="current",
    kind="quantity",
    entity="ip",
    action="measure",
    account="a",
    resource_id="r1",
    quantity=7,
    unit="byte",
    period_start=PRUNE_AT - timedelta(minutes=2),
    period_end=PRUNE_AT - timedelta(minutes=1),
)


def lines_of(db: Database, run_ids: list[str]) -> Counter[tuple[Any, ...]]:
    with db.engine.connect() as conn:
        return Counter(
            (x.account, x.entity, x.resource_id, x.offering, x.unit, x.hour, x.quantity)
            for x in lines_of_runs(conn, run_ids)
        )


def findings(db: Database) -> Counter[tuple[str, str, str]]:
    r = rejected_events.c
    with db.engine.connect() as conn:
        return Counter(conn.execute(select(r.event_id, r.category, r.reason)).tuples())


def play(pruned: Database, twin: Database, restored: Database, case: Scenario, tmp: Path) -> None:
    for db in (pruned, twin, restored):
        db.reset()
    both = (pruned, twin)
    for slot, now_hour in enumerate((3, 6, 9)):
        for db in both:
            db.deliver([e for e, s in zip(case.old, case.old_slots, strict=True) if s == slot])
            run(db.engine, T0 + timedelta(hours=now_hour), tmp)
    # Old events still unread when the prune comes, and the producer's current one.
    unread = [e for e, s in zip(case.old, case.old_slots, strict=True) if s == 3]
    for db in both:
        db.deliver([*unread, CURRENT])
    archive = tmp / "archive.jsonl.gz"
    archive.unlink(missing_ok=True)
    request = PruneRequest(
        before=T0 + timedelta(hours=case.horizon_hour),
        now=PRUNE_AT,
        archive=archive,
        batch_size=case.batch_size,
    )
    outcome = prune(pruned.engine, request, lock_file=tmp / "metering.lock")
    event(f"pruned {'some resource events' if outcome.resource_events else 'no resource event'}")
    event(f"pruned {'some measures' if outcome.measures else 'no measure'}")
    assert len(pruned.stored()) == len(twin.stored()) - outcome.deleted

    for step, now in enumerate(LATER_RUNS):
        new = [e for e, s in zip(case.later, case.later_slots, strict=True) if s == step]
        since = case.backfills[step]
        written = []
        for db in both:
            db.deliver(new)
            options: dict[str, Any] = {}
            if since is not None:
                options["since"] = T0 + timedelta(hours=since)
            written.append(
                lines_of(db, [r.run_id for r in run(db.engine, now, tmp, **options).runs])
            )
        if written[0]:
            event("a later run wrote lines")
        assert written[0] == written[1], "a later run wrote other lines after the prune"
    for db in both:
        run(db.engine, FINAL, tmp)
    assert billed(pruned.engine) == billed(twin.engine)
    assert findings(pruned) == findings(twin)

    # The archive, then what the prune kept, into an empty database: the same bill.
    if archive.exists():
        with gzip.open(archive, "rb") as lines:
            assert ingest(restored.engine, lines).inserted == outcome.deleted
    else:
        assert outcome.deleted == 0
    kept = [{k: v for k, v in e.items() if k not in ("id", "ingested_at")} for e in pruned.stored()]
    restored.deliver(kept)
    run(restored.engine, FINAL, tmp)
    assert billed(restored.engine) == billed(twin.engine)


@pytest.fixture
def sqlite_trio(sqlite_database: Database, tmp_path: Path) -> Iterator[list[Database]]:
    others = [migrated(f"sqlite:///{tmp_path}/{name}.db") for name in ("twin", "restored")]
    try:
        yield [sqlite_database, *(Database(e) for e in others)]
    finally:
        for engine in others:
            engine.dispose()


@pytest.fixture
def mariadb_trio(mariadb_database: Database, mariadb_url_factory: Any) -> Iterator[list[Database]]:
    others = [migrated(mariadb_url_factory()) for _ in range(2)]
    try:
        yield [mariadb_database, *(Database(e) for e in others)]
    finally:
        for engine in others:
            engine.dispose()


@given(case=scenarios())
@settings(max_examples=40, **PROPERTY_SETTINGS)  # type: ignore[arg-type]
def test_pruning_never_changes_a_later_run_sqlite(
    case: Scenario, sqlite_trio: list[Database], tmp_path: Path
) -> None:
    play(*sqlite_trio, case, tmp_path)


@pytest.mark.mariadb
@given(case=scenarios())
@settings(max_examples=8, **PROPERTY_SETTINGS)  # type: ignore[arg-type]
def test_pruning_never_changes_a_later_run_mariadb(
    case: Scenario, mariadb_trio: list[Database], tmp_path: Path
) -> None:
    play(*mariadb_trio, case, tmp_path)
