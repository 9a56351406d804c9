"""A report as one self-contained HTML page people read before invoices go out.

A header (period, filters, database, when it was made); per entity and unit a chart
of stacked bars per period, one colour per account (or other series) across all the
charts, missing periods left as gaps and bars that include corrections outlined;
then per entity and unit a table of accounts x offerings, and every row in a
collapsed table. No script, no network: the page opens offline.

The SVG is drawn here rather than by a charting library: metering needs exact data
attributes on every bar (data-series, data-period, data-entity, data-unit,
data-quantity as an exact decimal, data-corrections) so programs and tests can read
the page back, the same colour for an account in every chart, and label sizes it
controls so that none is clipped. Floats are used only for pixel positions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from html import escape

from metering.render import (
    CORRECTION_NOTE,
    amount,
    measured,
    period_label,
    report_totals,
)
from metering.report import Report
from metering.store.reports import UsageSum
from metering.timeutil import iso
from metering.units import axis, title

WIDTH = 1000
HEIGHT = 260
TOP, RIGHT, BOTTOM = 16, 16, 40
FONT = 12
# Wide enough for any glyph of the 12 px system sans-serif in digits and latin text;
# labels are laid out with it, so an estimate too small would let them overlap.
CHAR_WIDTH = 7.4
# Colour-blind-safe (Okabe-Ito, then Tableau) and distinct on white.
PALETTE = (
    "#0072b2",
    "#e69f00",
    "#009e73",
    "#cc79a7",
    "#56b4e9",
    "#d55e00",
    "#f0e442",
    "#000000",
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#b07aa1",
    "#9c755f",
    "#76b7b2",
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1040px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 0.1em 1em;
          margin: 0 0 1.5em; font-size: 0.92em; }
dl.meta dt { color: #666; }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.9em; }
th, td { padding: 0.2em 0.6em; border-bottom: 1px solid #ddd; text-align: left;
         white-space: nowrap; }
th { background: #f4f4f4; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; border-top: 2px solid #bbb; }
td.corrected { background: #fff1d6; }
svg.chart { width: 100%; max-width: 1000px; height: auto; display: block; }
.legend { font-size: 0.9em; margin: 0.3em 0 1.6em; }
.legend span { margin-right: 1.4em; white-space: nowrap; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.3em;
          vertical-align: -0.05em; }
.note { color: #555; font-size: 0.9em; }
.scroll { overflow-x: auto; }
"""
_STEPS = {
    "hour": (1, 2, 3, 6, 12, 24, 48, 168),
    "day": (1, 2, 7, 14, 28),
    "month": (1, 2, 3, 6, 12),
}


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _text_width(text: str) -> float:
    return len(text) * CHAR_WIDTH


