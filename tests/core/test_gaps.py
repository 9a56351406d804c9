"""metering/core/gaps.py against a plain set of missing ids (the model)."""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from metering.core.gaps import (
    BLOCK,
    RESIDUES,
    IdClass,
    Index,
    Strided,
    coarsen,
    fold,
    remaining,
    restrict,
    size,
    stretches,
    strided,
    subtract,
    sweep,
)

PROPERTIES = settings(max_examples=300, deadline=None)


def members(rows: Iterable[Strided]) -> list[int]:
    """Every id the rows hold, with repeats (so overlapping rows show)."""
    return [x for s in rows for x in range(s.id_from, s.id_to + 1) if x in s]


def runs_of(ids: set[int]) -> list[Strided]:
    """Maximal runs of the set, ascending: what the database's holes are."""
    out: list[Strided] = []
    for x in sorted(ids):
        if out and out[-1].id_to == x - 1:
            out[-1] = Strided(out[-1].id_from, x)
        else:
            out.append(Strided(x, x))
    return out


def canonical(s: Strided) -> bool:
    if s.step == s.width == 1:
        return s.id_from <= s.id_to
    return s.step > s.width >= 1 and s.id_to >= s.id_from + s.step and s.id_to in s


def classes_of(present: set[int], lo: int, hi: int) -> list[IdClass]:
    """What store.events.id_classes counts, computed from the model."""
    groups: dict[tuple[int, int], list[int]] = {}
    for x in sorted(present):
        if lo <= x <= hi:
            groups.setdefault((x // BLOCK, x % RESIDUES), []).append(x)
    return [IdClass(b, r, len(xs), xs[0], xs[-1]) for (b, r), xs in sorted(groups.items())]


def interleaved(n: int, k: int, offsets: frozenset[int], start: int = 1) -> set[int]:
    """Ids `offsets` (mod k) of [start, start + n): nodes of a k-node cluster ingesting."""
    return {x for x in range(start, start + n) if x % k in offsets}


# -- examples --------------------------------------------------------------------------


def test_a_galera_node_burst_is_one_row() -> None:
    # Ids 1, 4, 7, ... read; 2, 3, 5, 6, ... missing.
    missing = set(range(1, 3001)) - set(range(1, 3001, 3))
    rows = list(fold(runs_of(missing)))
    assert rows == [Strided(2, 3000, 3, 2)]
    assert size(rows[0]) == 2000


def test_strided_normalises() -> None:
    assert strided(5, 9, 1, 1) == Strided(5, 9)
    assert strided(5, 9, 3, 3) == Strided(5, 9)
    assert strided(5, 7, 3, 2) == Strided(5, 6)  # one block: a range
    assert strided(2, 10, 3, 1) == Strided(2, 8, 3, 1)  # id_to: its last member
    assert strided(2, 9, 3, 2) == Strided(2, 9, 3, 2)


def test_restrict_keeps_partial_blocks() -> None:
    s = Strided(2, 30, 5, 2)  # 2-3, 7-8, 12-13, ...
    assert restrict(s, 3, 12) == [Strided(3, 3), Strided(7, 12, 5, 2)]
    assert restrict(s, 4, 6) == []
    assert restrict(s, 9, 11) == []
    assert restrict(s, 8, 8) == [Strided(8, 8)]


def test_subtract_a_late_burst_from_a_node_keeps_the_other_node() -> None:
    gap = Strided(2, 3000, 3, 2)  # node 2 and node 3's share
    late = range(2, 3001, 3)  # node 2 commits its burst late
    assert list(subtract(gap, late)) == [Strided(3, 3000, 3, 1)]


def test_sweep_of_one_node() -> None:
    present = interleaved(30_000, 3, frozenset({1}))
    missing = set(range(1, 30_001)) - present
    (start, end, dense), *more = stretches(1, 30_000, classes_of(present, 1, 30_000))
    assert more == [] and dense is not None
    assert list(fold(sweep(start, end, dense))) == [Strided(2, 30_000, 3, 2)]
    assert set(members(sweep(start, end, dense))) == missing


def test_coarsen_counts_one_node_as_one_class_a_block() -> None:
    present = interleaved(2 * BLOCK, 3, frozenset({2}))
    classes = coarsen(classes_of(present, 1, 2 * BLOCK))
    assert [(c.block, c.residue, c.modulus, c.dense) for c in classes] == [
        (0, 2, 3, True),
        (1, 2, 3, True),
    ]
    assert sum(c.count for c in classes) == len(present)


def test_two_bursts_in_one_class_make_the_block_irregular() -> None:
    present = {x for x in range(1, BLOCK) if x % RESIDUES == 7 and not 1000 < x < 2000}
    (_, _, dense), *_ = stretches(1, BLOCK - 1, classes_of(present, 1, BLOCK - 1))
    assert dense is None


def test_index() -> None:
    rows = [Strided(2, 3000, 3, 2), Strided(4000, 4010), Strided(3001, 3100, 7, 1)]
    index = Index(rows)
    assert 2 in index and 3 in index and 4 not in index and 3000 in index
    assert 3008 in index and 3009 not in index and 4005 in index and 5000 not in index
    assert index.find(3008) == rows[2] and index.find(3009) is None


# -- properties ------------------------------------------------------------------------

id_sets = st.sets(st.integers(1, 400), max_size=200)


@PROPERTIES
@given(id_sets)
def test_fold_holds_exactly_the_missing_ids(missing: set[int]) -> None:
    rows = list(fold(runs_of(missing)))
    assert all(canonical(s) for s in rows)
    found = members(rows)
    assert len(found) == len(set(found))  # disjoint
    assert set(found) == missing
    assert sum(size(s) for s in rows) == len(missing)
    index = Index(rows)
    assert {x for x in range(0, 402) if x in index} == missing


@PROPERTIES
@given(id_sets, st.sets(st.integers(1, 400)))
def test_subtract_found_ids_is_set_difference(missing: set[int], found: set[int]) -> None:
    for gap in fold(runs_of(missing)):
        held = set(members([gap]))
        rest = list(subtract(gap, sorted(found)))
        assert all(canonical(s) for s in rest)
        assert sorted(members(rest)) == sorted(held - found)


@PROPERTIES
@given(id_sets, st.sets(st.integers(1, 400)))
def test_remaining_after_a_reread_is_what_is_still_missing(
    missing: set[int], committed: set[int]
) -> None:
    """A re-read sees the rows committed since among a gap's ids: its holes are the
    runs between them (what store.events.holes sends), the gap's ids in them stay."""
    for gap in fold(runs_of(missing)):
        held = set(members([gap]))
        seen = held & committed
        holes = [
            (r.id_from, r.id_to) for r in runs_of(set(range(gap.id_from, gap.id_to + 1)) - seen)
        ]
        assert set(members(remaining(gap, holes))) == held - seen


@PROPERTIES
@given(
    st.integers(2, 6),
    st.data(),
    st.integers(1, 5000),
    st.integers(1, 50),
)
def test_regular_interleaving_costs_at_most_k_rows(
    k: int, data: st.DataObject, n: int, start: int
) -> None:
    offsets = data.draw(st.frozensets(st.integers(0, k - 1), min_size=1, max_size=k - 1))
    present = interleaved(n, k, offsets, start)
    missing = set(range(start, start + n)) - present
    rows = list(fold(runs_of(missing)))
    assert set(members(rows)) == missing
    assert len(rows) <= k


@PROPERTIES
@given(
    st.lists(st.tuples(st.sampled_from([1, 2, 3]), st.integers(1, 900)), min_size=1, max_size=12),
    st.sets(st.integers(1, 20_000), max_size=30),
    st.integers(1, 3 * BLOCK),
)
def test_sweep_of_bursts_from_nodes_is_the_missing_set(
    bursts: list[tuple[int, int]], burnt: set[int], start: int
) -> None:
    """Bursts of ids from a 3-node cluster (each node takes the next id of its own
    offset above the highest), some of them rolled back: the pieces from the
    database's counts (and row by row for irregular blocks) hold exactly the ids
    missing, and a burst costs a few rows."""
    present: set[int] = set()
    top = start - 1
    for node, count in bursts:
        first = top + 1 + (node - top - 1) % 3
        ids = range(first, first + 3 * count, 3)
        present.update(ids)
        top = ids[-1]
    present -= burnt
    lo, hi = start, top
    missing = set(range(lo, hi + 1)) - present
    classes = classes_of(present, lo, hi)
    for counted in (classes, coarsen(classes)):
        pieces: list[Strided] = []
        for a, b, dense in stretches(lo, hi, counted):
            if dense is None:
                pieces.extend(r for r in runs_of(set(range(a, b + 1)) - present))
            else:
                pieces.extend(sweep(a, b, dense))
        starts = [p.id_from for p in pieces]
        assert starts == sorted(starts)
        rows = list(fold(pieces))
        found = members(rows)
        assert len(found) == len(set(found))
        assert set(found) == missing
        if not burnt:
            assert len(rows) <= 3 * len(bursts) + 2 * (hi // BLOCK - lo // BLOCK + 1)
