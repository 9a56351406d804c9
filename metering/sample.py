"""Realistic usage events, deterministic for a seed: the demo's and the shipped sample's.

A handful of accounts run VMs of several sizes: web servers around the clock, dev
machines on office hours (weekdays), a nightly batch VM; one is resized live (an
`update` while running), one is stopped, resized and started again, a scratch VM is
created and destroyed within a day, and a CI VM is destroyed at the end. VMs have
volumes (billed while they exist) and some have a public IP whose traffic is measured
every minute while the VM runs.

Every event carries a delivery time: most arrive seconds after they happen; a few
arrive hours late, after the run that billed their hour (they become corrections); a
few are bad (rejected by the run with a reason, or an anomaly); one is delivered twice.

    python -m metering.sample --start 2016-12-12 --days 1 --seed 1 > day.jsonl

writes the shipped metering/sample_data/day.jsonl (events in delivery order).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import uuid
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from importlib import resources
from typing import Any

from metering.timeutil import from_ms, iso, parse_time, to_ms

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# A cron run at minute 32 bills the hour before once the 30 minutes grace are over.
BILLED_AFTER = HOUR + 30 * MINUTE

SAMPLE_START = datetime(2016, 12, 12, tzinfo=UTC)  # a Monday; the design talk's day
SAMPLE_SEED = 1
ACCOUNTS = ("geneva-jug", "acme-corp", "blue-lab", "north-shop")

Event = dict[str, Any]


@dataclass(frozen=True)
class Delivery:
    delivered_at: int  # epoch ms
    event: Event  # one JSON line's object, as in the billing contract
    late: bool = False  # delivered after a cron run billed its hour
    bad: bool = False  # the run rejects it or records it as an anomaly


@dataclass(frozen=True)
class Sample:
    start: datetime
    end: datetime
    accounts: tuple[str, ...]
    deliveries: tuple[Delivery, ...]  # in delivery order

    @property
    def late(self) -> int:
        return sum(1 for d in self.deliveries if d.late)

    @property
    def bad(self) -> int:
        return sum(1 for d in self.deliveries if d.bad)

    @property
    def duplicates(self) -> int:
        return len(self.deliveries) - len({d.event["event_id"] for d in self.deliveries})

    @cached_property
    def delivered_at(self) -> list[int]:
        return [d.delivered_at for d in self.deliveries]

    @cached_property
    def lines(self) -> list[bytes]:
        """Each delivery as one JSON line (with its newline)."""
        return [json_line(d.event).encode() + b"\n" for d in self.deliveries]

    def delivered_by(self, until: int) -> int:
        """How many deliveries happen at or before `until` (epoch ms): a prefix."""
        return bisect_right(self.delivered_at, until)

    def jsonl(self) -> bytes:
        return b"".join(self.lines)


@lru_cache(maxsize=65536)
def _iso(ms: int) -> str:
    """Measures share minute boundaries: formatting each once keeps generation fast."""
    return iso(from_ms(ms)) or ""


def json_line(event: Event) -> str:
    return json.dumps(event, separators=(",", ":"))


def shipped_day() -> bytes:
    """The shipped sample day (2016-12-12, seed 1), JSON lines."""
    return resources.files("metering").joinpath("sample_data/day.jsonl").read_bytes()


@dataclass(frozen=True)
class _Vm:
    account: str
    name: str
    offering: str
    pattern: str  # "always", "office" or "nightly"
    public_ip: bool = False
    volume: str | None = None  # the offering of its volume
    live_resize: str | None = None  # update while running to this offering, mid-window
    cold_resize: str | None = None  # stop, update to this offering, start, mid-window
    destroy_at_end: bool = False


_FLEET = (
    _Vm("geneva-jug", "web", "medium", "always", public_ip=True, volume="ssd-20g"),
    _Vm("acme-corp", "app-1", "large", "always", public_ip=True, volume="ssd-50g"),
    _Vm("acme-corp", "app-2", "large", "always", volume="ssd-50g"),
    _Vm("acme-corp", "batch", "xlarge", "nightly", volume="hdd-500g"),
    _Vm(
        "blue-lab",
        "dev-1",
        "small",
        "office",
        public_ip=True,
        volume="ssd-20g",
        live_resize="medium",
    ),
    _Vm("blue-lab", "dev-2", "medium", "office"),
    _Vm("blue-lab", "ci", "small", "office", volume="ssd-20g", destroy_at_end=True),
    _Vm("north-shop", "shop", "medium", "always", public_ip=True, cold_resize="large"),
    _Vm("north-shop", "cache", "micro", "always"),
)


@dataclass
class _Builder:
    rng: random.Random
    start: int
    end: int
    deliveries: list[Delivery] = field(default_factory=list)
    addresses: int = 0

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def address(self) -> str:
        self.addresses += 1
        return f"203.0.113.{10 + self.addresses}"

    def deliver(self, event: Event, at: int, *, late: bool = False, bad: bool = False) -> None:
        self.deliveries.append(Delivery(at, event, late=late, bad=bad))

    def soon(self, at: int) -> int:
        """When an event that happened at `at` reaches the database: within seconds."""
        return at + self.rng.randint(200, 5 * SECOND)

    def resource(
        self,
        vm: _Vm | None,
        entity: str,
        resource_id: str,
        action: str,
        at: int,
        *,
        account: str | None = None,
        offering: str | None = None,
    ) -> Event:
        event: Event = {
            "event_id": self.uid(),
            "kind": "resource",
            "entity": entity,
            "action": action,
            "account": account if account is not None else vm.account if vm else "",
            "resource_id": resource_id,
            "occurred_at": _iso(at),
        }
        if offering is not None:
            event["offering"] = offering
        if action == "create" and entity == "vm":
            event["attributes"] = {"template": "ubuntu-16.04", "source": "cloudstack"}
        return event

    def measure(
        self, account: str, address: str, quantity: int, period_start: int, period_end: int
    ) -> Event:
        return {
            "event_id": self.uid(),
            "kind": "quantity",
            "entity": "ip",
            "action": "measure",
            "account": account,
            "resource_id": address,
            "quantity": quantity,
            "unit": "byte",
            "period_start": _iso(period_start),
            "period_end": _iso(period_end),
            "occurred_at": _iso(period_end),
        }


def _runs(b: _Builder, vm: _Vm) -> list[tuple[int, int]]:
    """The intervals [from, to) the VM runs, within the window."""
    rng = b.rng
    spans: list[tuple[int, int]] = []
    if vm.pattern == "always":
        return [(b.start + rng.randint(1, 20) * MINUTE + rng.randint(0, 59_999), b.end)]
    for day in range(b.start, b.end, DAY):
        if vm.pattern == "office":
            if from_ms(day).weekday() >= 5:
                continue
            on = day + 8 * HOUR + rng.randint(0, 45) * MINUTE + rng.randint(0, 59_999)
            off = day + 17 * HOUR + rng.randint(30, 120) * MINUTE + rng.randint(0, 59_999)
        else:
            on = day + 1 * HOUR + rng.randint(0, 10) * MINUTE + rng.randint(0, 59_999)
            off = on + rng.randint(150, 240) * MINUTE + rng.randint(0, 59_999)
        spans.append((on, min(off, b.end - MINUTE)))
    return spans


def _vm_events(b: _Builder, vm: _Vm) -> list[tuple[int, int, Event]]:
    """The VM's lifecycle and its volume: (occurred_at, delivered_at, event)."""
    rng = b.rng
    vm_id, volume_id = b.uid(), b.uid()
    spans = _runs(b, vm)
    out: list[tuple[int, int, Event]] = []

    def add(action: str, at: int, offering: str | None = None, entity: str = "vm") -> None:
        rid = vm_id if entity == "vm" else volume_id
        out.append((at, b.soon(at), b.resource(vm, entity, rid, action, at, offering=offering)))

    middle = b.start + (b.end - b.start) // 2
    for index, (on, off) in enumerate(spans):
        # A create deploys and starts the VM (CloudStack's semantics): no start after it.
        if index == 0:
            add("create", on, vm.offering)
            if vm.volume:
                add("create", on - rng.randint(5, 30) * SECOND, vm.volume, "volume")
        else:
            add("start", on)
        if vm.live_resize and on <= middle < off:
            add("update", middle + rng.randint(0, 30) * MINUTE, vm.live_resize)
        if vm.cold_resize and on <= middle < off:
            stop = middle + rng.randint(0, 30) * MINUTE
            add("stop", stop)
            add("update", stop + rng.randint(60, 180) * SECOND, vm.cold_resize)
            add("start", stop + rng.randint(4, 6) * MINUTE)
        if off < b.end:
            add("stop", off)
    if vm.destroy_at_end:
        last_off = spans[-1][1]
        add("destroy", last_off + rng.randint(1, 5) * MINUTE)
        if vm.volume:
            add("destroy", last_off + rng.randint(6, 9) * MINUTE, entity="volume")
    if vm.public_ip:
        address = b.address()
        running = _running_intervals(out, vm_id)
        for minute in range(b.start, b.end, MINUTE):
            if any(lo <= minute and minute + MINUTE <= hi for lo, hi in running):
                out.append(
                    (
                        minute + MINUTE,
                        b.soon(minute + MINUTE),
                        b.measure(
                            vm.account, address, _traffic(rng, minute), minute, minute + MINUTE
                        ),
                    )
                )
    return out


