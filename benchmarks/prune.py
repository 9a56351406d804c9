"""`metering prune` over days of billed events: time, events per second, peak RSS.

    python benchmarks/prune.py --db URL [--days 7] [--ips 2000] [--vms 500] [--keep-days 1]

A fresh database (SQLite: a file URL; MariaDB: a server URL, a new database is made
on it) gets DAYS of events: a byte measure per IP per 5 minutes, and VMs created,
resized, stopped, started and destroyed over the days; one `metering run` bills them.
Then `metering prune` (a subprocess, as cron runs it) deletes everything it may
before the last KEEP-DAYS days, archiving it; its peak RSS is the child's maxrss.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert
from sqlalchemy.engine import make_url

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from run import spawn  # noqa: E402

from metering.migrate import upgrade  # noqa: E402
from metering.store.schema import usage_events  # noqa: E402

START = datetime(2016, 12, 1, tzinfo=UTC)


def events(days: int, ips: int, vms: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    now = datetime(2000, 1, 1, tzinfo=UTC)

    def add(**values: object) -> None:
        values.setdefault("offering", None)
        values.setdefault("quantity", None)
        values.setdefault("unit", None)
        values.setdefault("period_start", None)
        values.setdefault("period_end", None)
        event_id = uuid.UUID(int=rng.getrandbits(128)).hex
        account = f"acct-{rng.randrange(50)}"
        rows.append({"event_id": event_id, "account": account, "ingested_at": now, **values})

    for step in range(days * 24 * 12):
        start = START + timedelta(minutes=5 * step)
        for ip in range(ips):
            end = start + timedelta(minutes=5)
            add(kind="quantity", entity="ip", action="measure", resource_id=f"10.0.{ip}",
                quantity=rng.randrange(10**7), unit="byte", period_start=start,
                period_end=end, occurred_at=end)  # fmt: skip
    for vm in range(vms):
        t = START + timedelta(minutes=rng.randrange(days * 24 * 60))
        add(kind="resource", entity="vm", action="create", resource_id=f"vm-{vm}",
            offering=rng.choice(["small", "medium", "large"]), occurred_at=t)  # fmt: skip
        for _ in range(rng.randrange(6)):
            t += timedelta(minutes=rng.randrange(1, 24 * 60))
            action = rng.choice(["stop", "start", "update", "destroy"])
            offering = rng.choice(["small", "large"]) if action in ("update", "start") else None
            add(kind="resource", entity="vm", action=action, resource_id=f"vm-{vm}",
                offering=offering, occurred_at=t)  # fmt: skip
    rows.sort(key=lambda r: r["occurred_at"])  # type: ignore[arg-type,return-value]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--ips", type=int, default=200)
    parser.add_argument("--vms", type=int, default=500)
    parser.add_argument("--keep-days", type=int, default=1)
    args = parser.parse_args()
    url = make_url(args.db)
    if url.get_backend_name() != "sqlite":
        name = f"bench_prune_{int(time.time())}"
        with create_engine(url).begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
        url = url.set(database=name)
    target = url.render_as_string(hide_password=False)
    engine = create_engine(target)
    upgrade(engine)
    rows = events(args.days, args.ips, args.vms, seed=7)
    with engine.begin() as conn:
        for first in range(0, len(rows), 20_000):
            conn.execute(insert(usage_events), rows[first : first + 20_000])
    work = Path(tempfile.mkdtemp(prefix="bench-prune-"))
    env = {**os.environ, "METERING_CONFIG": "", "XDG_CONFIG_HOME": str(work),
           "METERING_LOCK_FILE": str(work / "lock"), "METERING_DATABASE_URL": target}  # fmt: skip
    end = START + timedelta(days=args.days)
    now = (end + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%MZ")

    def metering(*command: str) -> tuple[float, float]:
        """Seconds and peak RSS (MB, the child's VmHWM) of one command, as cron runs it."""
        code, seconds, peak, _, err = spawn([sys.executable, "-m", "metering", *command], env)
        assert code == 0, err[-2000:]
        return seconds, round(peak)

    run_s, run_rss = metering("run", "--now", now)
    before = (end - timedelta(days=args.keep_days)).strftime("%Y-%m-%dT%H:%MZ")
    archive = work / "archive.jsonl.gz"
    prune_s, prune_rss = metering(
        "prune", "--before", before, "--now", now, "--archive", str(archive)
    )
    with engine.connect() as conn:
        left = conn.exec_driver_sql("SELECT COUNT(*) FROM usage_events").scalar_one()
    deleted = len(rows) - int(left)
    print(json.dumps({
        "db": url.get_backend_name(), "events": len(rows), "days": args.days,
        "before": before, "deleted": deleted, "kept": int(left), "run_s": round(run_s, 2),
        "prune_s": round(prune_s, 2), "deleted_per_s": int(deleted / prune_s),
        "archive_bytes": archive.stat().st_size,
        "run_peak_rss_mb": run_rss, "prune_peak_rss_mb": prune_rss,
    }))  # fmt: skip
    if url.get_backend_name() != "sqlite":
        with create_engine(make_url(args.db)).begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE `{url.database}`")


if __name__ == "__main__":
    main()
