"""`metering run` against billing-contract rules 1-14, one example (or a few) per edge
case, on SQLite and MariaDB, through the shell (metering.run.execute)."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import filelock
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, delete, insert, select, text

from metering import ingest as ingest_mod
from metering.errors import ConcurrentRun, LockHeld, UsageError
from metering.store import schema
from metering.store.schema import metering_state, rejected_events, runs, usage_events, usage_lines
from tests.contract_model import expected
from tests.support import billed, event, insert_events, measure, migrated, resource, run, t

D = Decimal
VM = ("acme", "vm", "vm-1")
IP = ("acme", "ip", "10.0.0.1")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = migrated(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def vm(offering: str, unit: str = "second") -> tuple[str, str, str, str, str]:
    return (*VM, offering, unit)


def ip(unit: str = "byte") -> tuple[str, str, str, str, str]:
    return (*IP, "", unit)


def keyed(base: tuple[str, str, str, str, str], **hours: Any) -> dict[Any, Decimal]:
    """{vm("m"), h10=3600} -> {(..., 10:00 of 2016-12-12): Decimal(3600)}."""
    return {(*base, t(f"2016-12-12T{h[1:]}:00Z")): D(str(v)) for h, v in hours.items()}


def stored_events(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(usage_events).order_by(usage_events.c.id)).mappings()
        return [dict(r) for r in rows]


def truth(engine: Engine, until: str) -> dict[Any, Decimal]:
    return expected(stored_events(engine), t(until))


def table(engine: Engine, name: str) -> list[tuple[Any, ...]]:
    tab = schema.metadata.tables[name]
    with engine.connect() as conn:
        return sorted(
            (tuple(r) for r in conn.execute(select(tab))), key=lambda r: tuple(map(str, r))
        )


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    return {name: table(engine, name) for name in schema.metadata.tables}


def state(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(metering_state)).mappings().one())


def lines_of(engine: Engine, run_id: str) -> list[tuple[Any, ...]]:
    c = usage_lines.c
    query = select(
        c.account, c.entity, c.resource_id, c.offering, c.unit, c.period_start, c.quantity
    )
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query.where(c.run_id == run_id))]


def findings(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(rejected_events).order_by(rejected_events.c.id)).mappings()
        return [dict(r) for r in rows]


def row_id(engine: Engine, event_id: str) -> int:
    with engine.connect() as conn:
        query = select(usage_events.c.id).where(usage_events.c.event_id == event_id)
        return int(conn.execute(query).scalar_one())


def count(engine: Engine, tab: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(sa.func.count()).select_from(tab)).scalar_one())


# -- rule 1: running time -------------------------------------------------------------


def test_runs_from_create_until_stop(engine: Engine, tmp_path: Path) -> None:
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T10:15:00Z", offering="medium"),
            resource("s", "stop", "2016-12-12T12:45:00Z"),
        ],
    )
    run(engine, "2016-12-12T14:00:00Z", tmp_path)
    assert billed(engine) == keyed(vm("medium"), h10=2700, h11=3600, h12=2700)


def test_start_while_running_and_stop_while_not_running_change_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T10:00:00Z", offering="m"),
            resource("s1", "start", "2016-12-12T10:30:00Z"),
            resource("p1", "stop", "2016-12-12T11:00:00Z"),
            resource("p2", "stop", "2016-12-12T11:15:00Z"),
            resource("s2", "start", "2016-12-12T11:30:00Z"),
            resource("s3", "start", "2016-12-12T11:45:00Z"),
            resource("p3", "stop", "2016-12-12T12:10:00Z"),
        ],
    )
    run(engine, "2016-12-12T14:00:00Z", tmp_path)
    assert billed(engine) == keyed(vm("m"), h10=3600, h11=1800, h12=600)
    reasons = {f["event_id"]: (f["category"], f["reason"]) for f in findings(engine)}
    assert reasons == {
        "s1": ("anomaly", "duplicate start"),
        "s3": ("anomaly", "duplicate start"),
        "p2": ("anomaly", "stop without start"),
    }


def test_nothing_after_destroy_counts(engine: Engine, tmp_path: Path) -> None:
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T10:00:00Z", offering="m"),
            resource("d", "destroy", "2016-12-12T10:30:00Z"),
            resource("s", "start", "2016-12-12T11:00:00Z"),
            resource("u", "update", "2016-12-12T11:10:00Z", offering="large"),
            resource("c2", "create", "2016-12-12T11:20:00Z", offering="m"),
        ],
    )
    run(engine, "2016-12-12T15:00:00Z", tmp_path)
    assert billed(engine) == keyed(vm("m"), h10=1800)
    assert [f["event_id"] for f in findings(engine) if f["category"] == "anomaly"] == [
        "s",
        "u",
        "c2",
    ]


def test_destroy_while_running_stops(engine: Engine, tmp_path: Path) -> None:
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T10:00:00Z", offering="m"),
            resource("d", "destroy", "2016-12-12T11:00:00.250Z"),
        ],
    )
    run(engine, "2016-12-12T15:00:00Z", tmp_path)
    assert billed(engine) == keyed(vm("m"), h10=3600, h11="0.25")


def test_ties_are_ordered_by_id(engine: Engine, tmp_path: Path) -> None:
    at = "2016-12-12T11:00:00Z"
    insert_events(
        engine,
        [
            resource("a-c", "create", "2016-12-12T10:00:00Z", resource_id="a", offering="m"),
            resource("a-p", "stop", at, resource_id="a"),
            resource("a-s", "start", at, resource_id="a"),
            resource("b-c", "create", "2016-12-12T10:00:00Z", resource_id="b", offering="m"),
            resource("b-s", "start", at, resource_id="b"),
            resource("b-p", "stop", at, resource_id="b"),
        ],
    )
    run(engine, "2016-12-12T12:30:00Z", tmp_path)
    a = ("acme", "vm", "a", "m", "second")
    b = ("acme", "vm", "b", "m", "second")
    assert billed(engine) == {**keyed(a, h10=3600, h11=3600), **keyed(b, h10=3600)}


# -- rule 2: offering -------------------------------------------------------------------


def test_update_with_another_offering_splits_time(engine: Engine, tmp_path: Path) -> None:
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T10:00:00Z", offering="small"),
            resource("u1", "update", "2016-12-12T10:20:30.500Z", offering="large"),
            resource("u2", "update", "2016-12-12T10:40:00Z", offering="large"),
            resource("p", "stop", "2016-12-12T11:10:00Z"),
        ],
    )
    run(engine, "2016-12-12T12:30:00Z", tmp_path)
    assert billed(engine) == {
        **keyed(vm("small"), h10="1230.5"),
        **keyed(vm("large"), h10="2369.5", h11=600),
    }


def test_offering_from_event_else_last_known(engine: Engine, tmp_path: Path) -> None:
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T10:00:00Z", offering="medium"),
            resource("p1", "stop", "2016-12-12T10:30:00Z"),
            resource("s1", "start", "2016-12-12T11:00:00Z"),
            resource("p2", "stop", "2016-12-12T11:30:00Z"),
            resource("u", "update", "2016-12-12T11:40:00Z", offering="large"),
            resource("s2", "start", "2016-12-12T12:00:00Z"),
            resource("p3", "stop", "2016-12-12T12:15:00Z"),
            resource("s3", "start", "2016-12-12T13:00:00Z", offering="small"),
            resource("p4", "stop", "2016-12-12T13:05:00Z"),
            resource("x", "create", "2016-12-12T10:00:00Z", resource_id="never-named"),
            resource("y", "stop", "2016-12-12T10:01:00Z", resource_id="never-named"),
        ],
    )
    run(engine, "2016-12-12T14:30:00Z", tmp_path)
    assert billed(engine) == {
        **keyed(vm("medium"), h10=1800, h11=1800),
        **keyed(vm("large"), h12=900),
        **keyed(vm("small"), h13=300),
        **keyed(("acme", "vm", "never-named", "", "second"), h10=60),
    }


# -- rule 3: hourly slicing -------------------------------------------------------------


def test_slicing_exact_to_the_millisecond(engine: Engine, tmp_path: Path) -> None:
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T10:59:59.999Z", offering="m"),
            resource("p", "stop", "2016-12-12T12:00:00.001Z"),
        ],
    )
    run(engine, "2016-12-12T13:30:00Z", tmp_path)
    assert billed(engine) == keyed(vm("m"), h10="0.001", h11=3600, h12="0.001")


def test_running_resources_billed_every_hour(engine: Engine, tmp_path: Path) -> None:
    insert_events(engine, [resource("c", "create", "2016-12-12T10:15:00Z", offering="m")])
    run(engine, "2016-12-12T11:30:00Z", tmp_path)
    assert billed(engine) == keyed(vm("m"), h10=2700)
    run(engine, "2016-12-12T12:30:00Z", tmp_path)
    assert billed(engine) == keyed(vm("m"), h10=2700, h11=3600)
    outcome = run(engine, "2016-12-12T13:29:59.999Z", tmp_path)
    assert outcome.nothing_to_do
    run(engine, "2016-12-12T15:45:00Z", tmp_path)
    assert billed(engine) == keyed(vm("m"), h10=2700, h11=3600, h12=3600, h13=3600, h14=3600)
    with engine.connect() as conn:
        per_hour = Counter(r[0] for r in conn.execute(select(usage_lines.c.period_start)))
    assert set(per_hour.values()) == {1}, "each hour billed by exactly one line"


# -- rule 4: quantities -----------------------------------------------------------------


def test_measure_split_pro_rata_in_whole_units(engine: Engine, tmp_path: Path) -> None:
    insert_events(
        engine,
        [
            measure("m1", 1001, "2016-12-12T12:59:30Z", "2016-12-12T13:00:30Z"),
            measure("m2", 10, "2016-12-12T10:20:00Z", "2016-12-12T12:20:00Z", resource_id="b"),
            measure("m3", 7, "2016-12-12T10:30:00Z", "2016-12-12T11:00:00Z", resource_id="c"),
        ],
    )
    run(engine, "2016-12-12T14:30:00Z", tmp_path)
    assert billed(engine) == {
        **keyed(ip(), h12=500, h13=501),
        **keyed(("acme", "ip", "b", "", "byte"), h10=3, h11=5, h12=2),
        **keyed(("acme", "ip", "c", "", "byte"), h10=7),
    }


def test_a_zero_measure_writes_no_line(engine: Engine, tmp_path: Path) -> None:
    # Usage lines carry non-zero amounts: a zero summed by the database (one hour) and
    # zero parts split in Python (two hours) both leave the table as it was.
    insert_events(
        engine,
        [
            measure("m1", 0, "2016-12-12T10:10:00Z", "2016-12-12T10:20:00Z"),
            measure("m2", 0, "2016-12-12T10:50:00Z", "2016-12-12T11:10:00Z", resource_id="b"),
            measure("m3", 3, "2016-12-12T10:20:00Z", "2016-12-12T10:30:00Z", resource_id="c"),
        ],
    )
    run(engine, "2016-12-12T12:30:00Z", tmp_path)
    with engine.connect() as conn:
        written = conn.execute(select(usage_lines.c.resource_id, usage_lines.c.quantity)).all()
    assert written == [("c", Decimal("3.000"))]


def test_zero_length_period_goes_to_its_hour(engine: Engine, tmp_path: Path) -> None:
    insert_events(
        engine,
        [
            measure("m1", 5, "2016-12-12T10:30:00Z", "2016-12-12T10:30:00Z"),
            measure("m2", 7, "2016-12-12T11:00:00Z", "2016-12-12T11:00:00Z"),
            measure("m3", 9, "2016-12-12T11:59:59.999Z", "2016-12-12T11:59:59.999Z"),
        ],
    )
    run(engine, "2016-12-12T12:30:00Z", tmp_path)
    assert billed(engine) == keyed(ip(), h10=5, h11=16)


def test_unit_defaults_to_byte_and_keys_are_per_resource(engine: Engine, tmp_path: Path) -> None:
    insert_events(
        engine,
        [
            measure("m1", 5, "2016-12-12T10:10:00Z", "2016-12-12T10:20:00Z", unit=None),
            measure("m2", 6, "2016-12-12T10:20:00Z", "2016-12-12T10:30:00Z", unit="byte"),
            measure("m3", 7, "2016-12-12T10:20:00Z", "2016-12-12T10:30:00Z", unit="packet"),
            measure("m4", 8, "2016-12-12T10:20:00Z", "2016-12-12T10:30:00Z", account="other"),
            measure("m5", 9, "2016-12-12T10:20:00Z", "2016-12-12T10:30:00Z", entity="lb"),
            measure("m6", 4, "2016-12-12T10:50:00Z", "2016-12-12T11:10:00Z", unit=None),
        ],
    )
    run(engine, "2016-12-12T12:30:00Z", tmp_path)
    assert billed(engine) == {
        **keyed(ip(), h10=13, h11=2),
        **keyed(ip("packet"), h10=7),
        **keyed(("other", "ip", "10.0.0.1", "", "byte"), h10=8),
        **keyed(("acme", "lb", "10.0.0.1", "", "byte"), h10=9),
    }


# -- rule 5: closed hours only ----------------------------------------------------------


def test_hour_billed_only_after_grace(engine: Engine, tmp_path: Path) -> None:
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T10:00:00Z", offering="m"),
            resource("p", "stop", "2016-12-12T10:30:00Z"),
            measure("m", 5, "2016-12-12T10:10:00Z", "2016-12-12T10:20:00Z"),
        ],
    )
    run(engine, "2016-12-12T11:29:59.999Z", tmp_path)
    assert billed(engine) == {}
    run(engine, "2016-12-12T11:30:00Z", tmp_path)
    assert billed(engine) == {**keyed(vm("m"), h10=1800), **keyed(ip(), h10=5)}


def test_custom_grace(engine: Engine, tmp_path: Path) -> None:
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00:00Z", offering="m")])
    grace = timedelta(minutes=5)
    run(engine, "2016-12-12T11:04:59.999Z", tmp_path, grace=grace)
    assert billed(engine) == {}
    run(engine, "2016-12-12T11:05:00Z", tmp_path, grace=grace)
    assert billed(engine) == keyed(vm("m"), h10=3600)
    run(engine, "2016-12-12T12:00:00Z", tmp_path, grace=timedelta(0))
    assert billed(engine) == keyed(vm("m"), h10=3600, h11=3600)


# -- rule 6: exactness whatever the delivery order and schedule --------------------------


def test_exact_whatever_the_delivery_order(engine: Engine, tmp_path: Path) -> None:
    events = [
        resource("c", "create", "2016-12-12T10:10:00Z", offering="s"),
        resource("u", "update", "2016-12-12T11:20:00Z", offering="l"),
        resource("p", "stop", "2016-12-12T13:05:00Z"),
        resource("s", "start", "2016-12-12T14:00:00Z"),
        measure("m1", 999, "2016-12-12T10:50:00Z", "2016-12-12T12:10:00Z"),
        measure("m2", 3, "2016-12-12T13:00:00Z", "2016-12-12T13:00:00Z"),
    ]
    schedule = ["11:40", "12:40", "12:41", "14:50", "16:31"]
    for now, batch in zip(schedule, [[4], [2, 0], [], [5, 1], [3]], strict=True):
        insert_events(engine, [events[i] for i in batch])
        run(engine, f"2016-12-12T{now}:00Z", tmp_path)
    assert billed(engine) == truth(engine, "2016-12-12T16:00:00Z")
    assert billed(engine)[(*vm("l"), t("2016-12-12T15:00:00Z"))] == 3600


# -- rule 7: late events become corrections ---------------------------------------------


def test_late_stop_gives_back_excess_as_negative_lines(engine: Engine, tmp_path: Path) -> None:
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00:00Z", offering="m")])
    run(engine, "2016-12-12T13:30:00Z", tmp_path)
    assert billed(engine) == keyed(vm("m"), h10=3600, h11=3600, h12=3600)
    insert_events(engine, [resource("p", "stop", "2016-12-12T10:30:00Z")])
    outcome = run(engine, "2016-12-12T14:30:00Z", tmp_path)
    assert billed(engine) == keyed(vm("m"), h10=1800)
    (chunk,) = outcome.runs
    assert sorted(lines_of(engine, chunk.run_id), key=lambda r: r[5]) == [
        (*vm("m"), t("2016-12-12T10:00:00Z"), D("-1800.000")),
        (*vm("m"), t("2016-12-12T11:00:00Z"), D("-3600.000")),
        (*vm("m"), t("2016-12-12T12:00:00Z"), D("-3600.000")),
    ]
    assert chunk.corrections == 3


def test_late_start_adds_positive_corrections(engine: Engine, tmp_path: Path) -> None:
    insert_events(engine, [resource("p", "stop", "2016-12-12T12:30:00Z", offering="m")])
    run(engine, "2016-12-12T13:30:00Z", tmp_path)
    assert billed(engine) == {}
    insert_events(engine, [resource("c", "create", "2016-12-12T10:45:00Z", offering="m")])
    run(engine, "2016-12-12T13:30:00Z", tmp_path)
    assert billed(engine) == keyed(vm("m"), h10=900, h11=3600, h12=1800)


def test_late_measure_becomes_a_correction_line(engine: Engine, tmp_path: Path) -> None:
    insert_events(engine, [measure("m1", 100, "2016-12-12T10:00:00Z", "2016-12-12T10:30:00Z")])
    run(engine, "2016-12-12T12:30:00Z", tmp_path)
    insert_events(
        engine,
        [
            measure("m2", 7, "2016-12-12T10:40:00Z", "2016-12-12T10:50:00Z"),
            measure("m3", 60, "2016-12-12T10:50:00Z", "2016-12-12T11:20:00Z"),
        ],
    )
    outcome = run(engine, "2016-12-12T13:30:00Z", tmp_path)
    assert billed(engine) == keyed(ip(), h10=127, h11=40)
    (chunk,) = outcome.runs
    assert sorted(lines_of(engine, chunk.run_id), key=lambda r: r[5]) == [
        (*ip(), t("2016-12-12T10:00:00Z"), D("27.000")),
        (*ip(), t("2016-12-12T11:00:00Z"), D("40.000")),
    ]
    assert chunk.corrections == 2


# -- rule 8: duplicates -----------------------------------------------------------------


def test_same_event_id_cannot_be_stored_twice(engine: Engine) -> None:
    row = resource("c", "create", "2016-12-12T10:00:00Z")
    insert_events(engine, [row])
    with pytest.raises(sa.exc.IntegrityError):
        insert_events(engine, [{**row, "occurred_at": t("2016-12-12T09:00:00Z")}])


def test_redelivery_through_ingest_counts_once(engine: Engine, tmp_path: Path) -> None:
    def jsonl(*events: dict[str, Any]) -> io.BytesIO:
        return io.BytesIO(b"".join(json.dumps(e).encode() + b"\n" for e in events))

    create = {
        "event_id": "e-1",
        "kind": "resource",
        "entity": "vm",
        "action": "create",
        "occurred_at": "2016-12-12T10:00:00Z",
        "account": "acme",
        "resource_id": "vm-1",
        "offering": "m",
    }
    traffic = {
        "event_id": "e-2",
        "kind": "quantity",
        "entity": "ip",
        "action": "measure",
        "account": "acme",
        "resource_id": "10.0.0.1",
        "quantity": 10,
        "period_start": "2016-12-12T10:10:00Z",
        "period_end": "2016-12-12T10:20:00Z",
        "occurred_at": "2016-12-12T10:20:00Z",
    }
    first = ingest_mod.ingest(engine, jsonl(create, traffic, traffic))
    assert (first.inserted, first.duplicates) == (2, 1)
    run(engine, "2016-12-12T11:30:00Z", tmp_path)
    again = ingest_mod.ingest(
        engine, jsonl(traffic, {**create, "occurred_at": "2016-12-12T09:00:00Z"})
    )
    assert (again.inserted, again.duplicates) == (0, 2)
    run(engine, "2016-12-12T12:30:00Z", tmp_path)
    assert billed(engine) == {**keyed(vm("m"), h10=3600, h11=3600), **keyed(ip(), h10=10)}


# -- rule 9: bad input ------------------------------------------------------------------

BAD = {
    "unknown-kind": (
        event(kind="thing", action="create", occurred_at="2016-12-12T10:00:00Z"),
        "unknown kind",
    ),
    "unknown-action": (event(kind="resource", action="reboot"), "unknown action"),
    "measure-as-resource": (event(kind="resource", action="measure"), "unknown action"),
    "missing-account": (event(kind="resource", action="create", account=""), "missing account"),
    "missing-resource": (
        event(kind="resource", action="create", resource_id=""),
        "missing resource_id",
    ),
    "negative-quantity": (
        measure("x", -1, "2016-12-12T10:10:00Z", "2016-12-12T10:20:00Z"),
        "negative quantity",
    ),
    "missing-quantity": (
        measure("x", None, "2016-12-12T10:10:00Z", "2016-12-12T10:20:00Z"),
        "missing quantity",
    ),
    "end-before-start": (
        measure("x", 5, "2016-12-12T10:20:00Z", "2016-12-12T10:10:00Z"),
        "period_end before period_start",
    ),
    "missing-period": (
        measure("x", 5, "2016-12-12T10:20:00Z", "2016-12-12T10:30:00Z") | {"period_start": None},
        "missing period_start",
    ),
}


def _bad_row(name: str) -> dict[str, Any]:
    base = {
        "entity": "vm",
        "account": "acme",
        "resource_id": "vm-bad",
        "occurred_at": t("2016-12-12T10:00:00Z"),
    }
    row = {k: v for k, v in BAD[name][0].items() if v is not None or k not in base}
    return {**base, **row, "event_id": name}


def test_bad_input_is_recorded_not_billed(engine: Engine, tmp_path: Path) -> None:
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00:00Z", offering="m")])
    insert_events(engine, [_bad_row(name) for name in BAD])
    outcome = run(engine, "2016-12-12T11:30:00Z", tmp_path)
    (chunk,) = outcome.runs
    assert billed(engine) == keyed(vm("m"), h10=3600)
    found = findings(engine)
    assert {f["event_id"] for f in found} == set(BAD)
    for f in found:
        assert f["category"] == "rejected"
        assert f["run_id"] == chunk.run_id
        assert f["event_row_id"] == row_id(engine, f["event_id"])
        assert BAD[f["event_id"]][1] in f["reason"], f
    assert chunk.rejected == len(BAD)
    run(engine, "2016-12-12T13:30:00Z", tmp_path)
    assert len(findings(engine)) == len(BAD), "recorded once, by the run that saw it"


def test_late_bad_input_is_recorded_by_the_run_that_sees_it(engine: Engine, tmp_path: Path) -> None:
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00:00Z", offering="m")])
    run(engine, "2016-12-12T11:30:00Z", tmp_path)
    insert_events(engine, [_bad_row("negative-quantity")])
    outcome = run(engine, "2016-12-12T12:30:00Z", tmp_path)
    (f,) = findings(engine)
    assert f["run_id"] == outcome.runs[0].run_id
    assert billed(engine) == keyed(vm("m"), h10=3600, h11=3600)


def test_stop_without_start_is_an_anomaly(engine: Engine, tmp_path: Path) -> None:
    insert_events(engine, [resource("p", "stop", "2016-12-12T10:30:00Z", offering="m")])
    outcome = run(engine, "2016-12-12T11:30:00Z", tmp_path)
    assert billed(engine) == {}
    (f,) = findings(engine)
    assert (f["event_id"], f["category"], f["reason"]) == ("p", "anomaly", "stop without start")
    assert f["event_row_id"] == row_id(engine, "p")
    assert outcome.runs[0].anomalies == 1


# -- rule 10: one transaction per run ---------------------------------------------------


def test_failure_at_commit_leaves_nothing(engine: Engine, tmp_path: Path) -> None:
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00:00Z", offering="m")])
    run(engine, "2016-12-12T11:30:00Z", tmp_path)
    insert_events(
        engine,
        [
            measure("m", 5, "2016-12-12T10:10:00Z", "2016-12-12T11:20:00Z"),
            measure("m2", 5, "2016-12-12T12:10:00Z", "2016-12-12T13:20:00Z"),
            _bad_row("unknown-action"),
            resource("p", "stop", "2016-12-12T09:00:00Z", resource_id="x"),
            resource("u", "update", "2016-12-12T10:30:00Z", offering="l"),
        ],
    )
    before = snapshot(engine)

    def crash(where: str) -> None:
        if where == "commit":
            raise RuntimeError("injected crash")

    with pytest.raises(RuntimeError, match="injected"):
        run(engine, "2016-12-12T13:30:00Z", tmp_path, pause=crash)
    assert snapshot(engine) == before
    outcome = run(engine, "2016-12-12T13:30:00Z", tmp_path)
    assert billed(engine) == truth(engine, "2016-12-12T13:00:00Z")
    assert outcome.runs[0].rejected == 1
    assert outcome.runs[0].anomalies == 1


def test_second_commit_of_the_same_run_id_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00:00Z", offering="m")])
    first = run(engine, "2016-12-12T11:30:00Z", tmp_path)
    # The scheduled run id is the window and the state version; committing the same
    # run twice means a row with that id already exists.
    mark = state(engine)
    next_id = f"s20161212T11-20161212T12-v{mark['version']}"
    record = dict(table_row(engine, runs, first.runs[0].run_id), run_id=next_id)
    with engine.begin() as conn:
        conn.execute(insert(runs).values(**record))
    before = snapshot(engine)
    with pytest.raises(ConcurrentRun):
        run(engine, "2016-12-12T12:30:00Z", tmp_path)
    assert snapshot(engine) == before
    with engine.begin() as conn:
        conn.execute(delete(runs).where(runs.c.run_id == next_id))
    (chunk,) = run(engine, "2016-12-12T12:30:00Z", tmp_path).runs
    assert chunk.run_id == next_id
    assert billed(engine) == keyed(vm("m"), h10=3600, h11=3600)


def table_row(engine: Engine, tab: sa.Table, run_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(tab).where(tab.c.run_id == run_id)).mappings().one())


def test_commit_fence_stops_a_writer_whose_state_moved(engine: Engine, tmp_path: Path) -> None:
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00:00Z", offering="m")])
    run(engine, "2016-12-12T11:30:00Z", tmp_path)
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite's BEGIN IMMEDIATE excludes another writer before the fence")
    other = engine.connect()

    def move_state(where: str) -> None:
        if where == "write":
            other.execute(text("UPDATE metering_state SET version = version + 100"))
            other.commit()

    try:
        before = billed(engine)
        with pytest.raises(ConcurrentRun):
            run(engine, "2016-12-12T12:30:00Z", tmp_path, pause=move_state)
        assert billed(engine) == before
    finally:
        other.close()


# -- rule 11: one run at a time ---------------------------------------------------------


def test_lock_file_held_exits_at_once(engine: Engine, tmp_path: Path) -> None:
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00:00Z", offering="m")])
    held = filelock.FileLock(str(tmp_path / "metering.lock"), timeout=0)
    with held, pytest.raises(LockHeld) as caught:
        run(engine, "2016-12-12T11:30:00Z", tmp_path)
    assert caught.value.exit_code == 75
    assert billed(engine) == {}


def test_database_lock_held_exits_at_once(engine: Engine, tmp_path: Path) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("GET_LOCK is MySQL/MariaDB's")
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00:00Z", offering="m")])
    with engine.connect() as holder:
        name = holder.execute(text("SELECT CONCAT('metering:', DATABASE())")).scalar_one()
        assert holder.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar() == 1
        with pytest.raises(LockHeld):
            run(engine, "2016-12-12T11:30:00Z", tmp_path)
        holder.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name})
    assert billed(engine) == {}
    run(engine, "2016-12-12T11:30:00Z", tmp_path)
    assert billed(engine) == keyed(vm("m"), h10=3600)


# -- rule 12: watermark -----------------------------------------------------------------


def test_reads_only_events_past_the_watermark(engine: Engine, tmp_path: Path) -> None:
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T10:00:00Z", offering="m"),
            measure("m1", 5, "2016-12-12T10:10:00Z", "2016-12-12T10:20:00Z"),
        ],
    )
    first = run(engine, "2016-12-12T11:30:00Z", tmp_path)
    assert first.runs[0].events_read == 2
    insert_events(engine, [measure("m2", 6, "2016-12-12T11:10:00Z", "2016-12-12T11:20:00Z")])
    second = run(engine, "2016-12-12T12:30:00Z", tmp_path)
    assert second.runs[0].events_read == 1
    assert state(engine)["last_event_id"] == row_id(engine, "m2")
    assert billed(engine) == {**keyed(vm("m"), h10=3600, h11=3600), **keyed(ip(), h10=5, h11=6)}


# -- rule 13: backfill ------------------------------------------------------------------


def _busy_day(engine: Engine, tmp_path: Path) -> None:
    insert_events(
        engine,
        [
            resource("c", "create", "2016-12-12T10:10:00Z", offering="s"),
            resource("u", "update", "2016-12-12T11:20:00Z", offering="l"),
            resource("c2", "create", "2016-12-12T10:30:00Z", resource_id="vm-2"),
            resource("p2", "stop", "2016-12-12T12:30:00Z", resource_id="vm-2"),
            measure("m1", 1001, "2016-12-12T10:59:30Z", "2016-12-12T11:00:30Z"),
            measure("m2", 50, "2016-12-12T12:10:00Z", "2016-12-12T12:20:00Z"),
        ],
    )
    run(engine, "2016-12-12T12:30:00Z", tmp_path)
    insert_events(engine, [resource("p", "stop", "2016-12-12T11:50:00Z")])
    run(engine, "2016-12-12T14:30:00Z", tmp_path)


def test_backfill_over_unchanged_events_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    _busy_day(engine, tmp_path)
    lines_before = table(engine, "usage_lines")
    mark = state(engine)
    outcome = run(engine, "2016-12-12T14:30:00Z", tmp_path, since=t("2016-12-12T09:00:00Z"))
    (backfill,) = [r for r in outcome.runs if r.kind == "backfill"]
    assert backfill.lines_written == 0
    assert table(engine, "usage_lines") == lines_before
    assert state(engine)["billed_until"] == mark["billed_until"]


def test_backfill_restores_lost_billing_exactly(engine: Engine, tmp_path: Path) -> None:
    _busy_day(engine, tmp_path)
    right = billed(engine)
    assert right == truth(engine, "2016-12-12T14:00:00Z")
    with engine.begin() as conn:
        ids = [r[0] for r in conn.execute(select(usage_lines.c.id).order_by(usage_lines.c.id))]
        conn.execute(delete(usage_lines).where(usage_lines.c.id.in_(ids[::2])))
    assert billed(engine) != right
    outcome = run(engine, "2016-12-12T14:30:00Z", tmp_path, since=t("2016-12-12T10:00:00Z"))
    assert billed(engine) == right
    assert outcome.runs[0].kind == "backfill"
    again = run(engine, "2016-12-12T14:30:00Z", tmp_path, since=t("2016-12-12T10:00:00Z"))
    assert again.runs[0].lines_written == 0


def test_backfill_with_until_touches_only_its_hours(engine: Engine, tmp_path: Path) -> None:
    _busy_day(engine, tmp_path)
    right = billed(engine)
    with engine.begin() as conn:
        conn.execute(delete(usage_lines))
    run(
        engine,
        "2016-12-12T14:30:00Z",
        tmp_path,
        since=t("2016-12-12T11:00:00Z"),
        until=t("2016-12-12T12:00:00Z"),
    )
    assert billed(engine) == {k: v for k, v in right.items() if k[5] == t("2016-12-12T11:00:00Z")}


def test_backfill_refuses_hours_not_closed(engine: Engine, tmp_path: Path) -> None:
    _busy_day(engine, tmp_path)
    before = snapshot(engine)
    with pytest.raises(UsageError):
        run(
            engine,
            "2016-12-12T14:29:59Z",
            tmp_path,
            since=t("2016-12-12T10:00:00Z"),
            until=t("2016-12-12T14:00:00Z"),
        )
    with pytest.raises(UsageError):
        run(engine, "2016-12-12T14:30:00Z", tmp_path, since=t("2016-12-12T14:00:00Z"))
    assert snapshot(engine) == before


def test_backfill_never_moves_the_watermark_backwards(engine: Engine, tmp_path: Path) -> None:
    _busy_day(engine, tmp_path)
    mark = state(engine)
    run(
        engine,
        "2016-12-12T14:30:00Z",
        tmp_path,
        since=t("2016-12-12T10:00:00Z"),
        until=t("2016-12-12T12:00:00Z"),
    )
    after = state(engine)
    assert after["billed_until"] == mark["billed_until"]
    assert after["last_event_id"] == mark["last_event_id"]


# -- rule 14: dry run -------------------------------------------------------------------


def test_dry_run_shows_exactly_the_next_lines_and_changes_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    _busy_day(engine, tmp_path)
    insert_events(
        engine,
        [
            resource("late", "start", "2016-12-12T12:15:00Z"),
            measure("m3", 9, "2016-12-12T13:50:00Z", "2016-12-12T14:10:00Z"),
            _bad_row("missing-quantity"),
        ],
    )
    before = snapshot(engine)
    dry = run(engine, "2016-12-12T16:30:00Z", tmp_path, dry_run=True)
    assert snapshot(engine) == before
    assert dry.lines
    real = run(engine, "2016-12-12T16:30:00Z", tmp_path)
    assert [r.run_id for r in dry.runs] == [r.run_id for r in real.runs]

    def shape(rows: list[Any]) -> Counter[tuple[Any, ...]]:
        return Counter(
            (r.account, r.entity, r.resource_id, r.offering, r.unit, r.hour, D(r.quantity))
            for r in rows
        )

    from metering.store.usage import lines_of_runs

    with engine.connect() as conn:
        written = lines_of_runs(conn, [r.run_id for r in real.runs])
    assert shape(dry.lines) == shape(written)
    assert billed(engine) == truth(engine, "2016-12-12T16:00:00Z")


def test_dry_run_of_a_backfill_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    _busy_day(engine, tmp_path)
    with engine.begin() as conn:
        conn.execute(delete(usage_lines).where(usage_lines.c.unit == "byte"))
    before = snapshot(engine)
    dry = run(
        engine, "2016-12-12T14:30:00Z", tmp_path, since=t("2016-12-12T10:00:00Z"), dry_run=True
    )
    assert snapshot(engine) == before
    assert sum(line.quantity for line in dry.lines) == 1051


# -- the clock --------------------------------------------------------------------------


def test_now_before_the_last_run_is_a_no_op(engine: Engine, tmp_path: Path) -> None:
    insert_events(engine, [resource("c", "create", "2016-12-12T10:00:00Z", offering="m")])
    run(engine, "2016-12-12T15:30:00Z", tmp_path)
    insert_events(engine, [resource("p", "stop", "2016-12-12T10:30:00Z")])
    before = snapshot(engine)
    outcome = run(engine, "2016-12-12T12:30:00Z", tmp_path)
    assert outcome.nothing_to_do
    assert outcome.clock_stepped_back
    assert snapshot(engine) == before


def test_repeated_run_at_the_same_now_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    _busy_day(engine, tmp_path)
    before = snapshot(engine)
    assert run(engine, "2016-12-12T14:30:00Z", tmp_path).nothing_to_do
    assert snapshot(engine) == before
