"""Fixtures of the fault suite: a migrated MariaDB database and a fault seed."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tests.support import migrated

SEED_ENV = "METERING_FAULT_SEED"


@pytest.fixture
def engine(mariadb_url: str) -> Iterator[Engine]:
    """A fresh MariaDB database at the schema head (URL: the mariadb_url fixture)."""
    engine = migrated(mariadb_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def seed() -> int:
    """Random moments differ per session; METERING_FAULT_SEED=N replays a failure."""
    raw = os.environ.get(SEED_ENV)
    value = int(raw) if raw else random.SystemRandom().randrange(10**6)
    print(f"replay with {SEED_ENV}={value}")  # shown by pytest when the test fails
    return value
