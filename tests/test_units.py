"""metering.units: amounts as people read them, exact."""

from __future__ import annotations

from decimal import Decimal

import pytest

from metering.units import axis, human, running_time


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        ("3600.000", "1 h 00 min"),
        ("5459.999", "1 h 31 min"),  # to the nearest minute
        ("5429.999", "1 h 30 min"),
        ("-1800.000", "-0 h 30 min"),
        ("90061.5", "25 h 01 min"),
        ("0", "0 h 00 min"),
        ("12.5", "12.500 s"),  # under a minute: not shown as zero
        ("-42", "-42 s"),
        ("438926.888", "121 h 55 min"),
    ],
)
def test_running_time(seconds: str, shown: str) -> None:
    assert running_time(Decimal(seconds)) == shown


def test_bytes_si_iec_and_raw() -> None:
    q = Decimal(5945227607)
    assert human(q, "byte") == "5.945 GB"
    assert human(q, "byte", "iec") == "5.537 GiB"
    assert human(q, "byte", "raw") == "5945227607 byte"
    assert human(Decimal(1001), "byte") == "< 0.001 GB"
    assert human(Decimal(-1001), "byte") == "> -0.001 GB"
    assert human(Decimal(0), "byte") == "0.000 GB"
    assert human(Decimal("5400.500"), "second", "raw") == "5400.500 s"
    assert human(Decimal(7), "request") == "7 request"


def test_axes() -> None:
    assert axis("second") == (Decimal(3600), "h")
    assert axis("byte", "iec") == (Decimal(2**30), "GiB")
    assert axis("byte", "raw") == (Decimal(1), "byte")
