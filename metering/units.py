"""Quantities in units people read: bytes as GB (SI) or GiB (IEC), running time as
hours and minutes. Pure and exact (Decimal); for tables, HTML and anything else that
shows an amount to a person. CSV and JSON keep the raw quantity and its unit instead.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

SECOND = "second"
BYTE = "byte"
SI = "si"
IEC = "iec"
RAW = "raw"
UNIT_SYSTEMS = (SI, IEC, RAW)

_BYTES = {SI: (Decimal(10) ** 9, "GB"), IEC: (Decimal(2) ** 30, "GiB")}
_HOUR = Decimal(3600)
_MINUTE = Decimal(60)
_THOUSANDTH = Decimal("0.001")


def plain(quantity: Decimal) -> str:
    """The exact quantity: whole numbers without decimals, others to the millisecond
    (usage lines hold three decimals)."""
    if quantity == quantity.to_integral_value():
        return str(int(quantity))
    return f"{quantity:.3f}"


def running_time(seconds: Decimal) -> str:
    """'1 h 30 min' (to the nearest minute); under a minute, the seconds: '12.5 s'."""
    if seconds != 0 and abs(seconds) < _MINUTE:
        return f"{plain(seconds)} s"
    sign = "-" if seconds < 0 else ""
    minutes = int((abs(seconds) / _MINUTE).to_integral_value(ROUND_HALF_EVEN))
    return f"{sign}{minutes // 60} h {minutes % 60:02d} min"


def data_size(quantity: Decimal, system: str = SI) -> str:
    """'5.795 GB' (SI) or '5.397 GiB' (IEC); an amount too small to show in thousandths
    says so rather than showing zero."""
    divisor, label = _BYTES[system]
    value = (quantity / divisor).quantize(_THOUSANDTH, ROUND_HALF_EVEN)
    if value == 0 and quantity != 0:
        return f"{'> -' if quantity < 0 else '< '}0.001 {label}"
    return f"{value:.3f} {label}"


def human(quantity: Decimal, unit: str, system: str = SI) -> str:
    """An amount as a person reads it; `raw` keeps the stored quantity and unit."""
    if system == RAW:
        return f"{plain(quantity)} {'s' if unit == SECOND else unit}"
    if unit == SECOND:
        return running_time(quantity)
    if unit == BYTE:
        return data_size(quantity, system)
    return f"{plain(quantity)} {unit}"


def axis(unit: str, system: str = SI) -> tuple[Decimal, str]:
    """(divisor, label) a chart's axis uses for `unit`: hours, GB/GiB, or the unit."""
    if system != RAW and unit == SECOND:
        return _HOUR, "h"
    if system != RAW and unit == BYTE:
        return _BYTES[system]
    return Decimal(1), "s" if unit == SECOND else unit


def title(entity: str, unit: str) -> str:
    """What a figure of `unit` measures for `entity`: 'vm running time', 'ip bytes'."""
    if unit == SECOND:
        return f"{entity} running time"
    if unit == BYTE:
        return f"{entity} bytes"
    return f"{entity} {unit}"
