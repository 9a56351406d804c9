"""run._gap_rows_by_class, the cluster's gap finder, on real databases: the rows
hold exactly the ids missing, for the patterns a cluster makes and for any other."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import insert, select

from metering import run as metering_run
from metering.store.schema import usage_events
from tests.support import Database, measure


def _store(db: Database, ids: set[int]) -> None:
    rows = [
        {**measure(f"e{i}", 1, "2016-12-12T10:00Z", "2016-12-12T10:01Z"), "id": i}
        for i in sorted(ids)
    ]
    with db.engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(usage_events), rows[start : start + 5000])


def _patterns() -> list[tuple[str, set[int], int, int]]:
    """(name, ids present, lo, hi)."""
    rng = random.Random(15)
    single_row: set[int] = set()
    start = 1
    for _ in range(40):
        dense = set(rng.sample(range(3), rng.randrange(0, 3)))
        length = rng.randrange(50, 3000)
        single_row.update(x for x in range(start, start + length) if x % 3 in dense)
        single_row.update(start + rng.randrange(length) for _ in range(rng.randrange(0, 40)))
        start += length
    bursts: set[int] = set()
    top = 0
    for _ in range(40):
        node = rng.randrange(3)
        first = top + 1 + (node - top - 1) % 3
        ids = range(first, first + 3 * rng.randrange(20, 900), 3)
        bursts.update(ids)
        top = ids[-1]
    bursts -= set(rng.sample(sorted(bursts), 60))
    arbitrary = set(rng.sample(range(1, 20_000), 9_000))
    return [
        ("single-row inserts", single_row, 1, start + 20),
        ("bursts with rollbacks", bursts, 5, top + 7),
        ("arbitrary", arbitrary, 1, 20_000),
        ("dense", set(range(1, 5000)), 1, 4999),
        ("empty", set(), 1, 1000),
    ]


@pytest.mark.parametrize("name", [p[0] for p in _patterns()])
@pytest.mark.parametrize("database", ["sqlite_database", "mariadb_database"])
def test_cluster_gap_rows_hold_exactly_the_missing_ids(
    name: str, database: str, request: pytest.FixtureRequest
) -> None:
    db: Database = request.getfixturevalue(database)
    present, lo, hi = next((p[1], p[2], p[3]) for p in _patterns() if p[0] == name)
    _store(db, present)
    with db.engine.connect() as conn:
        assert set(conn.execute(select(usage_events.c.id)).scalars()) == present
        rows = metering_run._gap_rows_by_class(conn, lo, hi, 3)
    held = [x for s in rows for x in range(s.id_from, s.id_to + 1) if x in s]
    assert len(held) == len(set(held))
    assert set(held) == set(range(lo, hi + 1)) - present
    if name == "single-row inserts":
        # One row per run of a class at most (the reference count), here 3x fewer
        # than the plain ranges of missing ids.
        missing = set(range(lo, hi + 1)) - present
        per_class = sum(1 for x in missing if x - 3 not in missing)
        ranges = sum(1 for x in missing if x - 1 not in missing)
        assert len(rows) <= per_class < ranges
