"""Usage lines as a readable table, CSV or JSON lines (dry runs and reports)."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal

from metering.store.usage import Line
from metering.timeutil import from_ms, iso

COLUMNS = ("account", "entity", "resource_id", "offering", "unit", "period_start", "quantity")


def _row(line: Line) -> dict[str, str]:
    return {
        "account": line.account,
        "entity": line.entity,
        "resource_id": line.resource_id,
        "offering": line.offering,
        "unit": line.unit,
        "period_start": iso(from_ms(line.hour)) or "",
        "quantity": f"{line.quantity:.3f}",
    }


def totals(lines: Sequence[Line]) -> dict[tuple[str, str], Decimal]:
    """Per (account, unit): the sum of quantities."""
    sums: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for line in lines:
        sums[(line.account, line.unit)] += line.quantity
    return dict(sorted(sums.items()))


def render_lines(lines: Sequence[Line], fmt: str) -> str:
    rows = [_row(line) for line in lines]
    sums = totals(lines)
    if fmt == "json":
        out = [json.dumps({"type": "line", **row}, ensure_ascii=False) for row in rows]
        out += [
            json.dumps({"type": "total", "account": a, "unit": u, "quantity": f"{q:.3f}"})
            for (a, u), q in sums.items()
        ]
        return "\n".join(out) + ("\n" if out else "")
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    return _table(rows, sums)


def _table(rows: list[dict[str, str]], sums: dict[tuple[str, str], Decimal]) -> str:
    if not rows:
        return "no usage lines\n"
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS}
    numeric = {"quantity"}

    def fmt_row(r: dict[str, str]) -> str:
        return "  ".join(
            r[c].rjust(widths[c]) if c in numeric else r[c].ljust(widths[c]) for c in COLUMNS
        ).rstrip()

    out = [fmt_row({c: c for c in COLUMNS}), "  ".join("-" * widths[c] for c in COLUMNS)]
    out += [fmt_row(r) for r in rows]
    out.append("")
    out.append("totals per account:")
    for (account, unit), quantity in sums.items():
        out.append(f"  {account}  {quantity:.3f} {unit}")
    return "\n".join(out) + "\n"
