"""price_versions: each loaded price book, never edited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from metering.store.schema import price_versions


@dataclass(frozen=True, slots=True)
class VersionRow:
    version: int
    valid_from: datetime
    currency: str
    document: str
    digest: str
    source: str | None
    loaded_at: datetime


def versions(conn: Connection) -> list[VersionRow]:
    query = select(price_versions).order_by(price_versions.c.version)
    return [
        VersionRow(
            int(r.version), r.valid_from, r.currency, r.document, r.digest, r.source, r.loaded_at
        )
        for r in conn.execute(query)
    ]


def next_version(conn: Connection) -> int:
    return (
        int(conn.execute(select(func.coalesce(func.max(price_versions.c.version), 0))).scalar_one())
        + 1
    )


def insert_version(conn: Connection, row: VersionRow) -> None:
    conn.execute(
        insert(price_versions).values(
            version=row.version,
            valid_from=row.valid_from,
            currency=row.currency,
            document=row.document,
            digest=row.digest,
            source=row.source,
            loaded_at=row.loaded_at,
        )
    )