def _running_intervals(events: list[tuple[int, int, Event]], vm_id: str) -> list[tuple[int, int]]:
    running: list[tuple[int, int]] = []
    since: int | None = None
    for at, _, event in sorted(events, key=lambda e: e[0]):
        if event["resource_id"] != vm_id:
            continue
        if event["action"] in ("create", "start") and since is None:
            since = at
        elif event["action"] in ("stop", "destroy") and since is not None:
            running.append((since, at))
            since = None
    if since is not None:
        running.append((since, 1 << 62))
    return running


def _traffic(rng: random.Random, minute: int) -> int:
    """Bytes in one minute: busier in the (European) day, bursty."""
    hour = from_ms(minute).hour
    base = 6_000_000 if 8 <= hour < 20 else 1_500_000
    burst = 8 if rng.random() < 0.01 else 1
    return int(base * burst * rng.uniform(0.3, 1.7))


def _make_late(b: _Builder, events: list[tuple[int, int, Event]]) -> None:
    """Per day: one stop, one start and one hour of one IP's traffic arrive late."""
    rng = b.rng
    for day in range(b.start, b.end, DAY):
        for action in ("stop", "start"):
            candidates = [
                i
                for i, (at, _, e) in enumerate(events)
                if e["kind"] == "resource" and e["action"] == action and day <= at < day + DAY
            ]
            _delay(b, events, candidates[rng.randrange(len(candidates))] if candidates else None)
        ips = sorted({e["resource_id"] for _, _, e in events if e["entity"] == "ip"})
        if not ips:
            continue
        address = ips[rng.randrange(len(ips))]
        hour = day + rng.randint(9, 15) * HOUR
        outage_end = hour + HOUR + rng.randint(2, 3) * HOUR + rng.randint(0, 50) * MINUTE
        for i, (at, _, e) in enumerate(events):
            if e["resource_id"] == address and hour < at <= hour + HOUR:
                events[i] = (at, outage_end + rng.randint(0, 20) * SECOND, e)


