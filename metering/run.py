"""`metering run`, end to end: lock, clock, transactions around the pure core.

A run bills every closed hour after the stored watermark (billed_until), oldest
first, in chunks of hours; each chunk is one transaction with its own run id
(deterministic: the window it bills and the state version it starts from). A
dry run takes no lock and executes the very same chunks in one transaction that
it rolls back.
"""

from __future__ import annotations

import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from metering import logs
from metering.core import billing, resources
from metering.core import gaps as gaps_core
from metering.core.events import (
    HOUR,
    Measure,
    RawEvent,
    Rejection,
    ResourceEvent,
    ResourceKey,
    validate,
)
from metering.core.gaps import Strided
from metering.core.resources import StoredResource
from metering.core.slicing import hour_of, split_measure
from metering.core.spans import replay
from metering.db import describe_db_error, is_mysql, write_lock
from metering.errors import UsageError, WatermarkLost
from metering.histories import read_histories
from metering.lock import contention_errors, run_lock
from metering.scratch import sqlite_copy
from metering.store import events as store_events
from metering.store import measure_lines as store_lines
from metering.store import retention as store_retention
from metering.store import runs as store_runs
from metering.store import state as store_state
from metering.store import usage as store_usage
from metering.store.events import Digest
from metering.store.runs import ANOMALY, REJECTED, Finding, RunRecord
from metering.store.side_scan import SideScan
from metering.store.state import Gap, Watermark
from metering.store.usage import Line
from metering.timeutil import from_ms, iso, to_ms

log = logs.get_logger("metering.run")

# Lines one chunk (one transaction) may write: bounds a catch-up's memory.
LINE_BUDGET = 50_000
# Event ids one chunk reads, to start with: a backlog is read in windows of ids, so
# memory follows a window, not the backlog. Each window is then sized so that it
# holds about PART_BUDGET measure parts (what memory grows with: a part per key and
# hour, ~350 bytes each), within ID_WINDOW_LIMITS; an hourly run reads one window.
ID_WINDOW = 150_000
PART_BUDGET = 150_000
ID_WINDOW_LIMITS = (20_000, 10_000_000)
# A backlog of at most this many hours (the hourly run, a short delay) is read in one
# window: its parts are bounded by its resources times two hours whatever its events,
# and a window ending inside the hour would park that hour's parts in pending_usage
# only to take them back (1.5 s of a 1M-event busy hour, profiled).
SHORT_BACKLOG = 2 * HOUR
SCHEDULED = "scheduled"
BACKFILL = "backfill"


@dataclass(frozen=True)
class RunRequest:
    now: datetime
    grace: timedelta = timedelta(minutes=30)
    settle_lag: timedelta = timedelta(minutes=10)
    since: datetime | None = None
    until: datetime | None = None
    dry_run: bool = False


@dataclass
class ChunkResult:
    run_id: str
    kind: str
    hours_from: int | None
    hours_to: int | None
    first_event_id: int | None
    last_event_id: int | None
    events_read: int = 0
    lines_written: int = 0
    corrections: int = 0
    rejected: int = 0
    anomalies: int = 0
    duration_ms: int = 0
    more: bool = False  # event ids past this chunk's window are still to be read


@dataclass
class RunOutcome:
    runs: list[ChunkResult] = field(default_factory=list)
    clock_stepped_back: bool = False
    lines: list[Line] = field(default_factory=list)  # dry run: what would be written

    @property
    def nothing_to_do(self) -> bool:
        return not self.runs


def utc_now() -> datetime:
    return datetime.now(UTC)


def horizon_of(now: datetime, grace: timedelta) -> int:
    """Hours strictly before this instant are closed (rule 5)."""
    return hour_of(to_ms(now - grace))


