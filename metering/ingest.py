"""`metering ingest`: JSON lines (the contract's usage event examples) into usage_events.

Pure part: `decode_line` and `parse_line` turn one line into a row ready for insert or
raise `LineError` with a reason fit for an operator (it never echoes more than a short
snippet of the input). Shell: `ingest` reads lines, inserts them in batches, one
transaction per batch, and counts what it read, inserted, skipped as duplicates and
rejected as malformed.

Only what cannot be stored faithfully is rejected here (not JSON, a required column
missing, a wrong JSON type, too long for its column, a time that is not ISO 8601).
Billing validity (empty strings, negative quantities, unknown kinds or actions) is the
run's business: such events are stored as given and rejected, with a reason, by the run.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

from sqlalchemy import Connection, Engine

from metering.core.events import MAX_TEXT
from metering.db import write_lock
from metering.store import ingest as store
from metering.store import retention as store_retention
from metering.timeutil import from_ms, iso, parse_time, to_ms

# The NOT NULL columns of usage_events that ingest must be given (id, ingested_at: the db's).
REQUIRED = ("event_id", "kind", "entity", "action", "account", "resource_id", "occurred_at")

# Text columns and their VARCHAR lengths (characters), as in store/schema.py.
TEXT_COLUMNS: dict[str, int] = dict(MAX_TEXT)
TIME_COLUMNS = ("occurred_at", "period_start", "period_end")

BIGINT_MIN = -(2**63)
BIGINT_MAX = 2**63 - 1
MIN_YEAR, MAX_YEAR = 1000, 9999  # DATETIME's range on MySQL/MariaDB

# A usage event is a few hundred bytes. A longer line is rejected before it is decoded
# or parsed (its bytes are held once, never copied), and no row comes near the server's
# max_allowed_packet.
MAX_LINE_BYTES = 1024 * 1024

DEFAULT_BATCH_SIZE = 2000
SNIPPET_CHARS = 40


class LineError(ValueError):
    """A line that cannot be stored; `reason` says why, for the operator."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def snippet(value: object) -> str:
    """A short repr of a piece of input for a reason: never more than ~SNIPPET_CHARS."""
    text = repr(value)
    if len(text) > SNIPPET_CHARS:
        return text[: SNIPPET_CHARS - 3] + "..."
    return text


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for reasons."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def decode_line(raw: bytes) -> str:
    """One line's bytes as text: UTF-8 or LineError (with where it breaks)."""
    if len(raw) > MAX_LINE_BYTES:
        raise LineError(f"line is {len(raw)} bytes long, at most {MAX_LINE_BYTES} allowed")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(f"not valid UTF-8 (byte {exc.start} of the line)") from None


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise LineError(f"number out of range: {snippet(text)}")
    return value


def _reject_constant(name: str) -> NoReturn:
    raise LineError(f"{name} is not valid JSON")


