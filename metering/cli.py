"""The command line: parse, build one Settings, call the shell, map errors to exit codes.

Exit codes: 0 ok, 1 failure, 2 usage, 75 lock held (another run is busy).
"""

from __future__ import annotations

import atexit
import gc
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click
from click.core import ParameterSource
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from metering import __version__, logs, migrate, progress
from metering.db import describe_db_error, open_database
from metering.errors import EXIT_FAILURE, EXIT_USAGE, LockHeld, MeteringError
from metering.options import (
    DURATION,
    TIME,
    WRITTEN_AFTER,
    database_options,
    deprecated,
    dry_run_option,
    format_option,
    grace_option,
    group_option,
    limit_option,
    lock_options,
    now_option,
    output_option,
    period_option,
    settle_lag_option,
    time_range_options,
    units_option,
)
from metering.reconcile import FORMATS as INPUT_FORMATS
from metering.settings import Settings, build_settings
from metering.store.reports import WrittenAfter

F = TypeVar("F", bound=Callable[..., Any])

# Container objects allocated (net) before a young collection: CPython's default is 700.
YOUNG_COLLECTION_THRESHOLD = 50_000

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
    except LockHeld as exc:
        # The normal outcome of overlapping cron runs, not a failure: only a persistent
        # one needs a look.
        log.warning("lock_held", message=str(exc), exit_code=exc.exit_code)
        sys.exit(exc.exit_code)
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


RECONCILE_FORMATS = ("table", "json")


def explicit(name: str) -> bool:
    """Whether the user gave the parameter (command line or environment)."""
    source = click.get_current_context().get_parameter_source(name)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def command_context() -> Context:
    ctx = click.get_current_context().find_object(Context)
    assert ctx is not None
    return ctx


def engine_for(settings: Settings, *, at_head: bool = True) -> Engine:
    engine = closed_with_command(open_database(settings.database_url))
    if at_head:
        migrate.require_head(engine)
    return engine


def closed_with_command(engine: Engine) -> Engine:
    """`engine`, whose pooled connections are closed (with the protocol's goodbye)
    when the command ends, however it ends. Left to the interpreter's exit, each was
    cut: MariaDB logged every one as an aborted connection and counted it in
    Aborted_clients, two or three an hour, which is what monitoring alerts on."""
    click.get_current_context().call_on_close(engine.dispose)
    return engine


def utc_now() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)


class MeteringGroup(click.Group):
    """The group, with one shape for every usage error: the `failed` log line (JSON off a
    terminal) with the exit code 2 and the command's help, whether click's parser or a
    command found it; never click's own Usage/Error block."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        # The process ends with the command: nothing is left for the interpreter's last
        # collections to find, which took 50 ms of each run (SQLAlchemy's and the
        # run's objects walked again on the way out). Once, however often main runs.
        atexit.unregister(gc.freeze)
        atexit.register(gc.freeze)
        # What the imports made lives as long as the process: frozen, no collection
        # walks it again. A run makes hundreds of thousands of containers it mostly
        # frees itself (rows, parts, keys); at the default threshold of 700 a busy
        # hour's run made ~380 young and 3 full collections, 0.26 s of the run's 2.4 s
        # of CPU, against 0.05 s so (benchmarks/README.md, "Start-up and the
        # collector"). Cycles are still collected, only less often.
        gc.freeze()
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            if not logs.is_configured():
                # The group's own options were refused before it could set logs up.
                logs.configure()
            # The root's name is however metering was started (python -m, a test runner).
            path = exc.ctx.command_path.split()[1:] if exc.ctx is not None else []
            command = " ".join(["metering", *path])
            log.error(
                "failed",
                error=exc.format_message(),
                help=f"{command} --help",
                exit_code=EXIT_USAGE,
            )
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(EXIT_FAILURE)
        # --help and --version end with their exit code; a command that returns, with 0.
        sys.exit(code if isinstance(code, int) else 0)


# color: click.echo would otherwise strip escape sequences from output that is not a
# terminal, so CSV piped or redirected lost bytes of stored text; tables escape them.
@click.group(
    cls=MeteringGroup,
    context_settings={
        "help_option_names": ["-h", "--help"],
        "max_content_width": 100,
        "color": True,
    },
)
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
    from metering.proctitle import hide_passwords

    # First thing: `ps` shows a --database-url password for as long as we run.
    hide_passwords()
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

    The one command that creates a database: on SQLite, the file (and, for the
    default ~/.local/share/metering/metering.db, its directory); the others refuse
    a database that does not exist. A MySQL/MariaDB database must exist already.

    \b
    Example:
      METERING_DATABASE_URL=mysql+pymysql://metering@db/metering metering db upgrade
    """
    ctx = command_context()
    with handle_errors(ctx.verbose):
        settings = ctx.settings(database_url, config)
        engine = closed_with_command(
            open_database(
                settings.database_url, create=True, create_parents=settings.default_database
            )
        )
        before = migrate.current(engine)
        migrate.upgrade(engine)
        after = migrate.current(engine)
        log.info("db_upgraded", database=settings.masked_url, before=before, after=after)
        click.echo(f"schema at {after} (was {before or 'empty'})")


