"""Alembic, driven from code: upgrade, current revision, and the head check."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from metering.errors import SchemaNotAtHead


def migrations_dir() -> Path:
    """Inside the wheel: metering/migrations; in a checkout: the top-level migrations/."""
    packaged = Path(__file__).resolve().parent / "migrations"
    if (packaged / "env.py").is_file():
        return packaged
    return Path(__file__).resolve().parent.parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def head() -> str:
    head_rev = ScriptDirectory.from_config(_config()).get_current_head()
    assert head_rev is not None, "migrations/ has no revision"
    return head_rev


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def require_head(engine: Engine) -> None:
    found = current(engine)
    wanted = head()
    if found != wanted:
        state = "empty (no schema)" if found is None else f"at revision {found}"
        raise SchemaNotAtHead(
            f"database schema is {state}, this version of metering needs {wanted}; "
            "run: metering db upgrade"
        )
