"""`metering demo`: the whole product in one command, on embedded SQLite.

Generates a few realistic days of events (metering.sample), then replays them as
production would see them: events reach the database when they are delivered, and
cron runs `metering run` every hour at minute 32. Late events therefore arrive after
the run that billed their hour and become corrections; bad events are rejected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from metering import migrate
from metering.db import make_engine
from metering.errors import UsageError
from metering.ingest import ingest
from metering.run import RunRequest, execute
from metering.sample import SAMPLE_START, Sample, generate
from metering.timeutil import to_ms

DATABASE = "metering.db"
EVENTS = "events.jsonl"
CRON_MINUTE = timedelta(minutes=32)


@dataclass(frozen=True)
class DemoResult:
    path: Path
    database_url: str
    sample: Sample
    now: datetime  # the clock of the last replayed run
    runs: int  # hourly invocations
    chunks: int  # committed runs (an invocation with nothing to do commits none)
    inserted: int
    duplicates: int
    lines_written: int
    corrections: int
    rejected: int
    anomalies: int


def run_demo(
    path: Path,
    *,
    days: int = 3,
    seed: int = 1,
    start: datetime = SAMPLE_START,
    progress: Callable[[int], None] | None = None,
) -> DemoResult:
    """Generate, ingest and bill `days` days in `path` (created if missing).

    progress, if given, is called with 1 after each simulated hour.
    """
    path.mkdir(parents=True, exist_ok=True)
    database = path / DATABASE
    if database.exists():
        raise UsageError(f"{database} exists already: give another --path, or remove it")
    url = f"sqlite:///{database}"
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        sample = generate(start, days=days, seed=seed)
        (path / EVENTS).write_bytes(sample.jsonl())
        return _replay(engine, path, url, sample, progress)
    finally:
        engine.dispose()


def _replay(
    engine: Engine,
    path: Path,
    url: str,
    sample: Sample,
    progress: Callable[[int], None] | None,
) -> DemoResult:
    counts = dict.fromkeys(
        (
            "runs",
            "chunks",
            "inserted",
            "duplicates",
            "lines",
            "corrections",
            "rejected",
            "anomalies",
        ),
        0,
    )
    delivered = 0
    hour = sample.start + timedelta(hours=1)
    while hour <= sample.end:
        now = hour + CRON_MINUTE
        due = sample.delivered_by(to_ms(now))
        summary = ingest(engine, sample.lines[delivered:due])
        delivered = due
        counts["inserted"] += summary.inserted
        counts["duplicates"] += summary.duplicates
        outcome = execute(
            engine,
            RunRequest(now=now),
            lock_file=path / "metering.lock",
            wall_clock=lambda now=now: now,  # type: ignore[misc]
        )
        counts["runs"] += 1
        for chunk in outcome.runs:
            counts["chunks"] += 1
            counts["lines"] += chunk.lines_written
            counts["corrections"] += chunk.corrections
            counts["rejected"] += chunk.rejected
            counts["anomalies"] += chunk.anomalies
        if progress is not None:
            progress(1)
        hour += timedelta(hours=1)
    return DemoResult(
        path=path,
        database_url=url,
        sample=sample,
        now=hour - timedelta(hours=1) + CRON_MINUTE,
        runs=counts["runs"],
        chunks=counts["chunks"],
        inserted=counts["inserted"],
        duplicates=counts["duplicates"],
        lines_written=counts["lines"],
        corrections=counts["corrections"],
        rejected=counts["rejected"],
        anomalies=counts["anomalies"],
    )


def hints(result: DemoResult) -> str:
    """Commands to explore the demo's database. The data is from the replayed days, so
    those that compare with the clock (status's lag, check's stale resources) get the
    replay's last clock as --now."""
    now = result.now.strftime("%Y-%m-%dT%H:%MZ")
    account = result.sample.accounts[0]
    return "\n".join(
        [
            "Explore it (rows marked * include corrections; --now is the replay's clock):",
            f"  export METERING_DATABASE_URL={result.database_url}",
            f"  metering report --account {account} --group resource --by hour",
            "  metering report --format html -o usage.html",
            f"  metering status --now {now}",
            f"  metering check --now {now}      # exits 1 for the unreviewed bad events",
            "  metering runs",
            "  metering rejected",
        ]
    )
