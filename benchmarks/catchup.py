"""Catching up N missed hours in one `metering run` versus N hourly runs.

    python benchmarks/catchup.py [--hours 24] [--db URL|sqlite]

Both scenarios start from the same billed first day of metering.sample events (the
sample's four accounts: VMs, volumes, per-minute traffic, late and bad events) and
then bill the next `--hours` hours: hourly (events ingested as delivered, a run at
minute 32 of every hour) or all at once (cron was down: every event ingested, one
run). Prints the time of each and their ratio; also the total for `metering demo`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from metering import migrate
from metering.db import make_engine
from metering.ingest import ingest
from metering.run import RunRequest, execute
from metering.sample import generate

HOUR = timedelta(hours=1)


def database(db: str, workdir: Path) -> tuple[str, sa.Engine | None]:
    if db == "sqlite":
        return f"sqlite:///{workdir / f'{uuid.uuid4().hex}.db'}", None
    admin = sa.create_engine(db)
    name = f"catchup_{uuid.uuid4().hex[:8]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
    return str(
        sa.engine.make_url(db).set(database=name).render_as_string(hide_password=False)
    ), admin


def scenario(db: str, workdir: Path, hours: int, hourly: bool) -> float:
    url, admin = database(db, workdir)
    engine = make_engine(url)
    migrate.upgrade(engine)
    sample = generate(days=2)
    lock = workdir / f"{uuid.uuid4().hex}.lock"
    start = sample.start
    sent = 0

    def deliver(until: timedelta) -> None:
        nonlocal sent
        upto = sample.delivered_by(int((start + until).timestamp() * 1000))
        ingest(engine, sample.lines[sent:upto])
        sent = upto

    def bill(now: timedelta) -> float:
        began = time.perf_counter()
        execute(engine, RunRequest(now=start + now), lock_file=lock)
        return time.perf_counter() - began

    for hour in range(1, 25):  # the first day, billed hour by hour: the history
        deliver(hour * HOUR + timedelta(minutes=32))
        bill(hour * HOUR + timedelta(minutes=32))
    spent = 0.0
    if hourly:
        for hour in range(25, 25 + hours):
            deliver(hour * HOUR + timedelta(minutes=32))
            spent += bill(hour * HOUR + timedelta(minutes=32))
    else:
        deliver((24 + hours) * HOUR + timedelta(minutes=32))
        spent = bill((24 + hours) * HOUR + timedelta(minutes=32))
    engine.dispose()
    if admin is not None:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE `{sa.engine.make_url(url).database}`")
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--db", default=os.environ.get("METERING_TEST_MYSQL_URL", "sqlite"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        hourly = scenario(args.db, workdir, args.hours, hourly=True)
        once = scenario(args.db, workdir, args.hours, hourly=False)
        began = time.perf_counter()
        from metering.demo import run_demo

        run_demo(workdir / "demo")
        demo = time.perf_counter() - began
    backend = "sqlite" if args.db == "sqlite" else "mariadb"
    print(f"{backend}, {len(generate(days=2).deliveries)} sample events, {args.hours} hours")
    print(f"  {args.hours} hourly runs: {hourly:8.2f} s in all ({hourly / args.hours:.3f} s each)")
    print(f"  one catch-up run: {once:8.2f} s")
    print(f"  catch-up / hourly: {once / hourly:.2f}")
    print(f"  metering demo (3 days, SQLite, in process): {demo:.2f} s")


if __name__ == "__main__":
    main()