def execute(
    engine: Engine,
    request: RunRequest,
    *,
    lock_file: Path,
    wait: float = 0.0,
    use_database_lock: bool = True,
    wall_clock: Callable[[], datetime] = utc_now,
    pause: Callable[[str], None] = lambda _where: None,
    progress: Callable[[int, int, int], None] | None = None,
) -> RunOutcome:
    """Run (or dry-run) the hourly job. `pause` is a test hook called between phases.

    `progress(hours done, hours total, events read)`, if given, is called after each
    chunk that billed a known span of hours (a first run's first chunk has none).
    """
    until = horizon_of(request.now, request.grace)
    if request.until is not None:
        asked = hour_of(to_ms(request.until))
        if asked > until:
            raise UsageError(
                f"--until {iso(request.until)} is not closed yet: hours up to "
                f"{iso(from_ms(until))} are (now {iso(request.now)}, grace {request.grace})"
            )
        until = asked
    since = None if request.since is None else hour_of(to_ms(request.since))
    if since is not None and since >= until:
        raise UsageError(f"--since {iso(request.since)} must be before {iso(from_ms(until))}")
    if since is not None:
        with engine.connect() as conn:
            pruned = store_retention.horizon(conn)
        if pruned is not None and since < pruned:
            raise UsageError(
                f"--since {iso(request.since)} is before the pruned horizon "
                f"{iso(from_ms(pruned))}: metering prune deleted events before it, so those "
                "hours cannot be re-derived here (ingest the archives into another database)"
            )
    job = _Job(request, until, since, wall_clock, pause, progress)
    started = time.monotonic()
    if request.dry_run:
        with (
            sqlite_copy(engine)
            if engine.dialect.name == "sqlite"
            else nullcontext(engine) as target
        ):
            _dry_run(job, target)
    else:
        with (
            run_lock(engine, lock_file, wait=wait, use_database_lock=use_database_lock),
            engine.connect() as conn,
            contention_errors("run"),
        ):
            job.work(write_lock(conn), commit=True)
    _summarize(job.outcome, request.dry_run, time.monotonic() - started)
    return job.outcome


def _summarize(outcome: RunOutcome, dry_run: bool, seconds: float) -> None:
    """One line for the whole invocation: a catch-up logs a line per chunk before it."""
    runs = outcome.runs
    if not runs:
        return
    events = sum(r.events_read for r in runs)
    windows = [(r.hours_from, r.hours_to) for r in runs if r.hours_to is not None]
    starts = [h for h, _ in windows if h is not None]
    log.info(
        "dry_run_summary" if dry_run else "run_summary",
        run_ids=[runs[0].run_id, runs[-1].run_id] if len(runs) > 1 else [runs[0].run_id],
        chunks=len(runs),
        hours_from=iso(from_ms(min(starts))) if starts else None,
        hours_to=iso(from_ms(max(h for _, h in windows))) if windows else None,
        events_read=events,
        lines_written=sum(r.lines_written for r in runs),
        corrections=sum(r.corrections for r in runs),
        rejected=sum(r.rejected for r in runs),
        anomalies=sum(r.anomalies for r in runs),
        duration_ms=int(seconds * 1000),
        events_per_s=int(events / seconds) if seconds > 0 else None,
    )


def _dry_run(job: _Job, engine: Engine) -> None:
    """The run's own chunks in one transaction, rolled back."""
    with engine.connect() as conn, contention_errors("run"):
        outer = conn.begin()
        try:
            job.work(conn, commit=False)
            job.outcome.lines = store_usage.lines_of_runs(
                conn, [r.run_id for r in job.outcome.runs]
            )
        finally:
            outer.rollback()


