"""What `metering prune` writes: the deletion of a batch of events, and the pruned
horizon (metering_state.pruned_before) that backfills and reconciles respect."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from metering.store.schema import metering_state, usage_events
from metering.timeutil import from_ms, to_ms

DELETE_CHUNK = 1000


def horizon(conn: Connection) -> int | None:
    """The pruned horizon (ms): events dated before it may have been deleted."""
    value = conn.execute(
        select(metering_state.c.pruned_before).where(metering_state.c.id == 1)
    ).scalar()
    return None if value is None else to_ms(value)


def record_horizon(conn: Connection, before: int) -> None:
    """Move the horizon to `before`, never back: an earlier prune's deletions stay."""
    if (horizon(conn) or before) <= before:
        conn.execute(
            update(metering_state)
            .where(metering_state.c.id == 1)
            .values(pruned_before=from_ms(before))
        )


def delete_events(conn: Connection, ids: Sequence[int]) -> int:
    deleted = 0
    for start in range(0, len(ids), DELETE_CHUNK):
        chunk = ids[start : start + DELETE_CHUNK]
        deleted += conn.execute(delete(usage_events).where(usage_events.c.id.in_(chunk))).rowcount
    return deleted
