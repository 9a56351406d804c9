"""Interleaved event ids (a Galera cluster: auto_increment_increment = cluster size)
cost a few event_gaps rows, and a late commit from any node is still billed.

On MariaDB, three "nodes" are three sessions of one server with
auto_increment_increment = 3 and offsets 1, 2, 3: each takes the next id of its own
offset above the highest, as a Galera node does. On SQLite the same ids are given
explicitly, out of order and with holes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, insert, select
from sqlalchemy.engine import Connection

from metering.core.gaps import Strided
from metering.store import state as store_state
from metering.store import status as store_status
from metering.store.schema import event_gaps, usage_events
from tests.faults import scenario as sc
from tests.support import billed, measure, migrated, resource, run, t

HOUR_BILLED = "2016-12-12T11:32Z"  # bills 10:00-11:00
NEXT_RUN = "2016-12-12T12:32Z"
NODES = (1, 2, 3)


def _burst(node: int, index: int, count: int) -> list[dict[str, Any]]:
    """count measures of hour 10, from many keys; one resource event now and then."""
    rows = [
        measure(
            f"n{node}-b{index}-{i}",
            1000 + i,
            f"2016-12-12T10:{i % 60:02d}Z",
            f"2016-12-12T10:{i % 60:02d}:30Z",
            resource_id=f"10.0.{node}.{i % 50}",
        )
        for i in range(count)
    ]
    rows[0] = resource(
        f"n{node}-b{index}-vm",
        "create",
        "2016-12-12T10:05Z",
        resource_id=f"vm-{node}-{index}",
        offering="small",
    )
    return rows


def _missing_ids(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        present = set(conn.execute(select(usage_events.c.id)).scalars())
        mark = store_state.read_watermark(conn)
    return set(range(1, mark.last_event_id + 1)) - present


def _gap_ids(engine: Engine) -> list[int]:
    """Every id the gap rows hold, with repeats (overlapping rows would show)."""
    with engine.connect() as conn:
        gaps = store_state.read_gaps(conn)
    return [x for g in gaps for x in range(g.ids.id_from, g.ids.id_to + 1) if x in g.ids]


def _gap_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(event_gaps)).scalar_one())


def _assert_gaps_are_the_missing_ids(engine: Engine) -> None:
    held = _gap_ids(engine)
    assert len(held) == len(set(held))
    assert set(held) == _missing_ids(engine)
    with engine.connect() as conn:
        counts = store_status.counts(conn)
    assert counts.gap_ids == len(held)


# -- MariaDB: three sessions as three Galera nodes -------------------------------------


@pytest.fixture
def engine(mariadb_url: str) -> Iterator[Engine]:
    engine = migrated(mariadb_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def nodes(mariadb_url: str, engine: Engine) -> Iterator[dict[int, Connection]]:
    """One connection per node, from an engine of their own: the session variables
    must not reach the pool the runs use."""
    cluster = create_engine(engine.url)
    conns: dict[int, Connection] = {}
    try:
        for node in NODES:
            conn = cluster.connect()
            conn.exec_driver_sql(
                f"SET SESSION auto_increment_increment = 3, auto_increment_offset = {node}"
            )
            conn.commit()
            conns[node] = conn
        yield conns
    finally:
        for conn in conns.values():
            conn.close()
        cluster.dispose()


@pytest.mark.mariadb
def test_galera_nodes_interleaving_cost_few_gap_rows_and_a_late_commit_is_billed(
    engine: Engine, nodes: dict[int, Connection], tmp_path: Path
) -> None:
    rng = random.Random(5)
    bursts = 0
    # Bursts from nodes in random order (ingest commits a batch at a time), ~30k events.
    for index in range(60):
        node = rng.choice(NODES if index <= 30 else (1, 3))
        with nodes[node].begin():
            nodes[node].execute(insert(usage_events), _burst(node, index, rng.randrange(200, 800)))
        bursts += 1
        if index == 30:
            # Node 2 inserts a burst and keeps its transaction open: its ids are
            # taken, below ids the other nodes commit after it.
            held = nodes[2].begin()
            nodes[2].execute(insert(usage_events), _burst(2, 999, 300))
            held_ids = (
                nodes[2]
                .execute(
                    select(func.min(usage_events.c.id), func.max(usage_events.c.id)).where(
                        usage_events.c.event_id.like("n2-b999-%")
                    )
                )
                .one()
            )
            bursts += 1
    with engine.connect() as conn:
        newest = conn.execute(select(func.max(usage_events.c.id))).scalar_one()
        events = conn.execute(select(func.count()).select_from(usage_events)).scalar_one()
    assert held_ids[1] < newest
    assert events >= 25_000

    first = run(engine, HOUR_BILLED, tmp_path)
    assert first.runs[0].last_event_id == newest  # read past the held burst
    _assert_gaps_are_the_missing_ids(engine)
    assert set(range(held_ids[0], held_ids[1] + 1, 3)) <= set(_gap_ids(engine))
    # About 2 ids missing per event read (~57k): a row per hole before (~29k). A
    # burst of one node leaves its interleaving as one strided row, and the switch
    # to the next burst at most a run between them (77 rows for 61 bursts, seed 5).
    assert _gap_rows(engine) <= 2 * bursts
    assert billed(engine) == sc.expected(engine, t("2016-12-12T11:00Z"))  # what it sees

    held.commit()
    second = run(engine, NEXT_RUN, tmp_path)
    assert second.runs[0].events_read == 300
    assert billed(engine) == sc.expected(engine, t("2016-12-12T12:00Z"))
    _assert_gaps_are_the_missing_ids(engine)
    assert _gap_rows(engine) <= 2 * bursts + 2  # the held burst's ids, cut out of a row

    third = run(engine, "2016-12-12T13:32Z", tmp_path)
    assert third.runs[0].events_read == 0  # nothing billed twice
    assert billed(engine) == sc.expected(engine, t("2016-12-12T13:00Z"))


# -- SQLite: the same ids, given explicitly --------------------------------------------


def _galera_ids(rng: random.Random, bursts: int) -> list[tuple[int, int]]:
    """(node, id) of bursts from random nodes, each id the next of its node's offset."""
    out: list[tuple[int, int]] = []
    top = 0
    for _ in range(bursts):
        node = rng.choice(NODES)
        first = top + 1 + (node - top - 1) % 3
        ids = range(first, first + 3 * rng.randrange(20, 400), 3)
        out.extend((node, i) for i in ids)
        top = ids[-1]
    return out


