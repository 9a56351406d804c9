"""metering/core/gaps.py's by_class and fewest against a plain set of missing ids."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from metering.core.gaps import (
    Strided,
    by_class,
    fewest,
    fold,
    missing_runs,
    present_runs,
    rows_of_runs,
)
from tests.core.test_gaps import canonical, members, runs_of

PROPERTIES = settings(max_examples=300, deadline=None)


def class_runs(missing: set[int], modulus: int) -> int:
    """The reference: how many maximal runs x, x + modulus, ... the set holds."""
    return sum(1 for x in missing if x - modulus not in missing)


def assert_exact(rows: list[Strided], missing: set[int]) -> None:
    assert all(canonical(s) for s in rows)
    found = members(rows)
    assert len(found) == len(set(found))
    assert set(found) == missing


def single_row_inserts(segments: list[tuple[frozenset[int], int, frozenset[int]]]) -> set[int]:
    """Ids a 3-node cluster hands out row by row: per segment, the classes (mod 3) of
    the nodes whose bursts cover it are dense, and another node's rows land alone at
    the given offsets into it (the applier pushed its counter past the burst)."""
    present: set[int] = set()
    start = 1
    for dense, length, lone in segments:
        present.update(x for x in range(start, start + length) if x % 3 in dense)
        present.update(start + offset for offset in lone if offset < length)
        start += length
    return present


# -- examples --------------------------------------------------------------------------


def test_lone_ids_of_a_node_cut_only_its_own_class() -> None:
    # The class-1 node alone over [3, 302]; the class-2 node's rows landed alone at
    # 50, 140 and 200 (its counter pushed past the burst a row at a time).
    present = {x for x in range(3, 303) if x % 3 == 1} | {50, 140, 200}
    missing = set(range(3, 303)) - present
    rows = by_class(runs_of(missing), 3)
    assert rows == [
        Strided(3, 300, 3, 1),
        Strided(5, 47, 3, 1),
        Strided(53, 137, 3, 1),
        Strided(143, 197, 3, 1),
        Strided(203, 302, 3, 1),
    ]
    # fold pairs the runs of the two classes into width-2 rows it must cut at every
    # lone id: 9 rows.
    assert len(list(fold(runs_of(missing)))) == 9
    assert fewest(runs_of(missing), [3]) == rows


def test_two_classes_skipped_over_the_same_span_are_one_row() -> None:
    missing = {x for x in range(10, 610) if x % 3 != 1}
    assert by_class(runs_of(missing), 3) == [Strided(11, 609, 3, 2)]


def test_every_class_over_a_span_is_a_range() -> None:
    assert by_class([Strided(4, 9), Strided(10, 20)], 3) == [Strided(4, 20)]
    # Class 1 runs on through the strided piece: a row of its own; the ranges keep
    # the other two classes at their ends.
    assert by_class([Strided(4, 6), Strided(7, 19, 3, 1), Strided(20, 22)], 3) == [
        Strided(4, 22, 3, 1),
        Strided(5, 6),
        Strided(20, 21),
    ]


def test_a_period_not_of_the_modulus_is_left_to_fold() -> None:
    assert by_class([Strided(1, 41, 4, 1)], 3) is None
    assert fewest([Strided(1, 41, 4, 1)], [3]) == [Strided(1, 41, 4, 1)]
    # A multiple of it is split into its blocks.
    assert by_class([Strided(1, 121, 60, 1)], 3) == [
        Strided(1, 1),
        Strided(61, 61),
        Strided(121, 121),
    ]


# -- properties ------------------------------------------------------------------------


@PROPERTIES
@given(st.sets(st.integers(1, 400), max_size=200), st.integers(1, 6))
def test_by_class_holds_exactly_the_missing_ids(missing: set[int], modulus: int) -> None:
    rows = by_class(runs_of(missing), modulus)
    assert rows is not None
    assert_exact(rows, missing)
    assert len(rows) <= class_runs(missing, modulus)
    assert_exact(fewest(runs_of(missing), [modulus]), missing)


# Single-row inserts of three nodes (see single_row_inserts), and ids burnt by rollbacks.
SEGMENTS = st.lists(
    st.tuples(
        st.frozensets(st.integers(0, 2), max_size=3),
        st.integers(1, 600),
        st.frozensets(st.integers(0, 599), max_size=8),
    ),
    min_size=1,
    max_size=10,
)
BURNT = st.sets(st.integers(1, 6000), max_size=20)


@PROPERTIES
@given(
    SEGMENTS,
    BURNT,
)
def test_single_row_inserts_cost_a_row_per_run_of_a_class(
    segments: list[tuple[frozenset[int], int, frozenset[int]]], burnt: set[int]
) -> None:
    """The pattern of benchmarks/galera.py --single-row: exact, no more rows than the
    classes' runs, never more than fold's; from pieces as the run finds them too
    (fold's own output: strided, spans interleaving)."""
    present = single_row_inserts(segments) - burnt
    hi = sum(length for _, length, _ in segments)
    missing = set(range(1, hi + 1)) - present
    pieces = runs_of(missing)
    rows = by_class(pieces, 3)
    assert rows is not None
    assert_exact(rows, missing)
    assert len(rows) <= class_runs(missing, 3)
    best = fewest(pieces, [1, 3])
    assert_exact(best, missing)
    assert len(best) <= min(len(rows), len(list(fold(pieces))))
    folded = sorted(fold(pieces), key=lambda s: s.id_from)
    regrouped = by_class(folded, 3)
    if regrouped is not None:
        assert_exact(regrouped, missing)


@PROPERTIES
@given(
    SEGMENTS,
    BURNT,
    st.integers(1, 6),
    st.integers(1, 40),
    st.integers(0, 30),
)
def test_missing_runs_from_counted_groups_are_the_missing_ids(
    segments: list[tuple[frozenset[int], int, frozenset[int]]],
    burnt: set[int],
    modulus: int,
    members: int,
    margin: int,
) -> None:
    """What run._gap_rows_by_class does with the database's counts: dense groups as
    runs, the other groups' ids read, the classes' runs between them missing."""
    present = single_row_inserts(segments) - burnt
    lo, hi = 1 + margin, sum(length for _, length, _ in segments) + margin
    present = {x for x in present if lo <= x <= hi}
    missing = set(range(lo, hi + 1)) - present
    groups: dict[tuple[int, int], list[int]] = {}
    for x in sorted(present):
        groups.setdefault((x // (modulus * members), x % modulus), []).append(x)
    runs: list[tuple[int, int]] = []
    for xs in groups.values():
        if len(xs) == (xs[-1] - xs[0]) // modulus + 1:
            runs.append((xs[0], xs[-1]))
        else:
            runs.extend(present_runs(xs, modulus))
    rows = rows_of_runs(missing_runs(lo, hi, modulus, runs), modulus)
    assert_exact(rows, missing)
    assert len(rows) <= class_runs(missing, modulus)
