"""Id gaps as strided sets: a few rows for interleaved ids, not one per missing id.

A `Strided` holds the ids x with id_from <= x <= id_to and (x - id_from) % step <
width: blocks of `width` ids every `step` ids. A contiguous range is step = width =
1. On a Galera cluster ids interleave by design (auto_increment_increment = cluster
size), so a burst from one node leaves the same hole after every id it took: one row
(step 3, width 2) instead of one per hole.

Canonical form (what every function here returns): a contiguous range has step =
width = 1; otherwise step > width >= 1, id_to is a member and lies at least one
step past id_from (two blocks or more); the last block may be partial.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise

# Rows kept open at once, that later pieces may extend. A period with r runs of
# missing ids (2 nodes of a 5-node cluster ingesting leave 2) needs 2r + 1 open to
# find its progressions; more runs than that a period is no regular interleaving.
OPEN_ROWS = 12


@dataclass(frozen=True, slots=True)
class Strided:
    id_from: int
    id_to: int
    step: int = 1
    width: int = 1

    @property
    def contiguous(self) -> bool:
        return self.step == self.width

    def __contains__(self, x: object) -> bool:
        return (
            isinstance(x, int)
            and self.id_from <= x <= self.id_to
            and (x - self.id_from) % self.step < self.width
        )


def strided(id_from: int, id_to: int, step: int = 1, width: int = 1) -> Strided:
    """The canonical form of that set; id_to may lie past the last member."""
    if width >= step:
        return Strided(id_from, id_to)
    last_block = id_from + (id_to - id_from) // step * step
    id_to = min(id_to, last_block + width - 1)
    if last_block == id_from:
        return Strided(id_from, id_to)
    return Strided(id_from, id_to, step, width)


def size(s: Strided) -> int:
    """How many ids the set holds, without listing them."""
    if s.contiguous:
        return s.id_to - s.id_from + 1
    full, rest = divmod(s.id_to - s.id_from, s.step)
    return full * s.width + min(rest + 1, s.width)


def _block_width(s: Strided) -> int:
    return s.id_to - s.id_from + 1 if s.contiguous else s.width


def _next_block(s: Strided) -> int | None:
    """Where s's next block would start, or None if s cannot grow: a contiguous
    range (no spacing yet) or a partial last block."""
    if s.contiguous:
        return None
    last_block = s.id_from + (s.id_to - s.id_from) // s.step * s.step
    if s.id_to - last_block + 1 < s.width:
        return None
    return last_block + s.step


def _extend(row: Strided, piece: Strided) -> Strided | None:
    """row and piece (which starts after row ends) as one set, if piece continues
    row: touching ranges, a strided row's next block(s), or a range followed by
    more of it at the piece's own step."""
    width = _block_width(row)
    if row.contiguous and piece.contiguous and piece.id_from == row.id_to + 1:
        return Strided(row.id_from, piece.id_to)
    # Blocks of equal width only: a shorter piece could be a partial last block, but
    # taking it so would stop the row and may take the first block of another one.
    if _block_width(piece) != width:
        return None
    if row.contiguous:
        if not piece.contiguous and piece.step == piece.id_from - row.id_from:
            return Strided(row.id_from, piece.id_to, piece.step, width)
        return None
    if _next_block(row) == piece.id_from and (piece.contiguous or piece.step == row.step):
        return Strided(row.id_from, piece.id_to, row.step, width)
    return None


def _third(open_rows: list[Strided], piece: Strided) -> tuple[int, int] | None:
    """Two open ranges that make three of a progression with the range `piece`
    (equal widths, equal spacing): their places in open_rows. Two points alone
    would pair ids of different nodes when two runs share a period."""
    width = _block_width(piece)
    starts = {
        row.id_from: i
        for i, row in enumerate(open_rows)
        if row.contiguous and _block_width(row) == width
    }
    for start, i in sorted(starts.items(), reverse=True):
        before = starts.get(2 * start - piece.id_from)
        if before is not None:
            return before, i
    return None