def test_explicit_interleaved_ids_out_of_order_with_holes_on_sqlite(
    sqlite_url: str, tmp_path: Path
) -> None:
    engine = migrated(sqlite_url)
    try:
        rng = random.Random(11)
        ids = _galera_ids(rng, 40)
        rows = []
        for n, (node, i) in enumerate(ids):
            row = measure(
                f"e{i}",
                100 + n,
                f"2016-12-12T10:{n % 60:02d}Z",
                f"2016-12-12T10:{n % 60:02d}:30Z",
                resource_id=f"10.0.{node}.{n % 40}",
            )
            rows.append({**row, "id": i})
        # Some inserts roll back (holes), some commit only after the first run (late),
        # the rest in no particular order.
        late = set(rng.sample(range(len(rows) - 1), 150))
        burnt = set(rng.sample(sorted(set(range(len(rows) - 1)) - late), 50))
        now = [rows[k] for k in range(len(rows)) if k not in late | burnt]
        rng.shuffle(now)
        with engine.begin() as conn:
            conn.execute(insert(usage_events), now)
        run(engine, HOUR_BILLED, tmp_path)
        _assert_gaps_are_the_missing_ids(engine)
        # 40 bursts; 200 rows rolled back or late: each may cut a row in three.
        assert _gap_rows(engine) <= 3 * 40 + 3 * 200
        with engine.begin() as conn:
            conn.execute(insert(usage_events), [rows[k] for k in sorted(late)])
        second = run(engine, NEXT_RUN, tmp_path)
        assert second.runs[0].events_read == len(late)
        assert billed(engine) == sc.expected(engine, t("2016-12-12T12:00Z"))
        _assert_gaps_are_the_missing_ids(engine)
    finally:
        engine.dispose()


def test_a_regular_interleaving_is_a_row_or_two_on_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    engine = migrated(sqlite_url)
    try:
        # One node of three: ids 1, 4, 7, ... of 10k events.
        rows = [
            {
                **measure(f"e{k}", k, "2016-12-12T10:00Z", "2016-12-12T10:01Z"),
                "id": 1 + 3 * k,
            }
            for k in range(10_000)
        ]
        with engine.begin() as conn:
            conn.execute(insert(usage_events), rows)
        run(engine, HOUR_BILLED, tmp_path)
        with engine.connect() as conn:
            gaps = store_state.read_gaps(conn)
        assert [g.ids for g in gaps] == [Strided(2, 29_997, 3, 2)]  # up to id 29,998
        assert billed(engine) == sc.expected(engine, t("2016-12-12T11:00Z"))
    finally:
        engine.dispose()
