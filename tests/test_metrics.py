"""What `metering run` tells operators besides its lines: the Prometheus textfile
(--metrics-file, on every outcome) and the progress of long work (terminals only)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from metering import metrics
from metering.cli import main
from metering.lock import file_lock
from metering.store.schema import usage_lines
from tests.support import insert_events, measure, migrated, read_terminal, resource, run

NOW = "2016-12-12T18:00:00Z"  # bills up to 17:00 (grace 30 min)


def parse(path: Path) -> dict[str, float]:
    """Every sample of the file by name; the parser rejects malformed exposition."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            assert sample.name not in values, f"{sample.name} twice"
            values[sample.name] = sample.value
    return values


def invoke(url: str, tmp_path: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main,
        ["--database-url", url, "run", "--lock-file", str(tmp_path / "metering.lock"), *args],
        catch_exceptions=False,
    )


@pytest.fixture
def url(sqlite_url: str) -> str:
    engine = migrated(sqlite_url)
    insert_events(
        engine,
        [
            resource("e1", "create", "2016-12-12T15:30:00Z", offering="medium"),
            resource("e2", "stop", "2016-12-12T16:15:00Z"),
            measure("e3", 1000, "2016-12-12T15:00:00Z", "2016-12-12T15:01:00Z"),
            measure("e4", -5, "2016-12-12T15:00:00Z", "2016-12-12T15:01:00Z"),
        ],
    )
    engine.dispose()
    return sqlite_url


def test_success_reports_the_run_and_the_watermark(url: str, tmp_path: Path) -> None:
    prom = tmp_path / "metering.prom"
    before = datetime.now(UTC).timestamp()
    result = invoke(url, tmp_path, "--now", NOW, "--metrics-file", str(prom))
    after = datetime.now(UTC).timestamp()
    assert result.exit_code == 0, result.output

    values = parse(prom)
    engine = migrated(url)
    with engine.connect() as conn:
        stored_lines = conn.execute(select(func.count()).select_from(usage_lines)).scalar_one()
    assert stored_lines > 0
    assert values["metering_last_exit_code"] == 0
    assert before <= values["metering_last_success_timestamp_seconds"] <= after
    assert (
        values["metering_last_completion_timestamp_seconds"]
        == values["metering_last_success_timestamp_seconds"]
    )
    assert values["metering_last_run_events_read"] == 4
    assert values["metering_last_run_lines_written"] == stored_lines
    assert values["metering_last_run_rejected"] == 1
    assert values["metering_last_run_corrections"] == 0
    assert values["metering_last_run_duration_seconds"] >= 0
    billed_until = datetime(2016, 12, 12, 17, tzinfo=UTC).timestamp()
    assert values["metering_billed_until_timestamp_seconds"] == billed_until
    assert values["metering_watermark_lag_seconds"] == 3600  # 18:00 (--now) minus 17:00
    assert values["metering_runs_skipped_lock_held_total"] == 0
    assert "metering_runs_skipped_lock_held_created" not in values


def test_nothing_to_do_is_a_success_with_zero_work(url: str, tmp_path: Path) -> None:
    prom = tmp_path / "metering.prom"
    assert invoke(url, tmp_path, "--now", NOW, "--metrics-file", str(prom)).exit_code == 0
    assert invoke(url, tmp_path, "--now", NOW, "--metrics-file", str(prom)).exit_code == 0
    values = parse(prom)
    assert values["metering_last_exit_code"] == 0
    assert values["metering_last_run_lines_written"] == 0
    assert values["metering_last_run_events_read"] == 0
    assert values["metering_watermark_lag_seconds"] == 3600


def test_lock_held_counts_skips_and_keeps_the_last_success(url: str, tmp_path: Path) -> None:
    prom = tmp_path / "metering.prom"
    assert invoke(url, tmp_path, "--now", NOW, "--metrics-file", str(prom)).exit_code == 0
    success = parse(prom)["metering_last_success_timestamp_seconds"]

    later = "2016-12-12T20:00:00Z"
    with file_lock(tmp_path / "metering.lock", 0):
        for skipped in (1, 2):
            result = invoke(url, tmp_path, "--now", later, "--metrics-file", str(prom))
            assert result.exit_code == 75
            values = parse(prom)
            assert values["metering_last_exit_code"] == 75
            assert values["metering_runs_skipped_lock_held_total"] == skipped
            assert values["metering_last_success_timestamp_seconds"] == success
            assert values["metering_last_completion_timestamp_seconds"] >= success
            assert values["metering_last_run_lines_written"] == 0
            # The watermark is still 17:00, and the clock moved on to 20:00.
            assert values["metering_watermark_lag_seconds"] == 3 * 3600

    assert invoke(url, tmp_path, "--now", later, "--metrics-file", str(prom)).exit_code == 0
    values = parse(prom)
    assert values["metering_last_exit_code"] == 0
    assert values["metering_runs_skipped_lock_held_total"] == 2  # a counter never goes back
    assert values["metering_last_success_timestamp_seconds"] > success
    assert values["metering_watermark_lag_seconds"] == 3600


