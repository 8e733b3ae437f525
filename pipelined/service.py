"""The pipeline as a service: what the MCP tools (and the HTTP API) read and write.

Free of any framework: each method takes plain values, returns a JSON-ready
dict, and raises a `PipelinedError` with one line for anything a caller got
wrong. Reads go through one read-only connection, opened again when the
database file is replaced (a `rebuild`). Writes are file edits (`authoring`,
`editing`) that the daemon syncs like an editor's; each waits a bounded time
for the daemon to show it and says whether it did. Every answer carries
`daemon`: its state and the last sync, and a note when the data may be old.

Answers are bounded, counted as JSON with every non-ASCII character escaped
(the larger of the two forms an MCP answer travels in): a list pages (`limit`,
`cursor`) and stops early rather than pass ANSWER_BYTES; long names and other
keys are cut; a body is cut to what is left, with a note.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from pipelined.authoring import create_story, move_story
from pipelined.config import Config, resolve_stage
from pipelined.editing import claim_story, update_story
from pipelined.errors import (
    AmbiguousStory,
    DatabaseError,
    FieldError,
    PipelinedError,
    StoryNotFound,
)
from pipelined.freshness import freshness, pipeline_status
from pipelined.schema import FIELDS, STORY_TYPES, from_column
from pipelined.store import history as store_history
from pipelined.store import queries
from pipelined.store.connection import open_read_only
from pipelined.store.preflight import check_before_reading
from pipelined.store.search import BUILDING_NOTE, index_building
from pipelined.store.search import search as run_search
from pipelined.story import story_number
from pipelined.views import board_columns, is_ready, unmet_dependencies

__all__ = [
    "ANSWER_BYTES",
    "MAX_LIMIT",
    "Pipeline",
    "body_of",
    "one_line",
    "resolve_stage",
    "story_type",
]

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
# An answer travels twice in MCP (text and structured content): about 80 kB in all.
ANSWER_BYTES = 36_000
NAME_BYTES = 1_200  # a name longer than this (as JSON) is cut in answers
EXTRA_BYTES = 8_000  # other front-matter keys past this are left out of `story_view`
RESOURCE_BYTES = 70_000
HISTORY_ROWS = 5
CONFIRM_WAIT_S = 5.0  # a write waits this long for a running daemon to show it
FILTER_BATCH = 500  # rows read at a time while a text filter looks for a page of cards
CONFIRM_POLL_S = 0.005  # and looks this often: what an agent waits for, beyond the sync
_TYPE = re.compile(r"[0-9]+_([a-z]+)_")
_FRONT_MATTER = re.compile(r"\A\ufeff?-{3,}[ \t]*\r?\n.*?^-{3,}[ \t]*(?:\r?\n|\Z)",
                           re.MULTILINE | re.DOTALL)


def story_type(story_id: str) -> str | None:
    """The word after the number (`12_bug_crash` -> `bug`), if there is one."""
    match = _TYPE.match(story_id)
    return match.group(1) if match else None


def body_of(content: str | None) -> str | None:
    """A story file's text without its front matter."""
    if content is None:
        return None
    match = _FRONT_MATTER.match(content)
    return content[match.end():] if match else content


def _char_cost(char: str) -> int:
    code = ord(char)
    if 0x20 <= code < 0x7F:
        return 2 if char in '"\\' else 1
    return 12 if code > 0xFFFF else 6


def json_cost(value: Any) -> int:
    """Bytes of `value` as JSON with every non-ASCII character escaped."""
    return len(json.dumps(value, separators=(",", ":")))


def cut_text(text: str, budget: int) -> tuple[str, bool]:
    """`text`, or its longest start whose JSON string fits `budget` bytes; and
    whether it was cut."""
    if len(text) * 12 + 2 <= budget or json_cost(text) <= budget:
        return text, False
    used, end = 2, 0
    for end, char in enumerate(text):  # noqa: B007 (end is the cut)
        used += _char_cost(char)
        if used > budget:
            break
    return text[:end], True


