from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from metering.core.diff import diff


def test_diff_examples() -> None:
    truth = {"a": 5, "b": 3, "c": 0}
    billed = {"a": 5, "b": 4, "d": 2}
    assert diff(truth, billed) == {"b": -1, "d": -2}
    assert diff({}, {}) == {}
    assert diff({("k", 1): 10}, {}) == {("k", 1): 10}


def test_diff_of_equal_is_empty() -> None:
    m = {(("a", "vm", "r"), "m", 0): 3_600_000}
    assert diff(m, dict(m)) == {}


MAPS = st.dictionaries(st.integers(0, 20), st.integers(-(10**18), 10**18), max_size=15)


@given(MAPS, MAPS)
def test_diff_plus_billed_is_truth(truth: dict[int, int], billed: dict[int, int]) -> None:
    d = diff(truth, billed)
    assert all(v != 0 for v in d.values())
    keys = truth.keys() | billed.keys() | d.keys()
    for k in keys:
        assert billed.get(k, 0) + d.get(k, 0) == truth.get(k, 0)
