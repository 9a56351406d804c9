"""Exceptions the shell raises, each carrying the exit code the CLI maps it to.

Exit codes are part of the operator interface (crontab.example, docs/operations.md):
0 ok, 1 failure, 2 usage, 75 lock held (EX_TEMPFAIL: try again next hour).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_LOCKED = 75


class MeteringError(Exception):
    """Base class: an error with a message fit for an operator and an exit code."""

    exit_code = EXIT_FAILURE


class UsageError(MeteringError):
    exit_code = EXIT_USAGE


class ConfigError(MeteringError):
    exit_code = EXIT_USAGE


class SchemaNotAtHead(MeteringError):
    exit_code = EXIT_FAILURE


class NoDatabase(MeteringError):
    """The SQLite file is missing: only `metering db upgrade` creates one."""

    exit_code = EXIT_FAILURE


class LockFileError(MeteringError):
    """The lock file cannot be created or locked: its setting needs fixing."""

    exit_code = EXIT_USAGE


class DatabaseUnavailable(MeteringError):
    exit_code = EXIT_FAILURE


class LockHeld(MeteringError):
    """Another run holds the file lock, the database lock or won the commit fence."""

    exit_code = EXIT_LOCKED


class ConcurrentRun(LockHeld):
    """The commit fence (watermark compare-and-set or run id) saw another writer."""


class WatermarkLost(MeteringError):
    """metering_state says nothing was billed, usage_lines says otherwise."""
