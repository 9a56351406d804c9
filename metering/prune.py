"""`metering prune`: delete, in bounded batches, the events no later run can need, after
writing them to an archive that `metering ingest` reads back.

The decision is metering/core/retention.py; this shell takes the run's locks, reads
the events dated before the horizon in the order of the resource index (a page at a
time, so memory follows a page and one resource's history), and per batch: appends
the batch to the archive as one gzip member, flushed and fsynced, then deletes it and
records the horizon in one transaction. An interrupted prune loses nothing: a batch
whose delete did not commit is still in the table (and perhaps in the archive too,
which ingest then counts as duplicates).
"""

from __future__ import annotations

import gzip
import json
import os
import time
import zlib
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from metering import logs
from metering.core import gaps as gaps_core
from metering.core import retention
from metering.core.events import Measure, ResourceEvent, validate
from metering.db import write_lock
from metering.errors import ConcurrentRun, MeteringError, UsageError
from metering.ingest import LineError, parse_line
from metering.lock import contention_errors, run_lock
from metering.store import events as store_events
from metering.store import retention as store_retention
from metering.store import state as store_state
from metering.store.events import OlderRow
from metering.store.state import Gap, Watermark
from metering.timeutil import from_ms, iso, to_ms

log = logs.get_logger("metering.prune")

BATCH = 10_000
_TEXT = ("event_id", "kind", "entity", "action", "account", "resource_id", "offering", "unit")
_TIMES = ("occurred_at", "period_start", "period_end")


@dataclass(frozen=True)
class PruneRequest:
    before: datetime
    now: datetime
    grace: timedelta = timedelta(minutes=30)
    settle_lag: timedelta = timedelta(minutes=10)
    archive: Path | None = None
    dry_run: bool = False
    batch_size: int = BATCH


@dataclass
class PruneOutcome:
    horizon: datetime
    dry_run: bool
    archive: Path | None
    resource_events: int = 0  # deleted (or, dry run, that would be)
    measures: int = 0
    kept: int = 0  # rows read dated before the horizon that stay
    batches: list[int] = field(default_factory=list)  # rows per batch

    @property
    def deleted(self) -> int:
        return self.resource_events + self.measures


class ArchiveDamaged(MeteringError):
    pass