def test_failure_is_reported_and_keeps_what_was_known(url: str, tmp_path: Path) -> None:
    prom = tmp_path / "metering.prom"
    assert invoke(url, tmp_path, "--now", NOW, "--metrics-file", str(prom)).exit_code == 0
    before = parse(prom)

    empty = f"sqlite:///{tmp_path}/empty.db"  # no schema: the run fails with exit 1
    result = invoke(empty, tmp_path, "--now", NOW, "--metrics-file", str(prom))
    assert result.exit_code == 1
    values = parse(prom)
    assert values["metering_last_exit_code"] == 1
    assert (
        values["metering_last_success_timestamp_seconds"]
        == before["metering_last_success_timestamp_seconds"]
    )
    assert (
        values["metering_billed_until_timestamp_seconds"]
        == before["metering_billed_until_timestamp_seconds"]
    )
    assert values["metering_last_run_lines_written"] == 0


def test_first_failure_has_no_success_timestamp(tmp_path: Path) -> None:
    prom = tmp_path / "metering.prom"
    result = invoke(f"sqlite:///{tmp_path}/empty.db", tmp_path, "--metrics-file", str(prom))
    assert result.exit_code == 1
    values = parse(prom)
    assert values["metering_last_exit_code"] == 1
    assert "metering_last_success_timestamp_seconds" not in values
    assert "metering_watermark_lag_seconds" not in values


def test_file_is_replaced_by_rename_leaving_nothing_behind(url: str, tmp_path: Path) -> None:
    out = tmp_path / "textfile"
    out.mkdir()
    prom = out / "metering.prom"
    assert invoke(url, tmp_path, "--now", NOW, "--metrics-file", str(prom)).exit_code == 0
    first = prom.stat().st_ino
    assert invoke(url, tmp_path, "--now", NOW, "--metrics-file", str(prom)).exit_code == 0
    # A new inode: a new file renamed over the old, never the old one rewritten in place.
    assert prom.stat().st_ino != first
    assert [p.name for p in out.iterdir()] == ["metering.prom"]


def test_garbage_previous_file_is_replaced(url: str, tmp_path: Path) -> None:
    prom = tmp_path / "metering.prom"
    prom.write_text("this is { not prometheus\n")
    assert invoke(url, tmp_path, "--now", NOW, "--metrics-file", str(prom)).exit_code == 0
    values = parse(prom)
    assert values["metering_runs_skipped_lock_held_total"] == 0
    assert values["metering_last_exit_code"] == 0


def test_unwritable_place_is_refused_before_billing(url: str, tmp_path: Path) -> None:
    result = invoke(
        url, tmp_path, "--now", NOW, "--metrics-file", str(tmp_path / "missing" / "m.prom")
    )
    assert result.exit_code == 2
    engine = migrated(url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(usage_lines)).scalar_one() == 0


def test_dry_run_refuses_a_metrics_file(url: str, tmp_path: Path) -> None:
    prom = tmp_path / "metering.prom"
    result = invoke(url, tmp_path, "--now", NOW, "--dry-run", "--metrics-file", str(prom))
    assert result.exit_code == 2
    assert not prom.exists()