def _delay(b: _Builder, events: list[tuple[int, int, Event]], index: int | None) -> None:
    """The event at `index` arrives two to five hours after it happened."""
    if index is None:
        return
    at, _, event = events[index]
    events[index] = (at, at + b.rng.randint(2, 4) * HOUR + b.rng.randint(0, 50) * MINUTE, event)


def _bad_events(b: _Builder) -> list[Delivery]:
    """One of each kind of bad input the run must reject or flag, at random times."""
    rng = b.rng
    span = (b.end - b.start) // MINUTE

    def when() -> int:
        return b.start + rng.randint(30, span - 30) * MINUTE + rng.randint(0, 59_999)

    negative = b.measure("geneva-jug", "203.0.113.250", -4096, 0, 0)
    at = when() // MINUTE * MINUTE
    negative.update(
        period_start=_iso(at - MINUTE),
        period_end=_iso(at),
        occurred_at=_iso(at),
    )
    reversed_period = b.measure("acme-corp", "203.0.113.251", 52_428_800, 0, 0)
    at = when() // MINUTE * MINUTE
    reversed_period.update(
        period_start=_iso(at),
        period_end=_iso(at - MINUTE),
        occurred_at=_iso(at),
    )
    bad: list[Event] = [
        negative,
        reversed_period,
        b.resource(None, "vm", b.uid(), "reboot", when(), account="blue-lab"),
        b.resource(None, "vm", b.uid(), "start", when(), account="", offering="small"),
        b.resource(None, "vm", b.uid(), "stop", when(), account="north-shop"),
    ]
    out = []
    for event in bad:
        at = to_ms(parse_time(event["occurred_at"]))
        out.append(Delivery(b.soon(at), event, bad=True))
    return out


