"""`metering ingest` on the command line: summary, exit codes, stdin, logs, progress bar."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from metering import migrate
from metering.cli import main
from metering.db import make_engine
from metering.store.schema import usage_events

EVENT = {
    "event_id": "e-1",
    "kind": "resource",
    "entity": "vm",
    "action": "create",
    "occurred_at": "2016-12-12T15:48:32.000Z",
    "account": "geneva-jug",
    "resource_id": "7a070a3d-66ff-4658-ab08-fe3cecd7c70f",
    "offering": "medium",
    "attributes": {"template": "ubuntu-16.04", "source": "cloudstack", "version": 1},
}


def event_line(**changes: Any) -> str:
    return json.dumps({**EVENT, **changes}) + "\n"


@pytest.fixture
def db(database_url: str) -> Iterator[str]:
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    engine.dispose()
    yield database_url


def event_ids(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(usage_events.c.event_id).order_by(usage_events.c.id)
                ).scalars()
            )
    finally:
        engine.dispose()


def invoke(url: str, env: dict[str, str], *args: str, input: bytes | None = None) -> Result:
    runner = CliRunner()
    return runner.invoke(
        main,
        ["--log-format", "json", "ingest", *args],
        input=input,
        env={**env, "METERING_DATABASE_URL": url},
        catch_exceptions=False,
    )


def logs(result: Result) -> list[dict[str, Any]]:
    return [json.loads(text) for text in result.stderr.splitlines() if text.strip()]


def test_all_valid_exits_0(db: str, env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(event_line() + "\n" + event_line(event_id="e-2") + event_line())
    result = invoke(db, env, str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "read 3, inserted 2, duplicates 1, malformed 0\n"
    summary = [entry for entry in logs(result) if entry["event"] == "ingest_summary"]
    assert len(summary) == 1
    assert {k: summary[0][k] for k in ("read", "inserted", "duplicates", "malformed")} == {
        "read": 3,
        "inserted": 2,
        "duplicates": 1,
        "malformed": 0,
    }
    assert summary[0]["level"] == "info"
    assert event_ids(db) == ["e-1", "e-2"]


def test_malformed_lines_exit_1_valid_ones_stored(
    db: str, env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b"not json\n"
        + event_line().encode()
        + b"\n"
        + event_line(event_id="e-2", account=None).encode()
        + event_line(event_id="e-3").encode()
    )
    result = invoke(db, env, "--batch-size", "1", str(path))
    assert result.exit_code == 1
    assert result.stdout == "read 4, inserted 2, duplicates 0, malformed 2\n"
    warnings = [entry for entry in logs(result) if entry["event"] == "malformed_line"]
    assert [(w["line"], w["level"]) for w in warnings] == [(1, "warning"), (4, "warning")]
    assert warnings[1]["reason"] == "missing required account"
    assert event_ids(db) == ["e-1", "e-3"]


def test_stdin(db: str, env: dict[str, str]) -> None:
    data = (event_line() + event_line(event_id="e-2")).encode()
    result = invoke(db, env, "-", input=data)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "read 2, inserted 2, duplicates 0, malformed 0\n"
    again = invoke(db, env, "-", input=data + b"\xff\n")
    assert again.exit_code == 1
    assert again.stdout == "read 3, inserted 0, duplicates 2, malformed 1\n"
    assert event_ids(db) == ["e-1", "e-2"]


def test_refuses_schema_not_at_head(sqlite_url: str, env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(event_line())
    result = invoke(sqlite_url, env, str(path))
    assert result.exit_code == 1
    assert result.stdout == ""
    failed = [entry for entry in logs(result) if entry["event"] == "failed"]
    assert len(failed) == 1
    assert "metering db upgrade" in failed[0]["error"]


def test_usage_errors_exit_2(sqlite_url: str, env: dict[str, str], tmp_path: Path) -> None:
    assert invoke(sqlite_url, env, str(tmp_path / "missing.jsonl")).exit_code == 2
    assert invoke(sqlite_url, env, "--batch-size", "0", "-", input=b"").exit_code == 2
    assert invoke(sqlite_url, env).exit_code == 2


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(main, ["ingest", "--help"])
    assert result.exit_code == 0
    assert "Example:\n    metering ingest events.jsonl" in result.output
    assert "--batch-size" in result.output


def run_subprocess(url: str, env: dict[str, str], *args: str, **kwargs: Any) -> Any:
    full_env = {**os.environ, **env, "METERING_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "metering", "ingest", *args],
        env=full_env,
        capture_output=True,
        timeout=120,
        **kwargs,
    )


def test_subprocess(db: str, env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(event_line() + "{bad\n" + event_line(event_id="e-2"))
    proc = run_subprocess(db, env, str(path))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.decode() == "read 3, inserted 2, duplicates 0, malformed 1\n"
    # stderr is not a terminal: JSON lines only, no progress bar in them
    entries = [json.loads(text) for text in proc.stderr.decode().splitlines()]
    assert [e["event"] for e in entries] == ["malformed_line", "ingest_summary"]
    assert entries[0]["line"] == 2
    proc = run_subprocess(db, env, "-", input=path.read_bytes())
    assert proc.returncode == 1
    assert proc.stdout.decode() == "read 3, inserted 0, duplicates 2, malformed 1\n"
    assert event_ids(db) == ["e-1", "e-2"]


def _read_pty(fd: int, proc: subprocess.Popen[bytes]) -> bytes:
    out = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out


def test_progress_bar_on_a_terminal_only(
    sqlite_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    engine = make_engine(sqlite_url)
    migrate.upgrade(engine)
    engine.dispose()
    path = tmp_path / "big.jsonl"
    with path.open("w") as handle:
        for i in range(6000):
            handle.write(event_line(event_id=f"e-{i}", resource_id="r" * 60))
    assert path.stat().st_size > 1024 * 1024

    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "metering", "ingest", "--batch-size", "500", str(path)],
            env={**os.environ, **env, "METERING_DATABASE_URL": sqlite_url},
            stdout=subprocess.PIPE,
            stderr=slave,
        )
        os.close(slave)
        terminal = _read_pty(master, proc)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert stdout.decode() == "read 6000, inserted 6000, duplicates 0, malformed 0\n"
    assert b"ingest" in terminal and b"100%" in terminal
    assert b"ingest_summary" in terminal  # console log, on the terminal too

    # the same with --log-format json on a terminal: no bar mixed into the JSON
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "metering", "--log-format", "json", "ingest", str(path)],
            env={**os.environ, **env, "METERING_DATABASE_URL": sqlite_url},
            stdout=subprocess.PIPE,
            stderr=slave,
        )
        os.close(slave)
        terminal = _read_pty(master, proc)
        proc.communicate(timeout=120)
    finally:
        os.close(master)
    assert proc.returncode == 0
    for text in terminal.decode().splitlines():
        json.loads(text)


def test_events_doc_examples_behave_as_documented(sqlite_url: str, tmp_path: Path) -> None:
    """docs/events.md: its examples are stored, refused by ingest, or rejected by the
    run exactly as it says; ingest --help points to it."""
    import re

    from click.testing import CliRunner

    from metering.cli import main
    from tests.support import migrated, run

    doc = (Path(__file__).resolve().parents[1] / "docs" / "events.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", doc, re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    assert len(lines) == 6
    events = tmp_path / "examples.jsonl"
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    engine = migrated(sqlite_url)
    runner = CliRunner()
    base = ["--log-format", "json", "--database-url", sqlite_url]
    loaded = runner.invoke(main, [*base, "ingest", str(events)], env={"METERING_CONFIG": ""})
    assert loaded.exit_code == 1 and "inserted 5" in loaded.stdout
    logged = [json.loads(s) for s in loaded.stderr.splitlines()]
    [malformed] = [e for e in logged if e["event"] == "malformed_line"]
    assert (malformed["line"], malformed["reason"]) == (
        5,
        "quantity must be an integer or null, got number",
    )
    run(engine, "2016-12-12T19:00:00Z", tmp_path)
    rejected = runner.invoke(main, [*base, "rejected", "--format", "json"])
    assert [
        (r["event_id"], r["reason"]) for r in map(json.loads, rejected.stdout.splitlines())
    ] == [("m003", "period_end before period_start")]
    assert "docs/events.md" in runner.invoke(main, ["ingest", "--help"]).stdout


def test_install_paths_agree() -> None:
    """README, crontab.example, contrib/ and operations.md call the same executable."""
    import re

    root = Path(__file__).resolve().parents[1]
    texts = {
        name: (root / name).read_text(encoding="utf-8")
        for name in (
            "README.md",
            "crontab.example",
            "contrib/metering.service",
            "docs/operations.md",
        )
    }
    for name, text in texts.items():
        paths = set(re.findall(r"(/\S*/bin/metering)\b", text))
        assert paths == {"/opt/metering/.venv/bin/metering"}, (name, paths)
    assert "python3.11 -m venv /opt/metering/.venv" in texts["README.md"]