def _check_string(column: str, value: str) -> None:
    if "\x00" in value:
        raise LineError(f"{column} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise LineError(f"{column} contains an unpaired surrogate (\\ud800-\\udfff)") from None


def _check_attributes(value: object) -> None:
    """Every string (key or value) of attributes: no NUL, no lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_string("attributes", item)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_string("attributes", key)
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)


def _text(column: str, value: object, escapes: bool) -> str:
    if not isinstance(value, str):
        raise LineError(f"{column} must be a string, got {json_type(value)}")
    limit = TEXT_COLUMNS[column]
    if len(value) > limit:
        raise LineError(f"{column} is {len(value)} characters long, at most {limit} allowed")
    if escapes:
        _check_string(column, value)
    return value


def _time(column: str, value: object) -> datetime:
    if not isinstance(value, str):
        raise LineError(f"{column} must be an ISO 8601 string, got {json_type(value)}")
    try:
        parsed = parse_time(value)
    except (ValueError, OverflowError):
        raise LineError(
            f"{column} is not an ISO 8601 time (e.g. 2016-12-12T15:48:32.000Z): {snippet(value)}"
        ) from None
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise LineError(
            f"{column} is out of range (years {MIN_YEAR}-{MAX_YEAR} UTC): {snippet(value)}"
        )
    return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)


def _quantity(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise LineError(f"quantity must be an integer or null, got {json_type(value)}")
    if not BIGINT_MIN <= value <= BIGINT_MAX:
        raise LineError("quantity is out of the signed 64-bit range")
    return value


def parse_line(text: str) -> dict[str, object]:
    """One JSON line as a usage_events row (without id and ingested_at), or LineError.

    Required: event_id, kind, entity, action, account, resource_id (strings) and
    occurred_at (ISO 8601; no offset = UTC). Optional: offering, unit (strings),
    quantity (integer), period_start, period_end (times), attributes (object); each
    may be null or absent. Times are converted to UTC and truncated to milliseconds.
    Unknown keys are ignored. Values are not judged for billing (empty strings,
    negative quantities, unknown kinds are returned as given).
    """
    try:
        data = json.loads(text, parse_float=_finite_float, parse_constant=_reject_constant)
    except LineError:
        raise
    except json.JSONDecodeError as exc:
        raise LineError(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise LineError("not valid JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise LineError(f"not valid JSON: {str(exc)[:80]}") from None
    if not isinstance(data, dict):
        raise LineError(f"not a JSON object (got {json_type(data)})")

    missing = [key for key in REQUIRED if data.get(key) is None]
    if missing:
        raise LineError("missing required " + ", ".join(missing))

    # A NUL or a lone surrogate can only come from a \u escape.
    escapes = "\\u" in text
    row: dict[str, object] = {}
    for column in TEXT_COLUMNS:
        value = data.get(column)
        row[column] = None if value is None else _text(column, value, escapes)
    for column in TIME_COLUMNS:
        value = data.get(column)
        row[column] = None if value is None else _time(column, value)
    row["quantity"] = _quantity(data.get("quantity"))
    attributes = data.get("attributes")
    if attributes is not None:
        if not isinstance(attributes, dict):
            raise LineError(f"attributes must be an object or null, got {json_type(attributes)}")
        if escapes:
            _check_attributes(attributes)
    row["attributes"] = attributes
    return row


@dataclass(frozen=True)
class IngestSummary:
    read: int  # non-blank lines
    inserted: int
    duplicates: int  # already stored, or repeated within a batch
    malformed: int


ErrorHandler = Callable[[int, str], None]  # (line number, reason)
ProgressHandler = Callable[[int], None]  # bytes of input done since the last call


def _ignore(_line: int, _reason: str) -> None:
    pass


def ingest(
    engine: Engine,
    lines: Iterable[bytes],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_error: ErrorHandler = _ignore,
    progress: ProgressHandler | None = None,
) -> IngestSummary:
    """Insert the events of JSON lines into usage_events, batch_size rows at a time.

    `lines` are raw lines (a file opened in binary); line numbers count every line,
    blank ones included. A blank line is skipped silently; a malformed one is passed
    to on_error(line number, reason) and skipped. A row whose event_id is already
    stored (or appears earlier in the same batch) is skipped and counted as a duplicate.

    Each batch commits in its own transaction, on purpose: one transaction for a
    multi-hour file would commit its rows with ids far below the watermark of the runs
    that happened meanwhile, beyond the settle lag, and they would never be billed.
    Per-batch commits stay within it. So an error (the database going away) leaves
    the batches before it stored; running the same file again is safe: what is stored
    already counts as duplicates.

    progress, if given, is called after each batch with the bytes of input it covered.

    After `metering prune`, a line dated before the pruned horizon is malformed here:
    the run would bill it against a history that lost its past (a redelivered
    measure twice: its event_id is no longer stored). Prune archives go into
    another database (docs/operations.md, "Retention").
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    with engine.connect() as conn:
        pruned = store_retention.horizon(conn)
    read = inserted = duplicates = malformed = 0
    batch: list[dict[str, object]] = []
    pending_bytes = 0

    def flush() -> None:
        nonlocal inserted, duplicates, pending_bytes
        if batch:
            # A connection per batch: the pool's pre-ping survives a slow stdin.
            with engine.connect() as conn:
                added = _store_batch(conn, batch)
            inserted += added
            duplicates += len(batch) - added
            batch.clear()
        if progress is not None and pending_bytes:
            progress(pending_bytes)
        pending_bytes = 0

    for number, raw in enumerate(lines, start=1):
        pending_bytes += len(raw)
        if not raw or raw.isspace():
            continue
        read += 1
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            row = parse_line(decode_line(raw))
            if pruned is not None:
                _after_horizon(row, pruned)
            batch.append(row)
        except LineError as exc:
            malformed += 1
            on_error(number, exc.reason)
            continue
        if len(batch) >= batch_size:
            flush()
    flush()
    return IngestSummary(read=read, inserted=inserted, duplicates=duplicates, malformed=malformed)


def _after_horizon(row: dict[str, object], pruned: int) -> None:
    for column in ("occurred_at", "period_start"):
        value = row[column]
        if isinstance(value, datetime) and to_ms(value) < pruned:
            raise LineError(
                f"{column} is before the pruned horizon {iso(from_ms(pruned))}: events "
                "before it were pruned here; load it into another database"
            )


def _store_batch(conn: Connection, batch: list[dict[str, object]]) -> int:
    """One transaction: insert the batch's new events; returns how many were inserted."""
    unique: dict[str, dict[str, object]] = {}
    for row in batch:
        unique.setdefault(str(row["event_id"]), row)
    with write_lock(conn).begin():
        existing = store.existing_event_ids(conn, list(unique))
        new_ids = [event_id for event_id in unique if event_id not in existing]
        if not new_ids:
            return 0
        store.insert_events(conn, [unique[event_id] for event_id in new_ids])
        # The snapshot of this transaction sees its own rows, not those a racing
        # ingest committed meanwhile (skipped by the insert): the exact count.
        return store.count_event_ids(conn, new_ids)
