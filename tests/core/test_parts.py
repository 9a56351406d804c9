"""Measure parts: added in place, and the parts of open hours taken out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from metering.core.billing import PartKey, add_parts, take_open
from metering.core.events import HOUR

KEYS = st.tuples(
    st.tuples(
        st.sampled_from(["a", "b"]), st.just("ip"), st.sampled_from(["r1", "r2"]), st.just("byte")
    ),
    st.integers(0, 5).map(lambda h: h * HOUR),
)
PARTS = st.dictionaries(KEYS, st.integers(-10, 10))


def test_take_open_leaves_the_closed_hours() -> None:
    key = ("acme", "ip", "10.0.0.1", "byte")
    parts: dict[PartKey, int] = {(key, 0): 5, (key, HOUR): 7, (key, 2 * HOUR): 9}
    assert take_open(parts, HOUR) == {(key, HOUR): 7, (key, 2 * HOUR): 9}
    assert parts == {(key, 0): 5}


@given(PARTS, PARTS, st.integers(0, 6).map(lambda h: h * HOUR))
def test_add_then_take_open_partitions_the_sums(
    first: dict[PartKey, int], second: dict[PartKey, int], until: int
) -> None:
    expected = {k: first.get(k, 0) + second.get(k, 0) for k in first.keys() | second.keys()}
    parts = dict(first)
    add_parts(parts, second)
    assert parts == expected
    opened = take_open(parts, until)
    assert opened == {k: v for k, v in expected.items() if k[1] >= until}
    assert parts == {k: v for k, v in expected.items() if k[1] < until}