@db.command("current")
@database_options
def db_current(database_url: str | None, config: str | None) -> None:
    """Print the schema revision of the database, whether it is at head, and which
    database that is (URL, password masked).

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
        wanted = migrate.HEAD
        state = "at head" if found == wanted else f"behind head {wanted}: run metering db upgrade"
        click.echo(f"{found or 'empty'} ({state})\ndatabase: {settings.masked_url}")
        if found != wanted:
            sys.exit(EXIT_FAILURE)


def emit(text: str, output: str | None) -> None:
    """Print `text`, or write it to the --output file (- is stdout)."""
    from pathlib import Path

    if output is None or output == "-":
        click.echo(text, nl=False)
    else:
        Path(output).write_text(text, encoding="utf-8")


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

    One event per line; every field, its type, limits and default, and what is
    refused are in docs/events.md (shipped with the sources). A FILE named *.gz is
    read through gzip (an archive of metering prune, for one). A line that is
    not JSON or lacks a required column is logged (malformed_line, with its line
    number) and skipped; everything else is stored as given, billing checks are the
    run's. An event_id already stored is skipped and counted as a duplicate, so
    loading the same file twice is harmless. After metering prune, a line dated
    before the pruned horizon is malformed too. Each batch commits on its own.
    Exits 1 when some lines were malformed (the others are stored).

    \b
    Example:
      metering ingest events.jsonl
      metering ingest events-2016-08.jsonl.gz       # e.g. a prune archive
      zcat events-2016-12-12.jsonl.gz | metering ingest -
    """
    import os
    import stat

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
        lines = file
        if str(getattr(file, "name", "")).endswith(".gz"):
            import gzip

            # The progress counts uncompressed bytes: no bar against the file's size.
            lines, size = gzip.GzipFile(fileobj=file, mode="rb"), None
        log_format = click.get_current_context().find_root().params.get("log_format")
        # Only for files of a megabyte or more: a small file is done before a bar helps.
        show_bar = size is not None and size >= 1024 * 1024 and progress.shown(log_format)

        def on_error(line: int, reason: str) -> None:
            log.warning("malformed_line", line=line, reason=reason)

        with progress.steps("ingest", size, show_bar) as advance:
            summary = ingest_mod.ingest(
                engine, lines, batch_size=batch_size, on_error=on_error, progress=advance
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
@time_range_options(
    "Backfill: re-derive every hour from this time.", "Bill only hours before this time."
)
@now_option
@grace_option("Wait after an hour ends before billing it")
@settle_lag_option
@dry_run_option("Compute and print the lines, change nothing, take no lock.")
@format_option("table", "json", "csv", "html", help="Output format of --dry-run.")
@units_option
@output_option
@lock_options
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="METERING_METRICS_FILE",
    metavar="PATH",
    help="Write Prometheus textfile metrics here on every outcome (env METERING_METRICS_FILE).",
)
def run_command(
    database_url: str | None,
    config: str | None,
    since: datetime | None,
    until: datetime | None,
    now: datetime | None,
    grace: timedelta | None,
    settle_lag: timedelta | None,
    dry_run: bool,
    fmt: str,
    units: str,
    output: str | None,
    lock_file: str | None,
    wait: float,
    no_database_lock: bool,
    metrics_file: str | None,
) -> None:
    """Bill every closed hour after the watermark: the hourly cron job.

    An hour is closed once now >= its end + grace. Late events become correction
    lines; a backfill (--since) writes only differences from what is billed.

    \b
    Examples:
      metering run                                   # the crontab entry
      metering run --dry-run --format csv            # what would be written
      metering run --dry-run --format html > next-run.html
      metering run --since 2016-12-12T00:00Z         # re-derive from a time
      metering run --now 2016-12-12T17:00Z           # replay with a given clock
      metering run --metrics-file /var/lib/node_exporter/textfile/metering.prom

    Exit codes: 0 done (also nothing to do), 1 failure, 2 bad usage, 75 another
    run holds the lock (cron will simply try again next hour).
    """
    from pathlib import Path

    from metering import metrics
    from metering.render import render_lines
    from metering.run import RunRequest, execute

    ctx = command_context()
    if not dry_run:
        for name in ("fmt", "units", "output"):
            if explicit(name):
                raise click.UsageError(
                    f"--{'format' if name == 'fmt' else name} goes with --dry-run "
                    "(a real run prints no lines; metering report shows what it billed)"
                )
    metrics_path = None if metrics_file is None else Path(metrics_file)
    if metrics_path is not None:
        if dry_run:
            raise click.UsageError(
                "--metrics-file reports real runs; a dry run has nothing to report"
            )
        with handle_errors(ctx.verbose):
            metrics.check_writable(metrics_path)
    with metrics.recording(metrics_path, utc_now) as recorder, handle_errors(ctx.verbose):
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
        recorder.clock = request.now
        engine = engine_for(settings)
        recorder.engine = engine
        log_format = click.get_current_context().find_root().params.get("log_format")
        with progress.hours("billing hours", progress.shown(log_format)) as advance:
            outcome = execute(
                engine,
                request,
                lock_file=settings.lock_file,
                wait=wait,
                use_database_lock=settings.database_lock,
                progress=advance,
            )
        recorder.outcome = outcome
        if outcome.nothing_to_do and not outcome.clock_stepped_back:
            log.info("nothing_to_do", now=request.now.isoformat())
        if dry_run:
            emit(render_lines(outcome.lines, fmt, units), output)