def _periods(first: datetime, last: datetime, by: str) -> list[datetime]:
    """Every period from first to last, those with no usage included (gaps)."""
    out = []
    at = first
    while at <= last:
        out.append(at)
        if by == "hour":
            at += timedelta(hours=1)
        elif by == "day":
            at += timedelta(days=1)
        else:
            at = at.replace(year=at.year + at.month // 12, month=at.month % 12 + 1)
    return out


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering [low, high]."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(low / step) * step
    ticks = []
    value = start
    while value < high + step * 0.999:
        ticks.append(round(value, 10) + 0.0)
        value += step
    return ticks


def _tick_label(value: float, label: str) -> str:
    text = f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{'0' if text in ('-0', '') else text} {label}"


def _x_label(period: datetime, by: str) -> str:
    return period.strftime({"hour": "%d %b %H:00", "day": "%d %b", "month": "%b %Y"}[by])


@dataclass(frozen=True)
class Series:
    """How rows become chart series: by account when the rows have one, else by the
    other group columns, else one series."""

    columns: tuple[str, ...]

    @staticmethod
    def of(report_columns: Sequence[str]) -> Series:
        if "account" in report_columns:
            return Series(("account",))
        rest = tuple(c for c in report_columns if c not in ("entity", "unit"))
        return Series(rest)

    def name(self, row: UsageSum, report_columns: Sequence[str]) -> str:
        if not self.columns:
            return "all"
        return " ".join(row.value(report_columns, c) or "-" for c in self.columns)


def chart(
    entity: str,
    unit: str,
    rows: Sequence[UsageSum],
    report: Report,
    series: Series,
    colours: dict[str, str],
) -> str:
    """Stacked bars per period, positive amounts up and negative ones down."""
    by = report.by
    periods = _periods(min(r.period for r in rows), max(r.period for r in rows), by)
    divisor, label = axis(unit, report.units)
    cells: dict[tuple[datetime, str], list[UsageSum]] = defaultdict(list)
    for row in rows:
        cells[(row.period, series.name(row, report.columns))].append(row)
    names = sorted({name for _, name in cells})
    up: dict[datetime, float] = defaultdict(float)
    down: dict[datetime, float] = defaultdict(float)
    for (period, _), members in cells.items():
        value = float(sum((m.quantity for m in members), Decimal(0)) / divisor)
        if value >= 0:
            up[period] += value
        else:
            down[period] += value
    ticks = nice_ticks(min([0.0, *down.values()]), max([0.0, *up.values()]))
    low, high = ticks[0], ticks[-1]
    tick_labels = [_tick_label(t, label) for t in ticks]
    # At least as wide as most charts need, so that their plots line up.
    left = max(72.0, 12 + max(_text_width(t) for t in tick_labels))
    plot_w = WIDTH - left - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / len(periods)
    bar_w = min(max(1.0, slot * 0.8), 72.0)

    def y(value: float) -> float:
        return TOP + plot_h * (high - value) / (high - low)

    heading = f"{title(entity, unit)} per {by}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'class="chart" role="img" data-entity="{_attr(entity)}" data-unit="{_attr(unit)}" '
        f'font-size="{FONT}" font-family="system-ui, sans-serif">',
        f"<title>{escape(heading)}</title>",
    ]
    for tick, text in zip(ticks, tick_labels, strict=True):
        parts.append(
            f'<line x1="{left:.1f}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            f'stroke="{"#888" if tick == 0 else "#e4e4e4"}"/>'
            f'<text class="tick" x="{left - 6:.1f}" y="{y(tick) + 4:.1f}" '
            f'text-anchor="end">{escape(text)}</text>'
        )
    # Labels far enough apart not to touch: every `step`-th period.
    widest = max(_text_width(_x_label(p, by)) for p in periods) + 12
    step = next((s for s in _STEPS[by] if s * slot >= widest), len(periods))
    for i, period in enumerate(periods):
        if i % step:
            continue
        center = left + slot * (i + 0.5)
        half = _text_width(_x_label(period, by)) / 2
        # Keep the first and last labels inside the chart.
        center = min(max(center, half + 2), WIDTH - half - 2)
        parts.append(
            f'<text class="period" x="{center:.1f}" y="{HEIGHT - BOTTOM + 18}" '
            f'text-anchor="middle">{escape(_x_label(period, by))}</text>'
        )
    index = {p: i for i, p in enumerate(periods)}
    stacked_up: dict[datetime, float] = defaultdict(float)
    stacked_down: dict[datetime, float] = defaultdict(float)
    for name in names:
        parts.append(f'<g class="series" data-series="{_attr(name)}">')
        for period in periods:
            found = cells.get((period, name))
            if not found:
                continue
            members = found
            quantity = sum((m.quantity for m in members), Decimal(0))
            corrections = sum(m.corrections for m in members)
            value = float(quantity / divisor)
            if value >= 0:
                base = stacked_up[period]
                stacked_up[period] += value
                top, bottom = y(base + value), y(base)
            else:
                base = stacked_down[period]
                stacked_down[period] += value
                top, bottom = y(base), y(base + value)
            x = left + slot * index[period] + (slot - bar_w) / 2
            outline = ' stroke="#222" stroke-width="1.5" stroke-dasharray="3 2"' * bool(corrections)
            parts.append(
                f'<rect class="bar" x="{x:.2f}" y="{top:.2f}" width="{bar_w:.2f}" '
                f'height="{max(bottom - top, 0.0):.2f}" fill="{colours[name]}"{outline} '
                f'data-series="{_attr(name)}" data-period="{_attr(iso(period))}" '
                f'data-entity="{_attr(entity)}" data-unit="{_attr(unit)}" '
                f'data-quantity="{quantity:.3f}" data-corrections="{corrections}">'
                f"<title>{escape(name)}, {escape(period_label(period, by))}: "
                f"{escape(amount(quantity, unit, report.units))}"
                f"{' (includes corrections)' if corrections else ''}</title></rect>"
            )
        parts.append("</g>")
    parts.append("</svg>")
    legend = "".join(
        f'<span><i class="swatch" style="background:{colours[name]}"></i>{escape(name)}</span>'
        for name in names
    )
    if any(r.corrections for r in rows):
        legend += "<span>dashed outline: includes corrections</span>"
    return (
        f"<h3>{escape(heading)}</h3>\n" + "\n".join(parts) + f'\n<div class="legend">{legend}</div>'
    )


