"""Engines: one place that knows how to talk to MySQL/MariaDB and SQLite safely.

- MySQL/MariaDB: utf8mb4, session time zone UTC (DATETIME columns hold UTC whatever
  the server's or the machine's TZ), strict mode, REPEATABLE READ so one run reads
  one consistent snapshot, and in-memory temporary tables of up to 256 MB: the range
  scan's GROUP BY holds a row per (resource, hour), and past the 16 MB default the
  server moves it to disk (4x slower at 1M events).
- Galera (MariaDB with wsrep_on): wsrep_sync_wait = 1 per session, so that a read
  sees every transaction the cluster committed before it began (docs/operations.md,
  "Running on a Galera cluster"); a node applies other nodes' commits a little later.
- SQLite: the driver's implicit transactions are turned off and BEGIN is emitted by
  us, so a run can take the database's write lock up front (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from metering.errors import DatabaseUnavailable, NoDatabase
from metering.logs import mask_secrets
from metering.settings import mask_url

SQLITE_BUSY_TIMEOUT_S = 30.0
TMP_TABLE_BYTES = 256 * 1024 * 1024


def is_mysql(bind: Engine | Connection) -> bool:
    return bind.dialect.name in ("mysql", "mariadb")


def make_engine(url: str, *, sqlite_busy_timeout: float = SQLITE_BUSY_TIMEOUT_S) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {"future": True}
    if backend in ("mysql", "mariadb"):
        query = dict(parsed.query)
        query.setdefault("charset", "utf8mb4")
        parsed = parsed.set(query=query)
        kwargs.update(
            pool_pre_ping=True,
            pool_recycle=3600,
            isolation_level="REPEATABLE READ",
            connect_args={
                "init_command": (
                    "SET time_zone = '+00:00', "
                    "sql_mode = CONCAT(@@sql_mode, ',STRICT_TRANS_TABLES'), "
                    f"tmp_table_size = {TMP_TABLE_BYTES}, max_heap_table_size = {TMP_TABLE_BYTES}"
                ),
                "connect_timeout": 10,
            },
        )
    elif backend == "sqlite":
        kwargs["connect_args"] = {"timeout": sqlite_busy_timeout}
    engine = create_engine(parsed, **kwargs)
    if backend == "sqlite":
        _sqlite_transactions(engine)
    else:
        event.listen(engine, "connect", _causal_reads)
        if parsed.get_driver_name() == "pymysql":
            event.listen(engine, "do_connect", _connect_sharing_tls_context)
    return engine


def _connect_sharing_tls_context(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
    return _pymysql_connection_class()(*cargs, **cparams)


@functools.cache
def _pymysql_connection_class() -> Any:
    """PyMySQL's connection, but where the URL gives no TLS option (PyMySQL then tries
    TLS if the server offers it, without verifying it) every connection shares one TLS
    context. PyMySQL builds one per connection, reading the system's CA certificates
    each time, though that mode verifies nothing: 33 ms of CPU per connection, and a
    run opens three before its scan starts (0.1 s of a busy hour's run, profiled).
    TLS options in the URL still get a context of their own, as PyMySQL makes it."""
    from pymysql.connections import Connection as PyMySQLConnection

    shared: list[Any] = []

    class SharedTLSContextConnection(PyMySQLConnection):  # type: ignore[misc]
        def _create_ssl_ctx(self, sslp: Any) -> Any:
            if sslp:
                return super()._create_ssl_ctx(sslp)
            if not shared:
                shared.append(super()._create_ssl_ctx(sslp))
            return shared[0]

    return SharedTLSContextConnection


def _causal_reads(dbapi_connection: Any, _record: Any) -> None:
    """On a Galera node, make reads wait until the node has applied what the cluster
    committed before them: a run's snapshot then holds the previous run's state and
    every event ingested through any node, as on one server. Asked, not set blindly:
    servers without wsrep (MySQL) do not know the variable."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SHOW VARIABLES LIKE 'wsrep_on'")
        row = cursor.fetchone()
        if row is not None and str(row[1]).upper() == "ON":
            cursor.execute("SET SESSION wsrep_sync_wait = 1")
    finally:
        cursor.close()


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for a server database, :memory: or a file: URI."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database:
        return None
    if database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def open_database(url: str, *, create: bool = False, create_parents: bool = False) -> Engine:
    """An engine on the database at url, which must exist unless `create`.

    SQLite creates a missing file on connect: a read-only command (or a typo in the
    URL) would leave an empty database behind, so the file is looked for first.
    `create_parents` is for the default data directory only: any other missing
    directory is a wrong path, not one to make.
    """
    path = sqlite_file(url)
    if path is not None:
        if create and create_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            (path.parent if create else path).stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            if create:
                raise DatabaseUnavailable(
                    f"cannot create {mask_url(url)}: directory {path.parent} does not exist"
                ) from exc
            raise NoDatabase(f"no database at {mask_url(url)}, run `metering db upgrade`") from exc
        except OSError as exc:
            raise DatabaseUnavailable(f"database {mask_url(url)}: {exc.strerror}: {path}") from exc
    return make_engine(url)


def _sqlite_transactions(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))


def write_lock(conn: Connection) -> Connection:
    """Make the next transaction on conn take SQLite's write lock at BEGIN."""
    return conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")


def describe_db_error(exc: BaseException) -> str:
    """One line, no password, for an operator."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        text = f"{type(exc.orig).__name__}: {exc.orig}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return mask_secrets(" ".join(text.split()))[:500]


def unavailable(exc: BaseException, masked_url: str) -> DatabaseUnavailable:
    return DatabaseUnavailable(f"database {masked_url}: {describe_db_error(exc)}")


__all__ = [
    "OperationalError",
    "describe_db_error",
    "is_mysql",
    "make_engine",
    "open_database",
    "unavailable",
    "write_lock",
]
