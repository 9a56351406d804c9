"""`metering ingest` fed hostile input: arbitrary bytes, truncated files, huge lines,
wrong types. Every bad line gets its own error with its line number, a summary is
printed, nothing crashes (no traceback) and no row is stored half-written or altered.

The well-formed cases live in tests/test_ingest*.py; these are only the hostile ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering.ingest import MAX_LINE_BYTES, LineError, decode_line, ingest, parse_line
from metering.store.schema import usage_events
from tests.support import migrated

GOOD = {
    "event_id": "e",
    "kind": "resource",
    "entity": "vm",
    "action": "create",
    "occurred_at": "2016-12-12T15:48:32.000Z",
    "account": "geneva-jug",
    "resource_id": "7a070a3d",
    "offering": "medium",
    "attributes": {"template": "ubuntu-16.04"},
}


def good_line(event_id: str, **changes: Any) -> bytes:
    return (json.dumps({**GOOD, "event_id": event_id, **changes}) + "\n").encode()


def stored(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(usage_events).order_by(usage_events.c.id)).mappings()
        return {row["event_id"]: dict(row) for row in rows}


def expected_row(raw: bytes) -> dict[str, object] | None:
    """What ingest must store for one line (None: it must report it as malformed)."""
    try:
        return parse_line(decode_line(raw))
    except LineError:
        return None


# -- in process, fuzzed ------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def hostile_line(draw: st.DrawFn, index: int) -> bytes:
    base = good_line(f"h-{index}")
    how = draw(st.sampled_from(["good", "bytes", "truncate", "retype", "splice", "blank"]))
    if how == "good":
        return base
    if how == "bytes":
        return draw(st.binary(max_size=200)).replace(b"\n", b" ") + b"\n"
    if how == "truncate":
        return base[: draw(st.integers(0, len(base) - 1))] + b"\n"
    if how == "retype":
        column = draw(st.sampled_from([*GOOD, "quantity", "period_start", "unit"]))
        data = {**GOOD, "event_id": f"h-{index}", column: draw(json_values)}
        try:
            return (json.dumps(data) + "\n").encode("utf-8", "surrogatepass")
        except ValueError:  # NaN and infinities are not JSON
            return (json.dumps(data, allow_nan=True) + "\n").encode("utf-8", "surrogatepass")
    if how == "splice":
        cut = draw(st.integers(0, len(base) - 1))
        noise = draw(st.binary(min_size=1, max_size=20)).replace(b"\n", b" ")
        return base[:cut] + noise + base[cut:]
    return b"   \r\n"


@st.composite
def hostile_files(draw: st.DrawFn) -> list[bytes]:
    count = draw(st.integers(1, 12))
    lines = [draw(hostile_line(i)) for i in range(count)]
    if draw(st.booleans()):
        lines[-1] = lines[-1].rstrip(b"\n")  # a file cut off without its final newline
    return lines


def check_ingest(engine: sa.Engine, lines: list[bytes], batch_size: int) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(usage_events))
    errors: list[tuple[int, str]] = []
    summary = ingest(
        engine, lines, batch_size=batch_size, on_error=lambda n, r: errors.append((n, r))
    )
    wanted: dict[str, dict[str, object]] = {}
    bad: list[int] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        row = expected_row(raw)
        if row is None:
            bad.append(number)
        else:
            wanted.setdefault(str(row["event_id"]), row)
    assert [n for n, _ in errors] == bad, "one error per bad line, with its number"
    assert all(reason and len(reason) < 200 for _, reason in errors)
    assert summary.malformed == len(bad)
    assert summary.inserted == len(wanted)
    assert summary.read == summary.inserted + summary.duplicates + summary.malformed
    rows = stored(engine)
    assert list(rows) == list(wanted)
    for event_id, row in wanted.items():
        assert {k: rows[event_id][k] for k in row} == row, "stored exactly as parsed"


FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(lines=hostile_files(), batch_size=st.sampled_from([1, 3, 2000]))
def test_fuzzed_input_sqlite(sqlite_url: str, lines: list[bytes], batch_size: int) -> None:
    check_ingest(migrated(sqlite_url), lines, batch_size)


@pytest.mark.mariadb
@FUZZ
@given(lines=hostile_files(), batch_size=st.sampled_from([1, 3, 2000]))
def test_fuzzed_input_mariadb(
    mariadb_engine: sa.Engine, lines: list[bytes], batch_size: int
) -> None:
    check_ingest(mariadb_engine, lines, batch_size)


@pytest.fixture
def mariadb_engine(mariadb_url: str) -> sa.Engine:
    return migrated(mariadb_url)


# -- as a subprocess ---------------------------------------------------------------


def ingest_subprocess(
    url: str, tmp_path: Path, *args: str, log_format: str = "json", stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {
        **os.environ,
        "METERING_DATABASE_URL": url,
        "METERING_CONFIG": "",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    return subprocess.run(
        [sys.executable, "-m", "metering", "--log-format", log_format, "ingest", *args],
        env=env,
        input=stdin,
        capture_output=True,
        timeout=120,
    )


def json_logs(proc: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [json.loads(text) for text in proc.stderr.decode().splitlines()]


def test_arbitrary_bytes(sqlite_url: str, tmp_path: Path) -> None:
    db = sqlite_url
    migrated(db).dispose()
    noise = os.urandom(256 * 1024)
    path = tmp_path / "noise.bin"
    path.write_bytes(noise)
    proc = ingest_subprocess(db, tmp_path, str(path))
    assert proc.returncode == 1
    assert b"Traceback" not in proc.stderr
    entries = json_logs(proc)
    bad = [e for e in entries if e["event"] == "malformed_line"]
    lines = [n for n, raw in enumerate(noise.split(b"\n"), start=1) if raw.strip()]
    assert [e["line"] for e in bad] == lines
    assert entries[-1]["event"] == "ingest_summary"
    assert entries[-1]["malformed"] == len(lines) and entries[-1]["inserted"] == 0
    n = len(lines)
    assert proc.stdout.decode() == f"read {n}, inserted 0, duplicates 0, malformed {n}\n"
    assert stored(migrated(db)) == {}


@pytest.mark.parametrize(
    ("backend", "log_format"),
    [("sqlite", "json"), pytest.param("mariadb", "console", marks=pytest.mark.mariadb)],
)
def test_truncated_file_huge_line_wrong_types(
    backend: str, log_format: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db = request.getfixturevalue(f"{backend}_url")
    migrated(db).dispose()
    content = b"".join(
        [
            good_line("ok-1"),
            b"x" * (MAX_LINE_BYTES + 10) + b"\n",  # 2: huge line
            good_line("q", quantity="10"),  # 3: wrong type
            good_line("t", occurred_at=1481557712),  # 4
            good_line("a", account=None),  # 5
            good_line("l", attributes=[1, 2]),  # 6
            b"[1, 2, 3]\n",  # 7
            good_line("ok-2"),
            good_line("cut")[:40],  # 9: the file ends in the middle of a line
        ]
    )
    path = tmp_path / "events.jsonl"
    path.write_bytes(content)
    proc = ingest_subprocess(db, tmp_path, "--batch-size", "1", str(path), log_format=log_format)
    assert proc.returncode == 1
    assert b"Traceback" not in proc.stderr
    assert proc.stdout.decode() == "read 9, inserted 2, duplicates 0, malformed 7\n"
    if log_format == "json":
        bad = {e["line"]: e["reason"] for e in json_logs(proc) if e["event"] == "malformed_line"}
        assert list(bad) == [2, 3, 4, 5, 6, 7, 9]
        assert bad[2].startswith("line is ")
        assert bad[3] == "quantity must be an integer or null, got string"
        assert bad[4].startswith("occurred_at must be an ISO 8601 string")
        assert bad[5] == "missing required account"
        assert bad[6] == "attributes must be an object or null, got array"
        assert bad[7] == "not a JSON object (got array)"
        assert bad[9].startswith("not valid JSON")
    else:
        text = proc.stderr.decode()
        assert text.count("malformed_line") == 7
        assert "ingest_summary" in text
    assert len(proc.stderr) < 10_000, "errors quote the input sparingly"
    assert list(stored(migrated(db))) == ["ok-1", "ok-2"]


def test_hostile_stdin_then_the_same_again(sqlite_url: str, tmp_path: Path) -> None:
    db = sqlite_url
    migrated(db).dispose()
    data = good_line("s-1") + b"\xff\xfe{\x00}\n" + good_line("s-2") + b'{"event_id": '
    first = ingest_subprocess(db, tmp_path, "-", stdin=data)
    second = ingest_subprocess(db, tmp_path, "-", stdin=data)
    assert (first.returncode, second.returncode) == (1, 1)
    assert first.stdout.decode() == "read 4, inserted 2, duplicates 0, malformed 2\n"
    assert second.stdout.decode() == "read 4, inserted 0, duplicates 2, malformed 2\n"
    assert b"Traceback" not in first.stderr + second.stderr
    assert list(stored(migrated(db))) == ["s-1", "s-2"]
