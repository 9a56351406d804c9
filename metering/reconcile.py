"""`metering reconcile`: converge the stored events with an inventory snapshot (rule 15).

Pure part: `parse_inventory` turns a snapshot file (JSON lines or CSV) into the
resources running at T, or raises InventoryError for the whole file (a snapshot
missing a line would stop a running resource). The decisions are
metering.core.reconcile's. Shell: `execute` takes the locks of `metering run`
(so the two never interleave), reads what the store knows of each resource,
inserts the synthetic events, updates last_seen_at and records the snapshot as
applied, all in one transaction. The next `metering run` bills the synthetic
events like any other; one at a time already billed becomes a correction.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from metering import logs
from metering.core.events import MAX_TEXT, ResourceKey
from metering.core.reconcile import (
    NEVER_OVERBILL,
    Known,
    Skipped,
    Snapshot,
    Synthetic,
    plan,
    snapshot_id_of,
)
from metering.db import write_lock
from metering.errors import MeteringError, UsageError
from metering.histories import read_histories
from metering.lock import contention_errors, run_lock
from metering.render import printable
from metering.store import inventory as store
from metering.store import retention as store_retention
from metering.store import state as store_state
from metering.timeutil import from_ms, iso, parse_time, to_ms

log = logs.get_logger("metering.reconcile")

FORMATS = ("auto", "jsonl", "csv")
# With --format auto, a file's extension decides; without one of these, its first character.
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
FILE = "file"
TABLE = "table"
REQUIRED = ("account", "entity", "resource_id")


class InventoryError(MeteringError):
    """A snapshot that cannot be applied as a whole (exit 1)."""


@dataclass(frozen=True)
class Inventory:
    """A parsed snapshot file: resources running, and T if the file carries it."""

    running: dict[ResourceKey, str | None]
    taken_at: int | None
    empty: bool = False  # nothing in the file at all, not even a CSV header


@dataclass(frozen=True)
class ReconcileRequest:
    inventory: Inventory | None = None  # None: take the snapshot from inventory_snapshots
    at: datetime | None = None  # T of a file snapshot (else the file's taken_at)
    snapshot_id: str | None = None  # table: which snapshot (None: the latest)
    policy: str = NEVER_OVERBILL
    entities: tuple[str, ...] | None = None
    dry_run: bool = False
    allow_empty: bool = False


@dataclass
class ReconcileOutcome:
    source: str
    snapshot_id: str | None = None
    taken_at: int | None = None
    listed: int = 0
    events: tuple[Synthetic, ...] = ()
    inserted: int = 0
    skipped: tuple[Skipped, ...] = ()
    already_applied: bool = False
    dry_run: bool = False
    policy: str = NEVER_OVERBILL
    messages: list[str] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for e in self.events if e.action == action)


# -- parsing (pure) ------------------------------------------------------------------


def _text(where: str, column: str, value: object, *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise InventoryError(f"{where}: missing {column}")
        return None
    if not isinstance(value, str):
        raise InventoryError(f"{where}: {column} must be a string")
    if len(value) > MAX_TEXT[column]:
        raise InventoryError(f"{where}: {column} longer than {MAX_TEXT[column]} characters")
    return value


def _taken_at(where: str, value: object) -> int | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InventoryError(f"{where}: taken_at must be an ISO 8601 string")
    try:
        return to_ms(parse_time(value))
    except (ValueError, OverflowError):
        raise InventoryError(f"{where}: taken_at is not an ISO 8601 time") from None


def _format(text: str, fmt: str, name: str | None) -> str:
    if fmt != "auto":
        return fmt
    suffix = "" if name is None else Path(name).suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def _records(text: str, fmt: str) -> Iterator[tuple[str, dict[str, object]]]:
    if fmt == "jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InventoryError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(data, dict):
                raise InventoryError(f"{where}: not a JSON object")
            yield where, data
        return
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise InventoryError("CSV header lacks " + ", ".join(missing))
    for row in reader:
        yield f"line {reader.line_num}", dict(row)


def parse_inventory(data: bytes, fmt: str = "auto", name: str | None = None) -> Inventory:
    """The resources a snapshot file lists as running (account, entity, resource_id,
    optional offering and taken_at); any bad line rejects the whole file. `name`, the
    file's, lets its extension decide the format when `fmt` is auto."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryError(f"not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        return Inventory(running={}, taken_at=None, empty=True)
    running: dict[ResourceKey, str | None] = {}
    times: set[int] = set()
    for where, record in _records(text, _format(text, fmt, name)):
        account, entity, resource_id = (
            _text(where, column, record.get(column), required=True) for column in REQUIRED
        )
        assert account is not None and entity is not None and resource_id is not None
        key = (account, entity, resource_id)
        offering = _text(where, "offering", record.get("offering"), required=False)
        if key in running and running[key] != offering:
            raise InventoryError(f"{where}: {key} listed twice with different offerings")
        running[key] = offering
        when = _taken_at(where, record.get("taken_at"))
        if when is not None:
            times.add(when)
    if len(times) > 1:
        raise InventoryError("lines disagree on taken_at: one snapshot has one time")
    return Inventory(running=running, taken_at=times.pop() if times else None)


