"""The change stream behind `GET /api/events`: history rows, to every listener.

One task polls the database (read-only) for the highest history sequence
number and wakes every subscriber when it grows; each subscriber then reads
the rows after the last one it sent, from the database, a page at a time. So
twenty open boards cost one poll, a burst of 2,000 changes is no queue of
2,000 rows per client, and a client that stops reading holds no buffer here:
it only stops asking for pages (the HTTP layer drops it once a send has waited
too long, `web.SEND_TIMEOUT_S`). A reconnecting client passes the last id it
saw and gets everything after it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from pipelined.store import history as store_history

__all__ = ["ChangeFeed"]

POLL_S = 0.05
PAGE_ROWS = 500


class ChangeFeed:
    """History rows as they are committed, for any number of subscribers."""

    def __init__(self, connect: Callable[[], Any], poll_s: float = POLL_S,
                 page_rows: int = PAGE_ROWS) -> None:
        self._connect = connect  # a read-only connection for the calling thread
        self._poll_s = poll_s
        self._page_rows = page_rows
        self._last_seq = 0
        self._changed = asyncio.Event()  # replaced each time it is set
        self._stopped = False
        self._task: asyncio.Task[None] | None = None

    def _query(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self._connect(), *args)

    async def start(self) -> None:
        self._last_seq = await asyncio.to_thread(self._query, _max_seq)
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._wake()

    def _wake(self) -> None:
        woken, self._changed = self._changed, asyncio.Event()
        woken.set()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                seq = await asyncio.to_thread(self._query, _max_seq)
            except Exception:  # the database is being replaced, or busy: next poll
                continue
            if seq != self._last_seq:
                self._last_seq = seq
                self._wake()

    def rows(self, after: int | None) -> AsyncIterator[dict[str, Any]]:
        """The rows after `after`, then every new row, until the feed stops. With no
        `after`: the rows committed from this call on."""
        return self._rows_after(self._last_seq if after is None else after)

    async def _rows_after(self, sent: int) -> AsyncIterator[dict[str, Any]]:
        while not self._stopped:
            changed = self._changed  # taken before the read: no wake-up falls between
            page = await asyncio.to_thread(self._query, _rows_after, sent, self._page_rows)
            for row in page:
                sent = row["seq"]
                yield row
            if len(page) < self._page_rows:
                await changed.wait()


def _max_seq(conn: Any) -> int:
    return store_history.max_seq(conn) if store_history.has_history(conn) else 0


def _rows_after(conn: Any, seq: int, limit: int) -> list[dict[str, Any]]:
    if not store_history.has_history(conn):
        return []
    return store_history.rows_after(conn, seq, limit)
