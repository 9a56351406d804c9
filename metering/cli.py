"""The command line: parse, build one Settings, call the shell, map errors to exit codes.

Exit codes: 0 ok, 1 failure, 2 usage, 75 lock held (another run is busy).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import click
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from metering import __version__, logs, migrate
from metering.db import describe_db_error, make_engine
from metering.errors import EXIT_FAILURE, EXIT_USAGE, MeteringError
from metering.options import database_options
from metering.settings import Settings, build_settings

F = TypeVar("F", bound=Callable[..., Any])

log = logs.get_logger("metering.cli")


class Context:
    """What the group's options leave for the commands."""

    def __init__(self, database_url: str | None, config: str | None, verbose: bool) -> None:
        self.database_url = database_url
        self.config = config
        self.verbose = verbose

    def settings(self, database_url: str | None = None, config: str | None = None, **extra: Any) -> Settings:
        settings = build_settings(
            database_url=database_url or self.database_url,
            config=config or self.config,
            **extra,
        )
        for warning in settings.warnings:
            log.warning("config_warning", message=warning)
        return settings


@contextmanager
def handle_errors(verbose: bool) -> Iterator[None]:
    """One clear log line per failure; a traceback only with --verbose."""
    try:
        yield
    except MeteringError as exc:
        log.error("failed", error=str(exc), exit_code=exc.exit_code)
        sys.exit(exc.exit_code)
    except (DBAPIError, SQLAlchemyError) as exc:
        if verbose:
            log.exception("database_error")
        log.error("failed", error=f"database error: {describe_db_error(exc)}", exit_code=EXIT_FAILURE)
        sys.exit(EXIT_FAILURE)
    except click.exceptions.Exit:
        raise
    except click.ClickException:
        raise
    except Exception as exc:
        if verbose:
            log.exception("unexpected_error")
        log.error("failed", error=f"{type(exc).__name__}: {logs.mask_secrets(str(exc))}", exit_code=EXIT_FAILURE)
        sys.exit(EXIT_FAILURE)


def command_context() -> Context:
    ctx = click.get_current_context().find_object(Context)
    assert ctx is not None
    return ctx


def engine_for(settings: Settings, *, at_head: bool = True) -> Engine:
    engine = make_engine(settings.database_url)
    if at_head:
        migrate.require_head(engine)
    return engine


def utc_now() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@database_options
@click.option("-v", "--verbose", is_flag=True, help="Debug logging, tracebacks on errors.")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    show_default=True,
    help="auto: JSON lines unless stderr is a terminal.",
)
@click.version_option(__version__, prog_name="metering")
@click.pass_context
def main(ctx: click.Context, database_url: str | None, config: str | None, verbose: bool, log_format: str) -> None:
    """Exact hourly usage lines from cloud usage events, run from cron.

    \b
    Example (the crontab entry, hourly at minute 32):
      32 * * * *  metering run >> /var/log/metering.log 2>&1

    Exit codes: 0 ok, 1 failure, 2 usage, 75 another run holds the lock.
    """
    logs.configure(verbose=verbose, json=None if log_format == "auto" else log_format == "json")
    ctx.obj = Context(database_url, config, verbose)


@main.group()
def db() -> None:
    """Schema management (Alembic migrations shipped with metering).

    \b
    Example:
      metering db upgrade && metering db current
    """


@db.command("upgrade")
@database_options
def db_upgrade(database_url: str | None, config: str | None) -> None:
    """Create or migrate the schema to the version this metering needs.

    \b
    Example:
      METERING_DATABASE_URL=mysql+pymysql://metering@db/metering metering db upgrade
    """
    ctx = command_context()
    with handle_errors(ctx.verbose):
        settings = ctx.settings(database_url, config)
        engine = engine_for(settings, at_head=False)
        before = migrate.current(engine)
        migrate.upgrade(engine)
        after = migrate.current(engine)
        log.info("db_upgraded", database=settings.masked_url, before=before, after=after)
        click.echo(f"schema at {after} (was {before or 'empty'})")


@db.command("current")
@database_options
def db_current(database_url: str | None, config: str | None) -> None:
    """Print the schema revision of the database and whether it is at head.

    Exits 1 when the schema is not at head.

    \b
    Example:
      metering db current
    """
    ctx = command_context()
    with handle_errors(ctx.verbose):
        settings = ctx.settings(database_url, config)
        engine = engine_for(settings, at_head=False)
        found = migrate.current(engine)
        wanted = migrate.head()
        state = "at head" if found == wanted else f"behind head {wanted}: run metering db upgrade"
        click.echo(f"{found or 'empty'} ({state})")
        if found != wanted:
            sys.exit(EXIT_FAILURE)


def usage_error(message: str) -> None:
    log.error("failed", error=message, exit_code=EXIT_USAGE)
    sys.exit(EXIT_USAGE)
