"""A report as one self-contained HTML page: the table, the totals, and per unit an
inline SVG chart of usage over time, one series per account. No script, no network.

Each chart point is a <circle class="point"> carrying data-account, data-period (ISO
start of the period), data-unit and data-quantity (exact decimal), so a program can
read the data back from the page. Pixel positions are computed with Decimal too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from html import escape

from metering.render import CORRECTION_NOTE, amount, period_label, report_totals
from metering.report import Report
from metering.store.reports import UsageSum
from metering.timeutil import iso

WIDTH = 860
HEIGHT = 320
LEFT, RIGHT, TOP, BOTTOM = 110, 20, 20, 50
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
_PIXEL = Decimal("0.1")
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.corrected td { background: #fff4e0; }
svg { background: #fafafa; border: 1px solid #ddd; }
.legend span { margin-right: 1.5em; }
.note { color: #666; font-size: 0.9em; }
"""


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _px(value: Decimal) -> str:
    return str(value.quantize(_PIXEL))


def chart(unit: str, rows: Sequence[UsageSum], by: str) -> str:
    """One SVG: x = periods in order, y = quantity, one polyline and points per account."""
    periods = sorted({row.period for row in rows})
    accounts = sorted({row.group[0] for row in rows})
    index = {period: i for i, period in enumerate(periods)}
    low = min(Decimal(0), *(row.quantity for row in rows))
    high = max(Decimal(0), *(row.quantity for row in rows))
    if high == low:
        high = low + 1
    plot_w = Decimal(WIDTH - LEFT - RIGHT)
    plot_h = Decimal(HEIGHT - TOP - BOTTOM)

    def x(period: datetime) -> Decimal:
        if len(periods) == 1:
            return LEFT + plot_w / 2
        return LEFT + plot_w * index[period] / (len(periods) - 1)

    def y(quantity: Decimal) -> Decimal:
        return TOP + plot_h * (high - quantity) / (high - low)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" class="chart" data-unit="{_attr(unit)}">',
        f"<title>{escape(unit)} per account and {escape(by)}</title>",
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="#999"/>',
        f'<line x1="{LEFT}" y1="{_px(y(Decimal(0)))}" x2="{WIDTH - RIGHT}" '
        f'y2="{_px(y(Decimal(0)))}" stroke="#999"/>',
    ]
    for value in sorted({high, low, Decimal(0)}):
        label = amount(value.quantize(Decimal("0.001")), unit).split(" (")[0]
        parts.append(
            f'<text x="{LEFT - 6}" y="{_px(y(value) + 4)}" text-anchor="end" '
            f'font-size="11">{escape(label)}</text>'
        )
    for period in (periods[0], periods[-1]) if len(periods) > 1 else (periods[0],):
        parts.append(
            f'<text x="{_px(x(period))}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle" '
            f'font-size="11">{escape(period_label(period, by))}</text>'
        )
    series: dict[str, list[UsageSum]] = defaultdict(list)
    for row in rows:
        series[row.group[0]].append(row)
    for number, account in enumerate(accounts):
        color = PALETTE[number % len(PALETTE)]
        points = sorted(series[account], key=lambda row: row.period)
        path = " ".join(f"{_px(x(p.period))},{_px(y(p.quantity))}" for p in points)
        parts.append(
            f'<g class="series" data-account="{_attr(account)}">'
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>'
        )
        for p in points:
            parts.append(
                f'<circle class="point" cx="{_px(x(p.period))}" cy="{_px(y(p.quantity))}" '
                f'r="3" fill="{color}" data-account="{_attr(account)}" '
                f'data-period="{_attr(iso(p.period))}" data-unit="{_attr(unit)}" '
                f'data-quantity="{p.quantity:.3f}">'
                f"<title>{escape(account)} {escape(period_label(p.period, by))}: "
                f"{escape(amount(p.quantity, unit))}</title></circle>"
            )
        parts.append("</g>")
    parts.append("</svg>")
    legend = "".join(
        f'<span style="color:{PALETTE[n % len(PALETTE)]}">&#9632; {escape(account)}</span>'
        for n, account in enumerate(accounts)
    )
    return "\n".join(parts) + f'\n<div class="legend">{legend}</div>'


def _table(head: Sequence[str], rows: Sequence[tuple[Sequence[str], str]], numeric: int) -> str:
    """rows: (cells, css class); the last `numeric` columns are right-aligned."""
    out = ["<table>", "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for cells, css in rows:
        first = len(cells) - numeric
        tds = "".join(
            f'<td class="num">{escape(c)}</td>' if i >= first else f"<td>{escape(c)}</td>"
            for i, c in enumerate(cells)
        )
        out.append(f'<tr class="{css}">{tds}</tr>' if css else f"<tr>{tds}</tr>")
    out.append("</table>")
    return "\n".join(out)


def report_page(report: Report, title: str = "metering report") -> str:
    columns = report.columns
    per_group, per_unit = report_totals(report.rows)
    body = [f"<h1>{escape(title)}</h1>"]
    if not report.rows:
        body.append("<p>No usage lines.</p>")
    units = sorted({row.unit for row in report.by_account})
    for unit in units:
        body.append(f"<h2>{escape(unit)} per account and {escape(report.by)}</h2>")
        body.append(chart(unit, [r for r in report.by_account if r.unit == unit], report.by))
    if report.rows:
        body.append(f"<h2>Usage per {escape(report.by)} and {escape(report.group)}</h2>")
        body.append(
            _table(
                (report.by, *columns, "unit", "quantity", "lines", "corrections"),
                [
                    (
                        (
                            period_label(row.period, report.by),
                            *row.group,
                            row.unit,
                            amount(row.quantity, row.unit),
                            str(row.lines),
                            str(row.corrections or ""),
                        ),
                        "corrected" if row.corrections else "",
                    )
                    for row in report.rows
                ],
                3,
            )
        )
        if any(row.corrections for row in report.rows):
            body.append(f'<p class="note">{escape(CORRECTION_NOTE.lstrip("* "))}</p>')
        body.append(f"<h2>Totals per {escape(report.group)}</h2>")
        body.append(
            _table(
                (*columns, "total"),
                [((*group, amount(q, unit)), "") for (group, unit), q in per_group.items()],
                1,
            )
        )
        body.append("<h2>Total</h2>")
        body.append(
            _table(("total",), [((amount(q, unit),), "") for unit, q in per_unit.items()], 1)
        )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
