"""`metering demo` end to end, the sample generator, and the shipped sample day."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from metering.cli import main
from metering.demo import run_demo
from metering.sample import BILLED_AFTER, HOUR, SAMPLE_START, generate, shipped_day
from metering.store.schema import rejected_events
from metering.timeutil import parse_time, to_ms
from tests.support import billed, migrated, run

REPO = Path(__file__).resolve().parent.parent


def test_same_seed_same_events_other_seed_other_events() -> None:
    first = generate(SAMPLE_START, days=1, seed=7)
    assert first.jsonl() == generate(SAMPLE_START, days=1, seed=7).jsonl()
    assert first.jsonl() != generate(SAMPLE_START, days=1, seed=8).jsonl()


def test_shipped_day_is_the_generators_output() -> None:
    shipped = (REPO / "metering" / "sample_data" / "day.jsonl").read_bytes()
    assert shipped == generate(SAMPLE_START, days=1, seed=1).jsonl()
    assert shipped_day() == shipped  # reachable as package data, as installed


def test_sample_is_realistic() -> None:
    sample = generate(SAMPLE_START, days=3, seed=1)
    events = [d.event for d in sample.deliveries]
    vms = [e for e in events if e["entity"] == "vm"]
    actions = Counter(e["action"] for e in vms)
    assert {"create", "start", "stop", "update", "destroy"} <= set(actions)
    assert len({e["offering"] for e in vms if e.get("offering")}) >= 4  # several sizes
    assert any(e["entity"] == "volume" for e in events)
    traffic = [d.event for d in sample.deliveries if d.event["entity"] == "ip" and not d.bad]
    periods = {
        to_ms(parse_time(e["period_end"])) - to_ms(parse_time(e["period_start"])) for e in traffic
    }
    assert periods == {60_000}  # per-minute measures
    assert len({e["account"] for e in events if e["account"]}) == 4

    start = to_ms(sample.start)
    end = to_ms(sample.end)
    assert all(start <= to_ms(parse_time(e["occurred_at"])) <= end for e in events)
    times = [d.delivered_at for d in sample.deliveries]
    assert times == sorted(times)
    assert all(t <= end + 30 * 60_000 for t in times)  # the last cron run sees them all

    late = [d for d in sample.deliveries if d.late]
    assert {d.event["kind"] for d in late} == {"resource", "quantity"}
    for delivery in late:
        when = delivery.event.get("period_start") or delivery.event["occurred_at"]
        hour = to_ms(parse_time(when)) // HOUR * HOUR
        assert delivery.delivered_at > hour + BILLED_AFTER
    assert 1 <= sample.bad <= 10
    assert sample.duplicates == 1


def test_demo_bills_exactly_what_the_complete_event_set_gives(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", days=2, seed=3)
    assert result.runs == 48
    assert result.corrections > 0  # late events arrived after their hour was billed
    assert result.inserted == len(result.sample.deliveries) - result.sample.duplicates
    assert result.duplicates == result.sample.duplicates
    assert (tmp_path / "demo" / "events.jsonl").read_bytes() == result.sample.jsonl()

    demo = migrated(result.database_url)
    with demo.connect() as conn:
        recorded = set(conn.execute(select(rejected_events.c.event_id)).scalars())
    bad = {d.event["event_id"] for d in result.sample.deliveries if d.bad}
    assert bad <= recorded  # every bad event is recorded, with its reason
    assert result.rejected == 4  # the fifth bad event, a stop without a start, is an anomaly
    assert result.anomalies >= 1

    # Contract rule 6: the hour-by-hour replay with late events bills what one run
    # over the complete event set bills.
    reference = migrated(f"sqlite:///{tmp_path}/reference.db")
    lines = (tmp_path / "demo" / "events.jsonl").read_bytes().splitlines(keepends=True)
    from metering.ingest import ingest

    ingest(reference, lines)
    run(reference, result.sample.end + timedelta(minutes=32), tmp_path)
    assert billed(demo) == billed(reference)
    assert billed(demo)


@pytest.mark.slow
def test_demo_command_end_to_end(tmp_path: Path) -> None:
    where = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "metering", "demo", "--path", str(where)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "72 hourly runs" in out
    for account in ("geneva-jug", "acme-corp", "blue-lab", "north-shop"):
        assert account in out
    assert "*" in out  # corrected rows are marked in the report
    assert f"sqlite:///{where}/metering.db" in out
    assert (where / "metering.db").is_file()
    # One run_finished line per simulated hour would bury the report: none by default.
    assert "run_finished" not in done.stderr


def test_demo_refuses_a_used_directory(tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["demo", "--path", str(tmp_path), "--days", "1"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(main, ["demo", "--path", str(tmp_path), "--days", "1"])
    assert again.exit_code == 2


@pytest.mark.parametrize("days", ["0", "x"])
def test_demo_rejects_bad_days(tmp_path: Path, days: str) -> None:
    result = CliRunner().invoke(main, ["demo", "--path", str(tmp_path), "--days", days])
    assert result.exit_code == 2
    assert not (tmp_path / "metering.db").exists()


def test_every_hint_the_demo_prints_works_on_the_replayed_dates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = tmp_path / "demo"
    runner = CliRunner()
    env = {"METERING_CONFIG": "", "XDG_CONFIG_HOME": str(tmp_path / "config")}
    shown = runner.invoke(
        main, ["--log-format", "json", "demo", "--path", str(where), "--days", "1"], env=env
    )
    assert shown.exit_code == 0, shown.output
    hints = shown.stdout.split("Explore it", 1)[1].splitlines()[1:]
    export, *commands = [h.split("#")[0].strip() for h in hints]
    url = export.removeprefix("export METERING_DATABASE_URL=")
    assert url == f"sqlite:///{where}/metering.db"
    env["METERING_DATABASE_URL"] = url
    results = {}
    monkeypatch.chdir(tmp_path)  # report -o usage.html writes here
    for command in commands:
        args = command.split()[1:]
        assert command.startswith("metering ")
        results[args[0] + (" html" if "html" in args else "")] = runner.invoke(
            main, ["--log-format", "json", *args], env=env
        )
    for name, result in results.items():
        # check exits 1 only for the demo's deliberately bad events, not reviewed yet.
        assert result.exit_code == (1 if name == "check" else 0), (name, result.output)
    status = results["status"].stdout
    assert "(0 closed hours behind" in status and "health:        ok" in status
    check = results["check"].stdout
    assert check.startswith("ok       stale-running")
    assert [s.split()[0] for s in check.splitlines() if s.startswith("PROBLEM")] == ["PROBLEM"]
    assert "unreviewed-rejections" in check
    assert "<svg" in (tmp_path / "usage.html").read_text(encoding="utf-8")