@main.command("report")
@database_options
@click.option("--account", "accounts", multiple=True, help="Only this account (repeatable).")
@click.option("--resource", "resources", multiple=True, help="Only this resource_id (repeatable).")
@click.option("--entity", "entities", multiple=True, help="Only this entity, e.g. vm (repeatable).")
@click.option("--offering", "offerings", multiple=True, help="Only this offering (repeatable).")
@time_range_options("Only hours starting at or after this.", "Only hours starting before this.")
@period_option
@group_option
@click.option(
    "--written-after",
    type=WRITTEN_AFTER,
    default=None,
    metavar="RUN_ID|TIME",
    help="Only lines later runs wrote: after this run, or committed after this time "
    "(what changed since an invoice was cut). Each row says whether it is a correction.",
)
@units_option
@format_option("table", "csv", "json", "html")
@output_option
def report_command(
    database_url: str | None,
    config: str | None,
    accounts: tuple[str, ...],
    resources: tuple[str, ...],
    entities: tuple[str, ...],
    offerings: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    by: str,
    group: tuple[str, ...],
    written_after: WrittenAfter | None,
    units: str,
    fmt: str,
    output: str | None,
) -> None:
    """What was billed: the sums of the usage lines per period and group.

    Rows sum over --group (default account,entity,offering,unit); figures of two
    entities or two units are never added. Tables and HTML show running time in
    hours and minutes and bytes in GB (--units); CSV and JSON (JSON lines) carry the
    exact quantity and its unit. A row marked * includes corrections: negative
    lines, late events billed after their hour, or backfill differences. html is one
    self-contained page: per entity and unit a chart, then account x offering tables.

    \b
    Examples:
      metering report --since 2016-12-01 --until 2017-01-01 --by month
      metering report --account geneva-jug --group resource --by hour --format csv
      metering report --written-after s20161231T23-20170101T00-v742 --format csv
      metering report --by day --format html -o usage.html
    """
    from metering import report as report_mod
    from metering.render import render_report
    from metering.store.reports import UsageFilter

    ctx = command_context()
    with handle_errors(ctx.verbose):
        settings = ctx.settings(database_url, config)
        engine = engine_for(settings)
        filters = UsageFilter(accounts, resources, entities, offerings, since, until)
        result = report_mod.report(
            engine,
            filters,
            by=by,
            group=group,
            written_after=written_after,
            database=settings.masked_url,
            made_at=utc_now(),
            units=units,
        )
        emit(render_report(result, fmt), output)


@main.command("prune")
@database_options
@click.option(
    "--before",
    type=TIME,
    required=True,
    help="The horizon: delete events before this hour that no later run can need.",
)
@click.option(
    "--archive",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    metavar="FILE.jsonl.gz",
    help="Append the deleted events here first (gzip JSON lines that metering ingest reads).",
)
@dry_run_option("Count what would be deleted; change nothing, take no lock.")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1_000_000),
    default=10_000,
    show_default=True,
    help="Events per batch (each one archived, then deleted in its own transaction).",
)
@now_option
@grace_option("The runs' grace after an hour")
@settle_lag_option
@lock_options
def prune_command(
    database_url: str | None,
    config: str | None,
    before: datetime,
    archive: str | None,
    dry_run: bool,
    batch_size: int,
    now: datetime | None,
    grace: timedelta | None,
    settle_lag: timedelta | None,
    lock_file: str | None,
    wait: float,
    no_database_lock: bool,
) -> None:
    """Delete the events before a horizon that can no longer change billing.

    An event goes only if no later run can need it: it was read and every hour it
    touches is billed, and for a resource the events kept alone still give its
    state at the horizon (a running resource keeps the event that started it, a
    destroyed one its destroy, each one its latest event). The horizon is the hour
    --before falls in; it may be no later than billed_until, nor than now - grace -
    settle lag. Takes the run's locks (exit 75 while a run holds them), works in
    batches of --batch-size events, and records the horizon: a backfill --since or
    a reconcile before it is refused. docs/operations.md, "Retention", has the rule.

    \b
    Examples:
      metering prune --before 2016-09-01 --dry-run
      metering prune --before 2016-09-01 --archive /var/lib/metering/events-2016-08.jsonl.gz
      metering ingest /var/lib/metering/events-2016-08.jsonl.gz   # into another database
    """
    from pathlib import Path

    from metering.prune import PruneRequest, prune

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
        request = PruneRequest(
            before=before,
            now=now or utc_now(),
            grace=settings.grace,
            settle_lag=settings.settle_lag,
            archive=None if archive is None else Path(archive),
            dry_run=dry_run,
            batch_size=batch_size,
        )
        outcome = prune(
            engine_for(settings),
            request,
            lock_file=settings.lock_file,
            wait=wait,
            use_database_lock=settings.database_lock,
        )
        verb = "would delete" if dry_run else "deleted"
        click.echo(
            f"{verb} {outcome.deleted} events before {outcome.horizon:%Y-%m-%dT%H:%MZ} "
            f"({outcome.resource_events} resource events, {outcome.measures} measures) "
            f"in {len(outcome.batches)} batches; "
            f"kept {outcome.kept} older events a later run may need"
            + ("" if archive is None or dry_run else f"; archived to {archive}")
        )


