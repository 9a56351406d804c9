"""Issue 14 on both databases: price book versions, invoice preview/close/show, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, func, insert, select, update

from metering.cli import main
from metering.store.schema import export_ledger, invoice_lines, invoices, metering_state, runs
from metering.store.schema import usage_lines as usage_lines_table
from metering.timeutil import parse_time
from tests.support import insert_events, measure, migrated, resource, run

GB = 10**9
BOOK = """
currency = "CHF"
valid_from = 2024-03-01T00:00:00Z
[rounding]
precision = "0.01"
mode = "half-even"
per = "line"
[[price]]
entity = "vm"
offering = "medium"
unit = "second"
per = "hour"
price = "0.05"
[[price]]
entity = "ip"
unit = "byte"
per = "GB"
tiers = [{ up_to = "100", price = "0" }, { price = "0.02" }]
[[override]]
account = "acme"
entity = "vm"
offering = "medium"
price = "0.04"
"""


def invoke(url: str, env: dict[str, str], *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(
        main,
        ["--log-format", "json", *args],
        env={**env, "METERING_DATABASE_URL": url},
        input=input,
        catch_exceptions=False,
    )


def load(url: str, env: dict[str, str], tmp_path: Path, text: str, *args: str) -> Result:
    path = tmp_path / f"book-{abs(hash(text))}.toml"
    path.write_text(text)
    return invoke(url, env, "prices", "load", str(path), *args)


def add_lines(
    engine: Engine, *rows: tuple[str, str, str, str, str, Any], run_id: str = "r1"
) -> None:
    """usage_lines as a run writes them: (account, entity, offering, unit, hour, quantity)."""
    with engine.begin() as conn:
        if conn.execute(select(runs.c.run_id).where(runs.c.run_id == run_id)).first() is None:
            when = parse_time("2024-05-01T00:00Z")
            conn.execute(
                insert(runs).values(
                    run_id=run_id, kind="scheduled", status="ok", clock=when, started_at=when
                )
            )
        conn.execute(
            insert(usage_lines_table),
            [
                {
                    "run_id": run_id,
                    "account": a,
                    "entity": e,
                    "resource_id": f"{e}-1",
                    "offering": o,
                    "unit": u,
                    "period_start": parse_time(h),
                    "quantity": Decimal(q),
                    "source": "running" if u == "second" else "measure",
                }
                for a, e, o, u, h, q in rows
            ],
        )


def run_ids(engine: Engine, account: str) -> set[str]:
    with engine.connect() as conn:
        query = select(usage_lines_table.c.run_id).where(usage_lines_table.c.account == account)
        return set(conn.execute(query.distinct()).scalars())


def billed_until(engine: Engine, when: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(metering_state).values(billed_until=parse_time(when)))


def preview(url: str, env: dict[str, str], month: str, *args: str) -> list[dict[str, Any]]:
    result = invoke(url, env, "invoice", "preview", "--month", month, "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def amounts(objects: list[dict[str, Any]]) -> dict[tuple[str, ...], str]:
    return {
        (o["account"], o["kind"], o.get("entity") or "", str(o.get("version") or "")): o["amount"]
        for o in objects
    }


def test_tiers_per_month_price_change_mid_month_and_overrides(
    database_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    engine = migrated(database_url)
    assert load(database_url, env, tmp_path, BOOK).exit_code == 0
    # From March 15th: vm 0.06/h, the second ip tier 0.03/GB; the override stays.
    second = BOOK.replace('price = "0.05"', 'price = "0.06"').replace('"0.02"', '"0.03"')
    second = second.replace("2024-03-01T00:00:00Z", "2024-03-15T00:00:00Z")
    assert load(database_url, env, tmp_path, second).exit_code == 0
    add_lines(
        engine,
        ("blue", "ip", "", "byte", "2024-03-10T00:00Z", 80 * GB),
        ("blue", "ip", "", "byte", "2024-03-31T23:00Z", 50 * GB),
        ("blue", "ip", "", "byte", "2024-04-01T00:00Z", 90 * GB),  # a new month: tiers restart
        ("blue", "vm", "medium", "second", "2024-03-14T23:00Z", 3600),
        ("blue", "vm", "medium", "second", "2024-03-15T00:00Z", 3600),
        ("acme", "vm", "medium", "second", "2024-03-14T23:00Z", 3600),
        ("acme", "vm", "medium", "second", "2024-03-15T00:00Z", 3600),
    )
    march = preview(database_url, env, "2024-03")
    assert amounts(march) == {
        ("blue", "usage", "ip", "1"): "0.00",
        # 20 GB of the first 100 left, 30 GB at version 2's 0.03.
        ("blue", "usage", "ip", "2"): "0.90",
        ("blue", "usage", "vm", "1"): "0.05",
        ("blue", "usage", "vm", "2"): "0.06",
        ("blue", "total", "", ""): "1.01",
        ("acme", "usage", "vm", "1"): "0.04",
        ("acme", "usage", "vm", "2"): "0.04",
        ("acme", "total", "", ""): "0.08",
    }
    assert {
        o["price_source"] for o in march if o["account"] == "acme" and o["kind"] == "usage"
    } == {"override"}
    april = preview(database_url, env, "2024-04", "--account", "blue")
    assert amounts(april) == {
        ("blue", "usage", "ip", "2"): "0.00",
        ("blue", "total", "", ""): "0.00",
    }
    assert april[0]["tiers"] == [{"from": "0", "up_to": "100", "price": "0", "quantity": "90"}]
    assert all(o["status"] == "preview" and isinstance(o["amount"], str) for o in march)
    html = invoke(database_url, env, "invoice", "preview", "--month", "2024-03", "--format", "html")
    assert '<h2 data-account="blue">' in html.stdout and 'data-amount="1.01"' in html.stdout
    csv_text = invoke(
        database_url, env, "invoice", "preview", "--month", "2024-03", "--format", "csv"
    )
    total_row = next(
        r for r in csv_text.stdout.splitlines() if r.startswith("2024-03,preview,blue,CHF,,total")
    )
    assert total_row.endswith(",1.01,,")


@pytest.mark.parametrize("per", ["line", "invoice"])
def test_each_rounding_mode_through_the_database(
    database_url: str, env: dict[str, str], tmp_path: Path, per: str
) -> None:
    engine = migrated(database_url)
    # One mode per month (a policy changes only where a month starts). Three lines of
    # 0.0125 each: per line each rounds alone; per invoice 0.0375 does.
    expected = {
        "line": {"half-even": "0.03", "half-up": "0.03", "up": "0.06", "down": "0.03"},
        "invoice": {"half-even": "0.04", "half-up": "0.04", "up": "0.04", "down": "0.03"},
    }[per]
    for month, mode in zip(("01", "02", "03", "04"), expected, strict=True):
        text = f"""
