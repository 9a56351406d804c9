"""Resource histories as the core bills them: each resource's valid events, read
through the (account, entity, resource_id, occurred_at) index. The one reader of
histories for the run and for reconcile."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Connection

from metering.core.events import ResourceEvent, ResourceKey, validate
from metering.store import events as store_events
from metering.timeutil import from_ms


def read_histories(
    conn: Connection,
    keys: Sequence[ResourceKey],
    since: int | None = None,
    up_to_id: int | None = None,
) -> tuple[dict[ResourceKey, list[ResourceEvent]], dict[int, str]]:
    """Each resource's valid events (all, or from `since`; of ids up to `up_to_id`,
    if given), and event ids by row id."""
    histories: dict[ResourceKey, list[ResourceEvent]] = {}
    names: dict[int, str] = {}
    after = None if since is None else from_ms(since)
    for key, rows in store_events.resource_history(conn, keys, after, up_to_id).items():
        valid: list[ResourceEvent] = []
        for row in rows:
            checked = validate(row)
            # Re-checked here: SQLite compares times as text, and rows written by other
            # tools may not use metering's canonical text form.
            if isinstance(checked, ResourceEvent) and (
                since is None or checked.occurred_at >= since
            ):
                valid.append(checked)
                names[checked.id] = row.event_id
        histories[key] = valid
    return histories, names