def fold(pieces: Iterable[Strided]) -> Iterator[Strided]:
    """The union of disjoint pieces, given in ascending order of id_from (each after
    the one before it ends), as few strided rows as a greedy pass finds.

    Streams: it keeps at most OPEN_ROWS rows open, those the next pieces may extend.
    A range becomes strided once three ranges alike are evenly spaced.
    """
    open_rows: list[Strided] = []
    for piece in pieces:
        # A strided row whose next block would start before this piece is done.
        still: list[Strided] = []
        for row in open_rows:
            following = _next_block(row)
            if following is not None and following < piece.id_from:
                yield row
            else:
                still.append(row)
        open_rows = still
        for i, row in enumerate(open_rows):
            merged = _extend(row, piece)
            if merged is not None:
                open_rows[i] = merged
                break
        else:
            third = _third(open_rows, piece) if piece.contiguous else None
            if third is None:
                open_rows.append(piece)
                if len(open_rows) > OPEN_ROWS:
                    yield open_rows.pop(0)
            else:
                first, second = third
                start = open_rows[first].id_from
                spacing = open_rows[second].id_from - start
                open_rows = [r for i, r in enumerate(open_rows) if i not in third]
                open_rows.append(Strided(start, piece.id_to, spacing, _block_width(piece)))
    yield from open_rows


def _class_runs(pieces: Iterable[Strided], modulus: int) -> list[tuple[int, int]]:
    """The pieces' ids by residue mod `modulus`, as maximal runs (first, last) of each
    class's consecutive members (first, first + modulus, ..., last), by first. Only
    contiguous pieces and pieces of step `modulus` split into whole runs of a class;
    the caller checks the pieces are so."""
    open_runs: dict[int, tuple[int, int]] = {}
    runs: list[tuple[int, int]] = []
    for piece in pieces:
        for first in range(
            piece.id_from,
            min(piece.id_from + _block_width(piece), piece.id_from + modulus, piece.id_to + 1),
        ):
            last = first + (piece.id_to - first) // modulus * modulus
            run = open_runs.get(first % modulus)
            if run is not None and run[1] + modulus == first:
                open_runs[first % modulus] = (run[0], last)
            else:
                if run is not None:
                    runs.append(run)
                open_runs[first % modulus] = (first, last)
    runs.extend(open_runs.values())
    return sorted(runs)


def by_class(pieces: Iterable[Strided], modulus: int) -> list[Strided] | None:
    """The union of disjoint pieces (ascending, as fold takes them) as one row per
    run of missing ids of one residue class mod `modulus`, the runs of adjacent
    classes over the same span joined (one row of width 2 where two of three nodes
    skipped the same stretch); None if a piece's step is not a multiple of
    `modulus`, which classes alone do not describe.

    Where a cluster's nodes take their ids row by row (single-row INSERTs), a node's
    ids land one by one among another node's burst, and each cuts its class's run
    in two: fold's progressions then break at every one, a class's run does not.
    """
    items: list[Strided] = []
    for piece in pieces:
        if piece.contiguous or piece.step == modulus:
            items.append(piece)
        elif piece.step % modulus == 0:
            # A coarser period than the cluster's (a sweep under a finer modulus):
            # each block is a range of its own to the classes.
            items.extend(
                Strided(block, min(block + piece.width - 1, piece.id_to))
                for block in range(piece.id_from, piece.id_to + 1, piece.step)
            )
        else:
            return None
    # Disjoint pieces: sorted by start, each class's members come in order.
    items.sort(key=lambda s: s.id_from)
    return rows_of_runs(_class_runs(items, modulus), modulus)


