"""Exact hourly slicing of running time and of measured quantities (rules 3, 4)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from metering.core.events import HOUR, Measure, QuantityKey
from metering.core.spans import Span


def hour_of(t: int) -> int:
    return t - t % HOUR


def running_by_hour(spans: Iterable[Span], start: int, end: int) -> dict[tuple[str, int], int]:
    """Milliseconds run per (offering, hour), counting only time inside [start, end)."""
    totals: defaultdict[tuple[str, int], int] = defaultdict(int)
    for span in spans:
        lo, hi = max(span.start, start), min(span.end, end)
        hour = hour_of(lo)
        while lo < hi:
            cut = min(hour + HOUR, hi)
            totals[(span.offering, hour)] += cut - lo
            lo, hour = cut, hour + HOUR
    return {k: v for k, v in totals.items() if v != 0}


def split_measure(quantity: int, period_start: int, period_end: int) -> list[tuple[int, int]]:
    """(hour, amount) for every hour [period_start, period_end) overlaps, pro rata (rule 4).

    Each hour but the last gets floor(quantity * overlap / length) and the last
    the remainder, so the parts sum to `quantity` exactly. Zero amounts are kept
    so the hours returned are always exactly the overlapped ones.
    """
    if period_end < period_start:
        raise ValueError("period_end before period_start")
    length = period_end - period_start
    if length == 0:
        return [(hour_of(period_start), quantity)]
    parts: list[tuple[int, int]] = []
    given = 0
    hour = hour_of(period_start)
    while hour + HOUR < period_end:
        overlap = hour + HOUR - max(hour, period_start)
        amount = quantity * overlap // length
        parts.append((hour, amount))
        given += amount
        hour += HOUR
    parts.append((hour, quantity - given))
    return parts


def measure_by_hour(measures: Iterable[Measure]) -> dict[tuple[QuantityKey, int], int]:
    totals: defaultdict[tuple[QuantityKey, int], int] = defaultdict(int)
    for m in measures:
        for hour, amount in split_measure(m.quantity, m.period_start, m.period_end):
            totals[(m.key, hour)] += amount
    return {k: v for k, v in totals.items() if v != 0}
