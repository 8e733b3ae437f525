"""Full-text search over story ids, names and content (FTS5, migration 0004).

Imports only apsw and the standard library so `pipelined search` starts fast.

A query is read in one of two ways:

- plain words (the usual case): each whitespace-separated word is quoted for
  FTS5, so `coder-1`, `a.b`, `don't` or `c++` never cause a syntax error;
  every word must match (AND); a word ending in `*` is a prefix (`log*`).
- FTS5 syntax, when the query visibly uses it: a double quote, a bare
  `AND`/`OR`/`NOT` (upper case, as FTS5 wants), `NEAR(`, parentheses, a
  leading `^`, or a `id:`/`name:`/`content:` column filter. It is then passed
  to FTS5 as written, and a syntax error is one `Error:` line.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import apsw

from pipelined.errors import SearchQueryError
from pipelined.store import queries

__all__ = ["BUILDING_NOTE", "SearchHit", "body_snippet", "fts_query", "index_building", "search",
           "uses_fts_syntax"]

SNIPPET_OPEN = "**"
SNIPPET_CLOSE = "**"
SNIPPET_ELLIPSIS = "…"
SNIPPET_TOKENS = 12
SNIPPET_SCAN = 65_536
# bm25 weights of the columns id, name, content: a hit in a name counts most.
WEIGHTS = (5.0, 10.0, 1.0)

_OPERATOR = re.compile(
    r'"|(?:^|\s)(?:AND|OR|NOT)(?:\s|$)|\bNEAR\(|[()]|(?:^|\s)\^|'
    r"(?:^|\s|[({-])(?:id|name|content)\s*:")


@dataclass(frozen=True)
class SearchHit:
    id: str
    stage: str
    name: str | None
    rank: float
    snippet: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "stage": self.stage, "name": self.name,
                "rank": self.rank, "snippet": self.snippet}


def uses_fts_syntax(query: str) -> bool:
    """True when the query uses FTS5 operators and is passed through as written."""
    return bool(_OPERATOR.search(query))


def _quote(word: str) -> str:
    prefix = word.endswith("*") and len(word.rstrip("*")) > 0
    word = word.rstrip("*") if prefix else word
    quoted = '"' + word.replace('"', '""') + '"'
    return quoted + "*" if prefix else quoted


def fts_query(query: str) -> str:
    """The FTS5 MATCH expression for what the user typed (see the module docstring)."""
    if not query.strip():
        raise SearchQueryError(query, "the query is empty")
    if uses_fts_syntax(query):
        return query
    return " ".join(_quote(word) for word in query.split())


def search(conn: apsw.Connection, query: str, stage: str | None = None,
           limit: int | None = 20,
           marks: tuple[str, str] = (SNIPPET_OPEN, SNIPPET_CLOSE)) -> list[SearchHit]:
    """Stories matching `query`, best first (bm25), each with a snippet whose matches
    are between `marks`."""
    if not queries.table_exists(conn, "pipeline_search"):
        raise SearchQueryError(query, "this database has no search index yet (start "
                               "`pipelined run` once with this version to add it)")
    match = fts_query(query)
    sql = (
        "SELECT p.id, p.stage, p.name, "
        "bm25(pipeline_search, ?, ?, ?) AS score, p.content "
        "FROM pipeline_search JOIN pipeline_items p ON p.rowid = pipeline_search.rowid "
        "WHERE pipeline_search MATCH ?"
    )
    params: list[Any] = [*WEIGHTS, match]
    if stage is not None:
        sql += " AND p.stage = ?"
        params.append(stage)
    sql += " ORDER BY score, p.id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    try:
        rows = conn.execute(sql, params).fetchall()
    except apsw.SQLError as exc:  # the schema is known good: only MATCH can be wrong
        raise SearchQueryError(query, _fts_reason(str(exc))) from None
    terms = _terms(query)
    return [SearchHit(id=str(r[0]), stage=str(r[1]),
                      name=None if r[2] is None else str(r[2]),
                      rank=float(r[3]) if isinstance(r[3], int | float) else 0.0,
                      snippet=body_snippet(None if r[4] is None else str(r[4]), terms, marks))
            for r in rows]


# -- snippets: from the body, not the front matter ---------------------------------------

_FRONT_MATTER = re.compile(r"\A\ufeff?-{3,}[ \t]*\r?\n.*?^-{3,}[ \t]*(?:\r?\n|\Z)",
                           re.DOTALL | re.MULTILINE)
_WORD = re.compile(r"[^\W_]+")  # FTS5's unicode61: letters and digits; `_` separates
_KEYWORDS = {"AND", "OR", "NOT", "NEAR"}


def _fold(text: str) -> str:
    """Case and accents off, as the index's `remove_diacritics 2` folds them."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _terms(query: str) -> list[tuple[str, bool]]:
    """The query's words as (folded word, is a prefix), operators and filters left out."""
    terms = []
    for raw in re.findall(r'[^\s"()^]+', query):
        if raw in _KEYWORDS or raw.startswith("NEAR"):
            continue
        word = raw.split(":", 1)[1] if re.match(r"(?:id|name|content):", raw) else raw
        prefix = word.endswith("*")
        terms += [(_fold(w), prefix) for w in _WORD.findall(word.rstrip("*"))]
    return terms


def body_snippet(content: str | None, terms: list[tuple[str, bool]],
                 marks: tuple[str, str] = (SNIPPET_OPEN, SNIPPET_CLOSE)) -> str:
    """About SNIPPET_TOKENS words of the body (the file without its front matter) around
    the first word that matches, matches between `marks`, `…` where text was cut; the
    body's first words when only the id, the name or the front matter matched."""
    if not content:
        return ""
    match = _FRONT_MATTER.match(content)
    body = content[match.end():] if match else content
    # A match is looked for in the first SNIPPET_SCAN characters: a 1 MiB body whose
    # name alone matched costs no full scan.
    words = body[:SNIPPET_SCAN].split()
    if all(len(mark) == 1 for mark in marks):  # one-character marks (the terminal's):
        gone = {ord(mark): None for mark in marks}  # the story's own ones must not mark
        words = [word.translate(gone) for word in words]
    if not words:
        return ""

    def matches(token: str) -> bool:
        folded = _fold(token)
        return any(folded.startswith(term) if prefix else folded == term
                   for term, prefix in terms)

    def marked(word: str) -> str:  # only the matching letters, not the `.` after them
        return _WORD.sub(lambda m: f"{marks[0]}{m[0]}{marks[1]}" if matches(m[0]) else m[0],
                         word)

    first = next((i for i, word in enumerate(words)
                  if any(matches(t) for t in _WORD.findall(word))), 0)
    start = max(0, min(first - SNIPPET_TOKENS // 3, len(words) - SNIPPET_TOKENS))
    shown = words[start:start + SNIPPET_TOKENS]
    text = " ".join(marked(w) for w in shown)
    return ((SNIPPET_ELLIPSIS if start > 0 else "") + text
            + (SNIPPET_ELLIPSIS if start + SNIPPET_TOKENS < len(words) else ""))


def _fts_reason(message: str) -> str:
    reason = message.removeprefix("SQLError:").strip()
    return " ".join(reason.split()) or "FTS5 cannot parse it"


BUILDING_NOTE = ("the search index is still being built after a first import: "
                 "stories may be missing from the matches for a few seconds")


def index_building(conn: apsw.Connection) -> bool:
    """True while a first import's search index is owed (store.search_build.SEARCH_SUSPENDED):
    the rows are all there, the index not yet."""
    return conn.execute("SELECT 1 FROM daemon_meta WHERE key = 'search_suspended'"
                        ).fetchone() is not None