@main.command("status")
@database_options
@now_option
@grace_option("The runs' grace after an hour")
@click.option(
    "--max-lag",
    type=DURATION,
    default=None,
    help="Health check: exit 1 when billing is further behind now - grace than this, e.g. 2h.",
)
@limit_option(5, "How many recent runs to show.", minimum=0)
@click.option(
    "--runs", "run_count", type=click.IntRange(0, 1000), default=None, hidden=True
)  # the old spelling of --limit
@format_option("table", "json")
@output_option
def status_command(
    database_url: str | None,
    config: str | None,
    now: datetime | None,
    grace: timedelta | None,
    max_lag: timedelta | None,
    limit: int,
    run_count: int | None,
    fmt: str,
    output: str | None,
) -> None:
    """Where billing stands: database, schema, watermark, lag, last runs, what needs a look.

    Exit 1 when the schema is missing or not at head, and with --max-lag when
    nothing was ever billed or billed_until is further behind now - grace than
    that (an hourly cron keeps the lag under one hour). Otherwise exit 0.

    \b
    Examples:
      metering status
      metering status --max-lag 2h --format json     # from a monitoring check
      metering status --now 2016-12-15T00:32Z         # as of a replayed clock
    """
    from metering import status as status_mod
    from metering.render import render_status

    ctx = command_context()
    if run_count is not None:
        deprecated("--runs", "--limit")
        limit = run_count
    with handle_errors(ctx.verbose):
        settings = ctx.settings(database_url, config, grace=grace)
        engine = engine_for(settings, at_head=False)
        result = status_mod.status(
            engine,
            database=settings.masked_url,
            now=now or utc_now(),
            grace=settings.grace,
            max_lag=max_lag,
            runs=limit,
        )
        emit(render_status(result, fmt), output)
        for problem in result.problems:
            log.warning("unhealthy", problem=problem)
    if not result.healthy:
        sys.exit(EXIT_FAILURE)


@main.group("runs", invoke_without_command=True)
@database_options
@limit_option(20, "How many runs, newest first.")
@format_option("table", "csv", "json")
@output_option
@click.pass_context
def runs_command(
    click_ctx: click.Context,
    database_url: str | None,
    config: str | None,
    limit: int,
    fmt: str,
    output: str | None,
) -> None:
    """The runs, newest first: window, events read, lines, corrections, rejections.

    \b
    Examples:
      metering runs --limit 5
      metering runs show s20161212T15-20161212T16-v3
    """
    if click_ctx.invoked_subcommand is not None:
        return
    from metering import report as report_mod
    from metering.render import render_runs

    ctx = command_context()
    with handle_errors(ctx.verbose):
        engine = engine_for(ctx.settings(database_url, config))
        emit(render_runs(report_mod.runs(engine, limit), fmt), output)


@runs_command.command("show")
@database_options
@limit_option(200, "At most this many correction lines and rejections.")
@units_option
@format_option("table", "json")
@output_option
@click.argument("run_id")
def runs_show_command(
    database_url: str | None,
    config: str | None,
    limit: int,
    units: str,
    fmt: str,
    output: str | None,
    run_id: str,
) -> None:
    """What one run billed (totals per account and entity), corrected and rejected.

    Corrections are its lines for hours billed before it (late events) and all the
    lines of a backfill. Exit 1 when there is no such run.

    \b
    Example:
      metering runs show s20161212T15-20161212T16-v3 --format json
    """
    from metering import report as report_mod
    from metering.render import render_run_detail

    ctx = command_context()
    with handle_errors(ctx.verbose):
        engine = engine_for(ctx.settings(database_url, config))
        emit(render_run_detail(report_mod.run_detail(engine, run_id, limit), fmt, units), output)


