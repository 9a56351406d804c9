"""The shipped systemd units: they parse, the service's sandbox rates 2.5 or better in
`systemd-analyze security`, and what the service runs and writes matches the docs.

systemd-analyze runs offline on the unit files (no systemd as PID 1 is needed);
scripts/test.sh installs it, so CI never skips these.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "contrib" / "metering.service"
TIMER = ROOT / "contrib" / "metering.timer"
OPERATIONS = ROOT / "docs" / "operations.md"
MAX_EXPOSURE = 2.5
SYSTEM_UNITS = Path("/usr/lib/systemd/system")

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None and not os.environ.get("CI"),
    reason="systemd-analyze not installed (Debian: apt-get install systemd; "
    "scripts/test.sh does it)",
)


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None, "CI must have systemd-analyze: scripts/test.sh installs it"
    return subprocess.run(
        [ANALYZE, "--no-pager", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "SYSTEMD_COLORS": "0"},
        timeout=120,
    )


def directives(text: str) -> list[tuple[str, str]]:
    """(key, value) of every assignment, in order; repeated keys stay repeated."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.append((key, value))
    return out


def values(unit: Path, key: str) -> list[str]:
    return [v for k, v in directives(unit.read_text()) if k == key]


def environment(unit: Path) -> dict[str, str]:
    return dict(v.split("=", 1) for v in values(unit, "Environment"))


def exec_start() -> list[str]:
    (line,) = values(SERVICE, "ExecStart")
    return line.split()


@needs_analyze
def test_service_exposure_is_at_most_2_5(tmp_path: Path) -> None:
    result = analyze("security", "--offline=true", str(SERVICE), cwd=tmp_path)
    out = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for metering\.service: (\d+\.\d+) (\w+)", out)
    assert match, out
    assert float(match.group(1)) <= MAX_EXPOSURE, out


@needs_analyze
def test_units_parse_offline(tmp_path: Path) -> None:
    """`systemd-analyze verify` in a throw-away root: the system's own units (for the
    targets the timer and service name), the two units, and an executable where
    ExecStart expects the installed metering. Unknown keys and bad values are only
    warnings to systemd (exit 0), so any output is a failure here."""
    if not SYSTEM_UNITS.is_dir():
        pytest.skip(f"{SYSTEM_UNITS} missing: systemd is not installed")
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in (SERVICE, TIMER):
        shutil.copy(unit, units / unit.name)
    program = root / exec_start()[0].lstrip("/")
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    result = analyze(
        "verify",
        f"--root={root}",
        "--man=no",
        str(units / SERVICE.name),
        str(units / TIMER.name),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_service_runs_the_documented_install() -> None:
    """README, docs/operations.md and crontab.example install and run the same binary."""
    program = exec_start()[0]
    assert program == "/opt/metering/.venv/bin/metering"
    venv = program.removesuffix("/bin/metering")
    assert f"-m venv {venv} " in (ROOT / "README.md").read_text()
    assert f"-m venv {venv} " in OPERATIONS.read_text()
    assert f" {program} run " in (ROOT / "crontab.example").read_text()


def test_service_writes_only_where_it_may() -> None:
    """The lock, the metrics file and the SQLite data are each in a place the sandbox
    leaves writable; every other path is read-only under ProtectSystem=strict."""
    env = environment(SERVICE)
    assert values(SERVICE, "ProtectSystem") == ["strict"]
    (runtime,) = values(SERVICE, "RuntimeDirectory")
    assert Path(env["METERING_LOCK_FILE"]).parent == Path("/run") / runtime
    (state,) = values(SERVICE, "StateDirectory")
    # settings.data_dir(): $XDG_DATA_HOME/metering holds the default SQLite database.
    assert Path(env["XDG_DATA_HOME"]) / "metering" == Path("/var/lib") / state
    args = exec_start()
    metrics = Path(args[args.index("--metrics-file") + 1])
    assert values(SERVICE, "ReadWritePaths") == [str(metrics.parent)]
    # The config file is read from /etc: ProtectHome hides the default ~/.config.
    assert values(SERVICE, "ProtectHome") == ["yes"]
    assert env["METERING_CONFIG"].startswith("/etc/")


def test_every_sandbox_line_is_explained_in_the_docs() -> None:
    text = OPERATIONS.read_text()
    section = text[text.index("### systemd sandbox") :]
    section = section[: section.index("\n## ")]
    sandbox = SERVICE.read_text().split("# Sandbox:", 1)[1].split("\n", 1)[1]
    lines = directives(sandbox)
    lines += [
        (k, v)
        for k in ("User", "Group", "RuntimeDirectory", "StateDirectory")
        for v in values(SERVICE, k)
    ]
    assert len(lines) > 25
    unexplained = [f"{k}={v}" for k, v in lines if f"`{k}={v}`" not in section]
    assert unexplained == []
