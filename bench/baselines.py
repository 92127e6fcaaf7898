"""Raw sqlite3 baselines: the floor agentkeep's figures are compared with.

They store the same rows as agentkeep would (a session row, a run row with ~1 KB JSON)
but with pre-serialised payloads, hand-written SQL and no validation: storage cost only.
"""

from __future__ import annotations

import importlib
import json
import sqlite3

from bench import data
from bench.common import time_pages, time_writes

SCHEMA = """
CREATE TABLE sessions (
  session_id TEXT PRIMARY KEY, session_type TEXT NOT NULL, user_id TEXT, agent_id TEXT,
  name TEXT, data TEXT NOT NULL, revision INTEGER NOT NULL, run_count INTEGER NOT NULL,
  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL
);
CREATE INDEX sessions_user_updated ON sessions (user_id, updated_at, session_id);
CREATE TABLE runs (
  run_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, seq INTEGER NOT NULL, user_id TEXT,
  status TEXT NOT NULL, data TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX runs_session_seq ON runs (session_id, seq);
"""

INSERT_SESSION = "INSERT INTO sessions VALUES (?, 'agent', ?, 'support-agent', ?, ?, 1, 1, ?, ?)"
INSERT_RUN = "INSERT INTO runs VALUES (?, ?, 1, ?, 'completed', ?, ?, ?)"


def connect(path: str, synchronous: str) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)  # explicit BEGIN/COMMIT below
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={synchronous}")
    con.executescript(SCHEMA)
    return con


def new_session_rows(rnd, n: int, n_users: int = 100):
    """(session_id, user_id, name, session JSON, run_id, run JSON) per new session + first run."""
    us = [f"user-{i:03d}" for i in range(n_users)]
    out = []
    for i in range(n):
        sp = data.session_payload(rnd, i)
        out.append(
            (data.hex_id(rnd, 16), us[i % n_users], sp["name"], json.dumps(sp),
             data.hex_id(rnd, 16), json.dumps(data.run_payload(rnd, 0)))
        )
    return out


def raw_new_session(ctx, synchronous: str) -> None:
    n = ctx.sizes["n"]
    con = connect(ctx.path("raw.db"), synchronous)
    rows = new_session_rows(data.seed("raw_new_session"), n + 1)
    now = 1_700_000_000_000_000

    def one(i):
        sid, uid, name, sdata, rid, rdata = rows[i]
        con.execute("BEGIN")
        con.execute(INSERT_SESSION, (sid, uid, name, sdata, now + i, now + i))
        con.execute(INSERT_RUN, (rid, sid, uid, rdata, now + i, now + i))
        con.execute("COMMIT")

    time_writes(ctx, one, n, f"raw {n:,} inserts")
    ctx.note(f"WAL, synchronous={synchronous}, sqlite {sqlite3.sqlite_version}")
    con.close()


def raw_new_session_full(ctx) -> None:
    raw_new_session(ctx, "FULL")


def raw_new_session_normal(ctx) -> None:
    raw_new_session(ctx, "NORMAL")


def list_session_rows(z: dict, stamp) -> tuple[list[str], list[tuple]]:
    """The users and the session rows (session_id, user_id, name, session JSON, created_at,
    updated_at) of the list_sessions baselines; row i is stamped `stamp(i)`, unique, so
    updated_at alone orders them."""
    rnd = data.seed("raw_list_sessions")
    us = [f"user-{i:03d}" for i in range(z["users"])]
    rows = []
    for i in range(z["sessions"]):
        sp = data.session_payload(rnd, i)
        rows.append((data.hex_id(rnd, 16), us[i % len(us)], sp["name"], json.dumps(sp), stamp(i), stamp(i)))
    return us, rows


def raw_list_sessions(ctx) -> None:
    z = ctx.sizes
    con = connect(ctx.path("raw.db"), "NORMAL")
    us, rows = list_session_rows(z, lambda i: 1_700_000_000_000_000 + i)
    con.execute("BEGIN")
    con.executemany(INSERT_SESSION, rows)
    con.execute("COMMIT")
    con.execute("ANALYZE")
    first_q = "SELECT * FROM sessions WHERE user_id = ? ORDER BY updated_at DESC, session_id DESC LIMIT ?"
    next_q = (
        "SELECT * FROM sessions WHERE user_id = ? AND (updated_at, session_id) < (?, ?) "
        "ORDER BY updated_at DESC, session_id DESC LIMIT ?"
    )
    limit = z["limit"]

    def page(u, cursor):
        if cursor is None:
            rows = con.execute(first_q, (u, limit)).fetchall()
        else:
            rows = con.execute(next_q, (u, cursor[0], cursor[1], limit)).fetchall()
        return rows, ((rows[-1][9], rows[-1][0]) if len(rows) == limit else None)

    time_pages(ctx, page, us, z)
    plan = con.execute("EXPLAIN QUERY PLAN " + first_q, (us[0], limit)).fetchall()
    ctx.note("plan: " + "; ".join(r[-1] for r in plan))
    con.close()


def _lazy(module: str, name: str):
    def run(ctx) -> None:  # a server's driver is imported only by that server's raw cases
        getattr(importlib.import_module(f"bench.{module}"), name)(ctx)

    return run


BASELINES = {
    "raw_new_session_full": ("new_session", raw_new_session_full),
    "raw_new_session_normal": ("new_session", raw_new_session_normal),
    "raw_list_sessions": ("list_sessions", raw_list_sessions),
    # raw psycopg (PostgreSQL): bench/baselines_pg.py
    "raw_pg_new_session": ("new_session", _lazy("baselines_pg", "raw_pg_new_session")),
    "raw_pg_list_sessions": ("list_sessions", _lazy("baselines_pg", "raw_pg_list_sessions")),
    "raw_pg_spans": ("spans", _lazy("baselines_pg", "raw_pg_spans")),
    # raw pymysql (MySQL / MariaDB): bench/baselines_mysql.py
    "raw_mysql_new_session": ("new_session", _lazy("baselines_mysql", "raw_mysql_new_session")),
    "raw_mysql_list_sessions": ("list_sessions", _lazy("baselines_mysql", "raw_mysql_list_sessions")),
}
