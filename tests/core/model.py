"""A slow, obviously-correct reference model of contract rules 1-4.

Written without looking at how the core computes anything: the state of a
resource at an instant is a fresh fold over every event up to that instant,
and time is walked in elementary intervals between consecutive breakpoints
(event times and hour boundaries), inside which nothing can change.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from fractions import Fraction

HOUR_MS = 60 * 60 * 1000

# (occurred_at, id, action, offering-or-None)
ModelEvent = tuple[int, int, str, str | None]


def offering_at(events: Iterable[ModelEvent], t: int) -> str | None:
    """The offering a resource runs under just after instant t, or None if not running.

    "" stands for "running, but no offering was ever named".
    """
    running = False
    destroyed = False
    known = ""
    for when, _id, action, offering in sorted(events):
        if when > t:
            break
        if destroyed:
            continue
        if action in ("create", "start") and not running:
            running = True
            if offering and offering.strip():
                known = offering
        elif action == "stop":
            running = False
        elif action == "destroy":
            running = False
            destroyed = True
        elif action == "update" and offering:
            known = offering
    return known if running else None


def running_ms_by_hour(
    events: list[ModelEvent], start: int, end: int
) -> dict[tuple[str, int], int]:
    """(offering, hour start) -> milliseconds run inside [start, end)."""
    points = {start, end}
    points.update(e[0] for e in events if start < e[0] < end)
    first_hour = start // HOUR_MS * HOUR_MS
    points.update(h for h in range(first_hour, end, HOUR_MS) if start < h)
    ordered = sorted(points)
    out: dict[tuple[str, int], int] = {}
    for a, b in itertools.pairwise(ordered):
        offering = offering_at(events, a)
        if offering is not None:
            key = (offering, a // HOUR_MS * HOUR_MS)
            out[key] = out.get(key, 0) + (b - a)
    return out


def measure_parts(quantity: int, start: int, end: int) -> dict[int, int]:
    """hour start -> amount, per rule 4, walking the hours one by one."""
    if start == end:
        return {start // HOUR_MS * HOUR_MS: quantity}
    hours = []
    h = start // HOUR_MS * HOUR_MS
    while h < end:
        overlap = min(h + HOUR_MS, end) - max(h, start)
        if overlap > 0:
            hours.append((h, overlap))
        h += HOUR_MS
    out: dict[int, int] = {}
    for h, overlap in hours[:-1]:
        out[h] = int(Fraction(quantity * overlap, end - start))  # floor for q >= 0
    last = hours[-1][0]
    out[last] = quantity - sum(out.values())
    return out


def measures_by_hour(
    measures: Iterable[tuple[tuple[str, str, str, str], int, int, int]],
) -> dict[tuple[tuple[str, str, str, str], int], int]:
    """(key, quantity, start, end) measures -> summed amount per (key, hour), zeros dropped."""
    out: dict[tuple[tuple[str, str, str, str], int], int] = {}
    for key, quantity, start, end in measures:
        for h, amount in measure_parts(quantity, start, end).items():
            out[(key, h)] = out.get((key, h), 0) + amount
    return {k: v for k, v in out.items() if v != 0}


def anomalies(events: Iterable[ModelEvent], until: int) -> list[tuple[int, str]]:
    """(id, reason) for every event before `until` that rules 1-2 say changes nothing odd."""
    out: list[tuple[int, str]] = []
    running = False
    destroyed = False
    for when, id_, action, _offering in sorted(events):
        if when >= until:
            break
        if destroyed:
            out.append((id_, "event after destroy"))
        elif action in ("create", "start"):
            if running:
                out.append((id_, "duplicate start"))
            running = True
        elif action == "stop":
            if not running:
                out.append((id_, "stop without start"))
            running = False
        elif action == "destroy":
            destroyed = True
    return out