def generate(
    start: datetime = SAMPLE_START,
    *,
    days: int = 1,
    seed: int = SAMPLE_SEED,
    accounts: Sequence[str] = ACCOUNTS,
) -> Sample:
    """Events of `days` days from `start` (floored to the hour, UTC) for `accounts`.

    Late deliveries stay within the window (plus the grace of its last hour), so a
    cron-like replay up to the window's end sees every event.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    first = to_ms(start) // HOUR * HOUR
    b = _Builder(random.Random(seed), first, first + days * DAY)
    events: list[tuple[int, int, Event]] = []
    for vm in _FLEET:
        if vm.account in accounts:
            events.extend(_vm_events(b, vm))
    events.sort(key=lambda e: (e[1], e[0]))
    _make_late(b, events)
    for at, arrives, event in events:
        hour = _billed_hour(at, event)
        late = arrives > hour + BILLED_AFTER
        if late and arrives > b.end + 30 * MINUTE:
            arrives, late = b.soon(at), False
        b.deliver(event, arrives, late=late)
    b.deliveries.extend(d for d in _bad_events(b) if d.event["account"] in (*accounts, ""))
    creates = [d for d in b.deliveries if d.event["action"] == "create"]
    if creates:
        again = creates[b.rng.randrange(len(creates))]
        b.deliver(again.event, again.delivered_at + 90 * SECOND)
    ordered = sorted(b.deliveries, key=lambda d: (d.delivered_at, d.event["event_id"]))
    return Sample(
        start=from_ms(first),
        end=from_ms(b.end),
        accounts=tuple(a for a in ACCOUNTS if a in accounts),
        deliveries=tuple(ordered),
    )


def _billed_hour(at: int, event: Event) -> int:
    """The hour a delivery is late for: a measure's is its period's."""
    if event["kind"] == "quantity" and event.get("period_start"):
        at = to_ms(parse_time(event["period_start"]))
    return at // HOUR * HOUR


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m metering.sample", description="Write sample usage events (JSON lines)."
    )
    parser.add_argument("--start", default="2016-12-12", help="first day (UTC) [2016-12-12]")
    parser.add_argument("--days", type=int, default=1, help="how many days [1]")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED, help="random seed [1]")
    args = parser.parse_args(argv)
    sample = generate(parse_time(args.start), days=args.days, seed=args.seed)
    sys.stdout.buffer.write(sample.jsonl())


if __name__ == "__main__":
    main()
