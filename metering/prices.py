"""`metering prices load` and `prices list`: the price book's versions in the database.

Pure part: `read_book` parses and validates a TOML file (metering.core.rating's rules).
Shell: `load` checks the new version against those stored and the closed months, then
adds it in one transaction; a file loaded before with the same valid_from is not loaded
twice. Versions are never edited: a correction is a new version.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from metering.core.rating import (
    Book,
    BookError,
    Version,
    book_digest,
    book_document,
    check_new_version,
    month_bounds,
    parse_book,
)
from metering.db import write_lock
from metering.errors import MeteringError, UsageError
from metering.store import invoices as store_invoices
from metering.store import prices as store
from metering.store.prices import VersionRow
from metering.timeutil import floor_hour, iso, to_ms


class PriceBookError(MeteringError):
    """A price book that cannot be loaded (exit 1)."""


@dataclass(frozen=True)
class LoadOutcome:
    version: int
    valid_from: datetime
    book: Book
    digest: str
    dry_run: bool
    already: bool  # the same book with the same valid_from is loaded already


def read_book(data: bytes, name: str) -> Book:
    try:
        parsed = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PriceBookError(f"{name}: not valid UTF-8 (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise PriceBookError(f"{name}: not valid TOML ({exc})") from None
    try:
        return parse_book(parsed)
    except BookError as exc:
        raise PriceBookError(f"{name}: {exc}") from None


def stored_versions(conn: Connection) -> list[Version]:
    out = []
    for row in store.versions(conn):
        book = parse_book(json.loads(row.document))
        out.append(Version(row.version, to_ms(row.valid_from), book))
    return out


def closed_until(conn: Connection) -> datetime | None:
    """The end of the latest closed month: no version may start before it."""
    months = store_invoices.closed(conn)
    return max((month_bounds(m)[1] for m in months), default=None)


def load(
    engine: Engine,
    book: Book,
    *,
    source: str,
    now: datetime,
    valid_from: datetime | None = None,
    dry_run: bool = False,
) -> LoadOutcome:
    """Add `book` as a new version, valid from --valid-from, else the file's valid_from,
    else the next hour after now (so that no billed hour changes price unasked)."""
    if valid_from is not None and book.valid_from is not None and valid_from != book.valid_from:
        raise UsageError(
            f"--valid-from {iso(valid_from)} contradicts the file's valid_from "
            f"{iso(book.valid_from)}"
        )
    start = valid_from or book.valid_from or floor_hour(now) + timedelta(hours=1)
    document = book_document(book)
    digest = book_digest(document)
    with engine.connect() as raw:
        conn = raw if dry_run else write_lock(raw)
        with conn.begin():
            rows = store.versions(conn)
            for row in rows:
                if row.digest == digest and row.valid_from == start:
                    return LoadOutcome(row.version, start, book, digest, dry_run, already=True)
            try:
                check_new_version(stored_versions(conn), start, book, closed_until(conn))
            except BookError as exc:
                raise PriceBookError(f"{source}: {exc}") from None
            number = store.next_version(conn)
            if not dry_run:
                store.insert_version(
                    conn,
                    VersionRow(number, start, book.currency, document, digest, source, now),
                )
    return LoadOutcome(number, start, book, digest, dry_run, already=False)


def versions(engine: Engine) -> list[VersionRow]:
    with engine.connect() as conn:
        return store.versions(conn)


def describe(outcome: LoadOutcome) -> str:
    book = outcome.book
    what = (
        f"{len(book.prices)} price(s), {len(book.overrides)} override(s), {book.currency}, "
        f"rounding {book.rounding.describe()}"
    )
    when = iso(outcome.valid_from)
    if outcome.already:
        return f"already loaded as version {outcome.version} valid from {when}: {what}\n"
    verb = "would load" if outcome.dry_run else "loaded"
    return f"{verb} version {outcome.version} valid from {when}: {what}\n"