class _Job:
    def __init__(
        self,
        request: RunRequest,
        until: int,
        since: int | None,
        wall_clock: Callable[[], datetime],
        pause: Callable[[str], None],
        progress: Callable[[int, int, int], None] | None = None,
    ) -> None:
        self.request = request
        self.until = until
        self.since = since
        self.wall_clock = wall_clock
        self.pause = pause
        self.progress = progress
        self.hours_done = 0
        self.id_window = ID_WINDOW
        self.host = socket.gethostname()
        self.outcome = RunOutcome()

    def work(self, conn: Connection, *, commit: bool) -> None:
        if self.since is not None:
            with conn.begin() if commit else nullcontext():
                self._record(self._backfill(conn, self.since))
        while True:
            with conn.begin() if commit else nullcontext():
                result = self._chunk(conn)
            if result is None:
                return
            self._record(result)
            if result.hours_to is not None and result.hours_to >= self.until and not result.more:
                return

    def _record(self, result: ChunkResult | None) -> None:
        if result is None:
            return
        self.outcome.runs.append(result)
        log.info(
            "run_finished" if not self.request.dry_run else "dry_run_finished",
            run_id=result.run_id,
            kind=result.kind,
            window_from=iso(from_ms(result.hours_from)) if result.hours_from is not None else None,
            window_to=iso(from_ms(result.hours_to)) if result.hours_to is not None else None,
            events_read=result.events_read,
            lines_written=result.lines_written,
            corrections=result.corrections,
            rejected=result.rejected,
            anomalies=result.anomalies,
            duration_ms=result.duration_ms,
        )
        self._report_progress(result)

    def _report_progress(self, result: ChunkResult) -> None:
        if self.progress is None or result.hours_from is None or result.hours_to is None:
            return
        # A backfill ends where scheduled billing resumes, so what is left is up to `until`.
        self.hours_done += (result.hours_to - result.hours_from) // HOUR
        total = self.hours_done + max(0, self.until - result.hours_to) // HOUR
        if total:
            self.progress(self.hours_done, total, sum(r.events_read for r in self.outcome.runs))

    # -- one scheduled chunk ------------------------------------------------------

    def _chunk(self, conn: Connection) -> ChunkResult | None:
        started = time.monotonic()
        wall = self.wall_clock()
        mark = store_state.read_watermark(conn)
        h0 = mark.billed_until
        if h0 is None and store_usage.any_lines(conn):
            # Measures are billed once, when read: re-reading every event as if nothing
            # had been billed would bill them again.
            raise WatermarkLost(
                "the watermark is empty but usage lines exist: restore metering_state "
                "(docs/operations.md, 'The watermark was lost') before running again"
            )
        if h0 is not None and self.until < h0:
            if self.request.until is not None:
                # --until before the watermark: hours the backfill re-derived, not a
                # clock that went back.
                return None
            self.outcome.clock_stepped_back = True
            log.warning(
                "clock_behind_watermark",
                now=iso(self.request.now),
                billed_until=iso(from_ms(h0)),
                message="the clock is earlier than the last run's window: nothing to do",
            )
            return None
        newest = store_events.max_id(conn)
        gaps = store_state.read_gaps(conn)
        if h0 == self.until and newest <= mark.last_event_id and not gaps:
            return None
        top = newest
        catching_up = h0 is None or self.until - h0 > SHORT_BACKLOG
        if catching_up:
            top = min(newest, mark.last_event_id + self.id_window)
        self.pause("read")
        reached = store_events.time_at_id(conn, top) if top < newest else None
        last_hour = None if reached is None else hour_of(reached)
        if last_hour is not None and (h0 is None or last_hour > h0):
            # The window stops before the hour its last event began: this chunk bills
            # up to that hour (below), and its rows of that hour would only wait in
            # pending_usage for the next chunk, which reads the rest of the hour.
            cut = store_events.last_before(conn, mark.last_event_id + 1, top, last_hour)
            top = cut if cut > mark.last_event_id else top
        # Catching up, the database sums a window's simple measures into lines itself,
        # up to the row before the newest (store/measure_lines.py says why not that
        # one). Its locking read costs more per row than the range scan's (4.4 s
        # against 2.5 s for a busy hour's 1M rows), which pays where each key's hour
        # holds a few rows, as in a backlog of hours; an hour of per-minute measures
        # holds ~60, and fetching those sums costs little (benchmarks/README.md). That
        # range scan runs on a second connection beside the rest (store/side_scan.py).
        server = newest - 1 if catching_up and store_lines.available(conn) else None
        beside = conn.engine if is_mysql(conn) and not catching_up else None
        batch = _Batch()
        try:
            # First: the side connection's snapshot then starts within moments of this
            # one's (a producer's commit in between makes the run scan on its own).
            _read_new(conn, batch, mark, top, gaps, wall, self.request.settle_lag, server, beside)
            running: list[StoredResource] = []
            if h0 is None:
                h1 = self.until
            else:
                running = store_state.running_resources(conn)
                h1 = billing.chunk_end(h0, self.until, len(running), LINE_BUDGET)
            if top < newest:
                # Ids beyond the window are still unread: bill only up to the hour the
                # window's last event (before the cut above) reached. Producers write
                # in about time order, so the rest belongs to later hours; an event
                # that does not is a late one, billed as a correction by the chunk
                # that reads it.
                h1 = billing.window_end(h0, h1, reached)
            if h0 == h1 and batch.read == 0:
                return None
            return self._bill(conn, batch, mark, running, (h0, h1), (top, newest), (started, wall))
        finally:
            if batch.side is not None:
                batch.side.scan.close()

    def _bill(
        self,
        conn: Connection,
        batch: _Batch,
        mark: Watermark,
        running: list[StoredResource],
        hours: tuple[int | None, int],
        ids: tuple[int, int],
        clock: tuple[float, datetime],
    ) -> ChunkResult:
        """Plan and write what a chunk read: hours [h0, h1), ids up to top (of newest),
        `clock` the chunk's start (monotonic) and its wall-clock time."""
        (h0, h1), (top, newest), (started, wall) = hours, ids, clock
        self.pause("compute")
        lines: list[Line] = []
        findings = list(batch.rejections)
        # Resources: re-derive the ones something happened to, continue the others.
        touched, saved = self._resources(conn, batch, (h0, h1), top, running, lines, findings)
        if h0 is not None:
            lines.extend(
                store_usage.running_line(key, offering, hour, ms)
                for key, offering, hour, ms in resources.continuing(running, touched, h0, h1)
            )

        self.pause("write")
        run_id = _scheduled_id(h0, h1, mark)
        # First: a concurrent run that got this far waits here, then finds it moved.
        store_state.advance_watermark(
            conn,
            mark,
            last_event_id=max(top, mark.last_event_id),
            billed_until=h1,
            max_measure_period_ms=max(mark.max_measure_period_ms, batch.max_period),
            run_id=run_id,
            at=wall,
        )
        store_state.replace_gaps(conn, batch.gaps)
        store_state.save_resources(conn, saved)
        written = store_usage.insert_lines(conn, run_id, lines)
        store_runs.insert_findings(conn, run_id, wall, findings)
        # Quantities: additive; each part is billed once, when its hour is closed. Last,
        # as the side connection's sums (if any) come in while the rest is written.
        closed = batch.parts
        if batch.side is not None:
            rest = _side_rest(conn, batch.side)
            assert not rest.resources, "resource events are read before the fence"
            billing.add_parts(closed, rest.parts)
            store_runs.insert_findings(conn, run_id, wall, rest.rejections)
            findings.extend(rest.rejections)
            if rest.max_period > max(mark.max_measure_period_ms, batch.max_period):
                store_state.widen_measure_period(conn, rest.max_period)
        groups = len(closed)
        billing.add_parts(closed, store_usage.take_pending(conn, h1))
        store_usage.add_pending(conn, billing.take_open(closed, h1))
        measures = _write_measures(conn, run_id, batch.summed_range, closed, h0, h1)
        written += measures.written
        # Lines for hours billed before this window: late events.
        corrections = measures.corrections
        if h0 is not None:
            corrections += sum(1 for line in lines if line.hour < h0)
        result = ChunkResult(
            run_id=run_id,
            kind=SCHEDULED,
            hours_from=h0,
            hours_to=h1,
            first_event_id=mark.last_event_id + 1 if top > mark.last_event_id else None,
            last_event_id=top if top > mark.last_event_id else None,
            events_read=batch.read,
            lines_written=written,
            corrections=corrections,
            rejected=sum(1 for f in findings if f.category == REJECTED),
            anomalies=sum(1 for f in findings if f.category == ANOMALY),
            duration_ms=int((time.monotonic() - started) * 1000),
            more=top < newest,
        )
        self.id_window = billing.next_window(
            self.id_window,
            top - mark.last_event_id,
            groups + measures.summed,
            PART_BUDGET,
            ID_WINDOW_LIMITS,
        )
        store_runs.insert_run(conn, self._run_record(result, wall))
        self.pause("commit")
        return result

    def _resources(
        self,
        conn: Connection,
        batch: _Batch,
        hours: tuple[int | None, int],
        top: int,
        running: Sequence[StoredResource],
        lines: list[Line],
        findings: list[Finding],
    ) -> tuple[frozenset[ResourceKey], list[StoredResource]]:
        """Gather, plan (metering/core/resources.py), and hand back what to write.
        Histories stop at the window's last id, like every other read of the chunk:
        what a chunk bills follows from the events up to its watermark, and a later
        window's events reach it as late ones (corrections), never before. `running`:
        the stored state of every running resource, read in this snapshot already."""
        h0, h1 = hours
        new = batch.resources
        pending = store_state.pending_resources(conn, h1) if h0 is not None else []
        keys, future_only = resources.touched(new, pending, h1)
        # Most resources a busy hour touches are running ones (5.8k of 9k).
        wanted = keys + future_only
        known = {r.key: r for r in running}
        stored = store_state.resources(conn, [k for k in wanted if k not in known])
        stored.update((k, known[k]) for k in wanted if k in known)
        saved = resources.future_records(future_only, new, stored)
        if not keys:
            return frozenset(), saved
        plan = resources.classify(keys, future_only, new, stored, h0)
        histories, names = read_histories(conn, plan.late, up_to_id=top)
        names.update(batch.names)
        if h0 is not None and plan.recent:
            # Most resources continued from their state know no event from h0 on but
            # those just read: the database is asked only for the others.
            histories.update(resources.known_since(plan.recent, new, stored))
            others = resources.unknown_since(plan.recent, stored)
            if others:
                recent_events, recent_names = read_histories(conn, others, since=h0, up_to_id=top)
                histories.update(recent_events)
                names.update(recent_names)
        first_hours = resources.starts(plan, histories, new, h0)
        # No line lies past the newest: a resource re-derived only from after it (as
        # are most of a busy hour's, continued from h0) has nothing billed to diff.
        latest = store_usage.latest_hour(conn)
        diffed = {k: h for k, h in first_hours.items() if latest is not None and h <= latest}
        billed = store_usage.billed_running(
            conn, list(diffed), min(diffed.values(), default=h1), h1
        )
        result = resources.bill(plan, first_hours, histories, billed, stored, h1)
        lines.extend(
            store_usage.running_line(key, offering, hour, ms)
            for key, offering, hour, ms in result.amounts
        )
        recorded = store_runs.recorded_anomalies(conn, sorted({a.id for a in result.anomalies}))
        findings.extend(
            Finding(a.id, names.get(a.id, ""), ANOMALY, a.reason)
            for a in billing.unrecorded(result.anomalies, recorded)
        )
        return plan.billed, saved + result.records

    # -- backfill -----------------------------------------------------------------

    def _backfill(self, conn: Connection, since: int) -> ChunkResult | None:
        started = time.monotonic()
        wall = self.wall_clock()
        mark = store_state.read_watermark(conn)
        if mark.billed_until is None:
            log.info(
                "backfill_skipped", reason="nothing billed yet; the scheduled run bills it all"
            )
            return None
        end = min(self.until, mark.billed_until)
        if since >= end:
            return None
        lines: list[Line] = []
        # Resources known to have run since `since`, and any whose events no scheduled
        # run ever read (committed after their id gap expired).
        keys = sorted(
            set(store_state.resources_active_since(conn, since))
            | set(store_state.resources_never_read(conn))
        )
        for first in range(0, len(keys), 500):
            batch = keys[first : first + 500]
            histories, _ = read_histories(conn, batch)
            billed = store_usage.billed_running(conn, batch, since, end)
            before = store_state.resources(conn, batch)
            saved: list[StoredResource] = []
            for key in batch:
                amounts = billing.rederive_resource(
                    histories[key], start=since, until=end, billed=billed[key]
                )
                for (offering, hour), ms in sorted(
                    amounts.items(), key=lambda i: (i[0][1], i[0][0])
                ):
                    lines.append(store_usage.running_line(key, offering, hour, ms))
                # The stored state must agree with the history the backfill billed from,
                # or the next scheduled run would continue from a stale one.
                at_watermark = replay(histories[key], mark.billed_until)
                old = before.get(key)
                saved.append(
                    StoredResource(
                        key=key,
                        state=at_watermark.state,
                        pending_from=at_watermark.pending_from,
                        last_event_at=at_watermark.last_event_at,
                        last_seen_at=old.last_seen_at if old else None,
                    )
                )
            store_state.save_resources(conn, saved)
        unread = gaps_core.Index([g.ids for g in store_state.read_gaps(conn)])
        reach = max(mark.max_measure_period_ms, HOUR)
        read = 0
        for window in range(since, end, 24 * HOUR):
            window_end = min(window + 24 * HOUR, end)
            measures: list[Measure] = []
            for raw in store_events.measures_overlapping(
                conn,
                from_ms(window),
                from_ms(window_end),
                from_ms(window - reach),
                mark.last_event_id,
            ):
                if raw.id in unread:
                    continue
                checked = validate(raw)
                if isinstance(checked, Measure):
                    measures.append(checked)
                    read += 1
            measure_amounts = billing.rederive_measures(
                measures,
                start=window,
                end=window_end,
                billed=store_usage.billed_measures(conn, window, window_end),
            )
            lines.extend(
                store_usage.measure_line(key, hour, amount)
                for (key, hour), amount in sorted(measure_amounts.items())
            )
        run_id = f"b{_hour_id(since)}-{_hour_id(end)}-v{mark.version}"
        store_state.advance_watermark(
            conn,
            mark,
            last_event_id=mark.last_event_id,
            billed_until=mark.billed_until,
            max_measure_period_ms=mark.max_measure_period_ms,
            run_id=run_id,
            at=wall,
        )
        written = store_usage.insert_lines(conn, run_id, lines)
        result = ChunkResult(
            run_id=run_id,
            kind=BACKFILL,
            hours_from=since,
            hours_to=end,
            first_event_id=None,
            last_event_id=None,
            events_read=read,
            lines_written=written,
            corrections=written,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        store_runs.insert_run(conn, self._run_record(result, wall))
        return result

    def _run_record(self, result: ChunkResult, wall: datetime) -> RunRecord:
        return RunRecord(
            run_id=result.run_id,
            kind=result.kind,
            status="dry-run" if self.request.dry_run else "ok",
            clock=self.request.now,
            started_at=wall,
            finished_at=self.wall_clock(),
            hours_from=None if result.hours_from is None else from_ms(result.hours_from),
            hours_to=None if result.hours_to is None else from_ms(result.hours_to),
            first_event_id=result.first_event_id,
            last_event_id=result.last_event_id,
            events_read=result.events_read,
            lines_written=result.lines_written,
            corrections=result.corrections,
            rejected=result.rejected,
            anomalies=result.anomalies,
            duration_ms=result.duration_ms,
            host=self.host,
            message=None,
        )


@dataclass
class _Batch:
    """What a chunk read past the watermark (and in the gaps below it)."""

    read: int = 0
    parts: dict[tuple[Any, int], int] = field(default_factory=dict)
    resources: dict[ResourceKey, list[ResourceEvent]] = field(
        default_factory=lambda: defaultdict(list)
    )
    names: dict[int, str] = field(default_factory=dict)  # event_id of each resource event
    rejections: list[Finding] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    max_period: int = 0
    # Ids whose simple measures the database sums itself when the chunk writes.
    summed_range: tuple[int, int] | None = None
    # The window's simple measures, being summed on a second connection.
    side: _Side | None = None


@dataclass(frozen=True)
class _Side:
    scan: SideScan
    read: frozenset[int]  # ids of the window's rows read already (of kinds not a measure's)
    unread: Digest  # of its other rows, which hold every row the side connection sums

    @property
    def rows(self) -> int:
        """The window's rows, in the run's own snapshot."""
        return len(self.read) + self.unread.rows


def _read_new(
    conn: Connection,
    batch: _Batch,
    mark: Watermark,
    top: int,
    gaps: Sequence[Gap],
    wall: datetime,
    settle_lag: timedelta,
    server: int | None = None,
    beside: Engine | None = None,
) -> None:
    """Fill `batch` (a side scan it holds is the caller's to close, even on error).
    `server`, if given: the highest id up to which the database may sum the window's
    simple measures itself (_write_measures); the rest is read here. `beside`, if
    given: the engine whose second connection sums the range past the watermark
    (store/side_scan.py), taken by _side_rest."""
    kept: list[Gap] = []
    # Most gap rows hold ids that will never come (other nodes' share, rollbacks):
    # one query finds the few rows that did, and only their gaps are read again (in
    # the run's one snapshot, so the scans see exactly the rows found here).
    found: dict[Strided, list[int]] = defaultdict(list)
    index = gaps_core.Index([g.ids for g in gaps])
    for i in store_events.present_in(conn, [g.ids for g in gaps]):
        holder = index.find(i)
        if holder is not None:
            found[holder].append(i)
    ranges: list[tuple[Strided | None, int, int, datetime]] = [
        (g.ids, g.ids.id_from, g.ids.id_to, g.first_seen_at) for g in gaps if g.ids in found
    ]
    kept.extend(g for g in gaps if g.ids not in found)
    lo = mark.last_event_id + 1
    if server is not None and top >= lo:
        dense = store_lines.dense_end(conn, lo, min(top, server))
        if dense >= lo:
            alone = len(_read_rows(store_events.read_alone(conn, lo, dense), batch))
            batch.summed_range = (lo, dense)
            batch.read += dense - lo + 1
            if alone < dense - lo + 1:
                batch.max_period = max(batch.max_period, HOUR)
            lo = dense + 1
    if top >= lo and beside is not None:
        batch.side = _read_beside(conn, beside, lo, top, batch)
    if batch.side is not None:
        if batch.side.rows < top - lo + 1:
            kept.extend(Gap(ids, wall) for ids in _gap_rows(conn, lo, top))
    elif top >= lo:
        ranges.append((None, lo, top, wall))
    for within, lo, hi, seen in ranges:
        scan = store_events.scan_range(conn, lo, hi, batch.parts, within)
        _read_rows(store_events.events_by_id(conn, scan.other_ids), batch)
        batch.read += scan.rows
        if within is not None:
            kept.extend(Gap(ids, seen) for ids in gaps_core.subtract(within, found[within]))
        elif scan.rows < hi - lo + 1:
            kept.extend(Gap(ids, seen) for ids in _gap_rows(conn, lo, hi))
        if scan.rows > len(scan.other_ids):
            # Summed by the database: periods within one hour.
            batch.max_period = max(batch.max_period, HOUR)
    cutoff = wall - settle_lag
    batch.gaps = [g for g in kept if g.first_seen_at > cutoff]


def _read_beside(conn: Connection, engine: Engine, lo: int, hi: int, batch: _Batch) -> _Side | None:
    """[lo, hi] read while a second connection scans it: here, its digest and the rows
    whose kind is not a measure's (resource events, bad rows), in this
    run's snapshot. None, having read nothing, where no second connection could be had."""
    try:
        scan = SideScan(engine, lo, hi)
    except DBAPIError as exc:
        # Such as a max_user_connections below three: the run does it all itself.
        log.info("side_scan_unused", reason=describe_db_error(exc), ids=[lo, hi])
        return None
    try:
        whole = store_events.digest(conn, lo, hi)
        read = _read_rows(store_events.read_other_kinds(conn, lo, hi), batch)
    except BaseException:
        scan.close()
        raise
    batch.read += whole.rows
    if whole.rows > len(read):
        # Others are measures: those the side connection sums lie within an hour.
        batch.max_period = max(batch.max_period, HOUR)
    return _Side(scan, frozenset(read), whole - Digest(len(read), sum(read)))


def _side_rest(conn: Connection, side: _Side) -> _Batch:
    """The rest of the window after _read_beside: the simple measures' sums (in
    `parts`) and the rows read alone not read yet (measures over several hours, bad
    rows; never resource events: their kind had them read before). The second
    connection's sums where the run's snapshot held just the rows they summed besides
    those read; else the run's own scan of the window."""
    taken = side.scan.take()
    reason = side.scan.why
    if taken is not None:
        scan, sums = taken
        rest = _Batch()
        found = _read_ids(conn, [i for i in scan.other_ids if i not in side.read], rest)
        if side.unread - found == scan.summed:
            billing.add_parts(rest.parts, sums)
            return rest
        reason = "rows committed or deleted between the two snapshots"
    log.info("side_scan_unused", reason=reason, ids=[side.scan.lo, side.scan.hi])
    rest = _Batch()
    # All kinds: a row that neither the side's filter nor read_other_kinds held (their
    # check would be what failed) is read here all the same.
    scan = store_events.scan_range(conn, side.scan.lo, side.scan.hi, rest.parts)
    _read_ids(conn, [i for i in scan.other_ids if i not in side.read], rest)
    return rest


def _read_ids(conn: Connection, ids: Sequence[int], batch: _Batch) -> Digest:
    """Rows by id into `batch`; the digest of those found."""
    found = _read_rows(store_events.events_by_id(conn, ids), batch)
    return Digest(len(found), sum(found))


def _read_rows(rows: Iterable[RawEvent], batch: _Batch) -> list[int]:
    """Rows into `batch`; their ids."""
    ids: list[int] = []
    for raw in rows:
        _take(raw, batch)
        ids.append(raw.id)
    return ids


@dataclass(frozen=True)
class _Measures:
    written: int  # measure lines
    corrections: int  # of them, in hours billed before the chunk
    summed: int  # of them, summed by the database (before the open hours moved out)


def _write_measures(
    conn: Connection,
    run_id: str,
    summed_range: tuple[int, int] | None,
    closed: dict[billing.PartKey, int],
    h0: int | None,
    h1: int,
) -> _Measures:
    """The chunk's measure lines: `closed` (what Python summed, of closed hours), and
    the simple measures of `summed_range`, which the database sums into lines itself;
    where it would wait on a row lock instead, they are summed here (same snapshot)."""
    if summed_range is not None:
        summed = store_lines.insert_sums(conn, run_id, *summed_range)
        if summed is not None:
            written = summed - store_lines.move_open(conn, run_id, h1)
            written += store_lines.merge_parts(conn, run_id, closed)
            before = 0 if h0 is None else store_lines.count_before(conn, run_id, h0)
            return _Measures(written, before, summed)
        late: dict[billing.PartKey, int] = {}
        # Its other rows were read with the window (events.read_alone): only sums here.
        store_events.scan_range(conn, *summed_range, late)
        billing.add_parts(closed, late)
        store_usage.add_pending(conn, billing.take_open(closed, h1))
    # Made as they are written: at millions of events per hour they outnumber the rest.
    keys = sorted(key for key, amount in closed.items() if amount)
    written = store_usage.insert_measure_lines(conn, run_id, closed, keys)
    before = 0 if h0 is None else sum(1 for _, hour in keys if hour < h0)
    return _Measures(written, before, 0)


def _take(raw: RawEvent, batch: _Batch) -> None:
    """One row read alone: a rejection, a resource event, or a measure split here."""
    checked = validate(raw)
    if isinstance(checked, Rejection):
        batch.rejections.append(Finding(checked.id, checked.event_id, REJECTED, checked.reason))
    elif isinstance(checked, ResourceEvent):
        batch.resources[checked.key].append(checked)
        batch.names[checked.id] = raw.event_id
    else:
        # Split as they come: a window may hold many, none is needed twice.
        for hour, amount in split_measure(
            checked.quantity, checked.period_start, checked.period_end
        ):
            batch.parts[(checked.key, hour)] = batch.parts.get((checked.key, hour), 0) + amount
        batch.max_period = max(batch.max_period, checked.period_end - checked.period_start)


def _gap_rows(conn: Connection, lo: int, hi: int) -> list[Strided]:
    """The ids of [lo, hi] that hold no row, as few gap rows."""
    step = store_events.id_step(conn)
    if step > 1:
        return _gap_rows_by_class(conn, lo, hi, step)
    classes = gaps_core.coarsen(store_events.id_classes(conn, lo, hi))
    pieces = list(_missing(conn, lo, hi, classes))
    return gaps_core.fewest(pieces, [classes[0].modulus] if classes else [])


# Ids of one class per counted group, on a cluster. Measured on a 3-node cluster at
# 1M events (benchmarks/galera.py's hour): 16 gave 63k groups and a 1.0 s aggregate,
# 64 gave 16k groups in 0.6 s with ~330 groups to read (6k ids, 0.14 s), 256 read
# 36k ids: the lone ids another node's single-row INSERTs leave rarely share a group.
CLASS_GROUP_MEMBERS = 64


def _gap_rows_by_class(conn: Connection, lo: int, hi: int, step: int) -> list[Strided]:
    """On a cluster (ids in steps of the session's auto_increment_increment, each
    node one residue class): the database counts the ids per small block and class
    in one aggregate pass; a dense count is a run of its class as it stands, and
    only the ids of the other groups are read (one class of a few dozen ids each).
    Each class's missing ids are then what lies between its runs, and those become
    rows (gaps_core.rows_of_runs). Row by row, the holes' LAG, sweeping and folding
    took ~60% of a 1M-event run on a 3-node cluster (benchmarks/galera.py)."""
    groups = store_events.id_classes(conn, lo, hi, step * CLASS_GROUP_MEMBERS, step)
    present = [(g.first, g.last) for g in groups if g.dense]
    irregular = [Strided(g.first, g.last, step, 1) for g in groups if not g.dense]
    ids = store_events.present_in(conn, irregular)
    for residue in range(step):
        present.extend(gaps_core.present_runs((x for x in ids if x % step == residue), step))
    return gaps_core.rows_of_runs(gaps_core.missing_runs(lo, hi, step, present), step)


def _missing(
    conn: Connection, lo: int, hi: int, classes: Sequence[gaps_core.IdClass]
) -> Iterator[Strided]:
    """The ids of [lo, hi] that hold no row, ascending, as strided pieces: from the
    database's counts by block and residue where they tell it exactly (interleaved
    ids: one aggregate pass, never a row per hole), row by row elsewhere."""
    for start, end, dense in gaps_core.stretches(lo, hi, classes):
        if dense is None:
            yield from (Strided(a, b) for a, b in store_events.holes(conn, start, end))
        else:
            yield from gaps_core.sweep(start, end, dense)


def _hour_id(ms: int) -> str:
    return from_ms(ms).strftime("%Y%m%dT%H")


def _scheduled_id(h0: int | None, h1: int, mark: Watermark) -> str:
    start = "start" if h0 is None else _hour_id(h0)
    return f"s{start}-{_hour_id(h1)}-v{mark.version}"