@main.command("rejected")
@database_options
@click.option("--run", "run_id", default=None, metavar="RUN_ID", help="Only this run's.")
@click.option(
    "--category",
    type=click.Choice(["rejected", "anomaly"]),
    default=None,
    help="Only rejected events (not billed) or anomalies (billed nothing, e.g. a stray stop).",
)
@click.option("--since", type=TIME, default=None, help="Only those recorded at or after this.")
@click.option("--unreviewed", is_flag=True, help="Only those not marked reviewed yet.")
@limit_option(100, "At most this many, newest first.")
@click.option("--mark-reviewed", is_flag=True, help="Mark exactly the listed ones as reviewed.")
@format_option("table", "csv", "json")
@output_option
def rejected_command(
    database_url: str | None,
    config: str | None,
    run_id: str | None,
    category: str | None,
    since: datetime | None,
    unreviewed: bool,
    limit: int,
    mark_reviewed: bool,
    fmt: str,
    output: str | None,
) -> None:
    """Rejected events and anomalies the runs recorded, with their reasons.

    A rejected event was not billed (fix it upstream and ingest a corrected event
    with a new event_id); an anomaly was read but billed nothing. `metering status`
    counts the ones not reviewed yet.

    \b
    Examples:
      metering rejected --unreviewed
      metering rejected --run s20161212T15-20161212T16-v3 --format csv -o rejected.csv
      metering rejected --unreviewed --mark-reviewed   # list, then acknowledge
    """
    from metering import report as report_mod
    from metering.render import render_findings

    ctx = command_context()
    with handle_errors(ctx.verbose):
        engine = engine_for(ctx.settings(database_url, config))
        rows = report_mod.rejected(
            engine,
            run_id=run_id,
            category=category,
            since=since,
            unreviewed=unreviewed,
            limit=limit,
            mark_reviewed=mark_reviewed,
        )
        emit(render_findings(rows, fmt), output)
        if mark_reviewed:
            log.info("marked_reviewed", count=len(rows))


@main.command("reconcile")
@database_options
@click.option(
    "--inventory",
    "inventory",
    type=click.File("rb"),
    default=None,
    metavar="FILE|-",
    help="Snapshot file: JSON lines or CSV of resources running at T.",
)
@click.option(
    "--from-table",
    is_flag=True,
    help="Take the snapshot from inventory_snapshots (the platform writes it).",
)
@click.option(
    "--snapshot",
    "snapshot_id",
    default=None,
    metavar="ID",
    help="With --from-table: this snapshot (default: the latest, unless already applied).",
)
@click.option("--at", type=TIME, default=None, help="T, when the file does not carry taken_at.")
@click.option(
    "--input-format",
    type=click.Choice(INPUT_FORMATS),
    default="auto",
    show_default=True,
    help="Format of the --inventory file (auto: by its extension, .jsonl or .csv, "
    "else by its first character).",
)
@click.option(
    "--policy",
    type=click.Choice(["never-overbill", "never-underbill"]),
    default="never-overbill",
    show_default=True,
    help="Where a vanished resource stops: at its last evidence, or at T.",
)
@click.option(
    "--entity",
    "entities",
    multiple=True,
    metavar="NAME",
    help="Compare only these entities (repeatable): for a snapshot covering part of the fleet.",
)
@click.option(
    "--allow-empty", is_flag=True, help="Accept a file listing nothing (stops everything)."
)
@dry_run_option("Print what would change, change nothing.")
@click.option(
    "--format",
    "fmt",
    # auto, jsonl and csv: the old spelling of --input-format.
    type=click.Choice([*RECONCILE_FORMATS, *INPUT_FORMATS]),
    default="table",
    show_default=True,
    metavar="[table|json]",
    help="Output format.",
)
@output_option
@lock_options
def reconcile_command(
    database_url: str | None,
    config: str | None,
    inventory: Any,
    from_table: bool,
    snapshot_id: str | None,
    at: datetime | None,
    input_format: str,
    policy: str,
    entities: tuple[str, ...],
    allow_empty: bool,
    dry_run: bool,
    fmt: str,
    output: str | None,
    lock_file: str | None,
    wait: float,
    no_database_lock: bool,
) -> None:
    """Converge the stored events with an inventory snapshot (contract rule 15).

    Running in the snapshot but not in the events: a synthetic start at T.
    Running in the events but absent: a synthetic stop at the last evidence it ran
    (its last event or the last snapshot listing it; --policy never-underbill: at
    T). Another offering: a synthetic update at T. Synthetic events go into
    usage_events (attributes.source = reconcile) and the next run bills them;
    applying a snapshot twice changes nothing. Takes the same locks as run.

    \b
    Examples:
      metering reconcile --inventory running.jsonl --at 2016-12-12T16:00Z --dry-run
      inventory-dump | metering reconcile --inventory - --input-format csv --at 2016-12-12T16:00Z
      metering reconcile --from-table          # crontab: the platform's latest snapshot

    Exit codes: 0 done, 1 failure (bad snapshot), 2 bad usage, 75 a run holds the lock.
    """
    from metering import reconcile as reconcile_mod

    ctx = command_context()
    if fmt in INPUT_FORMATS:
        deprecated(f"--format {fmt} (the inventory's format)", f"--input-format {fmt}")
        input_format, fmt = fmt, "table"
    if output in RECONCILE_FORMATS:
        deprecated(f"--output {output} (a format)", f"--format {output}; -o ./{output} for a file")
        fmt, output = output, None
    with handle_errors(ctx.verbose):
        if (inventory is None) == (not from_table):
            raise click.UsageError("give exactly one of --inventory FILE and --from-table")
        if from_table and at is not None:
            raise click.UsageError("--at is for --inventory (a table snapshot has its taken_at)")
        if snapshot_id is not None and not from_table:
            raise click.UsageError("--snapshot goes with --from-table")
        settings = ctx.settings(
            database_url, config, lock_file=lock_file, database_lock=not no_database_lock
        )
        parsed = (
            None
            if inventory is None
            else reconcile_mod.parse_inventory(
                inventory.read(), input_format, getattr(inventory, "name", None)
            )
        )
        request = reconcile_mod.ReconcileRequest(
            inventory=parsed,
            at=at,
            snapshot_id=snapshot_id,
            policy=policy,
            entities=entities or None,
            dry_run=dry_run,
            allow_empty=allow_empty,
        )
        outcome = reconcile_mod.execute(
            engine_for(settings),
            request,
            lock_file=settings.lock_file,
            wait=wait,
            use_database_lock=settings.database_lock,
        )
        emit(reconcile_mod.render(outcome, fmt), output)


