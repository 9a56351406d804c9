"""Shared pytest fixtures: SQLite and private-MariaDB database URLs.

The MariaDB instance is started by ``scripts/test.sh`` (via
``scripts/mariadb.sh``), which exports ``METERING_TEST_MYSQL_URL``.  Each test
using a MariaDB URL gets its own freshly created database, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from tests.support import Database, migrated

MYSQL_URL_ENV = "METERING_TEST_MYSQL_URL"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mariadb: test needs the private MariaDB server")
    config.addinivalue_line("markers", "slow: slow test")


@pytest.fixture(scope="session")
def mysql_url() -> URL:
    """URL of the test MariaDB server (its default database), from the env."""
    raw = os.environ.get(MYSQL_URL_ENV)
    if not raw:
        pytest.skip(f"{MYSQL_URL_ENV} not set; run scripts/test.sh")
    return make_url(raw)


@pytest.fixture(scope="session")
def _mysql_admin_engine(mysql_url: URL) -> Iterator[sa.Engine]:
    engine = sa.create_engine(mysql_url, poolclass=sa.pool.NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


class MariaDBDatabases:
    """Creates fresh uniquely named databases on the test server; drops them all on close."""

    def __init__(self, mysql_url: URL, admin: sa.Engine) -> None:
        self._mysql_url = mysql_url
        self._admin = admin
        self.names: list[str] = []

    def __call__(self) -> str:
        """Create a new empty database and return a URL (password included) for it."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self._admin.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        self.names.append(name)
        return self._mysql_url.set(database=name).render_as_string(hide_password=False)

    def close(self) -> None:
        with self._admin.begin() as conn:
            while self.names:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{self.names.pop()}`")


@pytest.fixture
def mariadb_url_factory(
    mysql_url: URL, _mysql_admin_engine: sa.Engine
) -> Iterator[MariaDBDatabases]:
    """Callable returning a URL of a new empty MariaDB database per call (all dropped after)."""
    factory = MariaDBDatabases(mysql_url, _mysql_admin_engine)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh, empty SQLite file database."""
    return f"sqlite:///{tmp_path}/metering.db"


@pytest.fixture
def mariadb_url(mariadb_url_factory: MariaDBDatabases) -> str:
    """URL of a fresh, empty, uniquely named MariaDB database (dropped after)."""
    return mariadb_url_factory()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL; the test runs once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/metering.db"
    factory: MariaDBDatabases = request.getfixturevalue("mariadb_url_factory")
    return factory()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI tests: no user config file leaks in."""
    return {"XDG_CONFIG_HOME": str(tmp_path / "config"), "METERING_CONFIG": ""}


@pytest.fixture
def isolated_env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI tests of configuration: no user config, data directory,
    database URL or lock file leaks in; the default database lands under tmp_path."""
    return {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "METERING_CONFIG": "",
        "METERING_DATABASE_URL": "",
        "METERING_LOCK_FILE": str(tmp_path / "metering.lock"),
    }


@pytest.fixture
def sqlite_database(sqlite_url: str) -> Iterator[Database]:
    """A migrated SQLite database that property tests empty between examples."""
    engine = migrated(sqlite_url)
    try:
        yield Database(engine)
    finally:
        engine.dispose()


@pytest.fixture
def mariadb_database(mariadb_url: str) -> Iterator[Database]:
    """A migrated MariaDB database that property tests empty between examples."""
    engine = migrated(mariadb_url)
    try:
        yield Database(engine)
    finally:
        engine.dispose()
