"""Benchmark: `metering run` on one hour of N new events after D days of billed history,
next to what the database itself can do (the limit) and the talk's naive baseline.

    python benchmarks/run.py                               # N = 100k, 1M; D = 1, 30
    python benchmarks/run.py --events 100000 --history-days 1,30
    python benchmarks/run.py --sizes 100k,1M --with-10m
    python benchmarks/run.py --db sqlite --sizes 100k --history-days 1
    python benchmarks/run.py --events 1M --history-days 1 --profile pyinstrument

MariaDB: --db is a server URL (default $METERING_TEST_MYSQL_URL); each D gets a fresh
database bench_<timestamp>_d<D> on it (dropped afterwards unless --keep). The
status counters are GLOBAL deltas, so use a private server (scripts/mariadb.sh).

For each D: D days of light history (see generate.py) are loaded and billed day by
day with `metering run` subprocesses; then for each N (ascending, in successive
hours, the previous measured hour becoming history) N new events for ONE hour are
loaded and three things are timed on exactly those rows:
  limit  the database's own GROUP BY over the new id range (no Python work but a fetch)
  run    `metering run --now <hour end + 31m>` as a subprocess, as cron runs it
  naive  benchmarks/naive.py as a subprocess: reads every event ever, bills in Python
Then the naive totals are checked against the billed sums of the last hours.
--rounds K times the limit and the run K times, interleaved, the database restored
from a copy before each round, and reports the round of the median ratio.
Results: one table on stdout, and benchmarks/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import generate  # noqa: E402
from generate import HOUR, World, fmt_ms  # noqa: E402

from metering.db import TMP_TABLE_BYTES  # noqa: E402

HISTORY_START = datetime(2024, 1, 1, tzinfo=UTC)
STATUS = (
    "Questions",
    "Com_select",
    "Handler_read_first",
    "Handler_read_key",
    "Handler_read_last",
    "Handler_read_next",
    "Handler_read_prev",
    "Handler_read_rnd",
    "Handler_read_rnd_deleted",
    "Handler_read_rnd_next",
    "Handler_write",
    "Rows_read",
)
# Handler_read_* also counts the reads of GROUP BY's temporary table; MariaDB's
# Rows_read counts only rows read from real tables.
HANDLER_READS = tuple(s for s in STATUS if s.startswith("Handler_read_"))
GRACE_MARGIN_MS = 31 * 60_000  # --now = hour end + 31 min: the hour is just closed


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    for suffix, factor in (("k", 1_000), ("m", 1_000_000)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * factor)
    return int(text)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the database under test -------------------------------------------------------------


class Target:
    """One fresh database: MariaDB (a new schema on the server) or a SQLite file."""

    def __init__(self, server_url: str, label: str, keep: bool) -> None:
        self.keep = keep
        self.kind = "sqlite" if server_url.startswith("sqlite") else "mariadb"
        if self.kind == "sqlite":
            self.tmp = tempfile.mkdtemp(prefix="bench-")
            self.path = os.path.join(self.tmp, f"{label}.db")
            self.url = f"sqlite:///{self.path}"
            self.conn: Any = None
            return
        import pymysql
        from sqlalchemy.engine import make_url

        server = make_url(server_url)
        self.name = f"bench_{label}"
        self.url = server.set(database=self.name).render_as_string(hide_password=False)
        self.conn = pymysql.connect(
            host=server.host or "127.0.0.1",
            port=server.port or 3306,
            user=server.username,
            password=server.password or "",
            charset="utf8mb4",
            local_infile=True,
            # The limit gets the in-memory temporary tables metering asks for: with the
            # 16 MB default its GROUP BY goes to disk past ~25k groups (4x slower).
            init_command=(
                "SET time_zone = '+00:00', "
                f"tmp_table_size = {TMP_TABLE_BYTES}, max_heap_table_size = {TMP_TABLE_BYTES}"
            ),
            autocommit=False,
        )
        with self.conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
            cur.execute(f"CREATE DATABASE `{self.name}`")
            cur.execute(f"USE `{self.name}`")

    def close(self) -> None:
        if self.kind == "sqlite":
            if not self.keep:
                shutil.rmtree(self.tmp, ignore_errors=True)
            elif os.path.exists(self.path + ".copy"):
                os.remove(self.path + ".copy")
            return
        with self.conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{self.name}_copy`")
            if not self.keep:
                cur.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
        self.conn.close()

    def save(self) -> None:
        """Keep a copy of the database as it is, for restore()."""
        if self.kind == "sqlite":
            shutil.copyfile(self.path, self.path + ".copy")
            return
        self._copy(self.name, f"{self.name}_copy")

    def restore(self) -> None:
        """Put back the copy save() kept."""
        if self.kind == "sqlite":
            shutil.copyfile(self.path + ".copy", self.path)
            return
        self._copy(f"{self.name}_copy", self.name)
        with self.conn.cursor() as cur:
            cur.execute(f"USE `{self.name}`")

    def _copy(self, source: str, target: str) -> None:
        # LIKE copies columns and indexes, not foreign keys; metering's schema has none.
        with self.conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{target}`")
            cur.execute(f"CREATE DATABASE `{target}`")
            cur.execute(f"SHOW FULL TABLES FROM `{source}` WHERE Table_type = 'BASE TABLE'")
            tables = [row[0] for row in cur.fetchall()]
            cur.execute("SET foreign_key_checks = 0")
            for table in tables:
                cur.execute(f"CREATE TABLE `{target}`.`{table}` LIKE `{source}`.`{table}`")
                cur.execute(f"INSERT INTO `{target}`.`{table}` SELECT * FROM `{source}`.`{table}`")
            cur.execute("SET foreign_key_checks = 1")
        self.conn.commit()

    def load(self, rows: list[generate.Row]) -> tuple[int, int]:
        if self.kind == "sqlite":
            return generate.load_sqlite(self.path, rows)
        return generate.load_mariadb(self.conn, rows)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.path)
            try:
                return list(conn.execute(sql, params))
            finally:
                conn.close()
        self.conn.commit()  # a fresh snapshot: other processes wrote since
        with self.conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), params)
            return list(cur.fetchall())

    def status(self) -> dict[str, int] | None:
        if self.kind == "sqlite":
            return None
        with self.conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS")
            found = {name: value for name, value in cur.fetchall()}
        return {name: int(found.get(name, 0)) for name in STATUS}

    def version(self) -> str:
        if self.kind == "sqlite":
            return f"SQLite {sqlite3.sqlite_version}"
        return str(self.query("SELECT VERSION()")[0][0])


@dataclass
class Counters:
    """GLOBAL status deltas, minus what taking the two snapshots costs by itself."""

    target: Target
    overhead: dict[str, int] = field(default_factory=dict)

    def calibrate(self) -> None:
        a = self.target.status()
        b = self.target.status()
        if a is not None and b is not None:
            self.overhead = {k: b[k] - a[k] for k in STATUS}

    def delta(self, before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, int]:
        if before is None or after is None:
            return {}
        return {k: max(0, after[k] - before[k] - self.overhead.get(k, 0)) for k in STATUS}


# -- the three contenders -------------------------------------------------------------------


@dataclass
class Measured:
    method: str
    seconds: float
    events: int
    peak_rss_mb: float | None = None
    status: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def queries(self) -> int | None:
        return self.status.get("Questions") if self.status else None

    @property
    def rows_examined_per_event(self) -> float | None:
        if not self.status or not self.events:
            return None
        return sum(self.status[k] for k in HANDLER_READS) / self.events

    @property
    def table_rows_per_event(self) -> float | None:
        if not self.status or not self.events:
            return None
        return self.status["Rows_read"] / self.events

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "events_per_s": round(self.events_per_s),
            "queries": self.queries,
            "rows_examined_per_event": self.rows_examined_per_event,
            "table_rows_per_event": self.table_rows_per_event,
        }


def spawn(argv: list[str], env: dict[str, str]) -> tuple[int, float, float, bytes, bytes]:
    """Run a child, return (exit code, wall seconds, peak RSS MB, stdout, stderr).

    The peak is the child's VmHWM, polled every 20 ms: wait4's ru_maxrss would report
    this process's own peak (the exec'd child keeps the pre-exec high-water mark,
    and this process holds the generated rows).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        peak_kb = 0
        status_file = f"/proc/{proc.pid}/status"
        while True:
            peak_kb = max(peak_kb, _vm_hwm_kb(status_file))
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.02)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return proc.returncode, seconds, peak_kb / 1024, out.read(), err.read()