# -- the shell -----------------------------------------------------------------------


def utc_now() -> datetime:
    return datetime.now(UTC)


def execute(
    engine: Engine,
    request: ReconcileRequest,
    *,
    lock_file: Path,
    wait: float = 0.0,
    use_database_lock: bool = True,
    wall_clock: Callable[[], datetime] = utc_now,
) -> ReconcileOutcome:
    """Apply (or, dry run, compute) one snapshot. A dry run takes no lock and writes nothing."""
    file_snapshot = _file_snapshot(request) if request.inventory is not None else None
    if request.dry_run:
        with engine.connect() as conn, conn.begin():
            return _work(conn, request, file_snapshot, wall_clock)
    with (
        run_lock(engine, lock_file, wait=wait, use_database_lock=use_database_lock),
        engine.connect() as conn,
        contention_errors("reconcile"),
    ):
        locked = write_lock(conn)
        with locked.begin():
            return _work(locked, request, file_snapshot, wall_clock)


def _file_snapshot(request: ReconcileRequest) -> Snapshot:
    inventory = request.inventory
    assert inventory is not None
    at = None if request.at is None else to_ms(request.at)
    if at is not None and inventory.taken_at is not None and at != inventory.taken_at:
        raise UsageError(
            f"--at {iso(request.at)} contradicts the file's taken_at "
            f"{iso(from_ms(inventory.taken_at))}"
        )
    taken_at = at if at is not None else inventory.taken_at
    if taken_at is None:
        raise UsageError("the snapshot's time is unknown: give --at T (or taken_at in the file)")
    if not inventory.running and not request.allow_empty:
        what = (
            "the inventory file is empty: it lists no running resource"
            if inventory.empty
            else "the snapshot lists no running resource"
        )
        raise UsageError(
            f"{what}, which would stop every running resource; pass --allow-empty if "
            "that is really the inventory"
        )
    return Snapshot(snapshot_id_of(inventory.running, taken_at), taken_at, inventory.running)


def _table_snapshot(
    conn: Connection, request: ReconcileRequest, outcome: ReconcileOutcome
) -> Snapshot | None:
    snapshot_id = request.snapshot_id or store.latest_snapshot_id(conn)
    if snapshot_id is None:
        outcome.messages.append("inventory_snapshots holds no snapshot")
        return None
    outcome.snapshot_id = snapshot_id
    if request.snapshot_id is None and store.is_applied(conn, snapshot_id):
        # Only the newest snapshot matters: an older one never applied is superseded,
        # and applying it after a newer one would move the state backwards.
        outcome.already_applied = True
        outcome.messages.append(f"latest snapshot {snapshot_id} already applied")
        return None
    rows = store.snapshot_rows(conn, snapshot_id)
    if not rows:
        raise UsageError(f"inventory_snapshots has no snapshot {snapshot_id!r}")
    times = {row.taken_at for row in rows}
    if len(times) > 1:
        raise InventoryError(f"snapshot {snapshot_id!r}: rows disagree on taken_at")
    return Snapshot(snapshot_id, times.pop(), {row.key: row.offering or None for row in rows})


def _work(
    conn: Connection,
    request: ReconcileRequest,
    file_snapshot: Snapshot | None,
    wall_clock: Callable[[], datetime],
) -> ReconcileOutcome:
    outcome = ReconcileOutcome(
        source=FILE if file_snapshot is not None else TABLE,
        dry_run=request.dry_run,
        policy=request.policy,
    )
    snapshot = file_snapshot or _table_snapshot(conn, request, outcome)
    if snapshot is None:
        return outcome
    outcome.snapshot_id = snapshot.snapshot_id
    pruned = store_retention.horizon(conn)
    if pruned is not None and snapshot.taken_at < pruned:
        raise UsageError(
            f"the snapshot was taken at {iso(from_ms(snapshot.taken_at))}, before the pruned "
            f"horizon {iso(from_ms(pruned))}: the histories it would be compared with are "
            "no longer whole there"
        )
    outcome.taken_at = snapshot.taken_at
    outcome.listed = len(snapshot.running)
    mark = store_state.read_watermark(conn)
    keys = store.maybe_running(
        conn, snapshot.taken_at, mark.last_event_id, store_state.read_gaps(conn)
    )
    keys.update(snapshot.running)
    if request.entities is not None:
        keys = {key for key in keys if key[1] in request.entities}
    ordered = sorted(keys)
    histories, _ = read_histories(conn, ordered)
    seen = store.last_seen(conn, ordered)
    known = {key: Known(tuple(histories[key]), seen.get(key)) for key in ordered}
    decided = plan(snapshot, known, policy=request.policy, entities=request.entities)
    outcome.events = decided.events
    outcome.skipped = decided.skipped
    if request.dry_run:
        return outcome
    wall = wall_clock()
    outcome.inserted = store.insert_events(
        conn, [_row(snapshot, request, e) for e in decided.events]
    )
    store.mark_seen(conn, decided.seen, snapshot.taken_at, seen)
    store.record_applied(
        conn,
        store.Applied(
            snapshot_id=snapshot.snapshot_id,
            source=outcome.source,
            taken_at=from_ms(snapshot.taken_at),
            policy=request.policy,
            applied_at=wall,
            listed=outcome.listed,
            starts=outcome.count("start"),
            stops=outcome.count("stop"),
            updates=outcome.count("update"),
            skipped=len(decided.skipped),
            host=socket.gethostname(),
        ),
    )
    log.info(
        "reconcile_finished",
        snapshot_id=snapshot.snapshot_id,
        source=outcome.source,
        taken_at=iso(from_ms(snapshot.taken_at)),
        policy=request.policy,
        listed=outcome.listed,
        starts=outcome.count("start"),
        stops=outcome.count("stop"),
        updates=outcome.count("update"),
        inserted=outcome.inserted,
        skipped=len(decided.skipped),
    )
    return outcome


