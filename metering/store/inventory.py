"""SQL of `metering reconcile`: inventory snapshots, the resources that may be running,
last_seen_at, synthetic events and the record of applied snapshots.

Every function takes a Connection inside a transaction the caller owns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Connection

from metering.core.events import ResourceKey
from metering.store import ingest as store_ingest
from metering.store.events import in_gap
from metering.store.schema import (
    inventory_snapshots,
    reconciliations,
    resource_state,
    usage_events,
)
from metering.store.state import Gap
from metering.timeutil import from_ms, to_ms

KEY_BATCH = 200


@dataclass(frozen=True, slots=True)
class InventoryRow:
    key: ResourceKey
    offering: str | None
    taken_at: int


@dataclass(frozen=True, slots=True)
class Applied:
    snapshot_id: str
    source: str
    taken_at: datetime
    policy: str
    applied_at: datetime
    listed: int
    starts: int
    stops: int
    updates: int
    skipped: int
    host: str | None


def latest_snapshot_id(conn: Connection) -> str | None:
    """The platform's newest snapshot (by taken_at, then id), applied or not."""
    query = (
        select(inventory_snapshots.c.snapshot_id)
        .order_by(inventory_snapshots.c.taken_at.desc(), inventory_snapshots.c.snapshot_id.desc())
        .limit(1)
    )
    found = conn.execute(query).scalar()
    return None if found is None else str(found)


def snapshot_rows(conn: Connection, snapshot_id: str) -> list[InventoryRow]:
    c = inventory_snapshots.c
    query = select(c.account, c.entity, c.resource_id, c.offering, c.taken_at).where(
        c.snapshot_id == snapshot_id
    )
    return [
        InventoryRow((r.account, r.entity, r.resource_id), r.offering, to_ms(r.taken_at))
        for r in conn.execute(query)
    ]


def is_applied(conn: Connection, snapshot_id: str) -> bool:
    query = select(reconciliations.c.snapshot_id).where(
        reconciliations.c.snapshot_id == snapshot_id
    )
    return conn.execute(query).first() is not None


def record_applied(conn: Connection, applied: Applied) -> None:
    """First application wins: the record says when the snapshot first converged the state."""
    if not is_applied(conn, applied.snapshot_id):
        conn.execute(insert(reconciliations).values(**asdict(applied)))


def _match(table: Any, keys: Sequence[ResourceKey]) -> Any:
    return or_(
        *(
            and_(table.c.account == a, table.c.entity == e, table.c.resource_id == r)
            for a, e, r in keys
        )
    )


def maybe_running(
    conn: Connection, at: int, last_event_id: int, gaps: Sequence[Gap]
) -> set[ResourceKey]:
    """Every resource whose history might make it run at `at`, and a few more.

    resource_state holds each resource's state at billed_until: a resource running
    at `at` is running there, or has an event between the two (pending_from when
    `at` is later, last_event_at when earlier), or has events no run has read yet.
    """
    rs = resource_state.c
    known = select(rs.account, rs.entity, rs.resource_id).where(
        or_(
            rs.running.is_(True),
            rs.pending_from.is_not(None),
            rs.last_event_at >= from_ms(at),
        )
    )
    keys: set[ResourceKey] = {(r[0], r[1], r[2]) for r in conn.execute(known)}
    ev = usage_events.c
    unread = [ev.id > last_event_id, *(in_gap(ev.id, g.ids) for g in gaps)]
    query = (
        select(ev.account, ev.entity, ev.resource_id)
        .where(ev.kind == "resource", or_(*unread))
        .distinct()
    )
    keys.update((r[0], r[1], r[2]) for r in conn.execute(query))
    return keys


def last_seen(conn: Connection, keys: Sequence[ResourceKey]) -> dict[ResourceKey, int | None]:
    """last_seen_at of the resources that have a resource_state row."""
    found: dict[ResourceKey, int | None] = {}
    rs = resource_state.c
    for start in range(0, len(keys), KEY_BATCH):
        query = select(rs.account, rs.entity, rs.resource_id, rs.last_seen_at).where(
            _match(resource_state, keys[start : start + KEY_BATCH])
        )
        for a, e, r, seen in conn.execute(query):
            found[(a, e, r)] = None if seen is None else to_ms(seen)
    return found


def mark_seen(
    conn: Connection, keys: Iterable[ResourceKey], at: int, have_row: Mapping[ResourceKey, Any]
) -> None:
    """last_seen_at = max(last_seen_at, at); a resource without a row gets one that
    says what no row says (not running, nothing pending) plus when it was seen."""
    when = from_ms(at)
    existing = [k for k in keys if k in have_row]
    missing = [k for k in keys if k not in have_row]
    rs = resource_state.c
    for start in range(0, len(existing), KEY_BATCH):
        conn.execute(
            update(resource_state)
            .where(
                _match(resource_state, existing[start : start + KEY_BATCH]),
                or_(rs.last_seen_at.is_(None), rs.last_seen_at < when),
            )
            .values(last_seen_at=when)
        )
    rows = [
        {
            "account": a,
            "entity": e,
            "resource_id": r,
            "running": False,
            "offering": None,
            "since": None,
            "destroyed": False,
            "pending_from": None,
            "last_event_at": None,
            "last_seen_at": when,
        }
        for a, e, r in missing
    ]
    for start in range(0, len(rows), 5000):
        conn.execute(insert(resource_state), rows[start : start + 5000])


def insert_events(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert synthetic events, skipping event_ids already stored; how many were stored
    (counted in the table: two rows with one id store one)."""
    if not rows:
        return 0
    ids = sorted({str(r["event_id"]) for r in rows})
    existing = store_ingest.existing_event_ids(conn, ids)
    new = [r for r in rows if r["event_id"] not in existing]
    store_ingest.insert_events(conn, new)
    return store_ingest.count_event_ids(conn, ids) - len(existing)
