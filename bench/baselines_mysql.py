"""Raw pymysql baselines: the floor agentkeep's MysqlDb figures are compared with.

The same rows as the raw sqlite3 and psycopg baselines (a session row, a run row with ~1 KB
of JSON), written and read with pymysql directly: hand-written SQL, pre-serialised JSON sent
to a JSON column, naive UTC datetimes to DATETIME(6) columns, binary-collated ids, no
validation. Each runs in its own new database on the server of AGENTKEEP_MYSQL_URL, dropped
after the case. pymysql's defaults are kept: parameters are interpolated client-side (no
server-side prepared statements), and with autocommit off the server opens a transaction by
itself, so a write pair is INSERT, INSERT, COMMIT: 3 round trips.
"""

from __future__ import annotations

import datetime as dt
import json

from bench import data, mysql
from bench.baselines import list_session_rows, new_session_rows
from bench.common import time_pages, time_writes

EPOCH = dt.datetime(2025, 1, 1)  # naive UTC: DATETIME(6) keeps no zone

SCHEMA = """
CREATE TABLE sessions (
  session_id VARCHAR(255) COLLATE utf8mb4_bin PRIMARY KEY, session_type VARCHAR(255) NOT NULL,
  user_id VARCHAR(255) COLLATE utf8mb4_bin, agent_id VARCHAR(255) COLLATE utf8mb4_bin,
  name TEXT, data JSON NOT NULL, revision BIGINT NOT NULL, run_count BIGINT NOT NULL,
  created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NOT NULL,
  INDEX sessions_user_updated (user_id, updated_at)
);
CREATE TABLE runs (
  run_id VARCHAR(255) COLLATE utf8mb4_bin PRIMARY KEY, session_id VARCHAR(255) COLLATE utf8mb4_bin NOT NULL,
  seq BIGINT NOT NULL, user_id VARCHAR(255) COLLATE utf8mb4_bin, status VARCHAR(255) NOT NULL,
  data JSON NOT NULL, created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NOT NULL,
  UNIQUE INDEX runs_session_seq (session_id, seq)
);
"""

INSERT_SESSION = "INSERT INTO sessions VALUES (%s, 'agent', %s, 'support-agent', %s, %s, 1, 1, %s, %s)"
INSERT_RUN = "INSERT INTO runs VALUES (%s, %s, 1, %s, 'completed', %s, %s, %s)"


def _setup(ctx):
    import pymysql

    name = ctx.schema()
    mysql.create_schema(name)
    con = mysql.connect(name, autocommit=False)
    with con.cursor() as cur:
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                cur.execute(stmt)
    ctx.note(f"{mysql.server_settings(con)}, pymysql {pymysql.__version__}")
    return con


def raw_mysql_new_session(ctx) -> None:
    n = ctx.sizes["n"]
    con = _setup(ctx)
    rows = new_session_rows(data.seed("raw_new_session"), n + 1)
    times = [EPOCH + dt.timedelta(microseconds=i) for i in range(n + 1)]

    def one(i):
        sid, uid, name, sdata, rid, rdata = rows[i]
        t = times[i]
        with con.cursor() as cur:  # autocommit off: the first INSERT opens the transaction
            cur.execute(INSERT_SESSION, (sid, uid, name, sdata, t, t))
            cur.execute(INSERT_RUN, (rid, sid, uid, rdata, t, t))
        con.commit()

    time_writes(ctx, one, n, f"raw pymysql {n:,} inserts")
    con.close()


def raw_mysql_list_sessions(ctx) -> None:
    z = ctx.sizes
    con = _setup(ctx)
    us, rows = list_session_rows(z, lambda i: EPOCH + dt.timedelta(microseconds=i))
    with con.cursor() as cur:
        cur.executemany(INSERT_SESSION, rows)  # pymysql sends multi-row INSERTs
        con.commit()
        cur.execute("ANALYZE TABLE sessions")
        cur.fetchall()
    con.autocommit(True)
    first_q = "SELECT * FROM sessions WHERE user_id = %s ORDER BY updated_at DESC LIMIT %s"
    # keyset for later pages: updated_at is unique in this table, so it is the whole key
    next_q = "SELECT * FROM sessions WHERE user_id = %s AND updated_at < %s ORDER BY updated_at DESC LIMIT %s"
    limit = z["limit"]

    def page(u, cursor):
        with con.cursor() as cur:
            if cursor is None:
                cur.execute(first_q, (u, limit))
            else:
                cur.execute(next_q, (u, cursor, limit))
            got = [(*r[:5], json.loads(r[5]), *r[6:]) for r in cur.fetchall()]  # JSON as objects, as psycopg
        return got, (got[-1][9] if len(got) == limit else None)

    time_pages(ctx, page, us, z)
    with con.cursor() as cur:
        cur.execute("EXPLAIN " + first_q, (us[0], limit))
        cols = [d[0] for d in cur.description]
        plan = [dict(zip(cols, r)) for r in cur.fetchall()]
    ctx.note("plan: " + "; ".join(f"{p['table']} key={p['key']} {p['Extra'] or ''}".strip() for p in plan))
    con.close()
