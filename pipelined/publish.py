"""`pipelined publish`: the pipeline state, live, in a room of a standard Yjs server.

A separate process (the daemon stays network-free). It reads the database
read-only, as any reader, and keeps one Yjs document equal to the rows: a
top-level map `stories`, one entry per story id, each a plain object of the
pipeline fields (docs/publish.md gives the shape). It connects to any server speaking
the y-websocket protocol through pycrdt's `Provider` over a `websockets`
connection, so the Node `@y/websocket-server`, y/hub or y-sweet keep the room.

It mirrors rows, not the daemon's pycrdt updates: its document has its own
client id and history, and every change it sends is the difference between
the rows and what the room holds. So the room needs nothing from the
daemon's restarts, compactions or new epochs (a deleted story cannot come
back from an old epoch: the room never saw one), and a fresh encoding and the
room differ only by what Yjs keeps of overwritten values.

Read-only from the network: a change another client makes in the room is
overwritten with the rows' values on the next poll, and logged once per
connection. Writes go through MCP or HTTP. A lost connection is retried with
back-off (0.5 s doubling to 30 s); on reconnect the sync protocol sends the
server whatever it lacks, so a restarted, empty server gets the whole state.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import apsw
import pycrdt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from pipelined.errors import PipelinedError
from pipelined.logs import get_logger
from pipelined.store import history as store_history
from pipelined.store import queries
from pipelined.store.connection import open_read_only

__all__ = ["FIELDS", "ROOT", "Publisher", "WebsocketChannel"]

log = get_logger("pipelined.publish")

ROOT = "stories"  # the document's top-level map
FIELDS = ("stage", "name", "agent", "retry_count", "blocked", "depends_on")
FIELD_SET = frozenset(FIELDS)
POLL_S = 0.05  # how often the database is asked whether anything was committed
RESYNC_S = 60.0  # a full comparison of the rows with the room, as a safety net
SYNC_TIMEOUT_S = 30.0  # the server's answer to our first sync message
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 30.0
STEADY_S = 10.0  # a connection in sync this long starts the next back-off afresh
HISTORY_PAGE = 2000  # more changes than this since the last poll: compare everything

Values = tuple[Any, ...]  # a story's FIELDS, in order, as the rows give them
# What a read can meet while the database is rebuilt, replaced or busy: tried again.
DB_ERRORS = (apsw.Error, PipelinedError, OSError)


class NotReady(Exception):
    """The database cannot be read as it is now (it is being rebuilt): try again."""


class WebsocketChannel:
    """pycrdt's Channel over a `websockets` connection: binary messages both ways."""

    def __init__(self, websocket: ClientConnection, path: str) -> None:
        self._websocket = websocket
        self._path = path
        self.closed = anyio.Event()

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> WebsocketChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            self.closed.set()
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        try:
            await self._websocket.send(message)
        except ConnectionClosed:
            self.closed.set()
            raise

    async def recv(self) -> bytes:
        while True:
            message = await self._websocket.recv()
            if isinstance(message, bytes):
                return message


def values_of(item: Mapping[str, Any]) -> Values:
    """A row's (or a room entry's) pipeline fields, with Yjs's floats made ints again."""
    def plain(key: str, value: Any) -> Any:
        if key == "retry_count" and isinstance(value, float) and value.is_integer():
            return int(value)
        if key == "depends_on" and isinstance(value, list):
            return [int(v) if isinstance(v, float) and v.is_integer() else v for v in value]
        return value
    return tuple(plain(key, item.get(key)) for key in FIELDS)