def test_environment_variable_names_the_file(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prom = tmp_path / "from-env.prom"
    monkeypatch.setenv("METERING_METRICS_FILE", str(prom))
    assert invoke(url, tmp_path, "--now", NOW).exit_code == 0
    assert parse(prom)["metering_last_exit_code"] == 0


def test_write_directly_with_unknown_watermark_keeps_the_previous_one(tmp_path: Path) -> None:
    prom = tmp_path / "m.prom"
    at = datetime(2016, 12, 12, 18, 32, tzinfo=UTC)
    watermark = datetime(2016, 12, 12, 18, tzinfo=UTC)
    metrics.write(
        prom,
        metrics.RunMetrics(
            exit_code=0, completed_at=at, duration_s=1.5, clock=at, billed_until=watermark
        ),
    )
    later = datetime(2016, 12, 12, 21, 32, tzinfo=UTC)
    metrics.write(
        prom, metrics.RunMetrics(exit_code=1, completed_at=later, duration_s=0.1, clock=later)
    )
    values = parse(prom)
    assert values["metering_billed_until_timestamp_seconds"] == watermark.timestamp()
    assert values["metering_watermark_lag_seconds"] == 3 * 3600 + 32 * 60  # it keeps growing
    assert values["metering_last_success_timestamp_seconds"] == at.timestamp()
    assert values["metering_last_completion_timestamp_seconds"] == later.timestamp()


# -- progress of long work --------------------------------------------------------


CATCH_UP = ("--since", "2016-12-12T12:00Z", "--now", "2016-12-12T20:00Z")


def catch_up_scenario(url: str, tmp_path: Path) -> None:
    """Billed up to 17:00; a backfill from 12:00 at 20:00 is then 5 + 2 hours of work."""
    engine = migrated(url)
    insert_events(engine, [resource("p1", "create", "2016-12-12T10:00:00Z", offering="small")])
    run(engine, NOW, tmp_path)
    engine.dispose()


def test_execute_reports_hours_done_after_each_chunk(sqlite_url: str, tmp_path: Path) -> None:
    catch_up_scenario(sqlite_url, tmp_path)
    calls: list[tuple[int, int]] = []
    outcome = run(
        migrated(sqlite_url),
        "2016-12-12T20:00:00Z",
        tmp_path,
        since=datetime(2016, 12, 12, 12, tzinfo=UTC),
        progress=lambda done, total, _events: calls.append((done, total)),
    )
    assert [r.kind for r in outcome.runs] == ["backfill", "scheduled"]
    assert calls == [(5, 7), (7, 7)]


def run_on_terminal(url: str, tmp_path: Path, *options: str) -> tuple[int, str]:
    """`metering ... run` with stderr on a pseudo-terminal; returns (exit code, stderr)."""
    leader, follower = pty.openpty()
    lock = ("--lock-file", str(tmp_path / "metering.lock"))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "metering",
            "--database-url",
            url,
            *options,
            "run",
            *CATCH_UP,
            *lock,
        ],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "100"},
    )
    os.close(follower)
    output = read_terminal(leader)
    return process.wait(timeout=60), output.decode(errors="replace")


def test_progress_bar_on_a_terminal(sqlite_url: str, tmp_path: Path) -> None:
    catch_up_scenario(sqlite_url, tmp_path)
    # Events for the backfill's hours: the bar shows how fast they are read.
    engine = migrated(sqlite_url)
    insert_events(
        engine,
        [
            resource(f"s{i}", "start", f"2016-12-12T13:{i:02d}:00Z", resource_id=f"vm-{i}")
            for i in range(10)
        ],
    )
    engine.dispose()
    code, err = run_on_terminal(sqlite_url, tmp_path)
    assert code == 0, err
    assert "billing hours" in err
    assert "7/7" in err
    assert "events/s" in err


def test_no_progress_bar_in_json_logs_even_on_a_terminal(sqlite_url: str, tmp_path: Path) -> None:
    catch_up_scenario(sqlite_url, tmp_path)
    code, err = run_on_terminal(sqlite_url, tmp_path, "--log-format", "json")
    assert code == 0, err
    lines = [line for line in err.replace("\r\n", "\n").split("\n") if line.strip()]
    # A line per chunk, then one for the whole invocation.
    assert [json.loads(line)["event"] for line in lines] == [
        "run_finished",
        "run_finished",
        "run_summary",
    ]


def test_no_progress_bar_off_a_terminal(sqlite_url: str, tmp_path: Path) -> None:
    catch_up_scenario(sqlite_url, tmp_path)
    result = CliRunner().invoke(
        main,
        ["--database-url", sqlite_url, "run", *CATCH_UP, "--lock-file", str(tmp_path / "lock")],
    )
    assert result.exit_code == 0
    assert "billing hours" not in result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert [e["event"] for e in events] == ["run_finished", "run_finished", "run_summary"]
    summary = events[-1]
    assert summary["chunks"] == 2
    assert summary["events_read"] == sum(e["events_read"] for e in events[:2])
    assert summary["lines_written"] == sum(e["lines_written"] for e in events[:2])
    assert summary["run_ids"] == [events[0]["run_id"], events[1]["run_id"]]
