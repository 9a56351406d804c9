"""Benchmark: writing usage lines on MariaDB, the ways this project weighed.

    python benchmarks/lines_insert.py --db URL [--lines 200k] [--repeat 2]

In a fresh database (bench_<stamp>_lines, dropped afterwards), interleaved --repeat
times: N generated lines through PyMySQL's executemany (the columns' bind processors,
then the driver's own escaping) and through metering/store/bulk.py (the values
rendered as literals of a multi-row INSERT), each into an emptied usage_lines; then
the server copying the same N rows by INSERT ... SELECT into a table shaped and
indexed like usage_lines and into one without its secondary indexes: what index
maintenance costs whatever the client does.
"""

from __future__ import annotations

import argparse
import sys
import time
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from run import Target, parse_size  # noqa: E402
from sqlalchemy.engine import Connection  # noqa: E402

from metering import migrate  # noqa: E402
from metering.db import make_engine  # noqa: E402
from metering.store import bulk  # noqa: E402
from metering.store.schema import usage_lines  # noqa: E402
from metering.store.usage import LINE_COLUMNS, Line  # noqa: E402
from metering.timeutil import from_ms  # noqa: E402

START_MS = 1_480_550_400_000  # 2016-12-01T00:00Z


def lines(n: int) -> list[Line]:
    return [
        Line(f"acct-{i % 500:05d}", "ip", f"10.{i % 250}.{i // 250 % 250}.{i % 7}", "",
             "byte", START_MS + 3_600_000 * (i % 24), Decimal(i * 1_234_567), "measure")
        for i in range(n)
    ]  # fmt: skip


def rows(batch: list[Line]) -> list[tuple[object, ...]]:
    return [
        ("bench", x.account, x.entity, x.resource_id, x.offering, x.unit, from_ms(x.hour),
         x.quantity, x.source)
        for x in batch
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="MariaDB server URL")
    parser.add_argument("--lines", default="200k")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    n = parse_size(args.lines)
    target = Target(args.db, f"{int(time.time())}_lines", keep=False)
    engine = make_engine(target.url)
    try:
        migrate.upgrade(engine)
        data = rows(lines(n))
        processors = [bulk._processor(usage_lines.c[c].type, engine.dialect) for c in LINE_COLUMNS]

        def many(conn: Connection) -> None:
            bound = (
                [v if p is None else p(v) for p, v in zip(processors, r, strict=True)] for r in data
            )
            bulk._insert_many(conn, usage_lines, LINE_COLUMNS, bound)

        def literal(conn: Connection) -> None:
            bulk.insert_rows(conn, usage_lines, LINE_COLUMNS, data)

        for _ in range(args.repeat):
            for name, write in (("executemany", many), ("literal INSERT", literal)):
                with engine.begin() as conn:
                    conn.exec_driver_sql("TRUNCATE TABLE usage_lines")
                with engine.begin() as conn:
                    started = time.monotonic()
                    write(conn)
                    print(f"{name:16s} {n} lines  {time.monotonic() - started:6.2f} s")
        with engine.begin() as conn:
            for name, ddl in (
                ("indexed copy", "CREATE TABLE l2 LIKE usage_lines"),
                ("no index copy", "CREATE TABLE l2 (id BIGINT PRIMARY KEY AUTO_INCREMENT,"
                 " run_id VARCHAR(64), account VARCHAR(64), entity VARCHAR(32),"
                 " resource_id VARCHAR(64), offering VARCHAR(64), unit VARCHAR(16),"
                 " period_start DATETIME(3), quantity DECIMAL(28,3), source VARCHAR(8))"),
            ):  # fmt: skip
                conn.exec_driver_sql("DROP TABLE IF EXISTS l2")
                conn.exec_driver_sql(ddl)
                started = time.monotonic()
                conn.exec_driver_sql("INSERT INTO l2 SELECT * FROM usage_lines")
                print(f"{name:16s} {n} rows   {time.monotonic() - started:6.2f} s (server)")
            conn.exec_driver_sql("DROP TABLE l2")
    finally:
        engine.dispose()
        target.close()


if __name__ == "__main__":
    main()
