"""An hourly window's simple measures summed on a second connection, beside the run.

The range scan's GROUP BY is most of a busy hour on MariaDB (2.3 s of a 1M-event
hour), and while it runs the run's own connection can do nothing else: reading the
window's other rows, planning its resources and writing their lines all waited for
it. Here the GROUP BY runs on a connection of its own, in a thread that mostly
waits on the socket, while the run's connection reads the resource events itself
(events.read_other_kinds) and gets on with the chunk; the sums are taken last.

Two connections are two snapshots, so the sums are taken only where both saw the
same simple measures. The side connection starts its snapshot after the run's, so it
holds the run's rows plus any committed in between (a producer's transaction still
open when the run began), less any deleted in between. The run reads what the scan
returns alone (first the rows whose kind says so, then the others the scan names)
and compares the digest (count and ids' sum) of the rest of its snapshot with that
of the rows the scan summed. Where they differ, or the side connection failed, the
run scans the window on its own connection after all: a row a later commit added
stays a gap to read again, as on the one-connection path, and none is billed twice.
Only changes that cancel out in both count and sum would pass (rows deleted and
others added or changed, all within the moment between the snapshots, their ids
summing alike); producers add rows.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from metering.core.billing import PartKey
from metering.db import describe_db_error
from metering.store.events import RangeScan, scan_range


class SideScan:
    """scan_range(lo, hi) on a connection of its own, started now, in a thread.

    Call after the run's connection has begun its snapshot; `close` (or `take`)
    must be called on every path, as it owns the connection and the thread."""

    def __init__(self, engine: Engine, lo: int, hi: int) -> None:
        self.lo = lo
        self.hi = hi
        self.why = ""
        self._sums: dict[PartKey, int] = {}
        self._conn = engine.connect()
        self._pool: ThreadPoolExecutor | None = None
        try:
            # The snapshot starts here, not at the thread's first read.
            self._conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="metering-side-scan")
            self._future: Future[RangeScan] = self._pool.submit(
                scan_range, self._conn, lo, hi, self._sums, None, True
            )
        except BaseException:
            self.close()
            raise

    def take(self) -> tuple[RangeScan, dict[PartKey, int]] | None:
        """What the scan read and summed; None if it failed (`why` then says why)."""
        try:
            return self._future.result(), self._sums
        except DBAPIError as exc:
            # The run's own connection may still do it; if not, it fails there.
            self.why = f"side connection failed: {describe_db_error(exc)}"
            return None
        finally:
            self.close()

    def close(self) -> None:
        """Wait for the thread (a connection is never closed under a running query),
        then end the side snapshot. Idempotent."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._conn.close()
