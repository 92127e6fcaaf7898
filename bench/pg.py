"""PostgreSQL plumbing for the bench: the server URL, a reachability probe, and the
per-case schemas (created by the cases, dropped after each case). psycopg is imported
lazily, so the other backends never load it."""

from __future__ import annotations

import os
import re

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def url() -> str:
    """The server agentkeep's PostgresDb and the raw psycopg baselines connect to."""
    return os.environ.get("AGENTKEEP_POSTGRES_URL") or DEFAULT_URL


def conninfo(db_url: str | None = None) -> str:
    """The URL as libpq takes it (psycopg does not know SQLAlchemy's `+psycopg` suffix)."""
    u = db_url or url()
    return re.sub(r"^(postgres|postgresql)\+psycopg://", "postgresql://", u)


def shown(db_url: str | None = None) -> str:
    """The URL with any password hidden."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", db_url or url())


def connect(autocommit: bool = False, **kwargs):
    import psycopg

    return psycopg.connect(conninfo(), autocommit=autocommit, **kwargs)


def probe(timeout: int = 3) -> tuple[bool, str]:
    """(True, "PostgreSQL 15.20, synchronous_commit=on, fsync=on") or (False, why)."""
    try:
        import psycopg
    except ImportError as exc:
        return False, f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(conninfo(), autocommit=True, connect_timeout=timeout) as con:
            version = con.execute("SHOW server_version").fetchone()[0].split()[0]
            sync = con.execute("SHOW synchronous_commit").fetchone()[0]
            fsync = con.execute("SHOW fsync").fetchone()[0]
        return True, f"PostgreSQL {version}, synchronous_commit={sync}, fsync={fsync}, psycopg {psycopg.__version__}"
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return False, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def server_settings(con) -> str:
    sync = con.execute("SHOW synchronous_commit").fetchone()[0]
    fsync = con.execute("SHOW fsync").fetchone()[0]
    return f"synchronous_commit={sync}, fsync={fsync}"


def drop_schemas(names) -> None:
    names = list(names)
    if not names:
        return
    with connect(autocommit=True, connect_timeout=10) as con:
        for name in names:
            con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def drop_schemas_with_prefix(prefix: str) -> list[str]:
    """Drops every schema whose name starts with `prefix` (the parent's safety net after a
    case, e.g. when the child was killed by --timeout before its own cleanup)."""
    with connect(autocommit=True, connect_timeout=10) as con:
        names = [r[0] for r in con.execute(
            "SELECT nspname FROM pg_namespace WHERE left(nspname, %s) = %s", (len(prefix), prefix))]
        for name in names:
            con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    return names