def _row(snapshot: Snapshot, request: ReconcileRequest, e: Synthetic) -> dict[str, object]:
    account, entity, resource_id = e.key
    return {
        "event_id": e.event_id,
        "kind": "resource",
        "entity": entity,
        "action": e.action,
        "account": account,
        "resource_id": resource_id,
        "offering": e.offering,
        "occurred_at": from_ms(e.occurred_at),
        "quantity": None,
        "unit": None,
        "period_start": None,
        "period_end": None,
        "attributes": {
            "source": "reconcile",
            "snapshot_id": snapshot.snapshot_id,
            "snapshot_at": iso(from_ms(snapshot.taken_at)),
            "rule": e.rule,
            "policy": request.policy,
        },
    }


# -- output --------------------------------------------------------------------------

COLUMNS = ("action", "account", "entity", "resource_id", "offering", "occurred_at", "rule")


def _event_dict(e: Synthetic) -> dict[str, str]:
    return {
        "action": e.action,
        "account": e.key[0],
        "entity": e.key[1],
        "resource_id": e.key[2],
        "offering": e.offering or "",
        "occurred_at": iso(from_ms(e.occurred_at)) or "",
        "rule": e.rule,
        "event_id": e.event_id,
    }


def render(outcome: ReconcileOutcome, fmt: str) -> str:
    if fmt == "json":
        return (
            json.dumps(
                {
                    "snapshot_id": outcome.snapshot_id,
                    "source": outcome.source,
                    "taken_at": None
                    if outcome.taken_at is None
                    else iso(from_ms(outcome.taken_at)),
                    "policy": outcome.policy,
                    "dry_run": outcome.dry_run,
                    "already_applied": outcome.already_applied,
                    "listed": outcome.listed,
                    "inserted": outcome.inserted,
                    "events": [_event_dict(e) for e in outcome.events],
                    "skipped": [
                        {
                            "account": s.key[0],
                            "entity": s.key[1],
                            "resource_id": s.key[2],
                            "reason": s.reason,
                        }
                        for s in outcome.skipped
                    ],
                    "messages": outcome.messages,
                },
                ensure_ascii=False,
            )
            + "\n"
        )
    out = [printable(message) for message in outcome.messages]
    if outcome.taken_at is not None:
        out.append(
            f"snapshot {printable(outcome.snapshot_id or '')} ({outcome.source}) at "
            f"{iso(from_ms(outcome.taken_at))}: {outcome.listed} running, "
            f"policy {outcome.policy}"
        )
        if outcome.events:
            rows = [{c: printable(v) for c, v in _event_dict(e).items()} for e in outcome.events]
            widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS}
            out.append("  ".join(c.ljust(widths[c]) for c in COLUMNS).rstrip())
            out.append("  ".join("-" * widths[c] for c in COLUMNS))
            out += ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS).rstrip() for r in rows]
        out += [f"skipped {printable('/'.join(s.key))}: {s.reason}" for s in outcome.skipped]
        counts = (
            f"{outcome.count('start')} start, {outcome.count('stop')} stop, "
            f"{outcome.count('update')} update"
        )
        if outcome.dry_run:
            out.append(f"dry run: would insert {len(outcome.events)} events ({counts})")
        elif outcome.inserted < len(outcome.events):
            out.append(
                f"inserted {outcome.inserted} of {len(outcome.events)} events ({counts}): "
                f"{len(outcome.events) - outcome.inserted} already stored under the same id "
                "by an earlier application of this snapshot"
            )
        elif outcome.events:
            out.append(f"inserted {outcome.inserted} events ({counts})")
        else:
            out.append("nothing to change: the stored state agrees with the snapshot")
    return "\n".join(out) + "\n"
