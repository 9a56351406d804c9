"""`metering run --metrics-file PATH`: Prometheus textfile metrics of the last run.

For node_exporter's textfile collector (the path must end in .prom there). The file
is rewritten on every outcome (success, nothing to do, lock held, failure) through
prometheus_client's write_to_textfile, which writes a temporary file in the same
directory and renames it over the old one, so a scrape never sees half a file.

Two values live across runs and are read back from the previous file: the last
success timestamp (kept when a run fails) and the counter of runs skipped because
the lock was held. The billed-until timestamp is kept too when the database cannot
be read, so the watermark lag keeps growing while runs fail.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from metering import logs
from metering.errors import EXIT_FAILURE, EXIT_LOCKED, EXIT_OK, UsageError
from metering.run import RunOutcome
from metering.store import state as store_state
from metering.timeutil import from_ms

log = logs.get_logger("metering.metrics")

LAST_SUCCESS = "metering_last_success_timestamp_seconds"
LAST_COMPLETION = "metering_last_completion_timestamp_seconds"
DURATION = "metering_last_run_duration_seconds"
EVENTS_READ = "metering_last_run_events_read"
LINES_WRITTEN = "metering_last_run_lines_written"
CORRECTIONS = "metering_last_run_corrections"
REJECTED = "metering_last_run_rejected"
ANOMALIES = "metering_last_run_anomalies"
BILLED_UNTIL = "metering_billed_until_timestamp_seconds"
WATERMARK_LAG = "metering_watermark_lag_seconds"
EXIT_CODE = "metering_last_exit_code"
LOCK_SKIPPED = "metering_runs_skipped_lock_held"  # a counter: exposed with _total


@dataclass(frozen=True)
class RunMetrics:
    """What one invocation of `metering run` reports."""

    exit_code: int
    completed_at: datetime  # wall clock
    duration_s: float
    clock: datetime  # the run's now (--now in replays): the watermark lag is measured to it
    billed_until: datetime | None = None  # None: unknown (database unreadable) or never billed
    events_read: int = 0
    lines_written: int = 0
    corrections: int = 0
    rejected: int = 0
    anomalies: int = 0


def check_writable(path: Path) -> None:
    """Refuse, before billing anything, a metrics file that could not be written."""
    directory = path.parent
    if not directory.is_dir():
        raise UsageError(f"--metrics-file: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--metrics-file: directory {directory} is not writable")
    if path.is_dir():
        raise UsageError(f"--metrics-file: {path} is a directory")


def read_previous(path: Path) -> dict[str, float]:
    """Sample values of the previous file by sample name; empty if absent or unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("metrics_file_unreadable", path=str(path), error=str(exc))
        return {}
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[sample.name] = sample.value
    except ValueError as exc:
        log.warning("metrics_file_unreadable", path=str(path), error=str(exc))
        return {}
    return values


