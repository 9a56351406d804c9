"""Progress bars on stderr: shown only on a terminal and never with JSON logs, so
cron, systemd and log collectors see log lines only. A log line written while a bar
is shown starts at the beginning of the line; the next update draws the bar again.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click


def shown(log_format: str | None) -> bool:
    """Whether bars may be drawn: stderr is a terminal and logs are not JSON."""
    return sys.stderr.isatty() and log_format != "json"


class _ClearLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        sys.stderr.write("\r\x1b[K")
        return True


@contextmanager
def _logs_clear_the_bar() -> Iterator[None]:
    clear = _ClearLine()
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(clear)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(clear)


@contextmanager
def steps(label: str, length: int | None, show: bool) -> Iterator[Callable[[int], None] | None]:
    """A bar of `length` steps, advanced by the increments given to the callback
    (bytes ingested, hours replayed); None when no bar is shown."""
    if not show or length is None:
        yield None
        return
    with (
        click.progressbar(length=length, label=label, file=sys.stderr) as bar,
        _logs_clear_the_bar(),
    ):
        yield bar.update


@contextmanager
def hours(label: str, show: bool) -> Iterator[Callable[[int, int, int], None] | None]:
    """A bar for (hours done, hours total, events read) callbacks, with events per
    second and an ETA; drawn only once the work takes more than one step."""
    if not show:
        yield None
        return
    bars: list[Any] = []
    started = time.monotonic()

    def rate(events: int | None) -> str:
        elapsed = time.monotonic() - started
        return f"{events / elapsed:,.0f} events/s" if events and elapsed > 0 else ""

    def update(done: int, total: int, events: int) -> None:
        if not bars:
            if done >= total:
                return
            bar = click.progressbar(
                length=total,
                label=label,
                file=sys.stderr,
                show_pos=True,
                show_eta=True,
                item_show_func=rate,
            )
            bar.__enter__()
            bars.append(bar)
        bars[0].length = total
        bars[0].update(done - bars[0].pos, events)

    try:
        with _logs_clear_the_bar():
            yield update
    finally:
        for bar in bars:
            bar.__exit__(None, None, None)
