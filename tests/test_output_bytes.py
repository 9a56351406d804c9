"""Output bytes, through the real executable: machine-readable output (CSV, JSON) is
the same wherever it goes (a pipe, a terminal, -o FILE); tables never put a stored
control character on the terminal raw."""

from __future__ import annotations

import os
import pty
import subprocess
import tty
from pathlib import Path

import pytest

from tests.support import insert_events, migrated, read_terminal, resource, run

METERING = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "metering")
EVIL = "\x1b[31mevil\x07\r\n\u202eoops"
EVIL_SHOWN = b"\\x1b[31mevil\\x07\\r\\n\\u202eoops"


@pytest.fixture
def evil_db(database_url: str, tmp_path: Path) -> str:
    engine = migrated(database_url)
    insert_events(
        engine,
        [
            resource("e1", "create", "2016-12-12T14:15:00Z", account=EVIL),
            resource("e2", "create", "2016-12-12T14:30:00Z", resource_id="plain"),
        ],
    )
    run(engine, "2016-12-12T16:00:00Z", tmp_path)
    # Unbilled yet, for the dry run.
    insert_events(engine, [resource("e3", "start", "2016-12-12T16:10:00Z", account=EVIL)])
    return database_url


def environ(url: str, env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **env, "METERING_DATABASE_URL": url}


def piped(url: str, env: dict[str, str], *args: str) -> bytes:
    done = subprocess.run(
        [METERING, *args], env=environ(url, env), capture_output=True, timeout=60, check=False
    )
    assert done.returncode in (0, 1), done.stderr
    return done.stdout


def on_terminal(url: str, env: dict[str, str], *args: str) -> bytes:
    """stdout is a terminal (raw mode: the bytes written, no newline translation)."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    with subprocess.Popen(
        [METERING, *args],
        env=environ(url, env),
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.DEVNULL,
    ) as proc:
        os.close(slave)
        output = read_terminal(master)
        proc.wait(timeout=60)
    return output


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_report_bytes_are_the_same_piped_on_a_terminal_and_in_a_file(
    evil_db: str, env: dict[str, str], tmp_path: Path, fmt: str
) -> None:
    args = ("report", "--group", "resource", "--by", "hour", "--format", fmt)
    out = tmp_path / f"report.{fmt}"
    assert piped(evil_db, env, *args, "-o", str(out)) == b""
    written = out.read_bytes()
    assert piped(evil_db, env, *args) == written
    assert on_terminal(evil_db, env, *args) == written
    if fmt == "csv":
        assert f'"{EVIL}"'.encode() in written  # quoted, every byte kept
    else:
        assert b"\\u001b[31mevil\\u0007\\r\\n\xe2\x80\xaeoops" in written


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--now", "2016-12-12T18:00Z", "--dry-run", "--format", "csv"),
        ("run", "--now", "2016-12-12T18:00Z", "--dry-run", "--format", "json"),
        ("check", "--now", "2016-12-12T18:00Z", "--format", "json"),
        ("rejected", "--format", "json"),
        ("runs", "--format", "json"),
    ],
)
def test_machine_output_is_the_same_piped_and_on_a_terminal(
    evil_db: str, env: dict[str, str], args: tuple[str, ...]
) -> None:
    assert piped(evil_db, env, *args) == on_terminal(evil_db, env, *args)


@pytest.mark.parametrize(
    "args",
    [
        ("report", "--group", "resource"),
        ("run", "--now", "2016-12-12T18:00Z", "--dry-run"),
        ("check", "--now", "2016-12-20T00:00Z", "--stale-days", "1"),
    ],
)
def test_tables_show_control_characters_escaped(
    evil_db: str, env: dict[str, str], args: tuple[str, ...]
) -> None:
    shown = on_terminal(evil_db, env, *args)
    assert EVIL_SHOWN in shown
    assert not {b for b in shown if b < 0x20 and b != 0x0A}
    assert "\u202e".encode() not in shown
    assert piped(evil_db, env, *args) == shown


def test_reconcile_output(evil_db: str, env: dict[str, str], tmp_path: Path) -> None:
    inventory = tmp_path / "running.jsonl"
    inventory.write_text(
        '{"account": "\\u001b[31mevil\\u0007\\r\\n\\u202eoops", "entity": "vm", '
        '"resource_id": "vm-9"}\n'
    )
    args = ("reconcile", "--inventory", str(inventory), "--at", "2016-12-12T17:00Z", "--dry-run")
    table = on_terminal(evil_db, env, *args)
    assert EVIL_SHOWN in table and b"\x1b" not in table
    as_json = (*args, "--format", "json")
    assert piped(evil_db, env, *as_json) == on_terminal(evil_db, env, *as_json)
