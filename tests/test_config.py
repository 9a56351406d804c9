"""Settings from options, the environment and the config file: durations need a unit
and may not be negative, unknown keys and unsupported URLs are usage errors (exit 2),
and a config file is only read when it can be (an explicit one must be)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, func, select

from metering.cli import main
from metering.store import status as store_status
from metering.store.schema import usage_lines
from tests.support import insert_events, migrated, resource

NOW = "2016-12-12T13:30:00Z"
ROOT = Path(__file__).resolve().parent.parent
KNOWN = ("database_url", "lock_file", "grace", "settle_lag", "database_lock")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = migrated(database_url)
    insert_events(engine, [resource("c", "create", "2016-12-12T10:15:00Z", offering="small")])
    try:
        yield engine
    finally:
        engine.dispose()


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(
        main, ["--log-format", "json", *args], env=env, catch_exceptions=False
    )


def config_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "metering.toml"
    path.write_text(body)
    path.chmod(0o600)
    return path


def errors(result: Result) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line["level"] == "error"]


def nothing_billed(engine: Engine) -> bool:
    with engine.connect() as conn:
        lines = conn.execute(select(func.count()).select_from(usage_lines)).scalar_one()
        state = store_status.read_state(conn)
    return lines == 0 and (state is None or state.billed_until is None)


# -- durations ------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "grace = -7200",  # billed a future hour and moved billed_until past now
        "grace = 1800",  # no unit
        'grace = "30"',
        'grace = "-2h"',
        "grace = true",
        "settle_lag = -600",  # lost late commits
        'settle_lag = "600"',
    ],
)
def test_config_durations_need_a_unit_and_no_sign(
    engine: Engine, database_url: str, tmp_path: Path, isolated_env: dict[str, str], line: str
) -> None:
    config = config_file(tmp_path, f'[metering]\ndatabase_url = "{database_url}"\n{line}\n')
    result = invoke(isolated_env, "--config", str(config), "run", "--now", NOW)
    assert result.exit_code == 2, result.output
    (error,) = errors(result)
    assert line.split(" =")[0] in error["error"] and str(config) in error["error"]
    assert nothing_billed(engine)


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--now", NOW, "--grace", "30"],
        ["run", "--now", NOW, "--grace", "-30m"],
        ["run", "--now", NOW, "--settle-lag", "600"],
        ["status", "--now", NOW, "--grace", "30"],
        ["status", "--now", NOW, "--max-lag", "2"],
        ["run", "--now", NOW, "--wait", "-1"],
    ],
    ids=lambda a: " ".join(a[3:]),
)
def test_duration_options_need_a_unit_and_no_sign(
    engine: Engine, database_url: str, isolated_env: dict[str, str], args: list[str]
) -> None:
    result = invoke({**isolated_env, "METERING_DATABASE_URL": database_url}, *args)
    assert result.exit_code == 2, result.output
    assert nothing_billed(engine)


def test_config_durations_with_units_are_applied(
    engine: Engine, database_url: str, tmp_path: Path, isolated_env: dict[str, str]
) -> None:
    config = config_file(tmp_path, f'[metering]\ndatabase_url = "{database_url}"\ngrace = "45m"\n')
    result = invoke(
        isolated_env, "--config", str(config), "status", "--format", "json", "--now", NOW
    )
    assert json.loads(result.stdout)["grace_seconds"] == 45 * 60
    # An option beats the file.
    result = invoke(
        isolated_env, "--config", str(config), "status", "--format", "json", "--now", NOW,
        "--grace", "1h",
    )  # fmt: skip
    assert json.loads(result.stdout)["grace_seconds"] == 3600


# -- unknown keys -----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        '[metering]\ndatabse_url = "{url}"\n',
        'databse_url = "{url}"\n',
        'databse_url = "{url}"\n[metering]\ngrace = "30m"\n',
    ],
    ids=["in the section", "without a section", "beside the section"],
)
def test_an_unknown_config_key_is_an_error_naming_it_and_the_known_ones(
    database_url: str, tmp_path: Path, isolated_env: dict[str, str], body: str
) -> None:
    migrated(database_url).dispose()
    config = config_file(tmp_path, body.format(url=database_url))
    for command in (["status"], ["db", "upgrade"], ["run", "--now", NOW]):
        result = invoke(isolated_env, "--config", str(config), *command)
        assert result.exit_code == 2, (command, result.output)
        (error,) = errors(result)
        assert "databse_url" in error["error"], error
        assert all(key in error["error"] for key in KNOWN), error
    # Nothing fell back to the default SQLite file.
    assert not (tmp_path / "data").exists()


# -- database URLs ----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "sqlit:///x.db",
        "postgresql://metering:Pw-7q!Zr9x@db.example.com/metering",
        "mysql://metering:Pw-7q!Zr9x@db.example.com/metering",
    ],
)
@pytest.mark.parametrize("how", ["option", "env", "config"])
def test_an_unsupported_database_url_exits_2_naming_the_supported_ones(
    tmp_path: Path, isolated_env: dict[str, str], url: str, how: str
) -> None:
    config = config_file(tmp_path, f'[metering]\ndatabase_url = "{url}"\n')
    given: dict[str, tuple[list[str], dict[str, str]]] = {
        "option": (["--database-url", url], {}),
        "env": ([], {"METERING_DATABASE_URL": url}),
        "config": (["--config", str(config)], {}),
    }
    args, extra = given[how]
    for command in (["status"], ["db", "upgrade"]):
        result = invoke({**isolated_env, **extra}, *args, *command)
        assert result.exit_code == 2, result.output
        (error,) = errors(result)
        assert error["error"].startswith("unsupported database "), error
        assert "metering supports mysql+pymysql:// and sqlite:///" in error["error"]
        assert "Pw-7q!Zr9x" not in result.output


# -- unreadable config files ------------------------------------------------------


def test_an_explicit_config_that_cannot_be_read_is_an_error_naming_it(
    tmp_path: Path, isolated_env: dict[str, str]
) -> None:
    directory = tmp_path / "a-directory.toml"
    directory.mkdir()
    for args, extra in (
        (["--config", str(directory)], {}),
        ([], {"METERING_CONFIG": str(directory)}),
    ):
        result = invoke({**isolated_env, **extra}, *args, "status")
        assert result.exit_code == 2, result.output
        (error,) = errors(result)
        assert f"config file {directory}" in error["error"], error


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def _open_to_others(path: Path) -> bool:
    return all(p.stat().st_mode & 0o005 == 0o005 for p in (path, *path.parents))


def _python_for_nobody() -> list[str] | None:
    """This interpreter, or the system's of the same version, with metering and its
    dependencies importable, if nobody may run and read them (pyenv under /root is not)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    packages = Path(sysconfig.get_paths()["purelib"])
    if not _open_to_others(packages) or not _open_to_others(ROOT):
        return None
    for candidate in (Path(os.path.realpath(sys.executable)), Path("/usr/bin") / version):
        if candidate.is_file() and _open_to_others(candidate):
            return [
                str(candidate),
                "-c",
                f"import sys; sys.path[:0] = {[str(ROOT), str(packages)]!r}; "
                "from metering.cli import main; main(prog_name='metering')",
            ]
    return None


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to run as nobody"
)
def test_an_unreadable_default_config_location_counts_as_absent(tmp_path: Path) -> None:
    """As nobody with HOME=/root (cron's HOME for a unit with User=nobody, say): the
    default ~/.config/metering/config.toml cannot even be looked at, so there is none;
    a config file named explicitly there is an error naming it."""
    if Path("/root").stat().st_mode & 0o001:
        pytest.skip("/root is searchable by others here")
    python = _python_for_nobody()
    if python is None:
        pytest.skip("no Python interpreter and packages that nobody may read")
    shared = Path(tempfile.mkdtemp(prefix="metering-nobody-"))
    try:
        shared.chmod(0o777)
        database = shared / "m.db"
        migrated(f"sqlite:///{database}").dispose()
        for path in shared.iterdir():
            path.chmod(0o666)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": "/root",
            "METERING_DATABASE_URL": f"sqlite:///{database}",
            "METERING_LOCK_FILE": str(shared / "metering.lock"),
        }
        metering = [*python, "--log-format", "json"]

        def as_nobody(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*metering, *args],
                env={**env, **extra},
                cwd=shared,
                preexec_fn=_as_nobody,
                capture_output=True,
                text=True,
                timeout=120,
            )

        status = as_nobody("status", "--now", NOW)
        assert status.returncode == 0, status.stderr
        assert "Permission denied" not in status.stderr
        assert as_nobody("run", "--now", NOW).returncode == 0

        named = "/root/.config/metering/config.toml"
        for result in (
            as_nobody("--config", named, "status"),
            as_nobody("status", METERING_CONFIG=named),
        ):
            assert result.returncode == 2, result.stderr
            (error,) = [json.loads(line) for line in result.stderr.splitlines()]
            assert f"config file {named}" in error["error"], error
    finally:
        shutil.rmtree(shared)
