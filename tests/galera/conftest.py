"""Fixtures of the Galera suite: a fresh database on the private 3-node cluster.

``scripts/test.sh`` starts the cluster (``scripts/galera.sh``) and exports
``METERING_TEST_GALERA_URLS`` (one URL per node) and ``METERING_TEST_GALERA_DIR``.
Each test gets its own database, created through node 1 (DDL replicates to the
others) and migrated there; every node's URL for it, and an engine per node.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.engine import URL, make_url

from metering.db import make_engine
from tests.faults.scenario import ROOT
from tests.support import migrated

URLS_ENV = "METERING_TEST_GALERA_URLS"
DIR_ENV = "METERING_TEST_GALERA_DIR"
GALERA_SH = ROOT / "scripts" / "galera.sh"


@pytest.fixture(scope="session")
def galera_urls() -> list[URL]:
    raw = os.environ.get(URLS_ENV)
    if not raw:
        pytest.skip(
            f"{URLS_ENV} not set: no Galera cluster (scripts/test.sh starts one when "
            "galera-4 is installed or installable; or run scripts/galera.sh start DIR "
            "and source DIR/env)"
        )
    urls = [make_url(u) for u in raw.split(",")]
    assert len(urls) == 3, f"{URLS_ENV} must name 3 nodes, not {len(urls)}"
    return urls


@pytest.fixture(scope="session")
def galera_dir(galera_urls: list[URL]) -> Path:
    raw = os.environ.get(DIR_ENV)
    if not raw:
        pytest.skip(f"{DIR_ENV} not set: this test stops and restarts a node of the cluster")
    return Path(raw)


@dataclass
class Cluster:
    """One test database, seen through each node."""

    urls: list[str]  # with the password: for subprocesses
    engines: list[Engine] = field(default_factory=list)

    def engine(self, node: int) -> Engine:
        """Node 1, 2 or 3."""
        return self.engines[node - 1]


def restart_stopped_nodes(where: Path) -> None:
    """Back to three nodes: those down rejoin by IST (or SST)."""
    subprocess.run(
        ["bash", str(GALERA_SH), "start", str(where)],
        check=True,
        timeout=300,
        capture_output=True,
    )


@pytest.fixture
def galera(galera_urls: list[URL]) -> Iterator[Cluster]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(galera_urls[0], poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        )
    urls = [u.set(database=name).render_as_string(hide_password=False) for u in galera_urls]
    cluster = Cluster(urls)
    try:
        cluster.engines.append(migrated(urls[0]))
        cluster.engines.extend(make_engine(u) for u in urls[1:])
        yield cluster
    finally:
        for engine in cluster.engines:
            engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()
