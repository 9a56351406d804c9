"""`metering check`: sanity checks in the spirit of a usage auditor.

Each check looks for something that should never be there (or not for long) and
lists what it found; the command fails when any check finds something, so it fits
a monitoring probe. Checks read only; they take no lock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from metering.render import printable
from metering.status import FUTURE_MARGIN
from metering.store import check as store
from metering.store import events as store_events
from metering.timeutil import from_ms, iso

DEFAULT_STALE_DAYS = 30
DEFAULT_LIMIT = 50


@dataclass
class CheckResult:
    name: str
    description: str
    found: int = 0  # how many problems (items listed: at most the limit)
    items: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CheckReport:
    checked_at: datetime
    results: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(r.found == 0 for r in self.results)


def _key(account: str, entity: str, resource_id: str) -> dict[str, Any]:
    return {"account": account, "entity": entity, "resource_id": resource_id}


def _result(name: str, description: str, items: list[dict[str, Any]], limit: int) -> CheckResult:
    return CheckResult(name, description, len(items), items[:limit])


def execute(
    engine: Engine,
    *,
    now: datetime,
    stale_days: int = DEFAULT_STALE_DAYS,
    limit: int = DEFAULT_LIMIT,
) -> CheckReport:
    """Run every check in one read transaction (one consistent view on MariaDB)."""
    before = now - timedelta(days=stale_days)
    with engine.connect() as conn, conn.begin():
        stale = store.stale_running(conn, before)
        destroyed = store.billed_after_destroy(conn)
        over = store.over_an_hour(conn)
        orphans = store.lines_without_run(conn)
        unreviewed = store.unreviewed(conn)
        future = store_events.dated_after(conn, now + FUTURE_MARGIN, limit)
    results = [
        _result(
            "stale-running",
            f"running with no event and no snapshot listing it for {stale_days} days",
            [
                {
                    **_key(s.account, s.entity, s.resource_id),
                    "offering": s.offering,
                    "last_event_at": iso(s.last_event_at),
                    "last_seen_at": iso(s.last_seen_at),
                }
                for s in stale
            ],
            limit,
        ),
        _result(
            "billed-after-destroy",
            "running time billed in an hour starting at or after the resource's destroy",
            [
                {
                    **_key(d.account, d.entity, d.resource_id),
                    "hour": iso(d.hour),
                    "seconds": f"{d.seconds:.3f}",
                    "destroyed_at": iso(d.destroyed_at),
                }
                for d in destroyed
            ],
            limit,
        ),
        _result(
            "over-an-hour",
            "more than 3600 running seconds billed for one resource in one hour",
            [
                {
                    **_key(o.account, o.entity, o.resource_id),
                    "hour": iso(o.hour),
                    "seconds": f"{o.seconds:.3f}",
                }
                for o in over
            ],
            limit,
        ),
        _result(
            "lines-without-run",
            "usage lines whose run is missing from runs",
            [{"run_id": o.run_id, "lines": o.lines} for o in orphans],
            limit,
        ),
        _result(
            "unreviewed-rejections",
            "rejected or anomalous events not yet reviewed (rejected_events.reviewed = 0)",
            [
                {
                    "category": u.category,
                    "reason": u.reason,
                    "count": u.count,
                    "first_recorded_at": iso(u.first_recorded_at),
                }
                for u in unreviewed
            ],
            limit,
        ),
        CheckResult(
            "future-events",
            "events dated more than an hour after now, unbilled until then (a producer's clock?)",
            future.count,
            [
                {
                    "id": e.id,
                    "event_id": e.event_id,
                    **_key(e.account, e.entity, e.resource_id),
                    "occurred_at": iso(None if e.occurred_at is None else from_ms(e.occurred_at)),
                }
                for e in future.first
            ],
        ),
    ]
    return CheckReport(checked_at=now, results=results)


def render(report: CheckReport, fmt: str) -> str:
    if fmt == "json":
        data = {
            "ok": report.ok,
            "checked_at": iso(report.checked_at),
            "checks": [
                {
                    "name": r.name,
                    "description": r.description,
                    "ok": r.found == 0,
                    "found": r.found,
                    "items": r.items,
                }
                for r in report.results
            ],
        }
        return json.dumps(data, ensure_ascii=False) + "\n"
    out: list[str] = []
    for r in report.results:
        out.append(f"{'ok' if r.found == 0 else 'PROBLEM':7}  {r.name}: {r.description}")
        if r.found:
            out.append(
                f"         {r.found} found"
                + (f", first {len(r.items)}:" if r.found > len(r.items) else ":")
            )
            for item in r.items:
                out.append(
                    "           " + "  ".join(f"{k}={printable(str(v))}" for k, v in item.items())
                )
    out.append("all checks passed" if report.ok else "problems found")
    return "\n".join(out) + "\n"
