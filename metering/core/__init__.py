"""Pure billing core: standard library only, no IO, no clock.

Times are integer UTC epoch milliseconds and quantities are integers, so that
every amount the shell writes can be re-derived exactly (contract rule 6).
"""

from __future__ import annotations

from metering.core.diff import diff
from metering.core.events import (
    HOUR,
    MAX_MEASURE_PERIOD,
    MAX_QUANTITY,
    MAX_TEXT,
    MAX_TIME,
    MIN_TIME,
    RESOURCE_ACTIONS,
    Measure,
    QuantityKey,
    RawEvent,
    Rejection,
    ResourceEvent,
    ResourceKey,
    validate,
)
from metering.core.slicing import hour_of, measure_by_hour, running_by_hour, split_measure
from metering.core.spans import Anomaly, Replay, ResourceState, Span, order_key, replay

__all__ = [
    "HOUR",
    "MAX_MEASURE_PERIOD",
    "MAX_QUANTITY",
    "MAX_TEXT",
    "MAX_TIME",
    "MIN_TIME",
    "RESOURCE_ACTIONS",
    "Anomaly",
    "Measure",
    "QuantityKey",
    "RawEvent",
    "Rejection",
    "Replay",
    "ResourceEvent",
    "ResourceKey",
    "ResourceState",
    "Span",
    "diff",
    "hour_of",
    "measure_by_hour",
    "order_key",
    "replay",
    "running_by_hour",
    "split_measure",
    "validate",
]