class Archive:
    """Gzip JSON lines, one gzip member per batch (a multi-member file is one stream to
    gzip, zcat and `metering ingest`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def check(self) -> None:
        """An existing archive is appended to only if it reads to its end: a member cut
        short by a crash would hide every member written after it."""
        if not self.path.exists():
            return
        try:
            with gzip.open(self.path, "rb") as reader:
                while reader.read(1 << 20):
                    pass
        except (OSError, EOFError, zlib.error) as exc:
            raise ArchiveDamaged(
                f"the archive {self.path} does not read to its end ({exc}): an interrupted "
                "prune? Move it aside (zcat reads its complete members) and prune again"
            ) from exc

    def append(self, lines: Sequence[bytes]) -> None:
        created = not self.path.exists()
        with self.path.open("ab") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as member:
                for line in lines:
                    member.write(line)
            raw.flush()
            os.fsync(raw.fileno())
        if created:
            # The new name must outlive a crash as much as the bytes do.
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)


def archive_line(row: OlderRow) -> bytes | None:
    """The row as one line `metering ingest` stores as the same event, or None when
    it would not come back the same (a value SQLite holds that ingest refuses)."""
    raw = row.raw
    if raw.unreadable:
        return None
    attributes = row.attributes
    if isinstance(attributes, bytes | str):
        try:
            attributes = json.loads(attributes)
        except ValueError:
            return None
    if attributes is not None and not isinstance(attributes, dict):
        return None
    data: dict[str, Any] = {name: getattr(raw, name) for name in _TEXT}
    for name in _TIMES:
        ms = getattr(raw, name)
        data[name] = None if ms is None else iso(from_ms(ms))
    data["quantity"] = raw.quantity
    data["attributes"] = attributes
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    try:
        back = parse_line(text)
    except LineError:
        return None
    same = all(back[name] == data[name] for name in (*_TEXT, "quantity", "attributes"))
    for name in _TIMES:
        value = back[name]
        ms = to_ms(value) if isinstance(value, datetime) else None
        same = same and getattr(raw, name) == ms
    return (text + "\n").encode("utf-8") if same else None


def prune(
    engine: Engine,
    request: PruneRequest,
    *,
    lock_file: Path,
    wait: float = 0.0,
    use_database_lock: bool = True,
    pause: Callable[[str], None] = lambda _where: None,
) -> PruneOutcome:
    """Delete (or, dry run, count) the events before the horizon that may go.

    `pause` is a test hook called before each batch commits."""
    before = retention.horizon(to_ms(request.before))
    outcome = PruneOutcome(
        horizon=from_ms(before),
        dry_run=request.dry_run,
        archive=request.archive,
    )
    started = time.monotonic()
    archive = None if request.archive is None or request.dry_run else Archive(request.archive)
    if archive is not None:
        archive.check()
    locked = (
        nullcontext()
        if request.dry_run
        else run_lock(engine, lock_file, wait=wait, use_database_lock=use_database_lock)
    )
    with locked, engine.connect() as plain, contention_errors("prune"):
        conn = plain if request.dry_run else write_lock(plain)
        with conn.begin():
            mark = store_state.read_watermark(conn)
            gaps = store_state.read_gaps(conn)
            newest = store_events.max_id(conn)
        _refuse_unsafe(request, before, mark)
        job = _Job(conn, request, before, mark, gaps, newest, archive, outcome, pause)
        job.work()
    log.info(
        "prune_dry_run_summary" if request.dry_run else "prune_summary",
        horizon=iso(outcome.horizon),
        deleted=outcome.deleted,
        resource_events=outcome.resource_events,
        measures=outcome.measures,
        kept_before_horizon=outcome.kept,
        batches=len(outcome.batches),
        largest_batch=max(outcome.batches, default=0),
        archive=None if request.archive is None else str(request.archive),
        duration_ms=int((time.monotonic() - started) * 1000),
    )
    return outcome


def _refuse_unsafe(request: PruneRequest, before: int, mark: Watermark) -> None:
    safe = retention.latest_safe(
        mark.billed_until,
        to_ms(request.now),
        int(request.grace.total_seconds() * 1000),
        int(request.settle_lag.total_seconds() * 1000),
    )
    if safe is None:
        raise UsageError("nothing is billed yet: no event can be pruned before a run bills it")
    if before > safe:
        raise UsageError(
            f"--before {iso(request.before)} is too late: the latest safe horizon is "
            f"{iso(from_ms(safe))} (every hour before it billed -- billed until "
            f"{iso(from_ms(mark.billed_until or safe))} -- and ended more than grace "
            f"{request.grace} + settle lag {request.settle_lag} before now {iso(request.now)})"
        )


class _Job:
    def __init__(
        self,
        conn: Connection,
        request: PruneRequest,
        before: int,
        mark: Watermark,
        gaps: Sequence[Gap],
        newest: int,
        archive: Archive | None,
        outcome: PruneOutcome,
        pause: Callable[[str], None],
    ) -> None:
        self.conn = conn
        self.request = request
        self.before = before
        self.mark = mark
        # Strided rows (rule 12): membership by id_from, step and width, not the span.
        self.unread = gaps_core.Index([g.ids for g in gaps])
        self.newest = newest
        self.archive = archive
        self.outcome = outcome
        self.pause = pause
        self.batch: list[tuple[int, bytes, bool]] = []  # (id, archive line, is a measure)

    def may_go(self, row_id: int) -> bool:
        """Read by a scheduled run (at or below the watermark, in no id gap) and not
        the newest row: MySQL before 8 and MariaDB before 10.2.4 restart AUTO_INCREMENT
        at the highest id + 1, and a reused id would hide below the watermark."""
        if row_id > self.mark.last_event_id or row_id >= self.newest:
            return False
        return row_id not in self.unread

    def work(self) -> None:
        horizon = from_ms(self.before)
        position: tuple[Any, ...] | None = None
        group: list[tuple[OlderRow, ResourceEvent]] = []
        group_key: tuple[Any, ...] | None = None
        while True:
            with self.conn.begin():
                page = store_events.older_page(
                    self.conn, horizon, position, self.request.batch_size
                )
            for row in page:
                raw = row.raw
                key = (raw.account, raw.entity, raw.resource_id)
                if key != group_key:
                    self.resource(group)
                    group, group_key = [], key
                checked = validate(raw)
                if isinstance(checked, ResourceEvent):
                    if checked.occurred_at < self.before:
                        group.append((row, checked))
                elif isinstance(checked, Measure):
                    self.measure(row, checked)
                elif raw.occurred_at is None or raw.occurred_at < self.before:
                    self.outcome.kept += 1
            if len(page) < self.request.batch_size:
                break
            position = page[-1].position
        self.resource(group)
        self.flush()

    def line(self, row: OlderRow) -> bytes | None:
        """The row's archive line; without an archive, nothing to make (a dry run makes
        them too, so that it counts the rows a real prune would keep)."""
        return b"" if self.request.archive is None else archive_line(row)

    def measure(self, row: OlderRow, measure: Measure) -> None:
        line = None
        if retention.measure_may_go(measure, self.before) and self.may_go(measure.id):
            line = self.line(row)
        if line is None:
            if measure.period_start < self.before:
                self.outcome.kept += 1
            return
        self.add([(measure.id, line, True)])

    def resource(self, group: Sequence[tuple[OlderRow, ResourceEvent]]) -> None:
        """One resource's events before the horizon: its oldest ones go together, in
        one batch, or none of them does (a part of them is no valid cut)."""
        if not group:
            return
        ids: set[int] = set()
        # Text keys only: a key SQLite holds as a BLOB sorts apart from the same text,
        # and the history reader (a text match) never sees its rows; they stay as is.
        plain = all(isinstance(part, str) for row, _ in group for part in row.position[:3])
        if plain and all(self.may_go(event.id) for _, event in group):
            ids = set(retention.resource_may_lose([event for _, event in group], self.before))
        unit: list[tuple[int, bytes, bool]] = []
        for row, event in group:
            if event.id in ids:
                line = self.line(row)
                if line is None:
                    unit = []
                    break
                unit.append((event.id, line, False))
        self.outcome.kept += len(group) - len(unit)
        self.add(unit)

    def add(self, unit: list[tuple[int, bytes, bool]]) -> None:
        if not unit:
            return
        if self.batch and len(self.batch) + len(unit) > self.request.batch_size:
            self.flush()
        self.batch.extend(unit)
        if len(self.batch) >= self.request.batch_size:
            self.flush()

    def flush(self) -> None:
        batch, self.batch = self.batch, []
        if not batch:
            return
        if not self.request.dry_run:
            self.commit(batch)
        self.outcome.batches.append(len(batch))
        measures = sum(1 for _, _, is_measure in batch if is_measure)
        self.outcome.measures += measures
        self.outcome.resource_events += len(batch) - measures

    def commit(self, batch: list[tuple[int, bytes, bool]]) -> None:
        with self.conn.begin():
            if store_state.read_watermark(self.conn).version != self.mark.version:
                raise ConcurrentRun("a run committed while pruning (watermark moved): stopped")
            if self.archive is not None:
                self.archive.append([line for _, line, _ in batch])
            deleted = store_retention.delete_events(self.conn, [i for i, _, _ in batch])
            # With the first batch: a backfill must not reach behind a partial prune.
            store_retention.record_horizon(self.conn, self.before)
            self.pause("commit")
        log.info("prune_batch", deleted=deleted, horizon=iso(from_ms(self.before)))