currency = "CHF"
valid_from = 2024-{month}-01T00:00:00Z
[rounding]
precision = "0.01"
mode = "{mode}"
per = "{per}"
[[price]]
entity = "a"
unit = "second"
price = "0.0125"
[[price]]
entity = "b"
unit = "second"
price = "0.0125"
[[price]]
entity = "c"
unit = "second"
price = "0.0125"
"""
        assert load(database_url, env, tmp_path, text).exit_code == 0
        add_lines(engine, *(("acct", e, "", "second", f"2024-{month}-02T00:00Z", 1) for e in "abc"))
    for month, mode in zip(("01", "02", "03", "04"), expected, strict=True):
        objects = preview(database_url, env, f"2024-{month}")
        total = objects[-1]
        assert (total["kind"], total["amount"]) == ("total", expected[mode]), mode
        assert total["rounding"] == f"0.01 {mode} per {per}"


def test_unpriced_usage_is_listed_and_blocks_close(
    database_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    engine = migrated(database_url)
    lock = ["--lock-file", str(tmp_path / "lock")]
    add_lines(engine, ("blue", "volume", "ssd", "second", "2024-03-02T00:00Z", 3600))
    billed_until(engine, "2024-04-01T00:00Z")
    refused = invoke(database_url, env, "invoice", "close", "--month", "2024-03", *lock)
    assert refused.exit_code == 1 and "no price book is loaded" in refused.output
    assert load(database_url, env, tmp_path, BOOK).exit_code == 0
    objects = preview(database_url, env, "2024-03")
    assert objects[0]["kind"] == "unpriced" and objects[0]["amount"] == "unpriced"
    assert objects[0]["quantity"] == "3600.000"
    assert (objects[-1]["amount"], objects[-1]["unpriced"]) == ("0.00", 1)
    table = invoke(database_url, env, "invoice", "preview", "--month", "2024-03").stdout
    assert "unpriced" in table and "no price in the book" in table
    refused = invoke(database_url, env, "invoice", "close", "--month", "2024-03", *lock)
    assert refused.exit_code == 1 and "unpriced usage (blue volume/ssd/second" in refused.output
    closed = invoke(
        database_url, env, "invoice", "close", "--month", "2024-03", "--allow-unpriced", *lock
    )
    assert closed.exit_code == 0, closed.output
    with engine.connect() as conn:
        kinds = conn.execute(select(invoice_lines.c.kind, invoice_lines.c.amount)).all()
    assert kinds == [("unpriced", None)]


def test_close_late_corrections_adjust_the_next_month_and_trace(
    database_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    engine = migrated(database_url)
    lock = ["--lock-file", str(tmp_path / "lock")]
    insert_events(
        engine,
        [
            resource("e1", "create", "2024-03-31T20:00Z", account="acme", offering="medium"),
            measure("e2", 150 * GB, "2024-03-31T22:00Z", "2024-03-31T23:00Z", account="blue"),
        ],
    )
    run(engine, "2024-03-31T23:40Z", tmp_path)
    refused = invoke(database_url, env, "invoice", "close", "--month", "2024-03", *lock)
    assert refused.exit_code == 1 and "not fully billed" in refused.output
    assert preview(database_url, env, "2024-03")[0]["status"] == "preview"
    run(engine, "2024-04-01T00:40Z", tmp_path)
    closing_runs = run_ids(engine, "acme")
    assert load(database_url, env, tmp_path, BOOK).exit_code == 0
    first = invoke(database_url, env, "invoice", "close", "--month", "2024-03", *lock)
    assert first.exit_code == 0, first.output
    with engine.connect() as conn:
        stored = conn.execute(select(invoices).order_by(invoices.c.account)).all()
        line_count = conn.execute(select(func.count()).select_from(invoice_lines)).scalar()
    assert [(r.account, r.total) for r in stored] == [
        ("acme", Decimal("0.16")),
        ("blue", Decimal("1")),
    ]
    again = invoke(database_url, env, "invoice", "close", "--month", "2024-03", *lock)
    assert again.exit_code == 0 and "month_already_closed" in again.output
    with engine.connect() as conn:
        assert conn.execute(select(invoices).order_by(invoices.c.account)).all() == stored
        assert conn.execute(select(func.count()).select_from(invoice_lines)).scalar() == line_count

    # A stop two hours back arrives late: the next run writes -7200 s for March.
    insert_events(engine, [resource("e3", "stop", "2024-03-31T22:00Z", account="acme")])
    run(engine, "2024-04-01T01:40Z", tmp_path)
    (late_run,) = run_ids(engine, "acme") - closing_runs
    closed_march = preview(database_url, env, "2024-03", "--account", "acme")
    assert closed_march[-1] == {**closed_march[-1], "status": "closed", "amount": "0.16"}
    acme_id = closed_march[-1]["invoice_id"]
    april = preview(database_url, env, "2024-04", "--account", "acme")
    adjustment = next(o for o in april if o["kind"] == "adjustment")
    assert (adjustment["amount"], adjustment["adjusts_invoice"]) == ("-0.08", acme_id)
    assert acme_id in adjustment["note"] and adjustment["note"].startswith("credit")
    assert april[-1]["amount"] == "-0.08"  # stopped in March: nothing else in April

    shown = invoke(database_url, env, "invoice", "show", acme_id, "--lines", "--format", "json")
    objects = [json.loads(line) for line in shown.stdout.splitlines()]
    usage = objects[0]
    assert usage["run_ids"] == sorted(closing_runs) and len(closing_runs) == 2
    assert sum(Decimal(u["quantity"]) for u in usage["usage_lines"]) == Decimal("14400.000")

    # Closing April settles the adjustment, which then traces to the late run's lines.
    billed_until(engine, "2024-05-01T00:00Z")
    assert invoke(database_url, env, "invoice", "close", "--month", "2024-04", *lock).exit_code == 0
    april_id = preview(database_url, env, "2024-04", "--account", "acme")[-1]["invoice_id"]
    shown = invoke(database_url, env, "invoice", "show", april_id, "--lines", "--format", "json")
    traced = next(json.loads(x) for x in shown.stdout.splitlines() if '"adjustment"' in x)
    assert traced["run_ids"] == [late_run]
    assert sum(Decimal(u["quantity"]) for u in traced["usage_lines"]) == Decimal("-7200.000")
    may = preview(database_url, env, "2024-05", "--account", "acme")
    assert all(o["kind"] != "adjustment" for o in may)
    table = invoke(database_url, env, "invoice", "show", april_id, "--lines").stdout
    assert acme_id in table and late_run in table

    exported = [
        invoke(
            database_url, env, "export", "--month", "2024-04", "--lines", "invoice", "--to", "jsonl"
        )
        for _ in range(2)
    ]
    assert exported[0].stdout == exported[1].stdout
    records = [json.loads(x) for x in exported[0].stdout.splitlines()]
    assert {(r["invoice_id"], r["kind"], r["amount"]) for r in records} >= {
        (april_id, "adjustment", "-0.08")
    }
    refused = invoke(
        database_url, env, "export", "--month", "2024-05", "--lines", "invoice", "--to", "csv"
    )
    assert refused.exit_code == 1 and "not closed" in refused.output


def test_export_keys_are_stable_and_new_only_exports_only_new_lines(
    database_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    engine = migrated(database_url)
    add_lines(
        engine,
        ("acme", "vm", "medium", "second", "2024-03-01T00:00Z", "3599.999"),
        ("acme", "ip", "", "byte", "2024-03-01T00:00Z", 1001),
    )
    for target in ("jsonl", "csv", "lago", "stripe", "openmeter"):
        first = invoke(database_url, env, "export", "--month", "2024-03", "--to", target)
        second = invoke(database_url, env, "export", "--month", "2024-03", "--to", target)
        assert first.exit_code == 0, first.output
        assert first.stdout == second.stdout and first.stdout
        empty = invoke(
            database_url, env, "export", "--month", "2024-03", "--to", target, "--new-only"
        )
        assert empty.exit_code == 0 and empty.stdout in (
            "",
            "key,run_id,account,entity,resource_id,offering,unit,period_start,quantity,source\n",
        )
    (batch,) = [
        json.loads(x)
        for x in invoke(
            database_url, env, "export", "--month", "2024-03", "--to", "lago"
        ).stdout.splitlines()
    ]
    keys = [e["transaction_id"] for e in batch["events"]]
    assert len(set(keys)) == 2
    assert batch["events"][0]["properties"]["quantity"] == "3599.999"
    assert batch["events"][0]["external_subscription_id"] == "acme"
    stripe = [
        json.loads(x)
        for x in invoke(
            database_url, env, "export", "--month", "2024-03", "--to", "stripe"
        ).stdout.splitlines()
    ]
    assert [s["identifier"] for s in stripe] == keys
    assert stripe[0]["event_name"] == "vm.medium.second" and stripe[0]["timestamp"] == 1709251200
    cloud = [
        json.loads(x)
        for x in invoke(
            database_url, env, "export", "--month", "2024-03", "--to", "openmeter"
        ).stdout.splitlines()
    ]
    assert [(c["id"], c["source"], c["specversion"]) for c in cloud] == [
        (k, "metering", "1.0") for k in keys
    ]

    # A later run's correction is new; only it goes out with --new-only.
    add_lines(engine, ("acme", "vm", "medium", "second", "2024-03-01T00:00Z", "-1"), run_id="r2")
    out = tmp_path / "new.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "metering",
            "export",
            "--month",
            "2024-03",
            "--to",
            "openmeter",
            "--new-only",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env, "METERING_DATABASE_URL": database_url},
    )
    assert result.returncode == 0, result.stderr
    (new,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert new["data"]["run_id"] == "r2" and new["data"]["quantity"] == "-1.000"
    with engine.connect() as conn:
        ledger = (
            conn.execute(
                select(export_ledger.c.item_key).where(export_ledger.c.target == "openmeter")
            )
            .scalars()
            .all()
        )
    assert sorted(ledger) == sorted([*keys, new["id"]])
    run_only = invoke(database_url, env, "export", "--run", "r2", "--to", "jsonl")
    assert [json.loads(x)["key"] for x in run_only.stdout.splitlines()] == [new["id"]]
    missing = invoke(database_url, env, "export", "--run", "nope", "--to", "jsonl")
    assert missing.exit_code == 1 and "no run 'nope'" in missing.output
    both = invoke(database_url, env, "export", "--run", "r2", "--month", "2024-03", "--to", "csv")
    assert both.exit_code == 2


def test_prices_load_versions_are_immutable(
    database_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    engine = migrated(database_url)
    dry = load(database_url, env, tmp_path, BOOK, "--dry-run")
    assert dry.exit_code == 0 and "would load version 1" in dry.stdout
    assert "no price book loaded" in invoke(database_url, env, "prices", "list").stdout
    assert "loaded version 1" in load(database_url, env, tmp_path, BOOK).stdout
    assert "already loaded as version 1" in load(database_url, env, tmp_path, BOOK).stdout
    bad = load(database_url, env, tmp_path, BOOK.replace('per = "GB"', 'per = "hour"'))
    assert bad.exit_code == 1 and "price 2: per 'hour' does not apply to unit 'byte'" in bad.output
    float_price = load(database_url, env, tmp_path, BOOK.replace('"0.05"', "0.05"))
    assert float_price.exit_code == 1 and "decimal string" in float_price.output
    add_lines(engine, ("blue", "vm", "medium", "second", "2024-03-02T00:00Z", 3600))
    billed_until(engine, "2024-04-01T00:00Z")
    lock = ["--lock-file", str(tmp_path / "lock")]
    assert invoke(database_url, env, "invoice", "close", "--month", "2024-03", *lock).exit_code == 0
    undated = BOOK.replace("valid_from = 2024-03-01T00:00:00Z\n", "")
    back = load(
        database_url,
        env,
        tmp_path,
        undated.replace('"0.05"', '"0.07"'),
        "--valid-from",
        "2024-03-20T00:00Z",
    )
    assert back.exit_code == 1 and "inside a closed month" in back.output
    later = load(
        database_url,
        env,
        tmp_path,
        BOOK.replace('"0.05"', '"0.07"'),
        "--valid-from",
        "2024-04-01T00:00Z",
    )
    assert later.exit_code == 2 and "contradicts the file's valid_from" in later.output
    listed = invoke(database_url, env, "prices", "list").stdout
    assert listed.count("CHF") == 1
