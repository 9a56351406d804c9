"""Options shared by several commands, defined once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click

from metering.errors import ConfigError
from metering.settings import parse_duration
from metering.timeutil import parse_time

F = TypeVar("F", bound=Callable[..., Any])


class TimeParam(click.ParamType):  # type: ignore[type-arg]
    """An ISO 8601 instant; without an offset it is UTC."""

    name = "TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time (e.g. 2016-12-12T16:00:00Z)", param, ctx)


TIME = TimeParam()


class DurationParam(click.ParamType):  # type: ignore[type-arg]
    """A duration with its unit, by the same rule as the config file's (parse_duration)."""

    name = "DURATION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationParam()


def database_options(func: F) -> F:
    """--database-url and --config; accepted on the group and on every command."""
    func = click.option(
        "--config",
        "config",
        metavar="PATH",
        default=None,
        help=(
            "TOML config file (env METERING_CONFIG; "
            "default ~/.config/metering/config.toml if present)."
        ),
    )(func)
    func = click.option(
        "--database-url",
        "database_url",
        metavar="URL",
        default=None,
        show_default=False,
        help=(
            "SQLAlchemy URL, e.g. mysql+pymysql://metering@db/metering (env "
            "METERING_DATABASE_URL; default: SQLite under ~/.local/share/metering). "
            "Prefer the environment or the config file for passwords: ps shows arguments."
        ),
    )(func)
    return func


def format_option(*choices: str, default: str = "table") -> Callable[[F], F]:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=default,
        show_default=True,
        help="Output format.",
    )


def now_option(func: F) -> F:
    return click.option(
        "--now",
        type=TIME,
        default=None,
        help="The clock, for replays and tests (default: the real UTC time).",
    )(func)


def lock_options(func: F) -> F:
    """--lock-file, --wait and --no-database-lock: for every command that writes billing state."""
    func = click.option(
        "--no-database-lock",
        is_flag=True,
        help="Skip GET_LOCK on MySQL/MariaDB (the commit fence still stops a second writer).",
    )(func)
    func = click.option(
        "--wait",
        # A negative timeout makes GET_LOCK wait forever.
        type=click.FloatRange(min=0),
        default=0.0,
        show_default=True,
        metavar="SECONDS",
        help="Wait this long for a lock held by another run before exiting 75.",
    )(func)
    func = click.option(
        "--lock-file", default=None, metavar="PATH", help="Lock file (env METERING_LOCK_FILE)."
    )(func)
    return func
