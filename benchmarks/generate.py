"""Realistic usage events, generated fast and loaded straight into usage_events.

The world: ~5k accounts owning ~20k public IPs (byte measures), VMs and volumes.
VMs go through start/stop/update(resize) cycles and are sometimes destroyed and
replaced; volumes are created, resized and destroyed. Every hour a random share of
the resources changes state, at a random millisecond of the hour.

Two densities:
- history hours (`history_hour`): the resource events, plus one hourly byte
  aggregate [H, H+1h) from a fraction of the IPs (default 2%, rotating). Light on
  purpose: 30 days of history must load and bill in minutes on 2 cores, and every
  running resource is a line per hour (2k VMs and 1k volumes: ~2k running, ~50k
  running lines a day; with 10k running it was ~200k lines and ~1 min a day).
- the measured hour (`measured_hour`): exactly N rows: the resource events of the
  hour, per-interval byte measures from every IP (N/20k each: ~per minute at 1M),
  and a few realistic oddities: late measures and late stops for hours already
  billed (corrections), measures straddling into the next hour (pending), and
  invalid rows (rejections).

Loading: MariaDB through LOAD DATA LOCAL INFILE (multi-row INSERTs of 10k rows when
the server refuses local_infile); SQLite through executemany in one transaction.
Event ids are zero-padded sequence numbers, so the unique index grows at its end.
Row ids are given explicitly on MariaDB: LOAD DATA would burn ~15% of the
auto-increment ids, and metering would track those as gaps (a real multi-row
INSERT ingest does not burn ids).
"""

from __future__ import annotations

import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

HOUR = 3_600_000
MINUTE = 60_000

COLUMNS = (
    "event_id",
    "kind",
    "entity",
    "action",
    "account",
    "resource_id",
    "offering",
    "occurred_at",
    "quantity",
    "unit",
    "period_start",
    "period_end",
)
Row = tuple[Any, ...]

VM_OFFERINGS = ("small", "medium", "large", "xlarge")
VOLUME_OFFERINGS = ("10g", "50g", "100g", "500g")
NEW, RUNNING, STOPPED = 0, 1, 2


