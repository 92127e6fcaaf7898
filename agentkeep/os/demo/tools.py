"""The analyst's tools. Both reach the app database through the run's `dependencies`
(`{"app_db": path}`), so the agent object holds no connection and each call opens its own."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
from pathlib import Path

from agentkeep.agent import tool

MAX_ROWS = 50
MAX_CHARS = 8000  # of the JSON the model reads: a small model's context is small
MAX_CELL = 500
QUERY_SECONDS = 2.0

# the first word, after any leading comments
_FIRST_WORD = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*(\w+)", re.DOTALL)
_READS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}


class QueryRefused(ValueError):
    """The statement is not a single SELECT: it was not run."""


def _app_db(dependencies: dict) -> Path:
    path = (dependencies or {}).get("app_db")
    if not path:
        raise QueryRefused("no app database: the agent's dependencies have no 'app_db'")
    return Path(path)


def _authorize(action: int, *args: object) -> int:
    # a second guard behind the read-only connection: only reads get past the planner
    return sqlite3.SQLITE_OK if action in _READS else sqlite3.SQLITE_DENY


def run_sql(query: str, dependencies: dict) -> dict:
    """Run one read-only SQL SELECT on the application database (SQLite) and return the rows.
    At most 50 rows come back; aggregate or add LIMIT for more.

    Args:
        query: a single SELECT statement in SQLite's dialect (WITH ... SELECT is fine)
    """
    match = _FIRST_WORD.match(query or "")
    word = match.group(1).upper() if match else (query or "").strip()[:20]
    if word not in ("SELECT", "WITH"):
        raise QueryRefused(f"only a single SELECT statement is allowed, not {repr(word) if word else 'nothing'}")
    uri = f"{_app_db(dependencies).resolve().as_uri()}?mode=ro"
    deadline = time.monotonic() + QUERY_SECONDS
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        conn.set_authorizer(_authorize)
        conn.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)  # stops a runaway query
        try:
            cursor = conn.execute(query)
        except (sqlite3.ProgrammingError, sqlite3.Warning) as exc:  # "You can only execute one statement ..."
            raise QueryRefused(f"only a single SELECT statement is allowed ({exc})") from None
        except sqlite3.DatabaseError as exc:
            if "not authorized" in str(exc):
                raise QueryRefused("only a single SELECT statement is allowed: it may read, not write") from None
            raise
        columns = [c[0] for c in cursor.description or ()]
        fetched = cursor.fetchmany(MAX_ROWS + 1)
    rows, size = [], 0
    for row in fetched[:MAX_ROWS]:
        row = [v[:MAX_CELL] + "..." if isinstance(v, str) and len(v) > MAX_CELL else v for v in row]
        size += len(json.dumps(row, default=str))
        if size > MAX_CHARS:
            break
        rows.append(row)
    return {"columns": columns, "rows": rows, "row_count": len(rows), "truncated": len(rows) < len(fetched)}


@tool(requires_approval=True)
def send_report(to: str, subject: str, body: str, dependencies: dict) -> str:
    """Email a short report to a colleague. A person approves every report before it is sent.

    Args:
        to: the recipient's email address
        subject: the subject line
        body: the report, in plain text
    """
    if "@" not in to:
        raise ValueError(f"not an email address: {to!r}")
    with contextlib.closing(sqlite3.connect(_app_db(dependencies), timeout=10)) as conn, conn:
        cursor = conn.execute("insert into outbox (to_address, subject, body) values (?, ?, ?)", (to, subject, body))
    return f"report {cursor.lastrowid} queued in the outbox for {to}"
