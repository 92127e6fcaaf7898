"""Raw psycopg baselines: the floor agentkeep's PostgresDb figures are compared with.

The same rows as the raw sqlite3 baselines (a session row, a run row with ~1 KB of JSON),
written and read with psycopg 3 directly: hand-written SQL, pre-serialised JSON sent to a
JSONB column, timezone-aware datetimes to timestamptz columns, no validation. Each runs in
its own new schema on the server of AGENTKEEP_POSTGRES_URL, dropped after the case.
psycopg's defaults are kept (statements prepared server-side after 5 runs, JSONB read
back as Python objects, BEGIN sent before the first statement of each transaction).
"""

from __future__ import annotations

import datetime as dt

from bench import data, pg
from bench.baselines import list_session_rows, new_session_rows
from bench.common import time_pages, time_writes

UTC = dt.timezone.utc
EPOCH = dt.datetime(2025, 1, 1, tzinfo=UTC)

SCHEMA = """
CREATE TABLE {s}.sessions (
  session_id TEXT PRIMARY KEY, session_type TEXT NOT NULL, user_id TEXT, agent_id TEXT,
  name TEXT, data JSONB NOT NULL, revision BIGINT NOT NULL, run_count BIGINT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_user_updated ON {s}.sessions (user_id, updated_at);
CREATE TABLE {s}.runs (
  run_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, seq BIGINT NOT NULL, user_id TEXT,
  status TEXT NOT NULL, data JSONB NOT NULL, created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX runs_session_seq ON {s}.runs (session_id, seq);
"""

INSERT_SESSION = "INSERT INTO {s}.sessions VALUES (%s, 'agent', %s, 'support-agent', %s, %s, 1, 1, %s, %s)"
INSERT_RUN = "INSERT INTO {s}.runs VALUES (%s, %s, 1, %s, 'completed', %s, %s, %s)"


def _setup(ctx):
    import psycopg

    schema = ctx.schema()
    con = pg.connect(autocommit=True)
    con.execute(f"CREATE SCHEMA {schema}")
    for stmt in SCHEMA.format(s=schema).split(";"):
        if stmt.strip():
            con.execute(stmt)
    con.autocommit = False
    ctx.note(f"{pg.server_settings(con)}, psycopg {psycopg.__version__} ({psycopg.pq.__impl__})")
    return con, schema


def raw_pg_new_session(ctx) -> None:
    n = ctx.sizes["n"]
    con, s = _setup(ctx)
    ins_session, ins_run = INSERT_SESSION.format(s=s), INSERT_RUN.format(s=s)
    warm = 6  # untimed warm-up pairs, past psycopg's prepare threshold (5)
    rows = new_session_rows(data.seed("raw_new_session"), n + warm)
    times = [EPOCH + dt.timedelta(microseconds=i) for i in range(n + warm)]

    def one(i):
        sid, uid, name, sdata, rid, rdata = rows[i]
        t = times[i]
        with con.cursor() as cur:  # psycopg sends BEGIN before the first INSERT
            cur.execute(ins_session, (sid, uid, name, sdata, t, t))
            cur.execute(ins_run, (rid, sid, uid, rdata, t, t))
        con.commit()

    time_writes(ctx, one, n, f"raw psycopg {n:,} inserts", warm)
    con.close()


def raw_pg_list_sessions(ctx) -> None:
    z = ctx.sizes
    con, s = _setup(ctx)
    us, rows = list_session_rows(z, lambda i: EPOCH + dt.timedelta(microseconds=i))
    with con.cursor() as cur:
        cur.executemany(INSERT_SESSION.format(s=s), rows)
    con.commit()
    con.autocommit = True
    con.execute(f"ANALYZE {s}.sessions")
    first_q = f"SELECT * FROM {s}.sessions WHERE user_id = %s ORDER BY updated_at DESC LIMIT %s"
    # keyset for later pages: updated_at is unique in this table, so it is the whole key
    next_q = (f"SELECT * FROM {s}.sessions WHERE user_id = %s AND updated_at < %s "
              f"ORDER BY updated_at DESC LIMIT %s")
    limit = z["limit"]

    def page(u, cursor):
        if cursor is None:
            got = con.execute(first_q, (u, limit)).fetchall()
        else:
            got = con.execute(next_q, (u, cursor, limit)).fetchall()
        return got, (got[-1][9] if len(got) == limit else None)

    time_pages(ctx, page, us, z)
    plan = con.execute("EXPLAIN " + first_q, (us[0], limit)).fetchall()
    ctx.note("plan: " + "; ".join(r[0].strip() for r in plan))
    con.close()