def fmt_ms(ms: int) -> str:
    """'YYYY-MM-DD HH:MM:SS.fff' UTC: what DATETIME(3) takes and what SQLite stores."""
    seconds, milli = divmod(ms, 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S.") + f"{milli:03d}"


class _Clock:
    """fmt_ms with the hour prefix cached: most rows of an hour share it."""

    def __init__(self) -> None:
        self._hour = -1
        self._prefix = ""

    def __call__(self, ms: int) -> str:
        hour = ms - ms % HOUR
        if hour != self._hour:
            self._hour = hour
            self._prefix = fmt_ms(hour)[:14]
        rest = ms - hour
        minute, rest = divmod(rest, MINUTE)
        second, milli = divmod(rest, 1000)
        return f"{self._prefix}{minute:02d}:{second:02d}.{milli:03d}"


@dataclass
class Resource:
    account: str
    entity: str
    resource_id: str
    offering: str
    state: int = NEW
    last_at: int = 0


@dataclass
class Population:
    accounts: int = 5_000
    ips: int = 20_000
    vms: int = 2_000
    volumes: int = 1_000
    vm_change_per_hour: float = 0.08  # share of VMs with an event each hour
    volume_change_per_hour: float = 0.01
    history_ip_share: float = 0.02  # share of IPs with an hourly aggregate per history hour
    late_share: float = 0.005  # measured hour: late measures (hour already billed)
    late_stops: int = 20  # measured hour: stops of running VMs, one or two hours late
    straddle_share: float = 0.002  # measured hour: measures spanning into the next hour
    invalid_share: float = 0.0001  # measured hour: rows metering must reject
    # measured hour: share of its rows that are resource events (VM stop/start pairs,
    # volume resizes on random resources); 0 keeps the hour's ordinary churn only
    resource_share: float = 0.0


@dataclass
class World:
    """The simulated cloud; keeps resource states between hours."""

    population: Population = field(default_factory=Population)
    seed: int = 7
    prefix: str = "e"

    def __post_init__(self) -> None:
        p = self.population
        self.rng = random.Random(self.seed)
        self.sequence = 0
        self.clock = _Clock()
        self.account_names = [f"acct-{i:05d}" for i in range(p.accounts)]
        self.ips = [
            (self._account(), f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}") for i in range(p.ips)
        ]
        self.vms = [self._new(self._account(), "vm", VM_OFFERINGS) for _ in range(p.vms)]
        self.volumes = [
            self._new(self._account(), "volume", VOLUME_OFFERINGS) for _ in range(p.volumes)
        ]
        self.ip_cursor = 0

    def _account(self) -> str:
        return self.account_names[self.rng.randrange(len(self.account_names))]

    def _new(self, account: str, entity: str, offerings: Sequence[str]) -> Resource:
        rid = f"{self.rng.getrandbits(128):032x}"
        rid = f"{rid[:8]}-{rid[8:12]}-{rid[12:16]}-{rid[16:20]}-{rid[20:]}"
        return Resource(account, entity, rid, self.rng.choice(offerings))

    def _id(self) -> str:
        self.sequence += 1
        return f"{self.prefix}{self.sequence:012d}"

    def _resource_row(self, r: Resource, action: str, offering: str | None, at: int) -> Row:
        r.last_at = max(r.last_at, at)
        return (
            self._id(), "resource", r.entity, action, r.account, r.resource_id,
            offering, self.clock(at), None, None, None, None,
        )  # fmt: skip

    def _measure_row(self, account: str, ip: str, quantity: int, start: int, end: int) -> Row:
        end_text = self.clock(end)
        return (
            self._id(), "quantity", "ip", "measure", account, ip,
            None, end_text, quantity, "byte", self.clock(start), end_text,
        )  # fmt: skip

    # -- resources ----------------------------------------------------------------

    def _resource_events(self, hour: int) -> list[Row]:
        rows: list[Row] = []
        rng = self.rng
        for pool, offerings, share in (
            (self.vms, VM_OFFERINGS, self.population.vm_change_per_hour),
            (self.volumes, VOLUME_OFFERINGS, self.population.volume_change_per_hour),
        ):
            fresh = [i for i, r in enumerate(pool) if r.state == NEW]
            for i in fresh:
                r = pool[i]
                rows.append(self._resource_row(r, "create", r.offering, hour + rng.randrange(HOUR)))
                r.state = RUNNING
            chosen = set(rng.sample(range(len(pool)), int(len(pool) * share))) - set(fresh)
            for i in sorted(chosen):
                r = pool[i]
                at = hour + rng.randrange(HOUR)
                roll = rng.random()
                if r.entity == "volume":
                    if roll < 0.5:
                        r.offering = rng.choice(offerings)
                        rows.append(self._resource_row(r, "update", r.offering, at))
                    else:
                        rows.append(self._resource_row(r, "destroy", None, at))
                        pool[i] = self._new(r.account, r.entity, offerings)
                elif r.state == RUNNING:
                    if roll < 0.85:
                        rows.append(self._resource_row(r, "stop", None, at))
                        r.state = STOPPED
                    elif roll < 0.95:
                        r.offering = rng.choice(offerings)
                        rows.append(self._resource_row(r, "update", r.offering, at))
                    else:
                        rows.append(self._resource_row(r, "destroy", None, at))
                        pool[i] = self._new(r.account, r.entity, offerings)
                elif roll < 0.9:
                    rows.append(self._resource_row(r, "start", None, at))
                    r.state = RUNNING
                else:
                    rows.append(self._resource_row(r, "destroy", None, at))
                    pool[i] = self._new(r.account, r.entity, offerings)
        return rows

    # -- hours ----------------------------------------------------------------------

    def history_hour(self, hour: int) -> list[Row]:
        """One light history hour: resource events and hourly IP aggregates."""
        rows = self._resource_events(hour)
        rng = self.rng
        count = int(len(self.ips) * self.population.history_ip_share)
        for _ in range(count):
            account, ip = self.ips[self.ip_cursor]
            self.ip_cursor = (self.ip_cursor + 1) % len(self.ips)
            rows.append(self._measure_row(account, ip, rng.getrandbits(30), hour, hour + HOUR))
        rows.sort(key=lambda row: row[7])
        return rows

    def measured_hour(self, hour: int, n: int) -> list[Row]:
        """Exactly n rows for the hour [hour, hour+1h), in occurred_at order."""
        p = self.population
        rng = self.rng
        rows = self._late_stops(hour)
        rows.extend(self._resource_events(hour))
        for _ in range(int(n * p.late_share)):
            account, ip = self.ips[rng.randrange(len(self.ips))]
            start = hour - rng.randrange(1, 3) * HOUR + rng.randrange(60) * MINUTE
            rows.append(self._measure_row(account, ip, rng.getrandbits(20), start, start + MINUTE))
        for _ in range(int(n * p.straddle_share)):
            account, ip = self.ips[rng.randrange(len(self.ips))]
            start = hour + HOUR - 30_000
            rows.append(self._measure_row(account, ip, rng.getrandbits(20), start, start + MINUTE))
        for k in range(int(n * p.invalid_share)):
            account, ip = self.ips[rng.randrange(len(self.ips))]
            start = hour + rng.randrange(59) * MINUTE
            if k % 2:
                rows.append(self._measure_row(account, ip, -1, start, start + MINUTE))
            else:
                row = self._measure_row(account, ip, 1, start, start + MINUTE)
                rows.append((*row[:3], "explode", *row[4:]))
        rows.extend(self._churn(hour, int(n * p.resource_share) - len(rows)))
        measures = n - len(rows)
        if measures < 0:
            raise ValueError(f"{n} events is too few for one hour of this world")
        ips = len(self.ips)
        base, extra = divmod(measures, ips)
        for i, (account, ip) in enumerate(self.ips):
            k = base + (1 if i < extra else 0)
            if k == 0:
                continue
            step = HOUR // k
            for j in range(k):
                start = hour + j * step
                end = hour + HOUR if j == k - 1 else start + step
                rows.append(self._measure_row(account, ip, rng.getrandbits(23), start, end))
        rows.sort(key=lambda row: row[7])
        return rows

    def _churn(self, hour: int, count: int) -> list[Row]:
        """`count` more resource events in the hour: a busy hour of lifecycle changes."""
        rows: list[Row] = []
        rng = self.rng
        pool = self.vms + self.volumes
        misses = 0
        while len(rows) < count:
            r = pool[rng.randrange(len(pool))]
            # After the resource's last event: a pick placed anywhere in the hour
            # interleaved with its earlier ones (stop, stop, start, start), and a third
            # of the hour's lifecycle events became anomalies no real producer sends.
            after = max(hour, r.last_at + 1) - hour
            if HOUR - after < 2:
                misses += 1
                if misses > 100 * len(pool):
                    raise ValueError(f"{count} lifecycle events is too many for one hour")
                continue
            first, second = sorted(rng.sample(range(after, HOUR), 2))
            if r.entity == "volume":
                r.offering = rng.choice(VOLUME_OFFERINGS)
                rows.append(self._resource_row(r, "update", r.offering, hour + first))
            elif r.state == RUNNING:
                rows.append(self._resource_row(r, "stop", None, hour + first))
                rows.append(self._resource_row(r, "start", None, hour + second))
            elif r.state == STOPPED:
                rows.append(self._resource_row(r, "start", None, hour + first))
                rows.append(self._resource_row(r, "stop", None, hour + second))
        return rows[:count]

    def _late_stops(self, hour: int) -> list[Row]:
        """Stops that happened one or two hours ago (billed as running) and arrive now."""
        rows: list[Row] = []
        running = [r for r in self.vms if r.state == RUNNING and r.last_at < hour - 2 * HOUR]
        for r in self.rng.sample(running, min(self.population.late_stops, len(running))):
            at = hour - HOUR - self.rng.randrange(HOUR)
            rows.append(self._resource_row(r, "stop", None, at))
            r.state = STOPPED
        return rows


# -- loading ---------------------------------------------------------------------------

LOAD_CHUNK = 500_000
INSERT_CHUNK = 10_000


def load_mariadb(
    conn: Any, rows: Sequence[Row], ids: Sequence[int] | None = None
) -> tuple[int, int]:
    """Insert rows (PyMySQL connection opened with local_infile=True); the id range.
    Row ids follow the highest stored one, or are `ids` (ascending, above it)."""
    before = _max_id(conn)
    given = ids if ids is not None else range(before + 1, before + 1 + len(rows))
    with conn.cursor() as cur:
        cur.execute("SET SESSION unique_checks = 0, foreign_key_checks = 0")
        try:
            _load_data(cur, rows, given)
        except Exception as exc:  # the server or client refuses LOCAL INFILE
            if "LOCAL" not in str(exc).upper() and "1148" not in str(exc):
                raise
            conn.rollback()
            _multi_insert(cur, rows, given)
        cur.execute("SET SESSION unique_checks = 1, foreign_key_checks = 1")
    conn.commit()
    return given[0], _max_id(conn)


def _max_id(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT COALESCE(MAX(id), 0) FROM usage_events")
        return int(cur.fetchone()[0])


def _load_data(cur: Any, rows: Sequence[Row], ids: Sequence[int]) -> None:
    columns = ", ".join(("id", *COLUMNS))
    for first in range(0, len(rows), LOAD_CHUNK):
        fd, path = tempfile.mkstemp(prefix="bench-events-", suffix=".tsv")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.writelines(
                    f"{ids[first + i]}\t"
                    + "\t".join("\\N" if v is None else str(v) for v in row)
                    + "\n"
                    for i, row in enumerate(rows[first : first + LOAD_CHUNK])
                )
            cur.execute(
                f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE usage_events "
                "FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n' "
                f"({columns}) SET ingested_at = NOW(3)"
            )
        finally:
            os.unlink(path)


def _multi_insert(cur: Any, rows: Sequence[Row], ids: Sequence[int]) -> None:
    sql = (
        f"INSERT INTO usage_events (id, {', '.join(COLUMNS)}, ingested_at) "
        f"VALUES (%s, {', '.join(['%s'] * len(COLUMNS))}, NOW(3))"
    )
    for first in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[first : first + INSERT_CHUNK]
        cur.executemany(sql, [(ids[first + i], *row) for i, row in enumerate(chunk)])


def load_sqlite(path: str, rows: Sequence[Row]) -> tuple[int, int]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        before = conn.execute("SELECT COALESCE(MAX(id), 0) FROM usage_events").fetchone()[0]
        now = fmt_ms(time.time_ns() // 1_000_000)
        sql = (
            f"INSERT INTO usage_events ({', '.join(COLUMNS)}, ingested_at) "
            f"VALUES ({', '.join(['?'] * len(COLUMNS))}, '{now}')"
        )
        conn.execute("BEGIN")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
        after = conn.execute("SELECT COALESCE(MAX(id), 0) FROM usage_events").fetchone()[0]
        return int(before) + 1, int(after)
    finally:
        conn.close()
