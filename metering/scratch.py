"""A private copy of an SQLite database, for a dry run.

A dry run executes the run's very writes and rolls them back. On MariaDB that holds
row locks no producer needs; on SQLite any write takes the one database-wide write
lock until the rollback, so `metering ingest` (or the platform) would wait for the
whole dry run and then fail with "database is locked". Copying the file first is
one read (SQLite's online backup; in WAL mode readers never block writers), and the
dry run then writes to the copy only.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine

from metering.db import make_engine


@contextmanager
def sqlite_copy(engine: Engine) -> Iterator[Engine]:
    """An engine on a copy of `engine`'s database, deleted on exit."""
    with tempfile.TemporaryDirectory(prefix="metering-dry-run-") as directory:
        path = Path(directory) / "copy.db"
        target = sqlite3.connect(path)
        try:
            with engine.connect() as conn:
                source = conn.connection.driver_connection
                assert isinstance(source, sqlite3.Connection)
                source.backup(target)
        finally:
            target.close()
        copy = make_engine(f"sqlite:///{path}")
        try:
            yield copy
        finally:
            copy.dispose()
