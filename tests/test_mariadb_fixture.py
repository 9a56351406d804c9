"""Sanity checks for the database fixtures in conftest.py."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url


def _check_empty_usable(url: str) -> str:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
            assert sa.inspect(conn).get_table_names() == []
            conn.execute(sa.text("CREATE TABLE probe (id INTEGER PRIMARY KEY, v VARCHAR(10))"))
            conn.execute(sa.text("INSERT INTO probe (id, v) VALUES (1, 'x')"))
            assert conn.execute(sa.text("SELECT v FROM probe")).scalar_one() == "x"
            conn.execute(sa.text("DROP TABLE probe"))
            if conn.dialect.name == "mysql":
                return conn.execute(sa.text("SELECT DATABASE()")).scalar_one()
            return ""
    finally:
        engine.dispose()


@pytest.mark.mariadb
def test_mariadb_url_is_fresh_database(mariadb_url: str, mysql_url) -> None:
    url = make_url(mariadb_url)
    assert url.database != mysql_url.database
    assert url.database.startswith("t_")
    assert _check_empty_usable(mariadb_url) == url.database


@pytest.mark.mariadb
def test_mariadb_databases_differ_and_are_dropped(mariadb_url_factory, mysql_url) -> None:
    url1, url2 = mariadb_url_factory(), mariadb_url_factory()
    name1, name2 = make_url(url1).database, make_url(url2).database
    assert name1 != name2
    assert _check_empty_usable(url1) == name1
    assert _check_empty_usable(url2) == name2

    mariadb_url_factory.close()
    admin = sa.create_engine(mysql_url, poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            names = set(conn.execute(sa.text("SHOW DATABASES")).scalars())
    finally:
        admin.dispose()
    assert name1 not in names
    assert name2 not in names


def test_database_url(database_url: str) -> None:
    _check_empty_usable(database_url)


def test_sqlite_url(sqlite_url: str) -> None:
    assert make_url(sqlite_url).get_backend_name() == "sqlite"
    _check_empty_usable(sqlite_url)
