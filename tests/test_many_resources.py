"""Runs touching more resources than one OR of ANDs matches (store/keys.MANY): the
keys are joined as a temporary table, which must neither change what is billed nor
commit a run's transaction half-way (a plain CREATE or DROP TABLE would on MariaDB)."""

from __future__ import annotations

from pathlib import Path

from metering.store.keys import MANY
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
