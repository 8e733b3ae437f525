"""The MCP server: the pipeline's tools for coding agents (official SDK, `mcp` 2.x).

One definition (`build_server`) for both transports: `pipelined mcp` serves it
over stdio (how agent clients start servers), and `pipelined serve` mounts it
over streamable HTTP at `/mcp`. The root and the database come from the
command's settings, never from the client. Each tool is a thin binding of a
`service.Pipeline` method: its arguments are typed (the SDK turns them into
JSON schemas), read-only tools say so, a `PipelinedError` reaches the agent as
its one line (`ToolError`), and an answer is compact JSON in the text content,
with the same value as structured content.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from pipelined import __version__
from pipelined.config import Config
from pipelined.errors import PipelinedError
from pipelined.service import MAX_LIMIT, Pipeline, one_line

__all__ = ["build_server"]

INSTRUCTIONS = """\
The work items of this project are markdown stories with YAML front matter in
stage folders (e.g. 1_backlog, 2_current, 4_merge). Each has an id like
12_story_login_form (number, type, slug); tools accept the bare number too.
Fields: name, agent (who works on it), retry_count, blocked, depends_on.
Start with story_list (filters; pages of 50) or story_search; story_view shows
one story. Claim a story with story_claim before working on it. Writes edit
the files; `confirmed` says whether the running daemon has synced them. Every
answer has `daemon`: if its state is not "ready", the data may be old.
"""

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
Kind = Literal["story", "bug", "spike", "refactor"]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT)]
Ref = Annotated[str, Field(description="A story id (12_story_login_form) or its bare "
                                       "number (12).")]
Stage = Annotated[str, Field(description="A stage folder (2_current) or its alias (current).")]


def _answer(call: Callable[[], Any]) -> CallToolResult:
    """Run a service call: compact JSON text plus structured content, or a ToolError."""
    try:
        value = call()
    except PipelinedError as exc:
        raise ToolError(one_line(exc)) from None
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return CallToolResult(content=[TextContent(type="text", text=text)],
                          structured_content=value)


def build_server(config: Config) -> MCPServer:
    """The MCP server for one root and database."""
    pipeline = Pipeline(config)
    server = MCPServer(name="pipelined", version=__version__, instructions=INSTRUCTIONS)

    @server.tool(annotations=READ_ONLY)
    def story_list(stage: Stage | None = None, agent: str | None = None,
                   unassigned: bool = False, blocked: bool | None = None,
                   ready: bool = False, type: Kind | None = None,
                   limit: Limit = 50, cursor: str | None = None) -> CallToolResult:
        """List stories by stage then number, without their bodies, a page at a time.

        Filters: stage; agent; unassigned (no agent); blocked (true/false); ready
        (not blocked, every dependency in a later stage or gone); type. Returns
        total (all matches) and next_cursor (pass it back for the next page).
        """
        return _answer(lambda: pipeline.list_stories(
            stage=stage, agent=agent, unassigned=unassigned, blocked=blocked, ready=ready,
            kind=type, limit=limit, cursor=cursor))

    @server.tool(annotations=READ_ONLY)
    def story_view(id: Ref) -> CallToolResult:
        """One story: its fields, other front-matter keys, errors, files, body, and its
        last history rows."""
        return _answer(lambda: pipeline.view(id))

    @server.tool(annotations=READ_ONLY)
    def story_search(query: str,
                     stage: Stage | None = None, limit: Limit = 20) -> CallToolResult:
        """Full-text search over ids, names and bodies, best match first, with snippets.

        Plain words all have to match; `log*` is a prefix; quotes, AND/OR/NOT
        follow SQLite FTS5.
        """
        return _answer(lambda: pipeline.search(query, stage, limit))

    @server.tool(annotations=READ_ONLY)
    def story_log(id: Ref, limit: Limit = 50) -> CallToolResult:
        """One story's history, oldest first: created, moved, updated (which fields),
        deleted."""
        return _answer(lambda: pipeline.log(id, limit))

    @server.tool(annotations=READ_ONLY)
    def pipeline_status() -> CallToolResult:
        """Stories per stage, whether the daemon runs and is in sync, the last sync."""
        return _answer(pipeline.status)

    @server.tool(annotations=WRITES)
    def story_create(title: str,
                     type: Kind = "story",
                     stage: Stage | None = None, agent: str | None = None,
                     blocked: bool = False,
                     depends_on: list[int | str] | None = None) -> CallToolResult:
        """Create a story file with the next free number (never reused) in a stage
        (default: the first)."""
        return _answer(lambda: pipeline.create(title, type, stage, agent, blocked, depends_on))

    @server.tool(annotations=WRITES)
    def story_move(id: Ref, stage: Stage) -> CallToolResult:
        """Move a story to another stage (renames its file). `confirmed` says whether
        the daemon has synced it."""
        return _answer(lambda: pipeline.move(id, stage))

    @server.tool(annotations=WRITES)
    def story_update(id: Ref,
                     name: str | None = None, agent: str | None = None,
                     blocked: bool | None = None,
                     retry_count: Annotated[int, Field(ge=0)] | None = None,
                     depends_on: list[int | str] | None = None,
                     clear: list[Literal["name", "agent", "blocked", "retry_count",
                                         "depends_on"]] | None = None) -> CallToolResult:
        """Set fields of a story; `clear` lists fields to empty. Only those lines of
        the file change. Fails, writing nothing, if the file changed meanwhile."""
        given = {"name": name, "agent": agent, "blocked": blocked,
                 "retry_count": retry_count, "depends_on": depends_on}
        changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        both = sorted(set(changes) & set(clear or ()))
        if both:
            raise ToolError(f"{', '.join(both)}: given a value and listed in clear; "
                            "choose one")
        changes.update(dict.fromkeys(clear or ()))
        return _answer(lambda: pipeline.update(id, changes))

    @server.tool(annotations=WRITES)
    def story_claim(id: Ref,
                    agent: str) -> CallToolResult:
        """Set the story's agent to yours, only if it has none (or has you already).
        Of several claims at once exactly one wins; the others fail, naming it."""
        return _answer(lambda: pipeline.claim(id, agent))

    @server.resource("story://{story_id}", mime_type="text/markdown")
    def story_markdown(story_id: str) -> str:
        """A story's markdown file."""
        try:
            return pipeline.markdown(story_id)
        except PipelinedError as exc:
            raise ResourceError(one_line(exc)) from None

    return server