def _table(
    head: Sequence[str],
    rows: Sequence[tuple[Sequence[str], Sequence[bool]]],
    numeric_from: int,
    total: Sequence[str] | None = None,
) -> str:
    """rows: (cells, corrected flags per cell); columns from numeric_from right-aligned."""

    def cls(i: int, corrected: bool) -> str:
        names = (["num"] if i >= numeric_from else []) + (["corrected"] if corrected else [])
        return f' class="{" ".join(names)}"' if names else ""

    out = [
        '<div class="scroll"><table>',
        "<tr>"
        + "".join(
            f"<th{' class=num' if i >= numeric_from else ''}>{escape(h)}</th>"
            for i, h in enumerate(head)
        )
        + "</tr>",
    ]
    for cells, flags in rows:
        out.append(
            "<tr>"
            + "".join(
                f"<td{cls(i, flags[i] if i < len(flags) else False)}>{escape(c)}</td>"
                for i, c in enumerate(cells)
            )
            + "</tr>"
        )
    if total is not None:
        out.append(
            '<tr class="total">'
            + "".join(f"<td{cls(i, False)}>{escape(c)}</td>" for i, c in enumerate(total))
            + "</tr>"
        )
    out.append("</table></div>")
    return "\n".join(out)


def pivot(entity: str, unit: str, rows: Sequence[UsageSum], report: Report) -> str:
    """Accounts (or the series) down, offerings across, totals on both sides."""
    columns = report.columns
    series = Series.of(columns)
    across = "offering" in columns and any(r.value(columns, "offering") for r in rows)
    sums: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    corrected: set[tuple[str, str]] = set()
    for row in rows:
        key = (series.name(row, columns), (row.value(columns, "offering") or "") if across else "")
        sums[key] += row.quantity
        if row.corrections:
            corrected.add(key)
    names = sorted({k[0] for k in sums})
    offerings = sorted({k[1] for k in sums})

    def show(value: Decimal) -> str:
        return amount(value, unit, report.units)

    body = []
    for name in names:
        cells = [name]
        flags = [False]
        for offering in offerings:
            value = sums.get((name, offering))
            cells.append("" if value is None else show(value))
            flags.append((name, offering) in corrected)
        if across:
            cells.append(
                show(sum((sums.get((name, o), Decimal(0)) for o in offerings), Decimal(0)))
            )
            flags.append(False)
        body.append((cells, flags))
    column_totals = [
        show(sum((sums.get((n, o), Decimal(0)) for n in names), Decimal(0))) for o in offerings
    ]
    grand = show(sum(sums.values(), Decimal(0)))
    first = " ".join(series.columns) or "all"
    shown = [o or "(no offering)" for o in offerings]
    head = [first, *(shown if across else ["total"])] + (["total"] if across else [])
    footer = ["total", *column_totals] + ([grand] if across else [])
    return f"<h3>{escape(title(entity, unit))}</h3>\n" + _table(
        head, body, 1, footer if len(names) > 1 else None
    )


