"""Options shared by several commands, defined once."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click

from metering.errors import ConfigError
from metering.settings import DEFAULT_GRACE, DEFAULT_SETTLE_LAG, parse_duration
from metering.store.reports import DEFAULT_GROUP, GROUPS, PERIODS, WrittenAfter
from metering.timeutil import iso, parse_time
from metering.units import SI, UNIT_SYSTEMS

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


class WrittenAfterParam(click.ParamType):  # type: ignore[type-arg]
    """A run id, or an ISO 8601 instant (run ids never parse as one)."""

    name = "RUN_ID|TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> WrittenAfter:
        if isinstance(value, WrittenAfter):
            return value
        text = str(value).strip()
        if not text:
            self.fail("give a run id (metering runs lists them) or a time", param, ctx)
        try:
            return WrittenAfter(time=parse_time(text))
        except ValueError:
            return WrittenAfter(run_id=text)


WRITTEN_AFTER = WrittenAfterParam()


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


def format_option(
    *choices: str, default: str = "table", help: str = "Output format."
) -> Callable[[F], F]:
    """--format: always the output format."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=default,
        show_default=True,
        help=help,
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


def _duration_text(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for size, suffix in ((86_400, "d"), (3600, "h"), (60, "m")):
        if seconds % size == 0:
            return f"{seconds // size}{suffix}"
    return f"{seconds}s"


def grace_option(help: str) -> Callable[[F], F]:
    return click.option(
        "--grace",
        type=DURATION,
        default=None,
        help=f"{help}, e.g. 30m, 1h [{_duration_text(DEFAULT_GRACE)}].",
    )


def settle_lag_option(func: F) -> F:
    return click.option(
        "--settle-lag",
        type=DURATION,
        default=None,
        help="How long a late-committing insert may lag and still be billed, e.g. 10m "
        f"[{_duration_text(DEFAULT_SETTLE_LAG)}].",
    )(func)


def dry_run_option(help: str) -> Callable[[F], F]:
    return click.option("--dry-run", is_flag=True, help=help)


def limit_option(default: int, help: str, *, minimum: int = 1) -> Callable[[F], F]:
    return click.option(
        "--limit",
        type=click.IntRange(minimum, 1_000_000),
        default=default,
        show_default=True,
        help=help,
    )


def output_option(func: F) -> F:
    """--output/-o: always a file, in every command."""
    return click.option(
        "--output",
        "-o",
        type=click.Path(dir_okay=False, allow_dash=True),
        default=None,
        metavar="FILE",
        help="Write to this file instead of stdout.",
    )(func)


def units_option(func: F) -> F:
    return click.option(
        "--units",
        type=click.Choice(UNIT_SYSTEMS),
        default=SI,
        show_default=True,
        help="Amounts in tables and HTML: bytes as GB (si) or GiB (iec), running time as "
        "hours and minutes; raw: the stored quantity and unit. CSV and JSON are always raw.",
    )(func)


def period_option(func: F) -> F:
    return click.option(
        "--by",
        type=click.Choice(PERIODS),
        default="day",
        show_default=True,
        help="Period of each row (UTC).",
    )(func)


class GroupParam(click.ParamType):  # type: ignore[type-arg]
    """A comma-separated combination of GROUPS, e.g. account,offering."""

    name = "GROUP"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        names = tuple(name.strip() for name in str(value).split(",") if name.strip())
        unknown = [name for name in names if name not in GROUPS]
        if unknown or not names:
            self.fail(
                f"{value!r}: give a comma-separated combination of {', '.join(GROUPS)}",
                param,
                ctx,
            )
        return names


def group_option(func: F) -> F:
    return click.option(
        "--group",
        type=GroupParam(),
        default=",".join(DEFAULT_GROUP),
        show_default=True,
        metavar="NAMES",
        help=f"What each row sums over, any of {', '.join(GROUPS)} (comma-separated). "
        "Entity and unit are always kept apart; resource implies account and entity.",
    )(func)


def check_range(since: datetime | None, until: datetime | None) -> None:
    """A reversed or empty range is bad usage, in every command that takes one."""
    if since is not None and until is not None and since >= until:
        raise click.UsageError(f"--since {iso(since)} must be before --until {iso(until)}")


def time_range_options(since_help: str, until_help: str) -> Callable[[F], F]:
    """--since and --until, refused as usage when reversed."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def checked(*args: Any, **kwargs: Any) -> Any:
            check_range(kwargs.get("since"), kwargs.get("until"))
            return func(*args, **kwargs)

        wrapped = click.option("--until", type=TIME, default=None, help=until_help)(checked)
        wrapped = click.option("--since", type=TIME, default=None, help=since_help)(wrapped)
        return wrapped  # type: ignore[return-value]

    return decorate


def deprecated(old: str, new: str) -> None:
    """Tell (on stderr, as a log line) that an old spelling was used; it still works."""
    from metering import logs

    logs.get_logger("metering.cli").warning(
        "deprecated_option", message=f"{old} is deprecated: use {new}"
    )
