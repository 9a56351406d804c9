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
from metering.options import TIME, database_options, format_option, now_option
from metering.settings import Settings, build_settings

F = TypeVar("F", bound=Callable[..., Any])

log = logs.get_logger("metering.cli")


class Context:
    """What the group's options leave for the commands."""

    def __init__(self, database_url: str | None, config: str | None, verbose: bool) -> None:
        self.database_url = database_url
        self.config = config
        self.verbose = verbose

    def settings(
        self, database_url: str | None = None, config: str | None = None, **extra: Any
    ) -> Settings:
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
        log.error(
            "failed", error=f"database error: {describe_db_error(exc)}", exit_code=EXIT_FAILURE
        )
        sys.exit(EXIT_FAILURE)
    except click.exceptions.Exit:
        raise
    except click.ClickException:
        raise
    except Exception as exc:
        if verbose:
            log.exception("unexpected_error")
        log.error(
            "failed",
            error=f"{type(exc).__name__}: {logs.mask_secrets(str(exc))}",
            exit_code=EXIT_FAILURE,
        )
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
def main(
    ctx: click.Context, database_url: str | None, config: str | None, verbose: bool, log_format: str
) -> None:
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


@main.command("ingest")
@database_options
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=2000,
    show_default=True,
    help="Events per transaction (each batch commits on its own).",
)
@click.argument("file", type=click.File("rb"), metavar="FILE|-")
def ingest_command(
    database_url: str | None, config: str | None, batch_size: int, file: Any
) -> None:
    """Load usage events from JSON lines (FILE, or - for stdin) into usage_events.

    One event per line, shaped like the billing contract's examples. A line that is
    not JSON or lacks a required column is logged (malformed_line, with its line
    number) and skipped; everything else is stored as given, billing checks are the
    run's. An event_id already stored is skipped and counted as a duplicate, so
    loading the same file twice is harmless. Each batch commits on its own.
    Exits 1 when some lines were malformed (the others are stored).

    \b
    Example:
      metering ingest events.jsonl
      zcat events-2016-12-12.jsonl.gz | metering ingest -
    """
    import os
    import stat
    from contextlib import nullcontext

    from metering import ingest as ingest_mod

    ctx = command_context()
    with handle_errors(ctx.verbose):
        settings = ctx.settings(database_url, config)
        engine = engine_for(settings)
        size = None
        try:
            info = os.fstat(file.fileno())
            if stat.S_ISREG(info.st_mode):
                size = info.st_size - file.tell()
        except (OSError, ValueError, AttributeError):
            pass
        log_format = click.get_current_context().find_root().params.get("log_format")
        show_bar = (
            size is not None
            and size >= 1024 * 1024
            and sys.stderr.isatty()
            and log_format != "json"
        )

        def on_error(line: int, reason: str) -> None:
            if show_bar:
                sys.stderr.write("\r\x1b[K")  # the log line starts where the bar was
            log.warning("malformed_line", line=line, reason=reason)

        bar: Any = (
            click.progressbar(length=size, label="ingest", file=sys.stderr)
            if show_bar
            else nullcontext()
        )
        with bar:
            summary = ingest_mod.ingest(
                engine,
                file,
                batch_size=batch_size,
                on_error=on_error,
                progress=bar.update if show_bar else None,
            )
        log.info(
            "ingest_summary",
            read=summary.read,
            inserted=summary.inserted,
            duplicates=summary.duplicates,
            malformed=summary.malformed,
        )
        click.echo(
            f"read {summary.read}, inserted {summary.inserted}, "
            f"duplicates {summary.duplicates}, malformed {summary.malformed}"
        )
    if summary.malformed:
        sys.exit(EXIT_FAILURE)


@main.command("run")
@database_options
@click.option(
    "--since", type=TIME, default=None, help="Backfill: re-derive every hour from this time."
)
@click.option("--until", type=TIME, default=None, help="Bill only hours before this time.")
@now_option
@click.option(
    "--grace",
    default=None,
    metavar="DURATION",
    help="Wait after an hour ends before billing it [30m].",
)
@click.option(
    "--settle-lag",
    default=None,
    metavar="DURATION",
    help="How long a late-committing insert may lag and still be billed [10m].",
)
@click.option(
    "--dry-run", is_flag=True, help="Compute and print the lines, change nothing, take no lock."
)
@format_option("table", "json", "csv")
@click.option(
    "--lock-file", default=None, metavar="PATH", help="Lock file (env METERING_LOCK_FILE)."
)
@click.option(
    "--wait",
    type=float,
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait this long for a lock held by another run before exiting 75.",
)
@click.option(
    "--no-database-lock",
    is_flag=True,
    help="Skip GET_LOCK on MySQL/MariaDB (the commit fence still stops a second writer).",
)
def run_command(
    database_url: str | None,
    config: str | None,
    since: datetime | None,
    until: datetime | None,
    now: datetime | None,
    grace: str | None,
    settle_lag: str | None,
    dry_run: bool,
    fmt: str,
    lock_file: str | None,
    wait: float,
    no_database_lock: bool,
) -> None:
    """Bill every closed hour after the watermark: the hourly cron job.

    An hour is closed once now >= its end + grace. Late events become correction
    lines; a backfill (--since) writes only differences from what is billed.

    \b
    Examples:
      metering run                                   # the crontab entry
      metering run --dry-run --format csv            # what would be written
      metering run --since 2016-12-12T00:00Z         # re-derive from a time
      metering run --now 2016-12-12T17:00Z           # replay with a given clock

    Exit codes: 0 done (also nothing to do), 1 failure, 2 bad usage, 75 another
    run holds the lock (cron will simply try again next hour).
    """
    from metering.render import render_lines
    from metering.run import RunRequest, execute

    ctx = command_context()
    with handle_errors(ctx.verbose):
        settings = ctx.settings(
            database_url,
            config,
            lock_file=lock_file,
            grace=grace,
            settle_lag=settle_lag,
            database_lock=not no_database_lock,
        )
        request = RunRequest(
            now=now or utc_now(),
            grace=settings.grace,
            settle_lag=settings.settle_lag,
            since=since,
            until=until,
            dry_run=dry_run,
        )
        engine = engine_for(settings)
        outcome = execute(
            engine,
            request,
            lock_file=settings.lock_file,
            wait=wait,
            use_database_lock=settings.database_lock,
        )
        if outcome.nothing_to_do and not outcome.clock_stepped_back:
            log.info("nothing_to_do", now=request.now.isoformat())
        if dry_run:
            click.echo(render_lines(outcome.lines, fmt), nl=False)