def _header(report: Report, title_text: str) -> str:
    filters = report.filters
    periods = sorted({row.period for row in report.rows})
    if filters.since or filters.until:
        span = f"{iso(filters.since) or 'the start'} to {iso(filters.until) or 'now'}"
    elif periods:
        span = (
            f"{period_label(periods[0], report.by)} to {period_label(periods[-1], report.by)} "
            f"(the periods with usage)"
        )
    else:
        span = "everything billed"
    chosen = [
        f"{name} {', '.join(values)}"
        for name, values in (
            ("account", filters.accounts),
            ("resource", filters.resources),
            ("entity", filters.entities),
            ("offering", filters.offerings),
        )
        if values
    ]
    if report.written_after is not None:
        after = report.written_after
        chosen.append(
            f"written after run {after.run_id}"
            if after.run_id
            else f"written after {iso(after.time)}"
        )
    items = [
        ("period", f"{span}, per {report.by} (UTC)"),
        ("rows", f"summed over {', '.join(report.columns)}"),
        ("filters", "; ".join(chosen) or "none"),
        (
            "units",
            {"si": "GB (10^9 bytes), hours", "iec": "GiB (2^30 bytes), hours"}.get(
                report.units, "as stored"
            ),
        ),
    ]
    if report.database:
        items.append(("database", report.database))
    if report.made_at is not None:
        items.append(("made", iso(report.made_at) or ""))
    meta = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in items)
    return f'<h1>{escape(title_text)}</h1>\n<dl class="meta">{meta}</dl>'


def _by_measure(report: Report) -> Iterator[tuple[str, str, list[UsageSum]]]:
    grouped: dict[tuple[str, str], list[UsageSum]] = defaultdict(list)
    for row in report.rows:
        grouped[measured(row, report.columns)].append(row)
    for (entity, unit), rows in sorted(grouped.items()):
        yield entity, unit, rows


def report_page(report: Report, title: str = "Usage report") -> str:
    columns = report.columns
    series = Series.of(columns)
    names = sorted({series.name(row, columns) for row in report.rows})
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    body = [_header(report, title)]
    if not report.rows:
        body.append("<p>No usage lines.</p>")
    else:
        body.append("<h2>Usage over time</h2>")
        for entity, unit, rows in _by_measure(report):
            body.append(chart(entity, unit, rows, report, series, colours))
        body.append(
            f"<h2>Totals per {escape(' and '.join(series.columns) or 'entity')}"
            f"{' and offering' if 'offering' in columns else ''}</h2>"
        )
        for entity, unit, rows in _by_measure(report):
            body.append(pivot(entity, unit, rows, report))
        if any(row.corrections for row in report.rows):
            body.append(
                '<p class="note">Highlighted cells, dashed bars and rows marked * include '
                f"corrections: {escape(CORRECTION_NOTE.split(': ', 1)[1])}.</p>"
            )
        per_group, _ = report_totals(report.rows, columns)
        unit_at = columns.index("unit")
        split = report.written_after is not None
        head = (report.by, *columns, "quantity", "lines", "corrections")
        head += ("correction",) * split
        rows_html = _table(
            head,
            [
                (
                    (
                        period_label(row.period, report.by),
                        *row.group,
                        amount(row.quantity, row.unit, report.units)
                        + (" *" if row.corrections else ""),
                        str(row.lines),
                        str(row.corrections or ""),
                        *(("yes" if row.corrections else "no",) if split else ()),
                    ),
                    [False] * (len(columns) + 1) + [bool(row.corrections)],
                )
                for row in report.rows
            ],
            len(columns) + 1,
        )
        body.append(
            f"<details><summary>Every row ({len(report.rows)}) and total per group "
            f"({len(per_group)})</summary>\n{rows_html}\n"
            + _table(
                (*columns, "total"),
                [
                    ((*group, amount(q, group[unit_at], report.units)), [])
                    for group, q in per_group.items()
                ],
                len(columns),
            )
            + "\n</details>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
