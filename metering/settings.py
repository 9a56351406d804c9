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

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


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


def parse_duration(text: str | int) -> timedelta:
    """'30m', '10m', '1h', '90s', '90' (seconds), '1d'."""
    if isinstance(text, int):
        return timedelta(seconds=text)
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"not a duration: {text!r} (examples: 30m, 10m, 1h, 90s)")
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
    grace: timedelta = timedelta(minutes=30)
    settle_lag: timedelta = timedelta(minutes=10)
    database_lock: bool = True
    config_path: Path | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def masked_url(self) -> str:
        return mask_url(self.database_url)


def _read_config(path: Path) -> tuple[dict[str, Any], list[str]]:
    warnings: list[str] = []
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    section = data.get("metering", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [metering] must be a table")
    url = section.get("database_url")
    if isinstance(url, str) and make_url_password(url):
        mode = path.stat().st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            warnings.append(
                f"config file {path} holds a database password and is readable by "
                f"group or others; run: chmod 600 {path}"
            )
    return section, warnings


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
    grace: str | None = None,
    settle_lag: str | None = None,
    database_lock: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    env = os.environ if environ is None else environ
    config_path: Path | None = None
    file_values: dict[str, Any] = {}
    warnings: list[str] = []
    explicit_config = config or env.get(ENV_CONFIG)
    if explicit_config:
        config_path = Path(explicit_config)
    elif default_config_path().is_file():
        config_path = default_config_path()
    if config_path is not None:
        file_values, warnings = _read_config(config_path)

    url = (
        database_url
        or env.get(ENV_DATABASE_URL)
        or file_values.get("database_url")
        or default_database_url()
    )
    if not isinstance(url, str):
        raise ConfigError("database_url must be a string")
    try:
        make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"not a database URL: {mask_url(url)}") from exc

    lock = lock_file or env.get(ENV_LOCK_FILE) or file_values.get("lock_file")
    return Settings(
        database_url=url,
        lock_file=Path(lock) if lock else default_lock_file(url),
        grace=parse_duration(grace or file_values.get("grace", "30m")),
        settle_lag=parse_duration(settle_lag or file_values.get("settle_lag", "10m")),
        database_lock=database_lock and bool(file_values.get("database_lock", True)),
        config_path=config_path,
        warnings=tuple(warnings),
    )