def rows_of_runs(runs: Iterable[tuple[int, int]], modulus: int) -> list[Strided]:
    """Runs (first, last) of missing ids of one class each (first, first + modulus,
    ..., last), disjoint and sorted by first, as rows: a run each, those of adjacent
    classes joined where they end alike."""
    out: list[Strided] = []
    # Runs of classes starting at a, a + 1, ..., a + k - 1 (k <= modulus) are one row
    # strided(a, last, modulus, k) if each ends at its class's last id up to the
    # group's last: blocks of k ids, the last block maybe partial (so a range's
    # three classes are the range again).
    group: list[tuple[int, int]] = []

    def fits(first: int, last: int) -> bool:
        top = max(last, group[-1][1])
        return all(
            end == start + (top - start) // modulus * modulus
            for start, end in (*group, (first, last))
        )

    def flush() -> None:
        if group:
            out.append(strided(group[0][0], max(e for _, e in group), modulus, len(group)))
            group.clear()

    for first, last in runs:
        if not (group and len(group) < modulus and first == group[-1][0] + 1 and fits(first, last)):
            flush()
        group.append((first, last))
    flush()
    return _join_ranges(sorted(out, key=lambda s: s.id_from))


def missing_runs(
    lo: int, hi: int, modulus: int, present: Iterable[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The runs of missing ids of each class mod `modulus` in [lo, hi], sorted by
    first, given every id present there as runs (first, last) of one class each
    (first, first + modulus, ..., last): per class, what lies between its runs."""
    by_residue: dict[int, list[tuple[int, int]]] = {r: [] for r in range(modulus)}
    for first, last in present:
        by_residue[first % modulus].append((first, last))
    out: list[tuple[int, int]] = []
    for residue, runs in by_residue.items():
        # The class's first member at or after lo; then each run's next member.
        expected = lo + (residue - lo) % modulus
        for first, last in sorted(runs):
            if first > expected:
                out.append((expected, first - modulus))
            expected = max(expected, last + modulus)
        if expected <= hi:
            out.append((expected, expected + (hi - expected) // modulus * modulus))
    return sorted(out)


def present_runs(ids: Iterable[int], modulus: int) -> list[tuple[int, int]]:
    """Ascending ids of one class mod `modulus` as its runs (first, last)."""
    runs: list[tuple[int, int]] = []
    for x in ids:
        if runs and runs[-1][1] + modulus == x:
            runs[-1] = (runs[-1][0], x)
        else:
            runs.append((x, x))
    return runs


def _join_ranges(rows: list[Strided]) -> list[Strided]:
    """Touching contiguous ranges as one (a run of every class is a range)."""
    out: list[Strided] = []
    for row in rows:
        if out and out[-1].contiguous and row.contiguous and out[-1].id_to + 1 == row.id_from:
            out[-1] = Strided(out[-1].id_from, row.id_to)
        else:
            out.append(row)
    return out


def fewest(pieces: Iterable[Strided], moduli: Iterable[int]) -> list[Strided]:
    """The union of disjoint pieces (ascending) as fold's rows or by_class's for one
    of `moduli`, whichever are fewest (fold's on a tie)."""
    items = list(pieces)
    best = list(fold(items))
    for modulus in moduli:
        if modulus > 1:
            rows = by_class(items, modulus)
            if rows is not None and len(rows) < len(best):
                best = rows
    return best


def restrict(s: Strided, lo: int, hi: int) -> list[Strided]:
    """The members of s within [lo, hi], ascending: at most a partial first block,
    the whole blocks and a partial last block."""
    lo, hi = max(lo, s.id_from), min(hi, s.id_to)
    if lo > hi:
        return []
    if s.contiguous:
        return [Strided(lo, hi)]
    first_block = s.id_from + (lo - s.id_from) // s.step * s.step
    if lo >= first_block + s.width:
        first_block += s.step
        lo = first_block
    if lo > hi:
        return []
    head_end = first_block + s.width - 1
    if hi <= head_end:
        return [Strided(lo, hi)]
    if lo == first_block:
        return [strided(first_block, hi, s.step, s.width)]
    rest = first_block + s.step
    pieces = [Strided(lo, head_end)]
    if rest <= hi:
        pieces.append(strided(rest, hi, s.step, s.width))
    return pieces


def remaining(s: Strided, holes: Iterable[tuple[int, int]]) -> Iterator[Strided]:
    """The members of s still missing, given the holes of a re-read: ascending id
    ranges, within s's span, that hold no row among s's members (the members
    between two holes were found)."""
    return fold(piece for lo, hi in holes for piece in restrict(s, lo, hi))


def subtract(s: Strided, found: Iterable[int]) -> Iterator[Strided]:
    """s without the ids found (ascending; ids outside s are ignored)."""

    def holes() -> Iterator[tuple[int, int]]:
        start = s.id_from
        for x in found:
            if x in s:
                yield start, x - 1
                start = x + 1
        yield start, s.id_to

    return remaining(s, holes())


# The database groups a range's ids by block and by residue mod RESIDUES: 60 is a
# multiple of every cluster size up to 6 (Galera's increment), so one node's ids are
# a few dense classes of each block, whatever its offset. A block is small enough
# that the same class rarely holds two bursts, large enough for few groups.
RESIDUES = 60
BLOCK = RESIDUES * 64


@dataclass(frozen=True, slots=True)
class IdClass:
    """The ids present in one block with one residue mod `modulus`, as the database
    counted them: dense when they are every such id from first to last."""

    block: int
    residue: int
    count: int
    first: int
    last: int
    modulus: int = RESIDUES

    @property
    def dense(self) -> bool:
        return self.count == (self.last - self.first) // self.modulus + 1


def _period(active: Iterable[int], modulus: int) -> int:
    """The least p dividing modulus under whose shift the residues present repeat."""
    present = frozenset(active)
    for p in (d for d in range(1, modulus + 1) if modulus % d == 0):
        if all((r + p) % modulus in present for r in present):
            return p
    return modulus


def _by_modulus(classes: Sequence[IdClass], modulus: int) -> list[IdClass]:
    merged: dict[tuple[int, int], IdClass] = {}
    for c in classes:
        key = (c.block, c.residue % modulus)
        was = merged.get(key)
        merged[key] = (
            IdClass(c.block, key[1], c.count, c.first, c.last, modulus)
            if was is None
            else IdClass(
                c.block,
                key[1],
                was.count + c.count,
                min(was.first, c.first),
                max(was.last, c.last),
                modulus,
            )
        )
    return sorted(merged.values(), key=lambda c: (c.block, c.residue))


def coarsen(classes: Iterable[IdClass]) -> list[IdClass]:
    """The same counts by the least modulus dividing RESIDUES under which the most
    blocks are dense: one node of three leaves residues 1, 4, 7, ... of 60 in a block,
    one dense class mod 3. Fewer classes, and one node's burst is one class, not
    twenty staggered ones. Blocks not dense under it are read row by row."""
    items = list(classes)
    blocks = len({c.block for c in items})
    best: tuple[int, list[IdClass]] | None = None
    for modulus in (d for d in range(1, RESIDUES + 1) if RESIDUES % d == 0):
        merged = _by_modulus(items, modulus)
        dense = blocks - len({c.block for c in merged if not c.dense})
        if best is None or dense > best[0]:
            best = (dense, merged)
        if dense == blocks:
            break
    return [] if best is None else best[1]


def stretches(
    lo: int, hi: int, classes: Iterable[IdClass]
) -> list[tuple[int, int, list[IdClass] | None]]:
    """[lo, hi] cut at block edges into stretches: each with the classes of its
    blocks, all dense, or None (irregular: a block with a class that is not dense,
    whose holes only a row-by-row look finds). Adjacent stretches alike are joined."""
    irregular = set()
    by_block: dict[int, list[IdClass]] = {}
    for c in classes:
        by_block.setdefault(c.block, []).append(c)
        if not c.dense:
            irregular.add(c.block)
    out: list[tuple[int, int, list[IdClass] | None]] = []
    block = lo // BLOCK
    while block * BLOCK <= hi:
        start, end = max(lo, block * BLOCK), min(hi, block * BLOCK + BLOCK - 1)
        here = None if block in irregular else by_block.get(block, [])
        if out and (out[-1][2] is None) == (here is None):
            previous = out[-1][2]
            out[-1] = (out[-1][0], end, None if previous is None else previous + (here or []))
        else:
            out.append((start, end, here))
        block += 1
    return out


def _segment(start: int, end: int, active: frozenset[int], modulus: int) -> list[Strided]:
    """The ids of [start, end] whose residue is not active, as strided pieces."""
    if not active:
        return [Strided(start, end)]
    p = _period(active, modulus)
    present = {r % p for r in active}
    missing = [r for r in range(p) if r not in present]
    if not missing:
        return []
    # Cyclic runs of missing residues: each is one strided piece of step p.
    runs: list[tuple[int, int]] = []
    for r in missing:
        if runs and runs[-1][0] + runs[-1][1] == r:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((r, 1))
    if len(runs) > 1 and runs[0][0] == 0 and runs[-1][0] + runs[-1][1] == p:
        wrap = runs.pop()
        runs[0] = (wrap[0], wrap[1] + runs[0][1])
    pieces: list[Strided] = []
    for residue, length in runs:
        base = start - (start - residue) % p
        pieces.extend(restrict(strided(base, end, p, length), start, end))
    return sorted(pieces, key=lambda s: s.id_from)


def sweep(lo: int, hi: int, classes: Iterable[IdClass]) -> Iterator[Strided]:
    """The ids of [lo, hi] no dense class (all of one modulus) holds, ascending, as
    strided pieces.

    Classes of one residue that follow each other across blocks are one class; the
    range is cut where a class starts or ends (at a present id, or just after one,
    so no run of missing ids is cut), and between cuts the residues present are
    the same throughout: a periodic pattern, whose holes are a few strided pieces.
    """
    chained: dict[int, list[list[int]]] = {}
    modulus = RESIDUES
    for c in sorted(classes, key=lambda c: c.first):
        modulus = c.modulus
        runs = chained.setdefault(c.residue, [])
        if runs and runs[-1][1] + modulus == c.first:
            runs[-1][1] = c.last
        else:
            runs.append([c.first, c.last])
    events: dict[int, list[tuple[int, int]]] = {}
    for residue, runs in chained.items():
        for first, last in runs:
            events.setdefault(first, []).append((residue, 1))
            events.setdefault(last + 1, []).append((residue, -1))
    cuts = sorted({lo, hi + 1, *(x for x in events if lo < x <= hi)})
    active: set[int] = set()

    def apply(at: int) -> None:
        for residue, change in events.get(at, ()):
            if change > 0:
                active.add(residue)
            else:
                active.discard(residue)

    for at in sorted(x for x in events if x <= lo):
        apply(at)
    for start, stop in pairwise(cuts):
        if start > lo:
            apply(start)
        yield from _segment(start, stop - 1, frozenset(active), modulus)


class Index:
    """Membership in many strided sets (pairwise disjoint, spans may interleave), by
    bisection over id_from: O(log n) plus the rows whose spans overlap there."""

    def __init__(self, sets: Sequence[Strided]) -> None:
        self._sets = sorted(sets, key=lambda s: s.id_from)
        self._starts = [s.id_from for s in self._sets]
        self._reach = list(accumulate((s.id_to for s in self._sets), max))

    def __contains__(self, x: object) -> bool:
        return isinstance(x, int) and self.find(x) is not None

    def find(self, x: int) -> Strided | None:
        """The set that holds x, if one does."""
        i = bisect_right(self._starts, x) - 1
        while i >= 0 and self._reach[i] >= x:
            if x in self._sets[i]:
                return self._sets[i]
            i -= 1
        return None
