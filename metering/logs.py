"""structlog set-up: JSON lines off a terminal, readable console output on one.

SQLAlchemy's and Alembic's stdlib loggers go through the same renderer, and every
event passes a processor that masks passwords in URLs, whatever logged them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@\s]+)(@)", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    return _URL_PASSWORD.sub(r"\1***\3", text)


def _mask_processor(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key, value in list(event_dict.items()):
        if isinstance(value, str) and "://" in value:
            event_dict[key] = mask_secrets(value)
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_processor,
    ]


_configured = False


def is_configured() -> bool:
    return _configured


def use_color(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def configure(
    *, verbose: bool = False, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog and the stdlib root logger; safe to call more than once."""
    global _configured
    _configured = True
    out = stream if stream is not None else sys.stderr
    use_json = (not out.isatty()) if json is None else json
    renderer: Processor
    if use_json:
        renderer = structlog.processors.JSONRenderer()
    else:
        # Plain tracebacks whatever is installed: with `rich` present structlog would
        # render frame locals, and a local may hold the database password.
        renderer = structlog.dev.ConsoleRenderer(
            colors=use_color(out), exception_formatter=structlog.dev.plain_traceback
        )
    shared = _shared_processors()
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info if use_json else _identity,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # SQLAlchemy and Alembic are chatty at INFO; their warnings still come through.
    for name in ("sqlalchemy", "alembic"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def _identity(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return event_dict


def get_logger(name: str = "metering") -> Any:
    return structlog.stdlib.get_logger(name)