@main.command("check")
@database_options
@click.option(
    "--stale-days",
    type=click.IntRange(1),
    default=30,
    show_default=True,
    help="A running resource with no event (nor snapshot) for this long is a problem.",
)
@limit_option(50, "Items listed per check (the count is always complete).")
@now_option
@format_option("table", "json")
@output_option
def check_command(
    database_url: str | None,
    config: str | None,
    stale_days: int,
    limit: int,
    now: datetime | None,
    fmt: str,
    output: str | None,
) -> None:
    """Sanity checks over the stored usage; exits 1 when any finds a problem.

    Checks: resources running for --stale-days with no event; running time billed
    after a destroy; more than 3600 s billed for one resource in one hour; lines
    whose run is missing; rejected events not reviewed yet.

    \b
    Examples:
      metering check
      metering check --format json --stale-days 7     # a monitoring probe

    Exit codes: 0 all checks passed, 1 problems found (or failure), 2 bad usage.
    """
    from metering import check as check_mod

    ctx = command_context()
    with handle_errors(ctx.verbose):
        engine = engine_for(ctx.settings(database_url, config))
        report = check_mod.execute(engine, now=now or utc_now(), stale_days=stale_days, limit=limit)
        emit(check_mod.render(report, fmt), output)
    if not report.ok:
        sys.exit(EXIT_FAILURE)


@main.command("demo")
@click.option(
    "--path",
    type=click.Path(file_okay=False),
    default=None,
    help="Work in this directory (default: a new temporary one, kept for you to explore).",
)
@click.option(
    "--days", type=click.IntRange(1, 31), default=3, show_default=True, help="Days to simulate."
)
@click.option(
    "--seed", type=int, default=1, show_default=True, help="Same seed, same events and bill."
)
def demo_command(path: str | None, days: int, seed: int) -> None:
    """The whole product in one command, on embedded SQLite: nothing to set up.

    Generates a few days of realistic events for a handful of accounts (VMs of
    several sizes created, stopped, started, resized and destroyed, volumes,
    per-minute IP traffic, a few late and a few bad events), replays them as
    production sees them (each event stored when it is delivered, `metering run`
    every hour at minute 32, so late events become corrections), then prints
    what was billed per day and account. The database stays in the directory.

    \b
    Examples:
      metering demo
      metering demo --path ./demo --days 7 --seed 42
      metering --database-url sqlite:///demo/metering.db report --group resource
    """
    import logging
    import tempfile
    from pathlib import Path

    from metering.demo import hints as demo_hints
    from metering.demo import run_demo

    ctx = command_context()
    with handle_errors(ctx.verbose):
        where = Path(path) if path else Path(tempfile.mkdtemp(prefix="metering-demo-"))
        log_format = click.get_current_context().find_root().params.get("log_format")
        # One run_finished line per simulated hour would bury the report.
        quiet = [logging.getLogger(name) for name in ("metering.run", "metering.lock")]
        levels = [logger.level for logger in quiet]
        if not ctx.verbose:
            for logger in quiet:
                logger.setLevel(logging.WARNING)
        try:
            with progress.steps(
                "cron, hour by hour", days * 24, progress.shown(log_format)
            ) as advance:
                result = run_demo(where, days=days, seed=seed, progress=advance)
        finally:
            for logger, level in zip(quiet, levels, strict=True):
                logger.setLevel(level)
        sample = result.sample
        click.echo(
            f"{len(sample.accounts)} accounts, {days} day(s) from {sample.start:%Y-%m-%d} "
            f"(seed {seed}): {result.inserted} events stored as they were delivered, "
            f"{sample.late} of them late (after the run that billed their hour), "
            f"{sample.bad} bad, {result.duplicates} delivered twice (counted once)."
        )
        click.echo(
            f"{result.runs} hourly runs (cron at minute 32): {result.lines_written} usage lines, "
            f"{result.corrections} corrections, {result.rejected} events rejected, "
            f"{result.anomalies} anomalies."
        )
        click.echo(f"Database: {result.database_url}\n")
    click.get_current_context().invoke(
        report_command, database_url=result.database_url, group=("account", "entity", "unit")
    )
    click.echo("\n" + demo_hints(result))


