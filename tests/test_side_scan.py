"""An hourly window's simple measures summed on a second connection beside the run
(metering/store/side_scan.py): its sums are taken when its snapshot holds the simple
measures the run's does, and the window is summed on the run's own connection when a
producer's commit or change falls between the two snapshots; nothing is billed twice
or lost either way."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from metering.db import make_engine
from metering.store import side_scan
from metering.store.events import Digest
from metering.store.schema import usage_events
from metering.store.side_scan import SideScan
from tests.support import billed, insert_events, measure, migrated, resource, run, t
from tests.test_security import database_user

pytestmark = pytest.mark.mariadb

START = t("2016-12-12T10:00Z")
FIRST = START + timedelta(hours=1, minutes=31)  # bills 10:00-11:00
SECOND = FIRST + timedelta(minutes=10)


@pytest.fixture
def engine(mariadb_url: str, tmp_path: Path) -> Iterator[Engine]:
    """Billed up to START, so that the runs below are hourly ones (a first run reads
    its backlog in windows, as a catch-up)."""
    engine = migrated(mariadb_url)
    insert_events(engine, [measure("old", 1, "2016-12-12T09:00Z", "2016-12-12T09:05Z")])
    run(engine, START + timedelta(minutes=31), tmp_path)
    try:
        yield engine
    finally:
        engine.dispose()


def sums_taken(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether the run took each side connection's sums (False: it summed itself)."""
    taken: list[bool] = []
    original = SideScan.sums

    def spy(self: SideScan, seen: Digest) -> Any:
        result = original(self, seen)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(SideScan, "sums", spy)
    return taken


def bytes_of(i: int, quantity: int, end: str = "2016-12-12T10:05Z") -> dict[str, Any]:
    return measure(f"m{i}", quantity, "2016-12-12T10:00Z", end, resource_id=f"10.0.0.{i % 3}")


def billed_bytes(engine: Engine) -> Decimal:
    """Bytes billed for the hour from START."""
    return sum((v for k, v in billed(engine).items() if k[1] == "ip" and k[5] == START), Decimal(0))


def test_a_quiet_hour_takes_the_side_connections_sums(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_events(
        engine,
        [
            *(bytes_of(i, 10 + i) for i in range(6)),
            resource("c", "create", "2016-12-12T10:30Z", offering="medium"),
            # Over two hours: read alone by the run, not summed on the side.
            bytes_of(9, 1000, end="2016-12-12T11:10Z"),
        ],
    )
    taken = sums_taken(monkeypatch)
    outcome = run(engine, FIRST, tmp_path)
    assert taken == [True]
    assert outcome.runs[0].events_read == 8
    assert billed_bytes(engine) == sum(10 + i for i in range(6)) + 857  # 60 of its 70 minutes
    vm = ("acme", "vm", "vm-1", "medium", "second", START)
    assert billed(engine)[vm] == Decimal("1800.000")


@pytest.mark.parametrize("change", ["commit", "update", "delete-and-commit"])
def test_a_row_committed_or_changed_between_the_snapshots_is_billed_once(
    engine: Engine, mariadb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """commit: a producer's row, its id below the window's top, commits after the
    run's snapshot began and before the side connection's: the side one would sum
    it, the run finds it missing (a gap, read again by the next run). update: a
    simple measure becomes one over two hours: the run leaves it to the side
    connection, which no longer sums it. delete-and-commit: as commit, and another
    row goes, so that both snapshots hold as many rows. Each time the sums differ,
    and the run sums the window itself."""
    insert_events(engine, [bytes_of(i, 10 + i) for i in range(6)])
    producer = migrated(mariadb_url).connect()
    transaction = producer.begin()
    if change != "update":
        producer.execute(insert(usage_events), [bytes_of(7, 1000)])
        insert_events(engine, [bytes_of(8, 200)])  # a higher id, committed

    def pause(where: str) -> None:
        if where != "read":
            return
        rows = usage_events.c.event_id == "m5"
        if change == "update":
            producer.execute(
                update(usage_events).where(rows).values(period_end=t("2016-12-12T11:10Z"))
            )
        elif change == "delete-and-commit":
            producer.execute(delete(usage_events).where(rows))
        transaction.commit()

    taken = sums_taken(monkeypatch)
    try:
        run(engine, FIRST, tmp_path, pause=pause)
    finally:
        producer.close()
    # The run's snapshot: the six rows, m8 and not the late m7 (a gap for now).
    expected = sum(10 + i for i in range(6)) + (200 if change != "update" else 0)
    assert billed_bytes(engine) == expected
    run(engine, SECOND, tmp_path)
    assert billed_bytes(engine) == expected + (1000 if change != "update" else 0)
    assert taken == [False]  # the second run reads only the gap


def test_a_failed_side_connection_leaves_the_sums_to_the_run(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_events(engine, [bytes_of(i, 10 + i) for i in range(6)])

    def lost(*_args: Any) -> Digest:
        raise OperationalError("SELECT ...", {}, Exception("Lost connection to server"))

    monkeypatch.setattr(side_scan, "sum_simple", lost)
    taken = sums_taken(monkeypatch)
    run(engine, FIRST, tmp_path)
    assert taken == [False]
    assert billed_bytes(engine) == sum(10 + i for i in range(6))


def test_a_user_limited_to_two_connections_still_bills(
    engine: Engine,
    mariadb_url: str,
    _mysql_admin_engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The documented run user, allowed two connections: the database lock holds one,
    the run the other, and the run sums the hour itself."""
    insert_events(engine, [bytes_of(i, 10 + i) for i in range(6)])
    refused: list[str] = []
    original = SideScan.__init__

    def opening(self: SideScan, *args: Any) -> None:
        try:
            original(self, *args)
        except OperationalError as exc:
            refused.append(str(exc.orig))
            raise

    monkeypatch.setattr(SideScan, "__init__", opening)
    with database_user(mariadb_url, _mysql_admin_engine, ("run",)) as url:
        user = make_url(url).username
        with _mysql_admin_engine.begin() as conn:
            conn.execute(text(f"ALTER USER '{user}'@'%' WITH MAX_USER_CONNECTIONS 2"))
        limited = make_engine(url)
        try:
            outcome = run(limited, FIRST, tmp_path)
        finally:
            limited.dispose()
    assert outcome.runs[0].events_read == 6
    assert billed_bytes(engine) == sum(10 + i for i in range(6))
    assert len(refused) == 1 and "max_user_connections" in refused[0]
