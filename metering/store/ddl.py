"""What every migration needs to create tables the same way on each database."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection


def table_options(bind: Connection) -> dict[str, Any]:
    """Binary, no-pad collation on MySQL/MariaDB: keys compare byte for byte
    ('ACME' is not 'acme', 'a' is not 'a '), as on SQLite."""
    if bind.dialect.name not in ("mysql", "mariadb"):
        return {}
    version = str(bind.exec_driver_sql("SELECT VERSION()").scalar())
    if "mariadb" in version.lower():
        collation = "utf8mb4_nopad_bin"
    elif version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 8:
        collation = "utf8mb4_0900_bin"
    else:
        collation = "utf8mb4_bin"
    return {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": collation}
