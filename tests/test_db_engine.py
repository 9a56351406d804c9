"""The engines metering/db.py makes for MariaDB: its PyMySQL connections share one TLS
context where the URL gives no TLS option, and build their own where it does."""

from __future__ import annotations

import ssl

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from metering import db


def test_connections_without_tls_options_share_one_context() -> None:
    connection = db._pymysql_connection_class()
    first, second = (connection(host="127.0.0.1", defer_connect=True) for _ in range(2))
    # PyMySQL's own mode here: TLS if the server offers it, nothing verified.
    assert first.ctx is second.ctx
    assert first.ctx.verify_mode == ssl.CERT_NONE


def test_tls_options_still_get_a_context_of_their_own() -> None:
    connection = db._pymysql_connection_class()
    plain = connection(host="127.0.0.1", defer_connect=True)
    verified = connection(host="127.0.0.1", ssl_verify_cert=True, defer_connect=True)
    assert verified.ctx is not plain.ctx
    assert verified.ctx.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.mariadb
def test_an_engines_connections_share_the_context_and_work(mariadb_url: str) -> None:
    engine = db.make_engine(mariadb_url)
    try:
        with engine.connect() as a, engine.connect() as b:
            raw = [c.connection.dbapi_connection for c in (a, b)]
            assert raw[0] is not raw[1]
            assert raw[0].ctx is raw[1].ctx  # type: ignore[union-attr]
            assert a.exec_driver_sql("SELECT 1").scalar_one() == 1
            assert b.exec_driver_sql("SELECT 2").scalar_one() == 2
    finally:
        engine.dispose()


@pytest.mark.mariadb
def test_a_url_naming_a_ca_requires_tls(mariadb_url: str) -> None:
    """docs/operations.md: a CA in the URL makes TLS required (the test server offers
    none, so the connection is refused rather than made in the clear)."""
    cafile = ssl.get_default_verify_paths().cafile
    if cafile is None:
        pytest.skip("no system CA file")
    url = make_url(mariadb_url).update_query_dict({"ssl_ca": cafile})
    engine = db.make_engine(url.render_as_string(hide_password=False))
    try:
        with pytest.raises(OperationalError, match="SSL is required"):
            engine.connect()
    finally:
        engine.dispose()
