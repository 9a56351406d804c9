"""What must be written so the billed sums equal the truth (rules 6, 7, 13)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def diff(truth: Mapping[K, int], billed: Mapping[K, int]) -> dict[K, int]:
    """truth - billed for every key in either; zero differences omitted.

    A key billed but absent from the truth gets a negative difference: that is
    how a late stop gives back time billed in excess.
    """
    out: dict[K, int] = {}
    for key in truth.keys() | billed.keys():
        delta = truth.get(key, 0) - billed.get(key, 0)
        if delta != 0:
            out[key] = delta
    return out
