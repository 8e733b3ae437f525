"""`pipelined serve`: the HTTP API, the change stream, the board and MCP over HTTP.

A Starlette app over `service.Pipeline` (the reads and file edits the MCP tools
use) and `changefeed.ChangeFeed`; the daemon stays network-free. Story text is
untrusted: JSON carries it as data, the board sets it as text, and markdown is
rendered here with raw HTML off and unsafe links dropped. Every response has a
Content-Security-Policy without inline script.

Who may do what (docs/http.md): reads are open to whoever reaches the port;
writes (POST, and all of `/mcp`, whose tools write) need the bearer token of
`--token-file`, or come from a loopback peer with no Origin or our own (the
board's same-origin requests; a local MCP client). A Host header outside the
allow-list is refused (DNS rebinding).
"""

from __future__ import annotations

import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from ipaddress import ip_address
from typing import Any

from markdown_it import MarkdownIt
from mcp.server.transport_security import TransportSecuritySettings
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelined.changefeed import ChangeFeed
from pipelined.config import Config
from pipelined.errors import (
    AmbiguousStory,
    DatabaseError,
    EditConflict,
    FieldError,
    PipelinedError,
    StoryClaimed,
    StoryNotFound,
)
from pipelined.mcp_server import build_server
from pipelined.service import MAX_LIMIT, Pipeline, body_of, one_line

__all__ = ["CSP", "Guard", "build_app"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]
KEEPALIVE_S = 15  # an SSE comment this often keeps proxies from closing the stream
SEND_TIMEOUT_S = 30  # a client that reads nothing this long is dropped
MAX_BODY = 64 * 1024
_STATUS = {StoryNotFound: 404, AmbiguousStory: 409, EditConflict: 409, StoryClaimed: 409,
           DatabaseError: 503}
_WRITING = {"POST", "PUT", "PATCH", "DELETE"}


def _markdown() -> MarkdownIt:
    """CommonMark with raw HTML and images off; markdown-it's own link check drops
    javascript:, vbscript:, file: and data: links; links open in a new tab."""
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable("table")
    md.disable("image")  # `![alt](url)` stays text: a story cannot make the board fetch

    def link_open(renderer: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        tokens[idx].attrSet("rel", "noopener noreferrer nofollow")
        tokens[idx].attrSet("target", "_blank")
        return str(renderer.renderToken(tokens, idx, options, env))

    md.add_render_rule("link_open", link_open)
    return md


class Guard:
    """The Host allow-list, the write rule and the security headers (pure ASGI, so the
    event stream and MCP go through it too)."""

    def __init__(self, app: ASGIApp, hosts: set[str], origins: set[str],
                 token: str | None) -> None:
        self.app, self.hosts, self.origins, self.token = app, hosts, origins, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        problem = None
        if headers.get("host", "") not in self.hosts:
            problem = (421, "this Host is not one the server answers to (see --allow-host)")
        elif (scope["method"] in _WRITING or scope["path"].startswith("/mcp")) and \
                not self._may_write(scope, headers):
            problem = (403, "writes need the bearer token (--token-file), or a same-origin "
                            "request over loopback")
        if problem is not None:
            await _secured(JSONResponse({"error": problem[1]}, problem[0]))(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, send_secured)

    def _may_write(self, scope: Scope, headers: dict[str, str]) -> bool:
        given = headers.get("authorization", "")
        if self.token is not None and given.startswith("Bearer ") and hmac.compare_digest(
                given[7:].strip().encode(), self.token.encode()):
            return True
        client = scope.get("client")
        try:
            loopback = client is not None and ip_address(client[0]).is_loopback
        except ValueError:
            loopback = False
        origin = headers.get("origin")
        return loopback and (origin is None or origin in self.origins)


def _secured(response: Response) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)
        await response(scope, receive, send_secured)
    return app


def _error(exc: PipelinedError) -> JSONResponse:
    status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 400)
    return JSONResponse({"error": one_line(exc)}, status)


def _endpoint(work: Callable[[Request], Any]) -> Callable[[Request], Awaitable[Response]]:
    """A JSON endpoint: the work runs in a thread (SQLite, file edits); a PipelinedError
    is its one line with a fitting status."""
    async def endpoint(request: Request) -> Response:
        try:
            value = await run_in_threadpool(work, request)
        except PipelinedError as exc:
            return _error(exc)
        return JSONResponse(value)
    return endpoint


async def _posted(request: Request, work: Callable[[dict[str, Any]], Any]) -> Response:
    """A write: the JSON body to `work` (in a thread), its answer or its one line."""
    try:
        body = await _json_body(request)
        value = await run_in_threadpool(work, body)
    except PipelinedError as exc:
        return _error(exc)
    return JSONResponse(value)


def _flag(request: Request, name: str) -> bool | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    return value.lower() in ("1", "true", "yes", "")


def _int(request: Request, name: str, default: int, lowest: int = 1) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    number = _whole_number(value)
    if number is None or not lowest <= number <= MAX_LIMIT:
        raise FieldError(name, value, f"expected {lowest} to {MAX_LIMIT}")
    return number


def _whole_number(value: str) -> int | None:
    """Up to 18 ASCII digits as an int (SQLite's integers stop at 2**63 - 1, and int()
    refuses more than 4,300 digits), else None."""
    if value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return None