@main.group("prices")
def prices_group() -> None:
    """The price book: immutable versions, each valid from an hour (see docs/rating.md).

    \b
    Example:
      metering prices load prices-2024-03.toml --dry-run && metering prices list
    """


@prices_group.command("load")
@database_options
@click.option(
    "--valid-from",
    type=TIME,
    default=None,
    help="When this version takes effect, on an hour (default: the file's valid_from, "
    "else the next hour after now).",
)
@now_option
@click.option("--dry-run", is_flag=True, help="Validate and say what would be loaded.")
@click.argument("file", type=click.File("rb"))
def prices_load(
    database_url: str | None,
    config: str | None,
    valid_from: datetime | None,
    now: datetime | None,
    dry_run: bool,
    file: Any,
) -> None:
    """Load a price book TOML file as a new version (versions are never edited).

    The same file with the same valid_from is loaded once. A version may not start
    inside a closed month, nor change the rounding policy within a month, nor the
    currency. Exits 1 naming the entry and key of a bad file.

    \b
    Examples:
      metering prices load prices.toml --dry-run
      metering prices load prices.toml --valid-from 2024-03-15T00:00Z
    """
    from metering import prices

    ctx = command_context()
    with handle_errors(ctx.verbose):
        name = getattr(file, "name", "-")
        book = prices.read_book(file.read(), name)
        engine = engine_for(ctx.settings(database_url, config))
        outcome = prices.load(
            engine, book, source=name, now=now or utc_now(), valid_from=valid_from, dry_run=dry_run
        )
        if not dry_run and not outcome.already:
            log.info("prices_loaded", version=outcome.version, valid_from=str(outcome.valid_from))
        click.echo(prices.describe(outcome), nl=False)


@prices_group.command("list")
@database_options
def prices_list(database_url: str | None, config: str | None) -> None:
    """The loaded price book versions: number, valid from, currency, source file.

    \b
    Example:
      metering prices list
    """
    from metering import prices
    from metering.render import text_table
    from metering.timeutil import iso

    ctx = command_context()
    with handle_errors(ctx.verbose):
        rows = prices.versions(engine_for(ctx.settings(database_url, config)))
        if not rows:
            click.echo("no price book loaded")
            return
        table = text_table(
            ("version", "valid_from", "currency", "source", "loaded_at", "digest"),
            [
                [
                    str(r.version),
                    iso(r.valid_from) or "",
                    r.currency,
                    r.source or "",
                    iso(r.loaded_at) or "",
                    r.digest[:12],
                ]
                for r in rows
            ],
            numeric=("version",),
        )
        click.echo("\n".join(table))


@main.group("invoice")
def invoice_group() -> None:
    """Invoices per account and month: preview, close (immutable), show.

    \b
    Example:
      metering invoice preview --month 2024-03 && metering invoice close --month 2024-03
    """


def _write_output(text: str, output: str | None) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    from pathlib import Path

    from metering.export import write_file

    write_file(Path(output))(text)


@invoice_group.command("preview")
@database_options
@click.option("--month", required=True, metavar="YYYY-MM", help="The month (UTC).")
@click.option("--account", "accounts", multiple=True, help="Only this account (repeatable).")
@format_option("table", "csv", "json", "html")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False), default=None, help="Write to this file."
)
def invoice_preview(
    database_url: str | None,
    config: str | None,
    month: str,
    accounts: tuple[str, ...],
    fmt: str,
    output: str | None,
) -> None:
    """What each account owes for a month: a line per entity/offering/unit (quantity in
    the price's unit, unit price, tiers applied, amount), adjustments for closed
    months, unpriced usage (never priced 0), a total per account.

    A month not closed is labelled a preview (and whether all its hours are billed);
    a closed month shows its stored invoices. JSON lines: every line has account,
    currency and amount (a string; "unpriced" for unpriced usage); each account's
    total is a line with "kind": "total".

    \b
    Examples:
      metering invoice preview --month 2024-03
      metering invoice preview --month 2024-03 --account acme-corp --format json
      metering invoice preview --month 2024-03 --format html -o march.html
    """
    from metering import invoice
    from metering.render_invoice import render_month

    ctx = command_context()
    with handle_errors(ctx.verbose):
        invoice.check_month(month)
        engine = engine_for(ctx.settings(database_url, config))
        _write_output(render_month(invoice.preview(engine, month, accounts), fmt), output)