class Publisher:
    """Keeps the room at `server` equal to the rows of the database at `db_path`."""

    def __init__(self, db_path: Path, server: str, token: str | None = None) -> None:
        self.db_path = db_path
        self.server = server
        self.token = token
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc()
        self.stories: pycrdt.Map[Any] = self.doc.get(ROOT, type=pycrdt.Map)
        self._writing = False
        self._remote_change = False
        self._doc_subscription = self.doc.observe(self._on_transaction)
        self._history_seq = 0
        self._conn: Any = None
        self._inode = 0  # the open database file's
        self._new_file = False  # the database was replaced: compare everything
        self._read_failing = False
        self._down_since: float | None = None  # when the connection was lost
        self.sessions = 0  # connections that got in sync

    # -- the database side ----------------------------------------------------------
    # Read on the event loop's thread: a poll is a query of a millisecond, a full
    # read tens of milliseconds at 10,000 stories. Worker threads would each get a
    # malloc arena of their own, and their garbage kept publish's RSS growing
    # (10,000 stories, 30,000 edits: 97 MiB with them, 82 without).

    def _db(self) -> Any:
        """The read-only connection, to the file now at `db_path`: when `pipelined
        rebuild` has moved the old one aside (another inode), the connection is opened
        again and `_new_file` says a full comparison is due."""
        inode = os.stat(self.db_path).st_ino  # FileNotFoundError mid-rebuild: NotReady
        if self._conn is not None and inode != self._inode:
            self.close()
        if self._conn is None:
            if self._inode and inode != self._inode:
                self._new_file = True
                log.info("publish.database_replaced", action="comparing the whole room")
            self._conn = open_read_only(self.db_path)
            self._inode = inode
        return self._conn

    def _synced(self, conn: Any) -> None:
        """NotReady unless a batch was ever committed to this database: a database
        `rebuild` has just made holds no rows yet, which must not empty the room."""
        if "last_sync" not in queries.meta(conn):
            raise NotReady("the database has no committed sync yet")

    def _read_all(self) -> tuple[int, dict[str, Values]]:
        conn = self._db()
        with queries.snapshot(conn):
            self._synced(conn)
            self._new_file = self._read_failing = False
            seq = store_history.max_seq(conn) if store_history.has_history(conn) else 0
            return seq, {item["id"]: values_of(item) for item in queries.iter_stories(conn)}

    def _read_changed(self, after: int) -> tuple[int, dict[str, Values | None]] | None:
        """(history seq, the changed ids' values, None for a deleted one) since `after`;
        None when a full comparison is needed (too many changes, or a new database)."""
        conn = self._db()
        if self._new_file or not store_history.has_history(conn):
            return None
        with queries.snapshot(conn):
            seq = store_history.max_seq(conn)
            if seq == after:
                return seq, {}
            self._synced(conn)
            if seq < after:
                return None
            rows = store_history.rows_after(conn, after, HISTORY_PAGE + 1)
            if len(rows) > HISTORY_PAGE:
                return None
            ids = sorted({row["id"] for row in rows})
            found = {item["id"]: values_of(item) for item in queries.stories_by_id(conn, ids)}
            self._read_failing = False
            return seq, {story_id: found.get(story_id) for story_id in ids}

    # -- the document side (the event loop's thread) --------------------------------
    # Each entry is one plain JSON object (a Yjs "any" value), not a nested Y.Map:
    # a Y.Map costs an item per field, so at 10,000 stories the document took 24 MiB
    # against 12, and a reader sees a story's fields change together. The document
    # is the only record of what the room holds: no copy of it is kept beside.

    def _on_transaction(self, _event: Any) -> None:
        if not self._writing:
            self._remote_change = True

    def _holds(self, story_id: str, values: Values) -> bool:
        """Whether the room's entry for `story_id` is exactly `values`, in our shape: a
        plain object of our fields alone (another client's Y.Map, or an object with a
        key of its own, is written again whole)."""
        entry = self.stories.get(story_id)
        if not isinstance(entry, dict) or entry.keys() != FIELD_SET:
            return False
        held = values_of(entry)
        return held == values and _kinds(held) == _kinds(values)  # `1` is not `true`

    def apply(self, changes: Mapping[str, Values | None]) -> int:
        """Write the stories whose values differ from the room's (None: delete), in one
        transaction; the number of stories written."""
        todo = {story_id: values for story_id, values in changes.items()
                if (story_id in self.stories if values is None
                    else not self._holds(story_id, values))}
        if not todo:
            return 0
        self._writing = True
        try:
            with self.doc.transaction():
                for story_id, values in todo.items():
                    if values is None:
                        del self.stories[story_id]
                    else:
                        self.stories[story_id] = dict(zip(FIELDS, values, strict=True))
        finally:
            self._writing = False
        return len(todo)

    def compare_all(self, rows: Mapping[str, Values]) -> int:
        """Make the room equal to `rows` (the server's or another client's changes
        are in the document): remove what is not a row, write what differs."""
        self._remote_change = False
        held = self.stories.keys()  # pycrdt types its Map without __iter__
        gone: dict[str, Values | None] = {str(story_id): None for story_id in held
                                          if story_id not in rows}
        return self.apply({**gone, **rows})

    # -- the connection ------------------------------------------------------------

    async def run(self) -> None:
        """Connect, follow the database, reconnect with back-off; until cancelled."""
        backoff = BACKOFF_FIRST_S
        while True:
            started = time.monotonic()
            sessions = self.sessions
            try:
                await self._connected_session()
                error = "the server closed the connection"
            except* (OSError, TimeoutError, WebSocketException, NotReady, *DB_ERRORS) as group:
                error = _first(group.exceptions)
            if self.sessions != sessions and time.monotonic() - started > STEADY_S:
                backoff = BACKOFF_FIRST_S  # it was in sync a while: start the back-off afresh
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("publish.disconnected", server=self.server, error=error,
                            action=f"retrying, first in {backoff:.1f} s")
            else:
                log.debug("publish.retry_failed", error=error)
            await anyio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def _connected_session(self) -> None:
        """One connection: sync, compare, follow until it closes."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        async with connect(self.server, additional_headers=headers, max_size=None,
                           open_timeout=SYNC_TIMEOUT_S) as websocket:
            channel = WebsocketChannel(websocket, self.server)
            provider = pycrdt.Provider(self.doc, channel)
            async with anyio.create_task_group() as tasks:
                await tasks.start(provider.start)
                with anyio.fail_after(SYNC_TIMEOUT_S):
                    await provider.synced.wait()
                read = await self._read_all_when_readable(channel)
                if read is None:
                    return
                seq, rows = read
                written = self.compare_all(rows)
                self._history_seq = seq
                if self._down_since is not None:
                    log.info("publish.reconnected", server=self.server, stories=len(rows),
                             written=written,
                             down_s=round(time.monotonic() - self._down_since, 1))
                    self._down_since = None
                else:
                    log.info("publish.connected", server=self.server, stories=len(rows),
                             written=written)
                self.sessions += 1
                await self._follow(channel)
                tasks.cancel_scope.cancel()

    async def _read_all_when_readable(self, channel: WebsocketChannel
                                      ) -> tuple[int, dict[str, Values]] | None:
        """Every row, once the database can be read (None if the connection closed
        meanwhile): a rebuild in progress keeps the room as it is."""
        while not channel.closed.is_set():
            try:
                return self._read_all()
            except (NotReady, *DB_ERRORS) as exc:
                self._unreadable(exc)
            with anyio.move_on_after(1.0):
                await channel.closed.wait()
        return None

    async def _follow(self, channel: WebsocketChannel) -> None:
        """Poll the database; write what changed; overwrite remote changes."""
        last_full = time.monotonic()
        warned = False
        while not channel.closed.is_set():
            with anyio.move_on_after(POLL_S):
                await channel.closed.wait()
            if channel.closed.is_set():
                return
            try:
                if self._remote_change:  # someone else wrote into the room: read it
                    seq, rows = self._read_all()
                    written = self.compare_all(rows)
                    self._history_seq, last_full = seq, time.monotonic()
                    if written and not warned:
                        warned = True
                        log.warning("publish.remote_change_overwritten", stories=written,
                                    action="the room is read-only: write through MCP or HTTP")
                    continue
                changed = None
                if time.monotonic() - last_full <= RESYNC_S:
                    changed = self._read_changed(self._history_seq)
                if changed is None:  # the safety net, or too much to go by the history
                    seq, rows = self._read_all()
                    self.compare_all(rows)
                    self._history_seq, last_full = seq, time.monotonic()
                    continue
                self._history_seq, updates = changed
                self.apply(updates)
            except (NotReady, *DB_ERRORS) as exc:  # being rebuilt, replaced, busy
                self._unreadable(exc)
                await anyio.sleep(1.0)

    def _unreadable(self, exc: BaseException) -> None:
        """A read failed: the connection is dropped and opened again at the next read;
        said once until a read works again."""
        self.close()
        if not self._read_failing:
            self._read_failing = True
            log.warning("publish.database_unreadable", error=f"{type(exc).__name__}: {exc}",
                        action="the room is kept as it is; trying again every second")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _kinds(values: Values) -> tuple[Any, ...]:
    """The types of `values` (of a list's items too): Python's `1 == True == 1.0`."""
    return tuple(tuple(map(type, value)) if isinstance(value, list) else type(value)
                 for value in values)


def _first(errors: Iterable[BaseException]) -> str:
    for error in errors:
        return f"{type(error).__name__}: {error}"
    return "unknown"