def _short_names(item: dict[str, Any]) -> dict[str, Any]:
    """The record with a very long name cut (a person may write any length)."""
    name = item.get("name")
    if isinstance(name, str):
        cut, was_cut = cut_text(name, NAME_BYTES)
        if was_cut:
            return {**item, "name": cut + "…"}
    return item


def _within_budget(rows: list[dict[str, Any]], keep: str) -> list[dict[str, Any]]:
    """As many rows as fit ANSWER_BYTES: the first ones (best hits) or the last ones
    (the newest history)."""
    ordered = rows if keep == "first" else rows[::-1]
    kept: list[dict[str, Any]] = []
    size = 0
    for row in ordered:
        size += json_cost(row) + 1
        if kept and size > ANSWER_BYTES - 2_000:
            break
        kept.append(row)
    return kept if keep == "first" else kept[::-1]


def _compact(item: Mapping[str, Any]) -> dict[str, Any]:
    """A list record: no times but the last update, no nulls."""
    keys = ("id", "stage", *FIELDS, "updated_at")
    return {k: item[k] for k in keys if item.get(k) is not None}


def card_matches(item: Mapping[str, Any], agent: str | None, text: str | None) -> bool:
    """The board's filters: this agent, and `text` within the id, name or agent
    (ignoring case), as the page's own check of a card that changes (board.js
    `matches`: lower() is JavaScript's toLowerCase(), casefold() is not)."""
    if agent and item["agent"] != agent:
        return False
    if not text:
        return True
    wanted = text.lower()
    return any(wanted in (value or "").lower()
               for value in (item["id"], item["name"], item["agent"]))


def _matching_page(conn: Any, stage: str, after: tuple[Any, ...] | None, limit: int,
                   agent: str | None, text: str | None) -> list[dict[str, Any]]:
    """Up to `limit` of the stage's stories after `after`, only those `card_matches`:
    SQL narrows by agent, the text is checked here, batch by batch."""
    if not text:
        return queries.page_stories(conn, stage=stage, agent=agent, after=after,
                                    limit=limit)[0]
    found: list[dict[str, Any]] = []
    while len(found) < limit:
        batch, _total = queries.page_stories(conn, stage=stage, agent=agent, after=after,
                                             limit=FILTER_BATCH)
        found += [item for item in batch if card_matches(item, None, text)]
        if len(batch) < FILTER_BATCH:
            break
        after = queries.page_key(batch[-1]["stage"], batch[-1]["id"])
    return found[:limit]