@invoice_group.command("close")
@database_options
@click.option("--month", required=True, metavar="YYYY-MM", help="The month (UTC).")
@click.option(
    "--allow-unpriced", is_flag=True, help="Close even with unpriced usage (listed, not priced)."
)
@now_option
@format_option("table", "json")
@lock_options
def invoice_close(
    database_url: str | None,
    config: str | None,
    month: str,
    allow_unpriced: bool,
    now: datetime | None,
    fmt: str,
    lock_file: str | None,
    wait: float,
    no_database_lock: bool,
) -> None:
    """Store the month's invoices, one per account, immutable; ids derive from account
    and month, so closing twice changes nothing.

    Refuses (exit 1) a month whose hours are not all billed (metering status shows
    billed_until) and, without --allow-unpriced, a month with unpriced usage. Usage
    of a closed month billed later appears in the next open month's preview as an
    adjustment naming the closed invoice. Takes the run's locks (exit 75 if held).

    \b
    Example:
      metering invoice close --month 2024-03
    """
    from metering import invoice
    from metering.render_invoice import render_month

    ctx = command_context()
    with handle_errors(ctx.verbose):
        invoice.check_month(month)
        settings = ctx.settings(
            database_url, config, lock_file=lock_file, database_lock=not no_database_lock
        )
        outcome = invoice.close(
            engine_for(settings),
            month,
            now=now or utc_now(),
            lock_file=settings.lock_file,
            wait=wait,
            use_database_lock=settings.database_lock,
            allow_unpriced=allow_unpriced,
        )
        count = len(outcome.invoices.accounts)
        if outcome.already:
            log.info("month_already_closed", month=month, invoices=count)
        else:
            log.info("month_closed", month=month, invoices=count)
        click.echo(render_month(outcome.invoices, fmt), nl=False)


@invoice_group.command("show")
@database_options
@click.option("--lines", "trace", is_flag=True, help="Each line's usage lines and run ids.")
@format_option("table", "json")
@click.argument("invoice_id", metavar="ID")
def invoice_show(
    database_url: str | None, config: str | None, trace: bool, fmt: str, invoice_id: str
) -> None:
    """A closed invoice; with --lines, the usage lines (and runs) behind each line.

    \b
    Example:
      metering invoice show inv-2024-03-5f0c2a9e1b7d4c36 --lines
    """
    from metering import invoice
    from metering.render_invoice import render_detail

    ctx = command_context()
    with handle_errors(ctx.verbose):
        engine = engine_for(ctx.settings(database_url, config))
        click.echo(render_detail(invoice.show(engine, invoice_id, trace=trace), fmt), nl=False)


@main.command("export")
@database_options
@click.option("--month", default=None, metavar="YYYY-MM", help="Lines of this month (UTC).")
@click.option("--run", "run_id", default=None, metavar="RUN_ID", help="Lines this run wrote.")
@click.option(
    "--to",
    "target",
    type=click.Choice(["jsonl", "csv", "lago", "stripe", "openmeter"]),
    required=True,
    help="The shape: plain JSON lines or CSV, or a target API's events.",
)
@click.option(
    "--lines",
    "lines",
    type=click.Choice(["usage", "invoice"]),
    default="usage",
    show_default=True,
    help="Usage lines, or the lines of a closed month's invoices (jsonl, csv).",
)
@click.option("--new-only", is_flag=True, help="Only what the ledger has not seen exported.")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False), default=None, help="Write to this file."
)
@now_option
def export_command(
    database_url: str | None,
    config: str | None,
    month: str | None,
    run_id: str | None,
    target: str,
    lines: str,
    new_only: bool,
    output: str | None,
    now: datetime | None,
) -> None:
    """Export usage lines (or invoice lines) with idempotency keys; record it in the ledger.

    Each item's key derives from what it is (a usage line: run, account, entity,
    resource, offering, unit, hour), so a re-export carries the same keys and the
    target deduplicates: Lago's transaction_id, Stripe's identifier, OpenMeter's id
    (with source "metering"). No network: a file or stdout; docs/rating.md shows how
    to send each to its API. Lago: one batch body per line (100 events at most).

    \b
    Examples:
      metering export --month 2024-03 --to csv -o usage-2024-03.csv
      metering export --run s20240301T00-20240301T01-v1 --to openmeter
      metering export --month 2024-03 --to lago --new-only -o lago.jsonl
      metering export --month 2024-03 --lines invoice --to jsonl
    """
    from pathlib import Path

    from metering import export

    ctx = command_context()
    with handle_errors(ctx.verbose):
        if (month is None) == (run_id is None):
            raise click.UsageError("give exactly one of --month M and --run RUN_ID")
        engine = engine_for(ctx.settings(database_url, config))
        outcome = export.execute(
            engine,
            export.ExportRequest(target, month, run_id, lines, new_only),
            now=now or utc_now(),
            destination=output or "-",
            write=(
                export.write_file(Path(output))
                if output
                else lambda text: click.echo(text, nl=False)
            ),
        )
        log.info(
            "exported",
            export_id=outcome.export_id,
            target=target,
            items=outcome.items,
            new_items=outcome.new_items,
        )