async def _json_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise FieldError("body", f"{len(body)} bytes", f"at most {MAX_BODY}")
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        raise FieldError("body", body[:40].decode("utf-8", "replace"), "not JSON") from None
    if not isinstance(value, dict):
        raise FieldError("body", value, "expected a JSON object")
    return value


class _Api:
    """The endpoints over one Pipeline and one ChangeFeed."""

    def __init__(self, pipeline: Pipeline, feed: ChangeFeed) -> None:
        self.pipeline, self.feed, self.md = pipeline, feed, _markdown()
        self.static = resources.files("pipelined") / "static"

    def stories(self, request: Request) -> Any:
        q = request.query_params
        return self.pipeline.list_stories(
            stage=q.get("stage"), agent=q.get("agent"),
            unassigned=bool(_flag(request, "unassigned")), blocked=_flag(request, "blocked"),
            ready=bool(_flag(request, "ready")), kind=q.get("type"),
            limit=_int(request, "limit", 50), cursor=q.get("cursor"), compact=False)

    def story(self, request: Request) -> Any:
        shown = self.pipeline.show(request.path_params["story_id"])
        if _flag(request, "html"):
            shown["html"] = self.md.render(body_of(shown["content"]) or "")
        return shown

    def search(self, request: Request) -> Any:
        q = request.query_params
        return self.pipeline.search(q.get("q", ""), q.get("stage"), _int(request, "limit", 20))

    def log(self, request: Request) -> Any:
        story_id = request.query_params.get("id")
        limit = _int(request, "limit", 100)
        return self.pipeline.log(story_id, limit) if story_id else self.pipeline.recent(limit)

    def cards(self, request: Request) -> Any:
        q = request.query_params
        return self.pipeline.cards(q.get("stage", ""), q.get("cursor"),
                                   _int(request, "limit", 200), ref=q.get("id"),
                                   agent=q.get("agent"), text=q.get("q"))

    def board(self, request: Request) -> Any:
        q = request.query_params
        # per_column=0: the counts alone (the board's, under a filter)
        return self.pipeline.board(_int(request, "per_column", 200, lowest=0),
                                   agent=q.get("agent"),
                                   text=q.get("q"))

    async def move(self, request: Request) -> Response:
        def work(body: dict[str, Any]) -> Any:
            stage = body.get("stage")
            if not isinstance(stage, str):
                raise FieldError("stage", stage, "expected a stage name")
            return self.pipeline.move(request.path_params["story_id"], stage)

        return await _posted(request, work)

    async def update(self, request: Request) -> Response:
        return await _posted(request, lambda body: self.pipeline.update(
            request.path_params["story_id"], body))

    async def events(self, request: Request) -> Response:
        last = request.headers.get("last-event-id") or request.query_params.get("since")
        after = _whole_number(last) if last else None  # None: from now
        if last and after is None:
            return _error(FieldError("since", last, "expected a change's sequence number"))

        async def stream() -> AsyncIterator[dict[str, Any]]:
            async for row in self.feed.rows(after):
                yield {"id": str(row["seq"]), "event": "change",
                       "data": json.dumps(row, ensure_ascii=False, separators=(",", ":"))}

        return EventSourceResponse(stream(), ping=KEEPALIVE_S, send_timeout=SEND_TIMEOUT_S)

    async def healthz(self, _request: Request) -> Response:
        try:
            status = await run_in_threadpool(self.pipeline.status)
        except PipelinedError as exc:
            return JSONResponse({"ok": False, "error": one_line(exc)}, 503)
        return JSONResponse({"ok": True, "daemon": status["daemon"]})

    async def index(self, _request: Request) -> Response:
        return Response((self.static / "index.html").read_bytes(), media_type="text/html")


def build_app(config: Config, *, hosts: set[str], origins: set[str],
              token: str | None) -> ASGIApp:
    """The whole server for one root and database."""
    pipeline = Pipeline(config)
    feed = ChangeFeed(pipeline._read)
    api = _Api(pipeline, feed)
    mcp_app = build_server(config).streamable_http_app(
        streamable_http_path="/mcp",
        transport_security=TransportSecuritySettings(allowed_hosts=sorted(hosts),
                                                     allowed_origins=sorted(origins)))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await feed.start()
        try:
            async with mcp_app.router.lifespan_context(mcp_app):
                yield
        finally:
            await feed.stop()

    routes = [
        Route("/", api.index),
        Route("/healthz", api.healthz),
        Route("/api/status", _endpoint(lambda _r: pipeline.status())),
        Route("/api/board", _endpoint(api.board)),
        Route("/api/cards", _endpoint(api.cards)),
        Route("/api/stories", _endpoint(api.stories)),
        Route("/api/stories/{story_id}", _endpoint(api.story), methods=["GET"]),
        Route("/api/stories/{story_id}", api.update, methods=["POST"]),
        Route("/api/stories/{story_id}/move", api.move, methods=["POST"]),
        Route("/api/search", _endpoint(api.search)),
        Route("/api/log", _endpoint(api.log)),
        Route("/api/events", api.events),
        Mount("/static", StaticFiles(directory=str(api.static)), name="static"),
        Mount("/", app=mcp_app),
    ]
    return Guard(Starlette(routes=routes, lifespan=lifespan), hosts, origins, token)
