"""A resource continued from its stored state hour after hour, then a late stop."""

from __future__ import annotations

from decimal import Decimal

from support import billed, insert_events, measure, migrated, resource, run, t

H = "2016-12-12T{:02d}:{:02d}:00Z"


def test_incremental(database_url, tmp_path):
    e = migrated(database_url)
    insert_events(e, [resource("a", "create", H.format(10, 15), offering="small")])
    run(e, H.format(11, 31), tmp_path)  # bills 10:00
    insert_events(e, [resource("b", "update", H.format(11, 45), offering="large")])
    run(e, H.format(12, 31), tmp_path)  # bills 11:00 incremental
    insert_events(e, [resource("c", "stop", H.format(12, 30))])
    insert_events(e, [resource("d", "start", H.format(13, 10))])  # future
    run(e, H.format(13, 31), tmp_path)  # bills 12:00
    run(e, H.format(15, 31), tmp_path)  # bills 13, 14
    insert_events(e, [resource("late", "stop", H.format(13, 40))])  # late
    run(e, H.format(15, 40), tmp_path)
    b = billed(e)
    exp = {
        ("small", 10): 2700,
        ("small", 11): 2700,
        ("large", 11): 900,
        ("large", 12): 1800,
        ("large", 13): 1800,
    }
    got = {(k[3], k[5].hour): v for k, v in b.items()}
    assert got == {k: Decimal(v) for k, v in exp.items()}


def test_backfill_recovers_events_no_scheduled_run_read(sqlite_url, tmp_path):
    """Rows that commit below the watermark after their id gap expired are invisible to
    scheduled runs; a backfill bills them and fixes the stored state for later runs."""
    from datetime import timedelta

    e = migrated(sqlite_url)
    first = [
        resource("r1", "create", "2016-12-12T09:00Z", offering="s"),
        resource("r3", "stop", "2016-12-12T10:30Z", resource_id="vm-2"),
    ]
    first[0]["id"], first[1]["id"] = 1, 5
    insert_events(e, first)
    run(e, "2016-12-12T12:31Z", tmp_path, settle_lag=timedelta(0))
    lost = [
        resource("r2", "stop", "2016-12-12T10:00Z"),
        measure("m1", 100, "2016-12-12T10:00Z", "2016-12-12T10:01Z"),
        resource("r4", "create", "2016-12-12T10:00Z", resource_id="vm-3"),
    ]
    for row_id, row in zip((2, 3, 4), lost, strict=True):
        row["id"] = row_id
    insert_events(e, lost)
    run(e, "2016-12-12T13:31Z", tmp_path, settle_lag=timedelta(0))
    assert billed(e)[("acme", "vm", "vm-1", "s", "second", t("2016-12-12T12:00Z"))] == 3600

    run(e, "2016-12-12T13:31Z", tmp_path, since=t("2016-12-12T00:00Z"))
    run(e, "2016-12-12T14:31Z", tmp_path)
    got = {(k[2], k[4], k[5].hour): v for k, v in billed(e).items()}
    assert got == {
        ("vm-1", "second", 9): 3600,
        ("10.0.0.1", "byte", 10): 100,
        **{("vm-3", "second", hour): 3600 for hour in (10, 11, 12, 13)},
    }


def test_a_reset_watermark_is_refused_rather_than_billing_again(database_url, tmp_path):
    import pytest
    from sqlalchemy import update

    from metering.errors import WatermarkLost
    from metering.store.schema import metering_state

    e = migrated(database_url)
    insert_events(e, [measure("m", 100, "2016-12-12T10:00Z", "2016-12-12T10:01Z")])
    run(e, "2016-12-12T11:31Z", tmp_path)
    with e.begin() as conn:
        conn.execute(update(metering_state).values(billed_until=None, last_event_id=0))
    with pytest.raises(WatermarkLost):
        run(e, "2016-12-12T12:31Z", tmp_path)
    assert billed(e) == {("acme", "ip", "10.0.0.1", "", "byte", t("2016-12-12T10:00Z")): 100}
