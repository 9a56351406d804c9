"""Runs touching more resources than one OR of ANDs matches (store/keys.MANY): the
keys are joined as a temporary table, which must neither change what is billed nor
commit a run's transaction half-way (a plain CREATE or DROP TABLE would on MariaDB)."""

from __future__ import annotations

from pathlib import Path

from metering.store import state as store_state
from metering.store.keys import MANY, key_table
from tests.contract_model import expected
from tests.support import Database, billed, insert_events, migrated, resource, run, t

COUNT = MANY + 50


def test_many_resources_late_events_and_a_dry_run(database_url: str, tmp_path: Path) -> None:
    engine = migrated(database_url)
    db = Database(engine)
    insert_events(
        engine,
        [
            resource(f"c{i}", "create", "2016-12-12T10:00Z", resource_id=f"vm-{i}", offering="s")
            for i in range(COUNT)
        ],
    )
    run(engine, "2016-12-12T12:31Z", tmp_path)
    # Late stops for every one of them, and resizes for half: all re-derived at once.
    insert_events(
        engine,
        [resource(f"s{i}", "stop", "2016-12-12T11:15Z", resource_id=f"vm-{i}")
         for i in range(COUNT)]
        + [resource(f"u{i}", "update", "2016-12-12T10:30Z", resource_id=f"vm-{i}", offering="m")
           for i in range(0, COUNT, 2)],
    )  # fmt: skip
    before = db.snapshot()
    dry = run(engine, "2016-12-12T13:31Z", tmp_path, dry_run=True)
    assert db.snapshot() == before, "the dry run committed nothing"
    assert dry.lines
    run(engine, "2016-12-12T13:31Z", tmp_path)
    assert billed(engine) == expected(db.stored(), t("2016-12-12T13:00Z"))
    # A backfill over the unchanged events finds nothing to write.
    outcome = run(engine, "2016-12-12T13:31Z", tmp_path, since=t("2016-12-12T10:00Z"))
    assert sum(r.lines_written for r in outcome.runs) == 0


def test_key_queries_keep_their_cached_forms_chunk_after_chunk(database_url: str) -> None:
    # SQLAlchemy keeps every compiled statement (up to 500): statements that took a new
    # shape in each chunk made a week's catch-up hold ~25 MB more by its end.
    engine = migrated(database_url)

    def chunk(first: int, size: int) -> None:
        keys = [("acct", "vm", f"vm-{i}") for i in range(first, first + size)]
        with engine.begin() as conn:
            store_state.resources(conn, keys)
            with key_table(conn, keys) as outer, key_table(conn, keys[:1]) as inner:
                assert outer.name != inner.name, "nested key tables are two tables"

    for first, size in ((0, 3), (10, MANY + 20)):
        chunk(first, size)
    cached = len(engine._compiled_cache)  # type: ignore[attr-defined]
    # Batches of 3 and 4 keys share an OR of four; more than MANY, one key table.
    for first, size in ((100, 4), (200, 3), (400, MANY + 7), (900, 2 * MANY + 1)):
        chunk(first, size)
    assert len(engine._compiled_cache) == cached  # type: ignore[attr-defined]
