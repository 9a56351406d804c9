"""One run at a time: a file lock on this host, GET_LOCK across hosts.

GET_LOCK belongs to a connection, so it is taken on a dedicated connection held for
the whole run and released explicitly: a pooled connection returned with the lock
would keep it. SQLite needs no extra lock: its write lock is taken by the run's
BEGIN IMMEDIATE. The commit fence (store.state.advance_watermark) covers any
database without a usable lock.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import filelock
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from metering.db import is_mysql
from metering.errors import ConcurrentRun, LockFileError, LockHeld

_LOCK_FILE_FIX = (
    "set --lock-file (or METERING_LOCK_FILE, or lock_file in the config file) to a "
    "regular file this user may create and write, e.g. /run/metering/metering.lock"
)


def check_lock_file(path: Path) -> None:
    """Open the lock file once before filelock does: filelock reports a directory or a
    device as a raw OSError, and a file it cannot create as a timeout, which would read
    as a held lock (exit 75, try again next hour) forever."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # No O_TRUNC: a running holder's file is left as it is; closing our descriptor
        # does not release its flock.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            mode = os.fstat(fd).st_mode
        finally:
            os.close(fd)
    except OSError as exc:
        raise LockFileError(
            f"cannot create or open the lock file {path}: {exc.strerror}; {_LOCK_FILE_FIX}"
        ) from exc
    if not stat.S_ISREG(mode):
        raise LockFileError(f"the lock file {path} is not a regular file; {_LOCK_FILE_FIX}")


@contextmanager
def file_lock(path: Path, wait: float) -> Iterator[None]:
    check_lock_file(path)
    # flock-based: the kernel drops it when the holder dies, so a stale file is harmless.
    lock = filelock.FileLock(str(path), timeout=wait if wait > 0 else 0)
    try:
        lock.acquire()
    except filelock.Timeout as exc:
        raise LockHeld(f"another metering run holds the lock file {path}") from exc
    except OSError as exc:
        raise LockFileError(
            f"cannot lock the lock file {path}: {exc.strerror}; {_LOCK_FILE_FIX}"
        ) from exc
    try:
        yield
    finally:
        lock.release()


@contextmanager
def database_lock(engine: Engine, wait: float) -> Iterator[None]:
    if not is_mysql(engine):
        yield
        return
    conn = engine.connect()
    try:
        name = conn.execute(
            text("SELECT CONCAT('metering:', COALESCE(DATABASE(), ''))")
        ).scalar_one()
        got = conn.execute(
            text("SELECT GET_LOCK(:name, :wait)"), {"name": str(name)[:64], "wait": int(wait)}
        ).scalar()
        conn.commit()
        if got != 1:
            raise LockHeld(f"another metering run holds the database lock {name!r}")
        try:
            yield
        finally:
            with suppress(DBAPIError):
                conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": str(name)[:64]})
                conn.commit()
    finally:
        with suppress(DBAPIError):
            conn.close()


@contextmanager
def run_lock(
    engine: Engine, path: Path, *, wait: float = 0.0, use_database_lock: bool = True
) -> Iterator[None]:
    with file_lock(path, wait):
        if use_database_lock:
            with database_lock(engine, wait):
                yield
        else:
            yield


@contextmanager
def contention_errors(writer: str) -> Iterator[None]:
    """Database errors that mean another writer got there first, as exit-75 errors.

    `writer` names who lost, e.g. "run" or "reconcile", for the message.
    """
    try:
        yield
    except IntegrityError as exc:
        raise ConcurrentRun(
            f"another {writer} committed the same rows first; nothing written"
        ) from exc
    except OperationalError as exc:
        text = str(exc.orig)
        if "database is locked" in text:
            raise LockHeld("the SQLite database is locked by another writer") from exc
        if _mysql_code(exc) in LOST_RACE_CODES:
            # On Galera, another node's commit of the same rows surfaces as 1213: a
            # certification failure at COMMIT, or a brute-force abort of any statement.
            raise ConcurrentRun(
                f"another writer holds or committed the rows this {writer} writes; "
                f"nothing written: {text}"
            ) from exc
        raise


# ER_LOCK_WAIT_TIMEOUT, ER_LOCK_DEADLOCK: the transaction lost to another writer and was
# rolled back.
LOST_RACE_CODES = frozenset({1205, 1213})


def _mysql_code(exc: DBAPIError) -> int | None:
    args = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None
