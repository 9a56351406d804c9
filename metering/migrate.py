"""Alembic, driven from code: upgrade, current revision, and the head check.

Alembic is imported only by `metering db`: loading it costs every command about a
fifth of a second, and the head check needs no more than one row of alembic_version.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

from metering.errors import SchemaNotAtHead

if TYPE_CHECKING:
    from alembic.config import Config

# The newest revision in migrations/versions; tests/test_foundation.py holds it to
# what Alembic finds there, so a new migration cannot forget it.
HEAD = "0006"


def migrations_dir() -> Path:
    """Inside the wheel: metering/migrations; in a checkout: the top-level migrations/."""
    packaged = Path(__file__).resolve().parent / "migrations"
    if (packaged / "env.py").is_file():
        return packaged
    return Path(__file__).resolve().parent.parent / "migrations"


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def head() -> str:
    """The newest revision, as Alembic reads it from the migration scripts."""
    from alembic.script import ScriptDirectory

    head_rev = ScriptDirectory.from_config(_config()).get_current_head()
    assert head_rev is not None, "migrations/ has no revision"
    return head_rev


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def require_head(engine: Engine) -> None:
    found = current(engine)
    if found != HEAD:
        state = "empty (no schema)" if found is None else f"at revision {found}"
        raise SchemaNotAtHead(
            f"database schema is {state}, this version of metering needs {HEAD}; "
            "run: metering db upgrade"
        )
