"""metering ingest: parse_line (pure) and ingest (into SQLite and MariaDB)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from metering import migrate
from metering.db import make_engine
from metering.ingest import MAX_LINE_BYTES, IngestSummary, LineError, ingest, parse_line
from metering.store.schema import usage_events

RESOURCE = {
    "event_id": "r-1",
    "kind": "resource",
    "entity": "vm",
    "action": "create",
    "occurred_at": "2016-12-12T15:48:32.000Z",
    "account": "geneva-jug",
    "resource_id": "7a070a3d-66ff-4658-ab08-fe3cecd7c70f",
    "offering": "medium",
    "attributes": {"template": "ubuntu-16.04", "source": "cloudstack", "version": 1},
}
QUANTITY = {
    "event_id": "q-1",
    "kind": "quantity",
    "entity": "ip",
    "action": "measure",
    "account": "geneva-jug",
    "resource_id": "159.100.251.251",
    "quantity": 10485760,
    "unit": "byte",
    "period_start": "2016-12-12T15:48:00Z",
    "period_end": "2016-12-12T15:49:00Z",
    "occurred_at": "2016-12-12T15:49:00Z",
}


def line(base: dict[str, Any] | None = None, **changes: Any) -> str:
    data = dict(RESOURCE if base is None else base)
    for key, value in changes.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    return json.dumps(data)


def reason(text: str) -> str:
    with pytest.raises(LineError) as info:
        parse_line(text)
    assert str(info.value) == info.value.reason
    return info.value.reason


# --- parse_line: valid input ----------------------------------------------------------


def test_contract_resource_example() -> None:
    row = parse_line(line())
    assert row == {
        "event_id": "r-1",
        "kind": "resource",
        "entity": "vm",
        "action": "create",
        "account": "geneva-jug",
        "resource_id": "7a070a3d-66ff-4658-ab08-fe3cecd7c70f",
        "offering": "medium",
        "unit": None,
        "occurred_at": datetime(2016, 12, 12, 15, 48, 32, tzinfo=UTC),
        "period_start": None,
        "period_end": None,
        "quantity": None,
        "attributes": {"template": "ubuntu-16.04", "source": "cloudstack", "version": 1},
    }


def test_contract_quantity_example() -> None:
    row = parse_line(line(QUANTITY))
    assert row["quantity"] == 10485760
    assert row["unit"] == "byte"
    assert row["offering"] is None
    assert row["attributes"] is None
    assert row["period_start"] == datetime(2016, 12, 12, 15, 48, tzinfo=UTC)
    assert row["period_end"] == datetime(2016, 12, 12, 15, 49, tzinfo=UTC)
    assert row["occurred_at"] == datetime(2016, 12, 12, 15, 49, tzinfo=UTC)


def test_offsets_converted_to_utc() -> None:
    row = parse_line(
        line(
            QUANTITY,
            occurred_at="2016-12-12T16:49:00+01:00",
            period_start="2016-12-12T10:48:00.5-05:00",
            period_end="2016-12-12T15:49:00",  # no offset: UTC
        )
    )
    assert row["occurred_at"] == datetime(2016, 12, 12, 15, 49, tzinfo=UTC)
    assert row["period_start"] == datetime(2016, 12, 12, 15, 48, 0, 500000, tzinfo=UTC)
    assert row["period_end"] == datetime(2016, 12, 12, 15, 49, tzinfo=UTC)
    for column in ("occurred_at", "period_start", "period_end"):
        value = row[column]
        assert isinstance(value, datetime) and value.utcoffset() is not None
        assert value.tzinfo == UTC


def test_offset_crossing_a_day_and_year() -> None:
    row = parse_line(line(occurred_at="2017-01-01T00:30:00+01:00"))
    assert row["occurred_at"] == datetime(2016, 12, 31, 23, 30, tzinfo=UTC)


def test_times_truncated_to_milliseconds() -> None:
    row = parse_line(line(occurred_at="2016-12-12T15:48:32.123999Z"))
    assert row["occurred_at"] == datetime(2016, 12, 12, 15, 48, 32, 123000, tzinfo=UTC)
    row = parse_line(line(occurred_at="2016-12-12T15:48:32.9999999Z"))
    assert row["occurred_at"] == datetime(2016, 12, 12, 15, 48, 32, 999000, tzinfo=UTC)


def test_billing_invalid_values_are_stored_as_given() -> None:
    row = parse_line(
        line(
            QUANTITY,
            kind="bogus",
            action="",
            account="",
            resource_id="",
            quantity=-5,
            unit="",
            period_start="2016-12-12T16:00:00Z",
            period_end="2016-12-12T15:00:00Z",
        )
    )
    assert (row["kind"], row["action"], row["account"], row["resource_id"]) == ("bogus", "", "", "")
    assert row["quantity"] == -5
    assert row["unit"] == ""


def test_unicode_and_sql_looking_strings_kept_literally() -> None:
    text = line(
        account="Zürich-🚀-日本",
        resource_id="'); DROP TABLE usage_events; --",
        offering='a\\b"c%_',
        attributes={
            "note": "naïve ☃ \U0001f600",
            "sql": "1' OR '1'='1",
            "nested": [1, {"x": None}],
        },
    )
    row = parse_line(text)
    assert row["account"] == "Zürich-🚀-日本"
    assert row["resource_id"] == "'); DROP TABLE usage_events; --"
    assert row["offering"] == 'a\\b"c%_'
    attributes = row["attributes"]
    assert isinstance(attributes, dict) and attributes["note"] == "naïve ☃ \U0001f600"
    # ensure_ascii escapes (\u00fc, surrogate pairs) decode to the same strings
    assert parse_line(json.dumps(json.loads(text), ensure_ascii=True)) == row


def test_length_limits_count_characters_not_bytes() -> None:
    row = parse_line(line(event_id="é" * 64, kind="ü" * 16, entity="😀" * 32))
    assert row["event_id"] == "é" * 64


def test_quantity_limits_and_null() -> None:
    assert parse_line(line(QUANTITY, quantity=2**63 - 1))["quantity"] == 2**63 - 1
    assert parse_line(line(QUANTITY, quantity=-(2**63)))["quantity"] == -(2**63)
    assert parse_line(line(QUANTITY, quantity=None))["quantity"] is None
    assert parse_line(line(QUANTITY, quantity=...))["quantity"] is None
    assert parse_line(line(QUANTITY, quantity=0))["quantity"] == 0


def test_optional_columns_null_or_absent() -> None:
    for value in (None, ...):
        row = parse_line(
            line(offering=value, unit=value, period_start=value, attributes=value, quantity=value)
        )
        assert row["offering"] is None and row["unit"] is None
        assert row["period_start"] is None and row["attributes"] is None


def test_unknown_keys_ignored() -> None:
    row = parse_line(line(extra="x", another={"deep": [1, 2]}, id=99, ingested_at="whenever"))
    assert "extra" not in row and "id" not in row and "ingested_at" not in row


def test_attributes_may_hold_any_json() -> None:
    attrs = {"a": [1, 2.5, -3e10, True, None, "s"], "b": {"c": {}}, "": ""}
    assert parse_line(line(attributes=attrs))["attributes"] == attrs
    assert parse_line(line(attributes={}))["attributes"] == {}


def test_surrounding_whitespace_and_crlf() -> None:
    assert parse_line("  " + line() + " \r\n")["event_id"] == "r-1"


# --- parse_line: every error kind -----------------------------------------------------


@pytest.mark.parametrize("text", ["not json", "{", '{"event_id": "x",}', "{'a': 1}", "[1,2", "nul"])
def test_not_json(text: str) -> None:
    assert reason(text).startswith("not valid JSON")


@pytest.mark.parametrize(
    ("text", "got"),
    [("[]", "array"), ('"x"', "string"), ("1", "number"), ("null", "null"), ("true", "boolean")],
)
def test_not_an_object(text: str, got: str) -> None:
    assert reason(text) == f"not a JSON object (got {got})"


@pytest.mark.parametrize(
    "column", ["event_id", "kind", "entity", "action", "account", "resource_id", "occurred_at"]
)
def test_required_missing_or_null(column: str) -> None:
    assert reason(line(**{column: ...})) == f"missing required {column}"
    assert reason(line(**{column: None})) == f"missing required {column}"


def test_several_missing_named_together() -> None:
    assert reason("{}") == (
        "missing required event_id, kind, entity, action, account, resource_id, occurred_at"
    )


@pytest.mark.parametrize(
    "column", ["event_id", "kind", "entity", "action", "account", "resource_id", "offering", "unit"]
)
@pytest.mark.parametrize(
    ("value", "got"),
    [(1, "number"), (1.5, "number"), (True, "boolean"), ([], "array"), ({}, "object")],
)
def test_text_must_be_string(column: str, value: object, got: str) -> None:
    assert reason(line(**{column: value})) == f"{column} must be a string, got {got}"


@pytest.mark.parametrize(
    ("column", "limit"),
    [
        ("event_id", 64),
        ("kind", 16),
        ("entity", 32),
        ("action", 16),
        ("account", 64),
        ("resource_id", 64),
        ("offering", 64),
        ("unit", 16),
    ],
)
def test_text_too_long(column: str, limit: int) -> None:
    assert parse_line(line(**{column: "x" * limit}))[column] == "x" * limit
    assert reason(line(**{column: "x" * (limit + 1)})) == (
        f"{column} is {limit + 1} characters long, at most {limit} allowed"
    )


@pytest.mark.parametrize(
    ("value", "got"),
    [(1.0, "number"), (1.5, "number"), ("10", "string"), (True, "boolean"), ([1], "array")],
)
def test_quantity_must_be_integer(value: object, got: str) -> None:
    assert (
        reason(line(QUANTITY, quantity=value)) == f"quantity must be an integer or null, got {got}"
    )


def test_quantity_exponent_is_a_float() -> None:
    text = line(QUANTITY).replace("10485760", "1e3")
    assert reason(text) == "quantity must be an integer or null, got number"


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_quantity_out_of_range(value: int) -> None:
    assert reason(line(QUANTITY, quantity=value)) == "quantity is out of the signed 64-bit range"


def test_huge_integer_literal() -> None:
    text = line(QUANTITY).replace("10485760", "9" * 5000)
    assert reason(text).startswith("not valid JSON")
    assert len(reason(text)) < 120


@pytest.mark.parametrize("column", ["occurred_at", "period_start", "period_end"])
@pytest.mark.parametrize(
    "value",
    ["yesterday", "2016-13-01T00:00:00Z", "2016-12-12T24:00:00Z", "12/12/2016", "", "2016-12-12T"],
)
def test_time_not_iso(column: str, value: str) -> None:
    assert reason(line(QUANTITY, **{column: value})).startswith(
        f"{column} is not an ISO 8601 time (e.g. 2016-12-12T15:48:32.000Z): "
    )


@pytest.mark.parametrize("value", [1481557712, 1481557712.5, True, {"t": 1}])
def test_time_must_be_string(value: object) -> None:
    assert reason(line(occurred_at=value)).startswith(
        "occurred_at must be an ISO 8601 string, got "
    )


@pytest.mark.parametrize(
    "value",
    [
        "0999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "1000-01-01T00:30:00+01:00",  # 0999 in UTC
        "9999-12-31T23:30:00-01:00",  # year 10000 in UTC
        "0001-01-01T00:00:00+01:00",  # below datetime.min
    ],
)
def test_time_out_of_range(value: str) -> None:
    assert "occurred_at" in reason(line(occurred_at=value))


def test_time_range_edges_accepted() -> None:
    assert parse_line(line(occurred_at="1000-01-01T00:00:00Z"))["occurred_at"] == datetime(
        1000, 1, 1, tzinfo=UTC
    )
    assert parse_line(line(occurred_at="9999-12-31T23:59:59.999Z"))["occurred_at"] == datetime(
        9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC
    )


@pytest.mark.parametrize(("value", "got"), [([1], "array"), ("x", "string"), (1, "number")])
def test_attributes_must_be_object(value: object, got: str) -> None:
    assert reason(line(attributes=value)) == f"attributes must be an object or null, got {got}"


@pytest.mark.parametrize("column", ["event_id", "account", "offering", "unit"])
def test_nul_rejected(column: str) -> None:
    assert reason(line(**{column: "a\u0000b"})) == f"{column} contains a NUL character"


def test_nul_in_attributes_rejected() -> None:
    assert reason(line(attributes={"k": ["a\u0000"]})) == "attributes contains a NUL character"
    assert reason(line(attributes={"k\u0000": 1})) == "attributes contains a NUL character"


def test_lone_surrogate_rejected() -> None:
    text = line(account="PLACEHOLDER").replace("PLACEHOLDER", "\\ud800x")
    assert "unpaired surrogate" in reason(text)
    text = line(attributes={"k": "PLACEHOLDER"}).replace("PLACEHOLDER", "\\udfff")
    assert "unpaired surrogate" in reason(text)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_rejected(constant: str) -> None:
    text = line(attributes={"x": 0}).replace('"x": 0', f'"x": {constant}')
    assert reason(text) == f"{constant} is not valid JSON"


def test_float_overflow_rejected() -> None:
    text = line(attributes={"x": 0}).replace('"x": 0', '"x": 1e400')
    assert reason(text).startswith("number out of range")


def test_deep_nesting_rejected() -> None:
    text = line(attributes={"x": 0}).replace('"x": 0', '"x": ' + "[" * 100_000 + "]" * 100_000)
    assert reason(text) == "not valid JSON: nested too deeply"


def test_reasons_echo_little_input() -> None:
    long = "x" * 10_000
    for text in (
        line(occurred_at=long),
        line(event_id=long),
        long,
        '{"a": "' + long,
        line(QUANTITY, quantity=long),
    ):
        assert len(reason(text)) < 150
        assert long[:100] not in reason(text)


# --- ingest: the shell, on both databases ---------------------------------------------


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def stored(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(usage_events).order_by(usage_events.c.id)).mappings()
        return {row["event_id"]: dict(row) for row in rows}


def as_lines(*texts: str) -> list[bytes]:
    return [text.encode("utf-8") + b"\n" for text in texts]


def run(engine: sa.Engine, lines: list[bytes], **kwargs: Any) -> tuple[IngestSummary, list[Any]]:
    errors: list[tuple[int, str]] = []
    summary = ingest(engine, lines, on_error=lambda n, r: errors.append((n, r)), **kwargs)
    return summary, errors


def test_round_trip(engine: sa.Engine) -> None:
    texts = [
        line(),
        line(QUANTITY),
        line(
            event_id="r-2",
            account="Zürich-🚀",
            resource_id="'); DROP TABLE usage_events; --",
            occurred_at="2016-12-12T16:48:32.123456+01:00",
            attributes={"note": "ü", "n": [1, None, {"deep": True}]},
        ),
        line(QUANTITY, event_id="q-2", kind="weird", account="", quantity=-(2**63), unit=""),
        line(QUANTITY, event_id="q-3", quantity=2**63 - 1, attributes=None, unit=...),
    ]
    summary, errors = run(engine, as_lines(*texts))
    assert summary == IngestSummary(read=5, inserted=5, duplicates=0, malformed=0)
    assert errors == []
    rows = stored(engine)
    assert list(rows) == ["r-1", "q-1", "r-2", "q-2", "q-3"]
    for text in texts:
        expected = parse_line(text)
        row = rows[str(expected["event_id"])]
        assert {key: row[key] for key in expected} == expected
        assert isinstance(row["ingested_at"], datetime)
        assert abs((row["ingested_at"] - datetime.now(UTC)).total_seconds()) < 300
    assert rows["r-2"]["occurred_at"] == datetime(2016, 12, 12, 15, 48, 32, 123000, tzinfo=UTC)
    with engine.connect() as conn:
        # absent/null attributes are SQL NULL, not the JSON text 'null'
        nulls = conn.execute(
            sa.select(usage_events.c.event_id).where(usage_events.c.attributes.is_(None))
        ).scalars()
        assert sorted(nulls) == ["q-1", "q-2", "q-3"]


def test_duplicates_malformed_and_blank_lines(engine: sa.Engine) -> None:
    first, _ = run(engine, as_lines(line(event_id="old")))
    assert first == IngestSummary(read=1, inserted=1, duplicates=0, malformed=0)
    lines = [
        line(event_id="a").encode() + b"\n",  # 1
        b"\n",  # 2 blank
        b"not json\n",  # 3
        line(event_id="old", account="other").encode() + b"\n",  # 4 dup against the db
        b"   \t \r\n",  # 5 blank
        line(event_id="a", account="second").encode() + b"\n",  # 6 dup in the file
        line(account=...).encode() + b"\n",  # 7
        b'{"event_id": "\xff\xfe"}\n',  # 8 not UTF-8
        line(event_id="b", kind=7).encode() + b"\n",  # 9
        line(event_id="c").encode(),  # 10, no final newline
    ]
    summary, errors = run(engine, lines)
    assert summary == IngestSummary(read=8, inserted=2, duplicates=2, malformed=4)
    assert [n for n, _ in errors] == [3, 7, 8, 9]
    assert errors[1][1] == "missing required account"
    assert errors[2][1].startswith("not valid UTF-8")
    assert errors[3][1] == "kind must be a string, got number"
    rows = stored(engine)
    assert sorted(rows) == ["a", "c", "old"]
    assert rows["a"]["account"] == "geneva-jug"  # the first one wins
    assert rows["old"]["account"] == "geneva-jug"


@pytest.mark.parametrize("batch_size", [1, 2, 3, 1000])
def test_duplicates_across_batches(engine: sa.Engine, batch_size: int) -> None:
    ids = ["a", "b", "a", "c", "b", "b", "d", "a"]
    summary, _ = run(engine, as_lines(*(line(event_id=i) for i in ids)), batch_size=batch_size)
    assert summary == IngestSummary(read=8, inserted=4, duplicates=4, malformed=0)
    assert sorted(stored(engine)) == ["a", "b", "c", "d"]


def test_event_ids_differing_by_trailing_space_or_case_are_distinct(engine: sa.Engine) -> None:
    summary, _ = run(engine, as_lines(*(line(event_id=i) for i in ["a", "a ", "A", "ä"])))
    assert summary.inserted == 4 and summary.duplicates == 0


def test_long_line_is_malformed_not_a_crash(engine: sa.Engine) -> None:
    huge = line(attributes={"blob": "x" * (50 * 1024 * 1024)}).encode() + b"\n"
    summary, errors = run(
        engine, [*as_lines(line(event_id="a")), huge, *as_lines(line(event_id="b"))]
    )
    assert summary == IngestSummary(read=3, inserted=2, duplicates=0, malformed=1)
    assert errors == [(2, f"line is {len(huge)} bytes long, at most {MAX_LINE_BYTES} allowed")]


def test_bom_on_first_line_ignored(engine: sa.Engine) -> None:
    lines = [
        b"\xef\xbb\xbf" + line().encode() + b"\n",
        b"\xef\xbb\xbf" + line(event_id="z").encode(),
    ]
    summary, errors = run(engine, lines)
    assert summary.inserted == 1 and summary.malformed == 1
    assert errors[0][0] == 2


def test_progress_reports_every_byte(engine: sa.Engine) -> None:
    lines = [*as_lines(*(line(event_id=str(i)) for i in range(10))), b"\n", b"bad\n"]
    done: list[int] = []
    run(engine, lines, batch_size=3, progress=done.append)
    assert sum(done) == sum(len(raw) for raw in lines)
    assert len(done) >= 4


def test_empty_input(engine: sa.Engine) -> None:
    assert run(engine, [])[0] == IngestSummary(0, 0, 0, 0)
    assert run(engine, [b"\n", b""])[0] == IngestSummary(0, 0, 0, 0)


def test_batch_size_must_be_positive(engine: sa.Engine) -> None:
    with pytest.raises(ValueError):
        ingest(engine, [], batch_size=0)


@pytest.mark.slow
def test_100k_lines(engine: sa.Engine, request: pytest.FixtureRequest) -> None:
    total = 100_000

    def generate() -> Iterator[bytes]:
        for i in range(total):
            if i % 10_000 == 5:
                yield b"{broken\n"
            elif i % 10_000 == 6:
                yield b"\n"
            elif i % 2:
                yield (
                    f'{{"event_id": "q-{i}", "kind": "quantity", "entity": "ip", '
                    f'"action": "measure", "account": "acct-{i % 97}", '
                    f'"resource_id": "10.0.{i % 256}.{i % 251}", "quantity": {i * 1000}, '
                    f'"unit": "byte", "period_start": "2016-12-12T15:48:00Z", '
                    f'"period_end": "2016-12-12T15:49:00Z", '
                    f'"occurred_at": "2016-12-12T15:49:00Z"}}\n'
                ).encode()
            else:
                yield (
                    f'{{"event_id": "r-{i}", "kind": "resource", "entity": "vm", '
                    f'"action": "start", '
                    f'"occurred_at": "2016-12-12T15:{i % 60:02d}:{i % 59:02d}.{i % 1000:03d}Z", '
                    f'"account": "acct-{i % 97}", "resource_id": "vm-{i}", "offering": "medium", '
                    f'"attributes": {{"template": "ubuntu-16.04", "i": {i}}}}}\n'
                ).encode()

    started = time.perf_counter()
    summary = ingest(engine, generate())
    elapsed = time.perf_counter() - started
    print(f"\n100k lines into {engine.dialect.name}: {elapsed:.1f}s")
    assert summary == IngestSummary(read=99_990, inserted=99_980, duplicates=0, malformed=10)

    again = ingest(engine, (raw for n, raw in enumerate(generate()) if n < 5_000))
    assert again == IngestSummary(read=4_999, inserted=0, duplicates=4_998, malformed=1)

    with engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(usage_events)).scalar_one()
            == 99_980
        )
        sample = {
            row["event_id"]: row
            for row in conn.execute(
                sa.select(usage_events).where(
                    usage_events.c.event_id.in_(["q-1", "r-2", "q-99999", "r-77778", "r-5", "q-6"])
                )
            ).mappings()
        }
    assert sorted(sample) == ["q-1", "q-99999", "r-2", "r-77778"]
    assert sample["q-99999"]["quantity"] == 99_999_000
    assert sample["q-99999"]["resource_id"] == f"10.0.{99999 % 256}.{99999 % 251}"
    assert sample["r-77778"]["occurred_at"] == datetime(
        2016, 12, 12, 15, 77778 % 60, 77778 % 59, (77778 % 1000) * 1000, tzinfo=UTC
    )
    assert sample["r-77778"]["attributes"] == {"template": "ubuntu-16.04", "i": 77778}
    assert sample["r-2"]["offering"] == "medium" and sample["r-2"]["quantity"] is None


def test_insert_guard_skips_a_raced_duplicate(engine: sa.Engine) -> None:
    """The existence check missed a row another ingest committed: the insert skips it."""
    from metering.store import ingest as store

    run(engine, as_lines(line(event_id="raced")))
    before = stored(engine)["raced"]
    rows = [parse_line(line(event_id="raced", account="other")), parse_line(line(event_id="new"))]
    with engine.begin() as conn:
        store.insert_events(conn, rows)
        assert store.existing_event_ids(conn, ["raced", "new", "none"]) == {"raced", "new"}
        assert store.count_event_ids(conn, ["raced", "new", "none"]) == 2
    after = stored(engine)
    assert after["raced"] == before
    assert after["new"]["account"] == "geneva-jug"


@pytest.mark.mariadb
def test_race_counted_as_duplicate_on_mariadb(mariadb_url: str) -> None:
    """Another ingest commits an event_id between the existence check and the insert."""
    from metering.store import ingest as store

    engine = make_engine(mariadb_url)
    migrate.upgrade(engine)
    try:
        with engine.connect() as mine, engine.connect() as other, mine.begin():
            assert store.existing_event_ids(mine, ["x", "y"]) == set()
            with other.begin():
                store.insert_events(other, [parse_line(line(event_id="x", account="first"))])
            rows = [parse_line(line(event_id=i, account="second")) for i in ("x", "y")]
            store.insert_events(mine, rows)
            assert store.count_event_ids(mine, ["x", "y"]) == 1  # only y is ours
        accounts = {k: v["account"] for k, v in stored(engine).items()}
        assert accounts == {"x": "first", "y": "second"}
    finally:
        engine.dispose()
