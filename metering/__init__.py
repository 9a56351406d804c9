"""metering: exact hourly usage lines from cloud usage events, run from cron."""

from __future__ import annotations

__version__ = "0.1.0"