def _vm_hwm_kb(status_file: str) -> int:
    try:
        with open(status_file) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def child_env() -> dict[str, str]:
    # Without PYTHONDONTWRITEBYTECODE (set in some sandboxes): an installed metering
    # has its bytecode compiled, and compiling it again on every run is not a cost
    # cron pays.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("METERING_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["PYTHONHASHSEED"] = "0"
    return env


class Harness:
    def __init__(self, args: argparse.Namespace, target: Target, workdir: Path, days: int) -> None:
        self.args = args
        self.days = days
        self.target = target
        self.workdir = workdir
        self.counters = Counters(target)
        self.counters.calibrate()
        self.env = child_env()
        self.naive_totals: list[list[Any]] = []

    def metering(self, *command: str, profile: str | None = None) -> list[str]:
        base = [
            "-m", "metering", "--database-url", self.target.url, "--log-format", "json",
            *command,
        ]  # fmt: skip
        if profile == "pyinstrument":
            out = self.workdir / "profile-pyinstrument.txt"
            return [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(out), *base]
        if profile == "py-spy":
            out = self.workdir / "profile-py-spy.txt"
            pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            return [pyspy, "record", "-r", "250", "-f", "raw", "-o", str(out), "--",
                    sys.executable, *base]  # fmt: skip
        if profile == "memray":
            # Then: memray stats --peak / memray flamegraph --leaks ... on that file.
            out = self.workdir / "profile-memray.bin"
            return [sys.executable, "-m", "memray", "run", "-f", "-o", str(out), *base]
        return [sys.executable, *base]

    def upgrade(self) -> None:
        code, _, _, _, err = spawn(self.metering("db", "upgrade"), self.env)
        if code != 0:
            raise SystemExit(f"metering db upgrade failed ({code}): {err.decode()[-2000:]}")

    def bill(self, now_ms: int, profile: str | None = None) -> tuple[float, float, bytes]:
        lock = self.workdir / "metering.lock"
        argv = self.metering("run", "--now", iso(now_ms), "--lock-file", str(lock), profile=profile)
        code, seconds, rss, _, err = spawn(argv, self.env)
        if code != 0:
            raise SystemExit(f"metering run failed ({code}): {err.decode()[-3000:]}")
        return seconds, rss, err

    # -- history ----------------------------------------------------------------------

    def history(self, world: World, start: int, days: int) -> dict[str, Any]:
        """Load and bill D days, a `metering run` every --history-step-days days."""
        loaded = 0
        gen_s = load_s = bill_s = 0.0
        step = max(1, self.args.history_step_days)
        for first in range(0, days, step):
            last = min(days, first + step)
            t0 = time.monotonic()
            rows: list[generate.Row] = []
            for h in range(first * 24, last * 24):
                rows.extend(world.history_hour(start + h * HOUR))
            t1 = time.monotonic()
            self.target.load(rows)
            t2 = time.monotonic()
            self.bill(start + last * 24 * HOUR + GRACE_MARGIN_MS)
            t3 = time.monotonic()
            gen_s, load_s, bill_s = gen_s + t1 - t0, load_s + t2 - t1, bill_s + t3 - t2
            loaded += len(rows)
            print(
                f"  history days {first + 1}-{last}/{days}: {len(rows)} events "
                f"(generate {t1 - t0:.1f}s, load {t2 - t1:.1f}s, bill {t3 - t2:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
        lines = int(self.target.query("SELECT COUNT(*) FROM usage_lines")[0][0])
        return {
            "events": loaded,
            "lines": lines,
            "generate_s": gen_s,
            "load_s": load_s,
            "bill_s": bill_s,
        }

    # -- one measured hour ------------------------------------------------------------------

    def measured_hour(self, world: World, hour: int, n: int, profile: str | None) -> dict[str, Any]:
        t0 = time.monotonic()
        rows = world.measured_hour(hour, n)
        t1 = time.monotonic()
        lo, hi = self.target.load(rows)
        t2 = time.monotonic()
        # A million generated rows held here made every cyclic GC pass in this process
        # crawl: timing the limit query while they lived added 5-6 s at 1M.
        del rows
        gc.collect()
        gc.freeze()
        print(
            f"  hour {iso(hour)}: {n} events, ids {lo}..{hi} "
            f"(generate {t1 - t0:.1f}s, load {t2 - t1:.1f}s)",
            file=sys.stderr,
            flush=True,
        )
        if self.args.load_only:
            now = iso(hour + HOUR + GRACE_MARGIN_MS)
            print(f"  loaded, not billed: --db {self.target.url} --now {now}", file=sys.stderr)
            return {"events": n, "hour": iso(hour), "id_range": [lo, hi], "now": now}
        rounds = []
        if self.args.rounds > 1:
            self.target.save()
        for k in range(self.args.rounds):
            if k:
                self.target.restore()
            limit = self.limit(lo, hi, n)
            run = self.run(hour, n, lo, profile)
            rounds.append((limit.seconds / run.seconds, limit, run))
        # The round of the median ratio (the lower middle of an even count) stands for
        # them all; each is in the results.
        _, limit, run = sorted(rounds, key=lambda r: r[0])[(len(rounds) - 1) // 2]
        naive = self.naive(hour, n) if not self.args.no_naive else None
        check = self.check(hour, naive) if naive is not None else None
        result: dict[str, Any] = {
            "events": n,
            "hour": iso(hour),
            "id_range": [lo, hi],
            "events_in_table": int(self.target.query("SELECT COUNT(*) FROM usage_events")[0][0]),
            "generate_s": t1 - t0,
            "load_s": t2 - t1,
            "limit": limit.as_json(),
            "run": run.as_json(),
            "rounds": [
                {"limit_s": m.seconds, "run_s": r.seconds, "limit_over_run": ratio}
                for ratio, m, r in rounds
            ],
            "naive": naive.as_json() if naive else None,
            "naive_check": check,
            "run_over_limit": run.seconds / limit.seconds,
            "run_internal_over_limit": run.extra["internal_s"] / limit.seconds,
            "naive_over_run": naive.seconds / run.seconds if naive else None,
        }
        if naive is not None:
            # Its cost is linear in the rows it reads; the real history holds N rows per hour.
            full = n * (1 + 24 * self.days)
            rate = naive.extra["rows_read"] / naive.seconds
            result["naive_full_density_est_s"] = full / rate
            result["naive_full_density_over_run"] = full / rate / run.seconds
        return result

    def limit(self, lo: int, hi: int, n: int) -> Measured:
        if self.target.kind == "sqlite":
            hour_sql = "CAST(strftime('%s', period_start) AS INTEGER) / 3600"
        else:
            hour_sql = "TIMESTAMPDIFF(HOUR, '1970-01-01 00:00:00', period_start)"
        sql = (
            f"SELECT account, entity, resource_id, {hour_sql} AS h, SUM(quantity) "
            "FROM usage_events WHERE id BETWEEN ? AND ? "
            "GROUP BY account, entity, resource_id, h"
        )
        # Warm-up, untimed but reported: the first read after a bulk load also pays for
        # InnoDB's background work on the load (3x slower at 1M). Timing the limit warm
        # and the run after it puts both on the same footing.
        started = time.monotonic()
        self.target.query(sql, (lo, hi))
        cold = time.monotonic() - started
        before = self.target.status()
        started = time.monotonic()
        groups = self.target.query(sql, (lo, hi))
        seconds = time.monotonic() - started
        after = self.target.status()
        return Measured(
            "limit",
            seconds,
            n,
            None,
            self.counters.delta(before, after),
            {"groups": len(groups), "first_read_s": cold},
        )

    def run(self, hour: int, n: int, lo: int, profile: str | None) -> Measured:
        before = self.target.status()
        seconds, rss, _ = self.bill(hour + HOUR + GRACE_MARGIN_MS, profile)
        after = self.target.status()
        runs = self.target.query(
            "SELECT run_id, events_read, lines_written, corrections, rejected, anomalies,"
            " duration_ms FROM runs WHERE first_event_id >= ? ORDER BY run_id",
            (lo,),
        )
        extra = {
            "runs": [list(r) for r in runs],
            "internal_s": sum(int(r[6] or 0) for r in runs) / 1000,
            "events_read": sum(int(r[1]) for r in runs),
            "lines_written": sum(int(r[2]) for r in runs),
            "corrections": sum(int(r[3]) for r in runs),
            "rejected": sum(int(r[4]) for r in runs),
            "anomalies": sum(int(r[5]) for r in runs),
            "profiled": profile,
        }
        return Measured("run", seconds, n, rss, self.counters.delta(before, after), extra)

    def naive(self, hour: int, n: int) -> Measured:
        argv = [
            sys.executable, str(HERE / "naive.py"), self.target.url,
            "--until", iso(hour + HOUR), "--report-from", iso(hour - 3 * HOUR),
        ]  # fmt: skip
        before = self.target.status()
        code, seconds, rss, out, err = spawn(argv, self.env)
        after = self.target.status()
        if code != 0:
            raise SystemExit(f"naive.py failed ({code}): {err.decode()[-3000:]}")
        report = json.loads(out)
        self.naive_totals = report["totals"]
        extra = {"rows_read": report["rows_read"], "compute_s": report["seconds"]}
        return Measured("naive", seconds, n, rss, self.counters.delta(before, after), extra)

    def check(self, hour: int, naive: Measured) -> dict[str, Any]:
        """Naive truth vs metering's billed sums for the last hours (rule 6)."""
        billed: defaultdict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
        rows = self.target.query(
            "SELECT account, entity, resource_id, offering, unit, period_start, SUM(quantity)"
            " FROM usage_lines WHERE period_start >= ? AND period_start < ?"
            " GROUP BY account, entity, resource_id, offering, unit, period_start",
            (fmt_ms(hour - 3 * HOUR), fmt_ms(hour + HOUR)),
        )
        for account, entity, rid, offering, unit, start, total in rows:
            start_ms = generate_ms(start)
            # SQLite sums DECIMAL text as floating point: back to whole milliseconds.
            amount = Decimal(str(total)).quantize(Decimal("0.001")) * (
                1000 if unit == "second" else 1
            )
            billed[(account, entity, rid, offering, unit, start_ms)] += amount
        truth = {tuple(t[:6]): Decimal(t[6]) for t in self.naive_totals}
        keys = set(truth) | {k for k, v in billed.items() if v}
        wrong = [k for k in keys if truth.get(k, Decimal(0)) != billed.get(k, Decimal(0))]
        return {
            "keys": len(keys),
            "mismatches": len(wrong),
            "examples": [
                [*map(str, k), str(truth.get(k)), str(billed.get(k))] for k in sorted(wrong)[:5]
            ],
        }


def generate_ms(value: Any) -> int:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int((value - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1000


# -- reporting ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"nproc": os.cpu_count(), "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_mb"] = int(line.split()[1]) // 1024
        info["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    return info


def versions(target: Target) -> dict[str, str]:
    import sqlalchemy

    return {
        "python": platform.python_version(),
        "database": target.version(),
        "sqlalchemy": sqlalchemy.__version__,
        "pymysql": importlib.metadata.version("PyMySQL"),
    }


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(cells: list[dict[str, Any]]) -> str:
    header = (
        f"{'D':>3} {'N':>9} {'method':<6} {'wall s':>8} {'events/s':>10} {'RSS MB':>7} "
        f"{'queries':>8} {'rows/ev':>8} {'tbl/ev':>8}  notes"
    )
    lines = [header, "-" * len(header)]
    for cell in cells:
        for method in ("limit", "run", "naive"):
            m = cell.get(method)
            if not m:
                continue
            notes = ""
            if method == "limit":
                notes = f"warm; first read after the load {m['extra']['first_read_s']:.2f}s"
            if method == "run":
                notes = (
                    f"in-process {m['extra']['internal_s']:.2f}s; run/limit "
                    f"{cell['run_over_limit']:.1f}x "
                    f"(in-process {cell['run_internal_over_limit']:.1f}x);"
                    f" lines {m['extra']['lines_written']}, corr {m['extra']['corrections']},"
                    f" rej {m['extra']['rejected']}"
                )
                if m["extra"]["profiled"]:
                    notes += f" [PROFILED: {m['extra']['profiled']}]"
                if len(cell["rounds"]) > 1:
                    ratios = sorted(r["limit_over_run"] for r in cell["rounds"])
                    notes += (
                        f"; limit/run over {len(ratios)} rounds "
                        f"{', '.join(f'{r:.2f}' for r in ratios)} (this row: the median)"
                    )
            elif method == "naive":
                check = cell["naive_check"]
                notes = (
                    f"naive/run {cell['naive_over_run']:.1f}x; read {m['extra']['rows_read']} rows;"
                    f" at full history density ~{cell['naive_full_density_est_s']:.0f}s ="
                    f" {cell['naive_full_density_over_run']:.0f}x run; check vs billed:"
                    f" {check['mismatches']} of {check['keys']} keys differ"
                )
            lines.append(
                f"{cell['history_days']:>3} {cell['events']:>9} {method:<6} "
                f"{m['seconds']:>8.2f} {m['events_per_s']:>10.0f} "
                f"{fmt(m['peak_rss_mb'], '.0f'):>7} {fmt(m['queries'], 'd'):>8} "
                f"{fmt(m['rows_examined_per_event'], '.2f'):>8} "
                f"{fmt(m['table_rows_per_event'], '.2f'):>8}  {notes}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", default=None, help="one size N (e.g. 100k); beats --sizes")
    parser.add_argument("--sizes", default="100k,1M", help="sizes N, comma separated")
    parser.add_argument("--with-10m", action="store_true", help="add N = 10M")
    parser.add_argument("--history-days", default="1,30", help="D values, comma separated")
    parser.add_argument(
        "--db",
        default=None,
        help="MariaDB server URL (default $METERING_TEST_MYSQL_URL) or 'sqlite'",
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench databases")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument(
        "--load-only",
        action="store_true",
        help="stop before the measured run, keeping the database (to profile it by hand)",
    )
    parser.add_argument(
        "--profile",
        choices=("pyinstrument", "py-spy", "memray"),
        default=None,
        help="profile the run of the largest N (timings of that run are then skewed)",
    )
    parser.add_argument(
        "--history-step-days",
        type=int,
        default=7,
        help="bill the history with one `metering run` per this many days",
    )
    parser.add_argument("--vms", type=int, default=generate.Population.vms)
    parser.add_argument("--volumes", type=int, default=generate.Population.volumes)
    parser.add_argument("--ips", type=int, default=generate.Population.ips)
    parser.add_argument(
        "--history-ip-share",
        type=float,
        default=generate.Population.history_ip_share,
        help="share of IPs with an hourly aggregate in each history hour",
    )
    parser.add_argument(
        "--resource-share",
        type=float,
        default=generate.Population.resource_share,
        help="share of the measured hour's rows that are resource events (busy hour: 0.05)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="time the limit and the run this many times, interleaved, the database"
        " restored from a copy before each round; the table shows the round of the"
        " median ratio (a shared machine moves the limit's time 2x between moments)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=str(HERE / "results"), help="results directory")
    args = parser.parse_args(argv)
    args.keep = args.keep or args.load_only
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")

    sizes = (
        [parse_size(args.events)] if args.events else [parse_size(s) for s in args.sizes.split(",")]
    )
    if args.with_10m:
        sizes.append(10_000_000)
    sizes = sorted(set(sizes))
    days_list = [int(d) for d in str(args.history_days).split(",")]
    url = args.db or os.environ.get("METERING_TEST_MYSQL_URL")
    if not url:
        parser.error("no --db and no METERING_TEST_MYSQL_URL")
    if url == "sqlite":
        url = "sqlite://"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    cells: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    start = int(HISTORY_START.timestamp()) * 1000
    for days in days_list:
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-d{days}-"))
        target = Target(url, f"{stamp.lower()}_d{days}", args.keep)
        try:
            harness = Harness(args, target, workdir, days)
            meta = meta or {"machine": machine(), "versions": versions(target)}
            harness.upgrade()
            population = generate.Population(
                ips=args.ips,
                vms=args.vms,
                volumes=args.volumes,
                history_ip_share=args.history_ip_share,
                resource_share=args.resource_share,
            )
            world = World(population=population, seed=args.seed)
            print(f"D={days}: history ({target.kind})", file=sys.stderr, flush=True)
            history = harness.history(world, start, days)
            hour = start + days * 24 * HOUR
            for n in sizes:
                profile = args.profile if n == sizes[-1] else None
                cell = harness.measured_hour(world, hour, n, profile)
                cell.update(
                    history_days=days,
                    history=history,
                    database=target.kind,
                    population=asdict(population),
                )
                if profile:
                    suffix = {"pyinstrument": "txt", "py-spy": "txt", "memray": "bin"}[profile]
                    cell["profile_file"] = str(workdir / f"profile-{profile}.{suffix}")
                cells.append(cell)
                if args.load_only:
                    break
                print(table([cell]), file=sys.stderr, flush=True)
                hour += HOUR
        finally:
            target.close()
            if not args.profile:
                shutil.rmtree(workdir, ignore_errors=True)
    report = {"timestamp": stamp, "command": sys.argv, **meta, "cells": cells}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.load_only:
        return 0
    print(table(cells))
    print(f"\n{meta.get('machine')}\n{meta.get('versions')}\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
