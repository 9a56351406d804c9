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
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, insert, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from metering.db import make_engine
from metering.store import events as store_events
from metering.store import side_scan
from metering.store.events import RangeScan
from metering.store.schema import usage_events
from metering.store.side_scan import SideScan
from metering.store.state import read_watermark
from tests.support import (
    PROPERTY_SETTINGS,
    Database,
    billed,
    insert_events,
    measure,
    migrated,
    resource,
    run,
    t,
)
from tests.test_measure_lines import _outcome as outcome
from tests.test_measure_lines import histories
from tests.test_security import database_user

pytestmark = pytest.mark.mariadb

START = t("2016-12-12T10:00Z")
FIRST = START + timedelta(hours=1, minutes=31)  # bills 10:00-11:00
SECOND = FIRST + timedelta(minutes=10)
VM_HOUR = ("acme", "vm", "vm-1", "medium", "second", START)


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


def own_scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The first id of each range the run scans on its own connection from now on
    (the side connection's scan is not counted)."""
    scanned: list[int] = []
    original = store_events.scan_range

    def spy(conn: Any, lo: int, *args: Any) -> Any:
        scanned.append(lo)
        return original(conn, lo, *args)

    monkeypatch.setattr(store_events, "scan_range", spy)
    return scanned


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
    scanned = own_scans(monkeypatch)
    outcome = run(engine, FIRST, tmp_path)
    assert scanned == []
    assert outcome.runs[0].events_read == 8
    assert billed_bytes(engine) == sum(10 + i for i in range(6)) + 857  # 60 of its 70 minutes
    assert billed(engine)[VM_HOUR] == Decimal("1800.000")
    # Read after the fence, yet its period is the stored longest (for backfills).
    with engine.connect() as conn:
        assert read_watermark(conn).max_measure_period_ms == 70 * 60_000


# What the run bills for the hour from START (first run, then after the second),
# and how many times it scanned the window on its own connection.
CHANGES = {
    "commit": (275, 1275, 1),
    "delete-and-commit": (275, 1275, 1),
    "to-several-hours": (75, 75, 0),
    "to-one-hour": (1075, 1075, 0),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_row_committed_or_changed_between_the_snapshots_is_billed_once(
    engine: Engine, mariadb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """A producer acts after the run's snapshot began, before the side connection's.
    commit: a row (m7, 1000 bytes) whose id is below the window's top commits: the
    side connection would sum it while the run finds it missing (a gap, read by the
    next run), so the run scans the window itself. delete-and-commit: also m5 goes,
    so that both snapshots hold as many rows: their ids' sums differ. to-several-hours:
    m5 becomes a measure over two hours: the side connection names it among the rows
    read alone, and the run reads it as its own snapshot holds it, one hour's measure.
    to-one-hour: the reverse, for m9 (1000 bytes over 70 minutes): the side connection
    sums it, whole, in the hour. Each row is billed once, as one snapshot holds it."""
    rows = [bytes_of(i, 10 + i) for i in range(6)]
    rows.append(resource("c", "create", "2016-12-12T10:30Z", offering="medium"))
    if change == "to-one-hour":
        rows.append(bytes_of(9, 1000, end="2016-12-12T11:10Z"))
    insert_events(engine, rows)
    producer = migrated(mariadb_url).connect()
    transaction = producer.begin()
    if change in ("commit", "delete-and-commit"):
        producer.execute(insert(usage_events), [bytes_of(7, 1000)])
        insert_events(engine, [bytes_of(8, 200)])  # a higher id, committed

    def pause(where: str) -> None:
        if where != "read":
            return
        events = usage_events.c
        if change == "delete-and-commit":
            producer.execute(delete(usage_events).where(events.event_id == "m5"))
        elif change == "to-several-hours":
            producer.execute(
                update(usage_events)
                .where(events.event_id == "m5")
                .values(period_end=t("2016-12-12T11:10Z"))
            )
        elif change == "to-one-hour":
            producer.execute(
                update(usage_events)
                .where(events.event_id == "m9")
                .values(period_end=t("2016-12-12T10:05Z"))
            )
        transaction.commit()

    first, second, scans = CHANGES[change]
    scanned = own_scans(monkeypatch)
    try:
        run(engine, FIRST, tmp_path, pause=pause)
    finally:
        producer.close()
    assert billed_bytes(engine) == first
    assert len(scanned) == scans
    run(engine, SECOND, tmp_path)
    assert billed_bytes(engine) == second
    assert billed(engine)[VM_HOUR] == Decimal("1800.000")


def test_a_failed_side_connection_leaves_the_sums_to_the_run(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_events(engine, [bytes_of(i, 10 + i) for i in range(6)])

    def lost(*_args: Any) -> RangeScan:
        raise OperationalError("SELECT ...", {}, Exception("Lost connection to server"))

    monkeypatch.setattr(side_scan, "scan_range", lost)
    scanned = own_scans(monkeypatch)
    run(engine, FIRST, tmp_path)
    assert len(scanned) == 1
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


@st.composite
def deliveries(draw: st.DrawFn) -> list[list[dict[str, Any]]]:
    """test_measure_lines' histories (measures in one hour and across hours, odd units,
    lifecycle events, negative quantities) plus rows of no or odd kind and action,
    delivered in a few batches."""
    rows = draw(histories())
    # Equal to a measure's by MariaDB's collation or not: rows the run reads beside
    # the scan by their kind, or those the scan names to it.
    odd = st.sampled_from(
        [("QUANTITY", "measure"), ("quantity ", "Measure"), ("quantity", "sample"), ("qty", "")]
    )
    for i in range(draw(st.integers(0, 4))):
        kind, action = draw(odd)
        at = START + timedelta(minutes=draw(st.integers(0, 5 * 60)))
        rows.append({**bytes_of(100 + i, 7, end=at.isoformat()), "kind": kind, "action": action})
    rows = draw(st.permutations(rows))
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=3)))
    return [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]


@pytest.fixture
def pair(mariadb_url_factory: Any) -> list[Database]:
    return [Database(migrated(mariadb_url_factory())) for _ in range(2)]


@pytest.mark.mariadb
@settings(max_examples=40, **PROPERTY_SETTINGS)
@given(batches=deliveries())
def test_hourly_runs_bill_the_same_beside_or_alone(
    pair: list[Database],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    batches: list[list[dict[str, Any]]],
) -> None:
    """Rows written straight into usage_events in batches, an hourly run after each, on
    two MariaDB databases: one with the side connection, one where it is refused (the
    run then scans alone, as before it). Both hold the same lines, pending parts and
    run records."""
    outcomes = []
    beside: list[int] = []
    for refused, db in zip((False, True), pair, strict=True):
        db.reset()
        insert_events(db.engine, [measure("old", 1, "2016-12-12T09:00Z", "2016-12-12T09:05Z")])
        run(db.engine, START + timedelta(minutes=31), tmp_path)
        with monkeypatch.context() as patch:
            patch.setattr(SideScan, "__init__", refuse if refused else counted(beside))
            for hour, rows in enumerate(batches, start=1):
                insert_events(db.engine, rows)
                run(db.engine, START + timedelta(hours=hour, minutes=31), tmp_path)
        outcomes.append(outcome(db.engine))
    assert len(beside) == sum(1 for rows in batches if rows)
    assert outcomes[0] == outcomes[1]


def refuse(self: SideScan, *_args: Any) -> None:
    raise OperationalError("connect", {}, Exception("Too many connections"))


def counted(calls: list[int]) -> Any:
    original = SideScan.__init__

    def opening(self: SideScan, *args: Any) -> None:
        calls.append(1)
        original(self, *args)

    return opening