SPAN_COLUMNS = ("span_id", "trace_id", "parent_span_id", "name", "kind", "status_code", "status_message",
                "start_time", "end_time", "duration_ms", "attributes", "events")
SPAN_SCHEMA = """
CREATE TABLE {s}.spans (
  span_id TEXT PRIMARY KEY, trace_id TEXT NOT NULL, parent_span_id TEXT, name TEXT, kind TEXT,
  status_code TEXT, status_message TEXT, start_time TIMESTAMPTZ NOT NULL, end_time TIMESTAMPTZ,
  duration_ms DOUBLE PRECISION, attributes JSONB, events JSONB
);
CREATE INDEX spans_trace_start ON {s}.spans (trace_id, start_time);
CREATE TABLE {s}.traces (
  trace_id TEXT PRIMARY KEY, span_count BIGINT NOT NULL, start_time TIMESTAMPTZ, end_time TIMESTAMPTZ
);
"""


def raw_pg_spans(ctx) -> None:
    """The spans of the span-ingest benchmark, hand-written: per batch one transaction, the
    spans upserted with executemany (psycopg pipelines it), then one upsert per trace that
    adds the batch's span count. No validation, no duplicate check, no trace merge in Python."""
    from psycopg.types.json import Jsonb

    z = ctx.sizes
    con, s = _setup(ctx)
    with con.cursor() as cur:
        for stmt in SPAN_SCHEMA.format(s=s).split(";"):
            if stmt.strip():
                cur.execute(stmt)
    con.commit()
    names = ", ".join(SPAN_COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in SPAN_COLUMNS[1:])
    ins_span = (f"INSERT INTO {s}.spans ({names}) VALUES ({', '.join(['%s'] * len(SPAN_COLUMNS))}) "
                f"ON CONFLICT (span_id) DO UPDATE SET {updates}")
    ins_trace = (f"INSERT INTO {s}.traces VALUES (%s, %s, %s, %s) ON CONFLICT (trace_id) DO UPDATE SET "
                 f"span_count = {s}.traces.span_count + EXCLUDED.span_count, "
                 f"start_time = LEAST({s}.traces.start_time, EXCLUDED.start_time), "
                 f"end_time = GREATEST({s}.traces.end_time, EXCLUDED.end_time)")
    rnd = data.seed("spans")
    per_trace = z["batch"] // z["traces_per_batch"]
    batches = [data.span_batch(rnd, b, z["traces_per_batch"], per_trace) for b in range(z["batches"] + 1)]

    def one(i):
        spans = batches[i]
        traces: dict[str, list] = {}
        for sp in spans:
            t = traces.setdefault(sp["trace_id"], [0, sp["start_time"], sp.get("end_time")])
            t[0] += 1
            t[1] = min(t[1], sp["start_time"])
        with con.cursor() as cur:
            cur.executemany(ins_span, [[Jsonb(sp.get(c)) if c in ("attributes", "events") else sp.get(c)
                                        for c in SPAN_COLUMNS] for sp in spans])
            cur.executemany(ins_trace, [(tid, n, start, end) for tid, (n, start, end) in traces.items()])
        con.commit()

    time_writes(ctx, one, z["batches"], f"raw psycopg {z['batches']} span batches", warm=1)
    ctx.metrics["rate"] *= z["batch"]  # batches/s -> spans/s
    con.close()