def _cursor(item: Mapping[str, Any]) -> str:
    raw = json.dumps([item["stage"], item["id"]], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _after_cursor(cursor: str) -> tuple[Any, ...]:
    if len(cursor) > 2000:
        raise FieldError("cursor", cursor, "not a cursor this server gave")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stage, story_id = json.loads(raw)
        return queries.page_key(str(stage), str(story_id))
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise FieldError("cursor", cursor, "not a cursor this server gave") from None


class Pipeline:
    """One root and database, served to agents and scripts (thread-safe)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        # One read-only connection per thread: a web server answers requests on a
        # pool of threads, and a snapshot is a transaction of its connection.
        self._local = threading.local()

    def _read(self) -> Any:
        """This thread's read-only connection, opened again if the database file was
        replaced (a `rebuild`)."""
        db_path = self.config.db_path
        try:
            st = os.stat(db_path)
            identity: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            identity = None
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or identity != local.identity:
            if conn is not None:
                local.conn = None
                conn.close()
            check_before_reading(db_path)
            conn = open_read_only(db_path)
            if not queries.table_exists(conn, "pipeline_items"):
                conn.close()
                raise DatabaseError(db_path, "not a pipelined database (no pipeline_items)")
            local.conn, local.identity = conn, identity
        return conn

    def _answer(self, conn: Any, **fields: Any) -> dict[str, Any]:
        return {**fields, "daemon": freshness(self.config.db_path, conn)}

    def _one_id(self, conn: Any, ref: str) -> str:
        ids = queries.resolve_ref(conn, ref)
        if len(ids) > 1:
            raise AmbiguousStory(ref, ids)
        if not ids:
            raise StoryNotFound(ref)
        return ids[0]

    def status(self) -> dict[str, Any]:
        conn = self._read()
        with queries.snapshot(conn):
            return self._answer(conn, **pipeline_status(self.config.db_path, conn),
                                stage_folders=list(self.config.stages))

    def list_stories(self, *, stage: str | None = None, agent: str | None = None,
                     unassigned: bool = False, blocked: bool | None = None,
                     ready: bool = False, kind: str | None = None,
                     limit: int = DEFAULT_LIMIT, cursor: str | None = None,
                     compact: bool = True) -> dict[str, Any]:
        """Records by stage then number, a page at a time: compact ones (no times but
        the last update, no nulls), or as `ls --json` shows them."""
        if not 1 <= limit <= MAX_LIMIT:
            raise FieldError("limit", limit, f"expected 1 to {MAX_LIMIT}")
        if kind is not None and kind not in STORY_TYPES:
            raise FieldError("type", kind, f"expected one of {', '.join(STORY_TYPES)}")
        folder = resolve_stage(stage, self.config.stages) if stage is not None else None
        after = _after_cursor(cursor) if cursor else None
        conn = self._read()
        with queries.snapshot(conn):
            daemon = freshness(self.config.db_path, conn)
            if not ready:
                items, total = queries.page_stories(
                    conn, stage=folder, agent=agent, unassigned=unassigned, blocked=blocked,
                    kind=kind, after=after, limit=limit + 1)
            else:  # dependencies may be in any stage: resolved against every row
                everything = queries.list_stories(conn)
        if ready:
            unmet = unmet_dependencies(everything)
            items = sorted((i for i in everything
                            if (folder is None or i["stage"] == folder)
                            and (agent is None or i["agent"] == agent)
                            and (not unassigned or i["agent"] is None)
                            and (blocked is None or bool(i["blocked"]) == blocked)
                            and (kind is None or story_type(i["id"]) == kind)
                            and is_ready(i, unmet[i["id"]])),
                           key=lambda i: queries.page_key(i["stage"], i["id"]))
            total = len(items)
            if after is not None:
                items = [i for i in items if queries.page_key(i["stage"], i["id"]) > after]
        page: list[dict[str, Any]] = []
        size = 0
        for item in items[:limit]:
            record = _short_names(_compact(item) if compact else dict(item))
            size += json_cost(record) + 1
            if page and size > ANSWER_BYTES:
                break
            page.append(record)
        more = len(items) > len(page)
        return {"stories": page, "total": total,
                "next_cursor": _cursor(page[-1]) if more and page else None,
                "daemon": daemon}

    def view(self, ref: str, history_rows: int = HISTORY_ROWS) -> dict[str, Any]:
        """One story: fields, extra keys, errors, files, the body, its last history rows."""
        conn = self._read()
        with queries.snapshot(conn):
            story_id = self._one_id(conn, ref)
            story = queries.get_story(conn, story_id)
            if story is None:
                raise StoryNotFound(ref)
            recent = (store_history.history(conn, [story_id], limit=history_rows)
                      if store_history.has_history(conn) else [])
            answer = self._answer(conn)
        body = body_of(story.pop("content"))
        story = _short_names(story)
        if json_cost(story["extra"]) > EXTRA_BYTES:
            story["extra_cut"] = (f"{json_cost(story['extra'])} bytes of other front-matter keys "
                                  f"are left out: the whole file is resource story://{story_id}")
            story["extra"] = {}
        left = ANSWER_BYTES - json_cost({"story": story, "history": recent, **answer}) - 200
        story["body"], cut = (None, False) if body is None else cut_text(body, max(0, left))
        if cut:
            story["body_cut"] = (f"the body is {len(body or '')} characters; the start is "
                                 f"here, the whole file is resource story://{story_id}")
        return {"story": story, "history": recent, **answer}

    def markdown(self, ref: str) -> str:
        """The story file's text as the database holds it (cut like a body)."""
        conn = self._read()
        with queries.snapshot(conn):
            story = queries.get_story(conn, self._one_id(conn, ref))
        if story is None:
            raise StoryNotFound(ref)
        text: str | None = story["content"]
        if text is None:
            return "(the file is over the size limit: its text is not copied)"
        cut, was_cut = cut_text(text, RESOURCE_BYTES)
        if was_cut:
            return cut + f"\n\n[cut here: the file has {len(text)} characters]\n"
        return text

    def search(self, query: str, stage: str | None = None,
               limit: int = 20) -> dict[str, Any]:
        if not 1 <= limit <= MAX_LIMIT:
            raise FieldError("limit", limit, f"expected 1 to {MAX_LIMIT}")
        folder = resolve_stage(stage, self.config.stages) if stage is not None else None
        conn = self._read()
        with queries.snapshot(conn):
            hits = [_short_names(hit.as_dict())
                    for hit in run_search(conn, query, stage=folder, limit=limit)]
            building = {"note": BUILDING_NOTE} if index_building(conn) else {}
            return self._answer(conn, hits=_within_budget(hits, keep="first"), **building)

    def recent(self, limit: int = 100) -> dict[str, Any]:
        """The newest history rows of every story, oldest first."""
        if not 1 <= limit <= MAX_LIMIT:
            raise FieldError("limit", limit, f"expected 1 to {MAX_LIMIT}")
        conn = self._read()
        with queries.snapshot(conn):
            store_history.require_history(conn, self.config.db_path)
            rows = store_history.history(conn, limit=limit)
            return self._answer(conn, history=_within_budget(rows, keep="last"))

    def log(self, ref: str, limit: int = 50) -> dict[str, Any]:
        if not 1 <= limit <= MAX_LIMIT:
            raise FieldError("limit", limit, f"expected 1 to {MAX_LIMIT}")
        conn = self._read()
        with queries.snapshot(conn):
            store_history.require_history(conn, self.config.db_path)
            ids = queries.resolve_ref(conn, ref, deleted=True)
            if len(ids) > 1:
                raise AmbiguousStory(ref, ids)
            if not ids:
                raise StoryNotFound(ref)
            rows = store_history.history(conn, ids, limit=limit)
            return self._answer(conn, id=ids[0], history=_within_budget(rows, keep="last"))

    def show(self, ref: str) -> dict[str, Any]:
        """One story as `pipelined show --json` prints it."""
        conn = self._read()
        with queries.snapshot(conn):
            story = queries.get_story(conn, self._one_id(conn, ref))
            if story is None:
                raise StoryNotFound(ref)
            return self._answer(conn, **story)

    def board(self, per_column: int = 200, agent: str | None = None,
              text: str | None = None) -> dict[str, Any]:
        """`board --json`'s columns, each capped at `per_column` cards (`more` says how
        many it left out; `next_cursor` pages on with `cards`). With `agent` or `text`
        (see `card_matches`) a column holds only the matching cards, `count` is how
        many match and `total` how many the stage holds; `agents` lists every agent."""
        conn = self._read()
        with queries.snapshot(conn):
            items = queries.list_stories(conn)
            daemon = freshness(self.config.db_path, conn)
        totals = Counter(i["stage"] for i in items)
        agents = sorted({i["agent"] for i in items if i["agent"]})
        unmet = unmet_dependencies(items)  # over every story, not only the matching ones
        if agent or text:
            items = [i for i in items if card_matches(i, agent, text)]
        columns = board_columns(items, self.config.stages, unmet)
        for column in columns:
            cards = column["cards"]
            column["total"] = totals[column["stage"]]
            column["more"] = max(0, len(cards) - per_column)
            column["cards"] = cards[:per_column]
            last = cards[per_column - 1] if column["more"] and per_column > 0 else None
            column["next_cursor"] = _cursor({**last, "stage": column["stage"]}) if last else None
        return {"columns": columns, "agents": agents, "daemon": daemon}

    def cards(self, stage: str, cursor: str | None = None, limit: int = 200,
              ref: str | None = None, agent: str | None = None,
              text: str | None = None) -> dict[str, Any]:
        """Board cards: a page of one stage's (only those `card_matches`), or the one
        story `ref` names."""
        conn = self._read()
        with queries.snapshot(conn):
            if ref is not None:
                story = queries.get_story(conn, self._one_id(conn, ref))
                items = [] if story is None else [story]
                next_cursor = None
            else:
                folder = resolve_stage(stage, self.config.stages)
                after = _after_cursor(cursor) if cursor else None
                items = _matching_page(conn, folder, after, limit + 1, agent or None,
                                       text or None)
                next_cursor = _cursor(items[limit - 1]) if len(items) > limit else None
                items = items[:limit]
            targets = self._dependency_targets(conn, items)
            daemon = freshness(self.config.db_path, conn)
        unmet = unmet_dependencies([*items, *(t for t in targets if t["id"] not in
                                              {i["id"] for i in items})])
        cards = [{"id": i["id"], "number": story_number(i["id"]), "stage": i["stage"],
                  "name": i["name"], "agent": i["agent"], "blocked": bool(i["blocked"]),
                  "depends_on": i["depends_on"], "unmet": unmet[i["id"]]} for i in items]
        return {"cards": cards, "next_cursor": next_cursor, "daemon": daemon}

    @staticmethod
    def _dependency_targets(conn: Any, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The stories the items' `depends_on` entries name (for their unmet ones)."""
        refs = {str(dep) for item in items for dep in item.get("depends_on") or ()
                if not isinstance(dep, bool)}
        ids = {found for ref in refs for found in queries.resolve_ref(conn, ref)}
        return queries.stories_by_id(conn, sorted(ids))

    # -- writes ----------------------------------------------------------------------

    def _confirmed(self, wait: Callable[[], bool]) -> bool | None:
        return queries.confirmed_by_daemon(self.config.db_path, wait)

    def create(self, title: str, kind: str = "story", stage: str | None = None,
               agent: str | None = None, blocked: bool = False,
               depends_on: list[int | str] | None = None) -> dict[str, Any]:
        folder = resolve_stage(stage, self.config.stages) if stage else self.config.stages[0]
        conn = self._read()
        new = create_story(self.config.root, self.config.stages, folder, title, kind,
                           agent=agent, blocked=blocked, depends_on=depends_on,
                           high_water=queries.high_water(conn))
        confirmed = self._confirmed(lambda: queries.wait_for_stage(
            self.config.db_path, new.story_id, folder, CONFIRM_WAIT_S, CONFIRM_POLL_S))
        return self._answer(conn, id=new.story_id, stage=folder, path=str(new.path),
                            confirmed=confirmed)

    def move(self, ref: str, stage: str) -> dict[str, Any]:
        folder = resolve_stage(stage, self.config.stages)
        moved = move_story(self.config.root, self.config.stages, ref, folder)
        confirmed = self._confirmed(lambda: queries.wait_for_stage(
            self.config.db_path, moved.story_id, folder, CONFIRM_WAIT_S, CONFIRM_POLL_S))
        return self._answer(self._read(), id=moved.story_id, from_stage=moved.from_stage,
                            to_stage=moved.to_stage, moved=moved.from_stage != moved.to_stage,
                            confirmed=confirmed)

    def update(self, ref: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        if not changes:
            raise FieldError("fields", {}, f"nothing to set (fields: {', '.join(FIELDS)})")
        edited = update_story(self.config.root, self.config.stages, ref, changes,
                              max_bytes=self.config.max_file_bytes)
        return self._edited(edited)

    def claim(self, ref: str, agent: str) -> dict[str, Any]:
        edited = claim_story(self.config.root, self.config.stages, ref, agent,
                             max_bytes=self.config.max_file_bytes)
        return self._edited(edited)

    def _edited(self, edited: Any) -> dict[str, Any]:
        confirmed: bool | None = None
        if edited.changed:
            fields = {name: edited.after[name] for name in edited.changed}
            confirmed = self._confirmed(lambda: queries.wait_for_fields(
                self.config.db_path, edited.story_id, fields, CONFIRM_WAIT_S, CONFIRM_POLL_S))
        return self._answer(
            self._read(), id=edited.story_id, changed=list(edited.changed),
            fields=_short_names({k: from_column(k, v) for k, v in edited.after.items()}),
            confirmed=confirmed)


def one_line(error: PipelinedError) -> str:
    """An error as the one line a caller is shown."""
    return " ".join(str(error).split())

