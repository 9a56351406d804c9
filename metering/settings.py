"""One frozen settings object, built from options, the environment and a TOML file.

Precedence: command-line option > environment variable > config file > default.
Passwords belong in the environment or the config file: `ps` shows arguments.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from metering.errors import ConfigError

ENV_DATABASE_URL = "METERING_DATABASE_URL"
ENV_CONFIG = "METERING_CONFIG"
ENV_LOCK_FILE = "METERING_LOCK_FILE"

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# What a config file may set; anything else is a typo that would silently fall back
# to a default (a misspelled database_url meant a new empty SQLite database).
_KINDS: dict[str, type] = {"database_url": str, "lock_file": str, "database_lock": bool}
_DURATION_KEYS = ("grace", "settle_lag")
CONFIG_KEYS = (*_KINDS, *_DURATION_KEYS)
SUPPORTED_DRIVERS = ("mysql+pymysql", "mariadb+pymysql", "sqlite", "sqlite+pysqlite")
DEFAULT_GRACE = timedelta(minutes=30)
DEFAULT_SETTLE_LAG = timedelta(minutes=10)


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "metering"


def default_database_url() -> str:
    return f"sqlite:///{data_dir() / 'metering.db'}"


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "metering" / "config.toml"


def default_lock_file(database_url: str) -> Path:
    """One lock file per database: runs against different databases never contend."""
    digest = hashlib.sha256(mask_url(database_url).encode()).hexdigest()[:12]
    name = f"metering-{digest}.lock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / name
    return Path(tempfile.gettempdir()) / f"metering-{os.getuid()}-{digest}.lock"


def parse_duration(value: object) -> timedelta:
    """'90s', '30m', '1h', '1d': the one rule for every duration, from an option or a file.

    A unit is required (a bare 30 was 30 seconds beside a default shown as 30m) and
    there is no sign: a negative grace bills hours that have not ended.
    """
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match:
        raise ConfigError(
            f"not a duration: {value!r} (a whole number and a unit s, m, h or d: 90s, 30m, 1h)"
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***; never fails."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


@dataclass(frozen=True)
class Settings:
    database_url: str
    lock_file: Path
    default_database: bool = False  # no setting named one: the file under data_dir()
    grace: timedelta = DEFAULT_GRACE
    settle_lag: timedelta = DEFAULT_SETTLE_LAG
    database_lock: bool = True
    config_path: Path | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def masked_url(self) -> str:
        return mask_url(self.database_url)


def _read_config(path: Path, *, explicit: bool) -> tuple[dict[str, Any], list[str]] | None:
    """The [metering] table of the file and warnings about it; None when an implicit
    default file cannot be read (a HOME that is not ours counts as no config)."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        if not explicit:
            return None
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    section = data.get("metering", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [metering] must be a table")
    unknown = [key for key in data if key != "metering"] if "metering" in data else []
    unknown += [key for key in section if key not in CONFIG_KEYS]
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown key {', '.join(map(repr, unknown))} "
            f"(known keys: {', '.join(CONFIG_KEYS)})"
        )
    values = _checked(path, section)
    warnings: list[str] = []
    url = values.get("database_url")
    if isinstance(url, str) and make_url_password(url):
        mode = path.stat().st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            warnings.append(
                f"config file {path} holds a database password and is readable by "
                f"group or others; run: chmod 600 {path}"
            )
    return values, warnings


def _checked(path: Path, section: Mapping[str, Any]) -> dict[str, Any]:
    """The file's values by the options' rules, durations parsed: all of them, also
    those an option overrides this time, so a bad file fails on every command."""
    values: dict[str, Any] = {}
    for key, value in section.items():
        try:
            if key in _DURATION_KEYS:
                values[key] = parse_duration(value)
            elif isinstance(value, _KINDS[key]):
                values[key] = value
            else:
                raise ConfigError(f"must be a {_KINDS[key].__name__}, not {value!r}")
        except ConfigError as exc:
            raise ConfigError(f"config file {path}: {key}: {exc}") from exc
    return values


def _first(option: timedelta | None, file: timedelta | None, default: timedelta) -> timedelta:
    # Not `or`: a zero duration is falsy and a valid setting.
    if option is not None:
        return option
    return file if file is not None else default


def check_database_url(url: str) -> None:
    """Refuse, as bad usage, what is no URL or names a database metering does not drive."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"not a database URL: {mask_url(url)}") from exc
    if parsed.drivername not in SUPPORTED_DRIVERS:
        raise ConfigError(
            f"unsupported database {mask_url(url)}: "
            "metering supports mysql+pymysql:// and sqlite:///"
        )


def make_url_password(url: str) -> bool:
    try:
        return bool(make_url(url).password)
    except (ArgumentError, ValueError):
        return False


def build_settings(
    *,
    database_url: str | None = None,
    config: str | None = None,
    lock_file: str | None = None,
    grace: timedelta | None = None,
    settle_lag: timedelta | None = None,
    database_lock: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Options come parsed (durations by parse_duration, through click); file values are
    checked here by the same rules."""
    env = os.environ if environ is None else environ
    explicit_config = config or env.get(ENV_CONFIG)
    candidate = Path(explicit_config) if explicit_config else default_config_path()
    found = _read_config(candidate, explicit=bool(explicit_config))
    file_values, warnings = found if found is not None else ({}, [])
    config_path = candidate if found is not None else None

    url = database_url or env.get(ENV_DATABASE_URL) or file_values.get("database_url")
    if url:
        check_database_url(url)
    lock = lock_file or env.get(ENV_LOCK_FILE) or file_values.get("lock_file")
    resolved_url = url or default_database_url()
    return Settings(
        database_url=resolved_url,
        lock_file=Path(lock) if lock else default_lock_file(resolved_url),
        default_database=not url,
        grace=_first(grace, file_values.get("grace"), DEFAULT_GRACE),
        settle_lag=_first(settle_lag, file_values.get("settle_lag"), DEFAULT_SETTLE_LAG),
        database_lock=database_lock and file_values.get("database_lock", True),
        config_path=config_path,
        warnings=tuple(warnings),
    )
