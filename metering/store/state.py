"""The state carried between runs: watermark (with its compare-and-set), id gaps, and
each resource's state at billed_until."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, insert, or_, select, update
from sqlalchemy.engine import Connection, Row

from metering.core.events import ResourceKey
from metering.core.gaps import Strided, strided
from metering.core.resources import StoredResource
from metering.core.spans import ResourceState
from metering.errors import ConcurrentRun
from metering.store.bulk import insert_rows
from metering.store.keys import MANY, key_match, key_table, same_key
from metering.store.schema import event_gaps, metering_state, resource_state, usage_events
from metering.timeutil import from_ms, to_ms


@dataclass(frozen=True, slots=True)
class Watermark:
    version: int
    last_event_id: int
    billed_until: int | None  # ms; hours before it are billed
    max_measure_period_ms: int
    last_run_id: str | None


@dataclass(frozen=True, slots=True)
class Gap:
    ids: Strided
    first_seen_at: datetime


def read_watermark(conn: Connection) -> Watermark:
    row = conn.execute(select(metering_state).where(metering_state.c.id == 1)).one()
    return Watermark(
        version=int(row.version),
        last_event_id=int(row.last_event_id),
        billed_until=None if row.billed_until is None else to_ms(row.billed_until),
        max_measure_period_ms=int(row.max_measure_period_ms),
        last_run_id=row.last_run_id,
    )


def advance_watermark(
    conn: Connection,
    seen: Watermark,
    *,
    last_event_id: int,
    billed_until: int | None,
    max_measure_period_ms: int,
    run_id: str,
    at: datetime,
) -> None:
    """The commit fence: succeeds only if nobody moved the state since `seen` was read."""
    result = conn.execute(
        update(metering_state)
        .where(metering_state.c.id == 1, metering_state.c.version == seen.version)
        .values(
            version=seen.version + 1,
            last_event_id=last_event_id,
            billed_until=None if billed_until is None else from_ms(billed_until),
            max_measure_period_ms=max_measure_period_ms,
            last_run_id=run_id,
            updated_at=at,
        )
    )
    if result.rowcount != 1:
        raise ConcurrentRun("another run committed first (watermark moved); nothing written")


def widen_measure_period(conn: Connection, ms: int) -> None:
    """Raise the stored longest measure period to `ms`: after the fence, in its
    transaction, for measures read after it."""
    state = metering_state.c
    conn.execute(
        update(metering_state)
        .where(state.id == 1, state.max_measure_period_ms < ms)
        .values(max_measure_period_ms=ms)
    )


def read_gaps(conn: Connection) -> list[Gap]:
    rows = conn.execute(select(event_gaps).order_by(event_gaps.c.id_from))
    return [
        Gap(
            strided(int(r.id_from), int(r.id_to), int(r.step), int(r.width)),
            r.first_seen_at,
        )
        for r in rows
    ]


def replace_gaps(conn: Connection, gaps: Sequence[Gap]) -> None:
    conn.execute(delete(event_gaps))
    if gaps:
        conn.execute(
            insert(event_gaps),
            [
                {
                    "id_from": g.ids.id_from,
                    "id_to": g.ids.id_to,
                    "step": g.ids.step,
                    "width": g.ids.width,
                    "first_seen_at": g.first_seen_at,
                }
                for g in sorted(gaps, key=lambda g: g.ids.id_from)
            ],
        )


def _state_columns() -> list[Any]:
    """resource_state's columns in the order _stored unpacks (and save_resources writes)."""
    return [resource_state.c[name] for name in _STATE_COLUMNS]


def _stored(r: Row[Any]) -> StoredResource:
    # Unpacked, not read by name: a busy hour reads ~10k of these, and a Row's
    # attributes cost more than the rest of building each.
    account, entity, resource_id, running, offering, since, destroyed, *times = r
    pending_from, last_event_at, last_seen_at = (None if t is None else to_ms(t) for t in times)
    return StoredResource(
        key=(account, entity, resource_id),
        state=ResourceState(
            running=bool(running),
            offering=offering,
            since=None if since is None else to_ms(since),
            destroyed=bool(destroyed),
        ),
        pending_from=pending_from,
        last_event_at=last_event_at,
        last_seen_at=last_seen_at,
    )


def running_resources(conn: Connection) -> list[StoredResource]:
    rows = conn.execute(select(*_state_columns()).where(resource_state.c.running.is_(True)))
    return [_stored(r) for r in rows]


def pending_resources(conn: Connection, before: int) -> list[ResourceKey]:
    """Resources with a known event at or after billed_until that is now before `before`."""
    rows = conn.execute(
        select(
            resource_state.c.account, resource_state.c.entity, resource_state.c.resource_id
        ).where(resource_state.c.pending_from < from_ms(before))
    )
    return [(r[0], r[1], r[2]) for r in rows]


def resources(conn: Connection, keys: Sequence[ResourceKey]) -> dict[ResourceKey, StoredResource]:
    if len(keys) > MANY:
        with key_table(conn, keys) as wanted:
            query = select(*_state_columns()).select_from(
                resource_state.join(wanted, same_key(resource_state, wanted))
            )
            return {(s := _stored(row)).key: s for row in conn.execute(query)}
    found: dict[ResourceKey, StoredResource] = {}
    for start in range(0, len(keys), MANY):
        batch = keys[start : start + MANY]
        for row in conn.execute(select(*_state_columns()).where(key_match(batch))):
            stored = _stored(row)
            found[stored.key] = stored
    return found


def resources_active_since(conn: Connection, since: int) -> list[ResourceKey]:
    """Resources that may have run at or after `since`: running now, or with a later event."""
    rows = conn.execute(
        select(
            resource_state.c.account, resource_state.c.entity, resource_state.c.resource_id
        ).where(
            or_(
                resource_state.c.running.is_(True),
                resource_state.c.last_event_at >= from_ms(since),
                resource_state.c.pending_from.is_not(None),
            )
        )
    )
    return [(r[0], r[1], r[2]) for r in rows]


def resources_never_read(conn: Connection) -> list[ResourceKey]:
    """Resources with events in usage_events but no stored state: their events were
    never read by a scheduled run. Scans resource events; for backfills only."""
    ev = usage_events.c
    known = and_(
        resource_state.c.account == ev.account,
        resource_state.c.entity == ev.entity,
        resource_state.c.resource_id == ev.resource_id,
    )
    rows = conn.execute(
        select(ev.account, ev.entity, ev.resource_id)
        .distinct()
        .where(ev.kind == "resource", ~exists().where(known))
    )
    return [(r[0], r[1], r[2]) for r in rows]


def save_resources(conn: Connection, stored: Iterable[StoredResource]) -> None:
    # In place: deleting the stored rows first took a table of their keys, a join and
    # twice the writes (a busy hour saves 9k).
    insert_rows(
        conn,
        resource_state,
        _STATE_COLUMNS,
        (
            (
                s.key[0],
                s.key[1],
                s.key[2],
                s.state.running,
                s.state.offering,
                None if s.state.since is None else from_ms(s.state.since),
                s.state.destroyed,
                None if s.pending_from is None else from_ms(s.pending_from),
                None if s.last_event_at is None else from_ms(s.last_event_at),
                None if s.last_seen_at is None else from_ms(s.last_seen_at),
            )
            for s in stored
        ),
        replace=True,
    )


_STATE_COLUMNS = (
    "account",
    "entity",
    "resource_id",
    "running",
    "offering",
    "since",
    "destroyed",
    "pending_from",
    "last_event_at",
    "last_seen_at",
)
