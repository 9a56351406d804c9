"""Reconciliation against an inventory snapshot (rule 15), pure.

A snapshot lists the resources running at an instant T. Each resource's stored
state at T is its own event history replayed up to and including T; where the
two disagree, a synthetic event makes the stored history converge:

- listed, not running in the history      -> start at T
- running in the history, not listed      -> stop at the last evidence that it
  ran (policy never-overbill) or at T (policy never-underbill)
- listed and running under another offering -> update at T

Synthetic event ids are derived from the snapshot and the resource, so a
snapshot applied twice yields the same ids (and, the second time, no events at
all: the first application is already part of the history).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from metering.core.events import ResourceEvent, ResourceKey
from metering.core.spans import replay

NEVER_OVERBILL: Final[str] = "never-overbill"
NEVER_UNDERBILL: Final[str] = "never-underbill"
POLICIES: Final[tuple[str, ...]] = (NEVER_OVERBILL, NEVER_UNDERBILL)

# Why a synthetic event was made; stored in its attributes for audits.
RULE_START: Final[str] = "running-not-known"
RULE_STOP: Final[str] = "known-not-listed"
RULE_UPDATE: Final[str] = "other-offering"

SKIP_DESTROYED: Final[str] = "listed as running but destroyed by its events"

EVENT_ID_PREFIX: Final[str] = "reconcile:"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Resources running at `taken_at` (epoch ms), each with its offering (None: not given)."""

    snapshot_id: str
    taken_at: int
    running: Mapping[ResourceKey, str | None]


@dataclass(frozen=True, slots=True)
class Known:
    """What the store knows of one resource: its valid resource events and when a
    snapshot last listed it."""

    events: tuple[ResourceEvent, ...] = ()
    last_seen_at: int | None = None


@dataclass(frozen=True, slots=True)
class Synthetic:
    event_id: str
    key: ResourceKey
    action: str  # start, stop or update
    offering: str | None
    occurred_at: int
    rule: str


@dataclass(frozen=True, slots=True)
class Skipped:
    key: ResourceKey
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    events: tuple[Synthetic, ...]
    seen: tuple[ResourceKey, ...]  # listed resources: their last_seen_at becomes taken_at
    skipped: tuple[Skipped, ...] = field(default=())


def snapshot_id_of(running: Mapping[ResourceKey, str | None], taken_at: int) -> str:
    """A file snapshot's id: its normalized content (sorted, one resource once) and T."""
    rows = sorted([*key, offering or ""] for key, offering in running.items())
    # JSON is unambiguous whatever the fields contain.
    text = json.dumps({"taken_at": taken_at, "running": rows}, ensure_ascii=True)
    digest = hashlib.sha256(text.encode("ascii"))
    return "file:" + digest.hexdigest()[:40]


SYNTHETIC_ACTIONS: Final[frozenset[str]] = frozenset({"start", "stop", "update"})


def synthetic_event_id(snapshot_id: str, key: ResourceKey, action: str) -> str:
    """The same id whenever the same snapshot asks the same of the same resource, and a
    different one for anything else."""
    if action not in SYNTHETIC_ACTIONS:
        raise ValueError(f"no synthetic {action!r} event")
    fields = (snapshot_id, *key, action)
    if any("|" in f for f in fields):
        # Joined with "|", ("a|b", "vm") and ("a", "b|vm") would hash alike. A JSON array
        # never ends like a joined text does (with the action), so the two forms cannot
        # yield the same text either.
        text = json.dumps(fields, ensure_ascii=True)
    else:
        # Unambiguous without a "|" in any field, and the ids earlier versions stored:
        # a snapshot applied before an upgrade re-applies to the same ids.
        text = "|".join(fields)
    return EVENT_ID_PREFIX + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def _last_evidence(known: Known, at: int) -> int:
    """The latest instant at or before `at` the resource is known to have existed:
    its last event, or the last snapshot that listed it."""
    times = [e.occurred_at for e in known.events if e.occurred_at <= at]
    if known.last_seen_at is not None and known.last_seen_at <= at:
        times.append(known.last_seen_at)
    # A resource running at `at` has at least the event that started it.
    return max(times)


def plan(
    snapshot: Snapshot,
    known: Mapping[ResourceKey, Known],
    *,
    policy: str = NEVER_OVERBILL,
    entities: Iterable[str] | None = None,
) -> Plan:
    """The synthetic events that make the stored histories agree with `snapshot`.

    `known` must hold every resource listed in the snapshot and every resource
    whose history may make it run at taken_at (a missing one is taken as never
    seen). `entities`, if given, limits the comparison to those entities (a
    snapshot that only covers VMs must not stop every volume).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}")
    at = snapshot.taken_at
    scope = None if entities is None else frozenset(entities)
    events: list[Synthetic] = []
    skipped: list[Skipped] = []
    seen: list[ResourceKey] = []

    def make(key: ResourceKey, action: str, offering: str | None, when: int, rule: str) -> None:
        events.append(
            Synthetic(
                event_id=synthetic_event_id(snapshot.snapshot_id, key, action),
                key=key,
                action=action,
                offering=offering,
                occurred_at=when,
                rule=rule,
            )
        )

    for key in sorted(set(snapshot.running) | set(known)):
        if scope is not None and key[1] not in scope:
            continue
        history = known.get(key, Known())
        # +1: an event at exactly T has taken effect at T.
        state = replay(history.events, at + 1).state
        listed = key in snapshot.running
        if listed:
            seen.append(key)
            wanted = snapshot.running[key] or None
            if state.destroyed:
                skipped.append(Skipped(key, SKIP_DESTROYED))
            elif not state.running:
                make(key, "start", wanted, at, RULE_START)
            elif wanted is not None and wanted != state.offering:
                make(key, "update", wanted, at, RULE_UPDATE)
        elif state.running:
            when = at if policy == NEVER_UNDERBILL else _last_evidence(history, at)
            make(key, "stop", None, when, RULE_STOP)
    return Plan(events=tuple(events), seen=tuple(seen), skipped=tuple(skipped))
