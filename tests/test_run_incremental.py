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