def write(path: Path, metrics: RunMetrics) -> None:
    """Rewrite the textfile at `path` atomically with `metrics` (and what carries over)."""
    # Here, not at the top: importing prometheus_client took 17 ms (best of 15), which
    # every run would otherwise pay before its first query, --metrics-file or not.
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
    from prometheus_client.core import CounterMetricFamily, Metric
    from prometheus_client.registry import Collector

    class Counter(Collector):
        """A counter whose value comes from the previous file: no _created sample,
        which would otherwise claim the counter was born with this process."""

        def __init__(self, name: str, documentation: str, value: float) -> None:
            self.name, self.documentation, self.value = name, documentation, value

        def collect(self) -> Iterable[Metric]:
            yield CounterMetricFamily(self.name, self.documentation, value=self.value)

    previous = read_previous(path)
    registry = CollectorRegistry()

    def gauge(name: str, documentation: str, value: float | None) -> None:
        if value is not None:
            Gauge(name, documentation, registry=registry).set(value)

    success = metrics.exit_code == EXIT_OK
    completed = metrics.completed_at.timestamp()
    gauge(
        LAST_SUCCESS,
        "When a metering run last exited 0 (also: nothing to do), Unix time.",
        completed if success else previous.get(LAST_SUCCESS),
    )
    gauge(LAST_COMPLETION, "When a metering run last finished, any outcome, Unix time.", completed)
    gauge(DURATION, "Wall time of the last metering run.", metrics.duration_s)
    gauge(EVENTS_READ, "Events the last run read.", metrics.events_read)
    gauge(LINES_WRITTEN, "Usage lines the last run wrote.", metrics.lines_written)
    gauge(
        CORRECTIONS,
        "Lines of the last run for hours billed before (late events).",
        metrics.corrections,
    )
    gauge(REJECTED, "Events the last run rejected (bad input).", metrics.rejected)
    gauge(
        ANOMALIES,
        "Anomalies the last run recorded (e.g. a stop without a start).",
        metrics.anomalies,
    )
    billed_until = (
        metrics.billed_until.timestamp()
        if metrics.billed_until is not None
        else previous.get(BILLED_UNTIL)
    )
    gauge(
        BILLED_UNTIL,
        "Every hour before this instant is billed (the watermark), Unix time.",
        billed_until,
    )
    gauge(
        WATERMARK_LAG,
        "Seconds from the watermark to the run's clock: about 32 min after an on-time run.",
        None if billed_until is None else metrics.clock.timestamp() - billed_until,
    )
    gauge(
        EXIT_CODE,
        "Exit status of the last run: 0 ok, 1 failure, 2 usage, 75 lock held.",
        metrics.exit_code,
    )
    skipped = previous.get(LOCK_SKIPPED + "_total", 0.0)
    if metrics.exit_code == EXIT_LOCKED:
        skipped += 1
    registry.register(
        Counter(LOCK_SKIPPED, "Runs that exited 75: another run held the lock.", skipped)
    )
    write_to_textfile(str(path), registry)


@dataclass
class Recorder:
    """Filled in by the run command as it goes; written out whatever happens."""

    clock: datetime | None = None
    engine: Engine | None = None
    outcome: RunOutcome | None = None
    exit_code: int = field(default=EXIT_OK)


@contextmanager
def recording(path: Path | None, wall_clock: Callable[[], datetime]) -> Iterator[Recorder]:
    """Around the run command: writes the metrics file on every way out, when asked for."""
    recorder = Recorder()
    started = time.monotonic()
    try:
        yield recorder
    except SystemExit as exc:
        recorder.exit_code = exc.code if isinstance(exc.code, int) else EXIT_FAILURE
        raise
    except BaseException:
        recorder.exit_code = EXIT_FAILURE
        raise
    finally:
        if path is not None:
            _write_recorded(path, recorder, time.monotonic() - started, wall_clock())


def _write_recorded(path: Path, recorder: Recorder, duration: float, wall: datetime) -> None:
    runs = recorder.outcome.runs if recorder.outcome is not None else []
    metrics = RunMetrics(
        exit_code=recorder.exit_code,
        completed_at=wall,
        duration_s=duration,
        clock=recorder.clock or wall,
        billed_until=_billed_until(recorder.engine),
        events_read=sum(r.events_read for r in runs),
        lines_written=sum(r.lines_written for r in runs),
        corrections=sum(r.corrections for r in runs),
        rejected=sum(r.rejected for r in runs),
        anomalies=sum(r.anomalies for r in runs),
    )
    try:
        write(path, metrics)
    except OSError as exc:
        # The run's outcome (and exit code) stands: its lines are committed or not
        # regardless of this file. The stale file shows in last_completion.
        log.error("metrics_file_not_written", path=str(path), error=str(exc))


def _billed_until(engine: Engine | None) -> datetime | None:
    """The watermark now, best effort: a failed run may have no database to ask."""
    if engine is None:
        return None
    try:
        with engine.connect() as conn:
            mark = store_state.read_watermark(conn)
    except Exception as exc:  # the database being down is one reason the run failed
        log.warning("metrics_watermark_unknown", error=logs.mask_secrets(str(exc)))
        return None
    return None if mark.billed_until is None else from_ms(mark.billed_until)
