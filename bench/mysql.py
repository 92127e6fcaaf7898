"""MySQL / MariaDB plumbing for the bench: the server URL, a reachability probe, and the
per-case databases (created by the cases, dropped after each case). In MySQL a schema is a
database, so the functions carry bench/pg.py's names and the harness treats both servers
alike. pymysql is imported lazily, so the other backends never load it."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

DEFAULT_URL = "mysql+pymysql://root@127.0.0.1:3306/test"


def url(database: str | None = None) -> str:
    """The server MysqlDb and the raw pymysql baselines connect to (naming `database`)."""
    u = os.environ.get("AGENTKEEP_MYSQL_URL") or DEFAULT_URL
    return urlsplit(u)._replace(path=f"/{database}").geturl() if database else u


def shown(db_url: str | None = None) -> str:
    """The URL with any password hidden."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", db_url or url())


def connect(database: str | None = None, autocommit: bool = True, **kwargs):
    import pymysql

    u = urlsplit(url())
    return pymysql.connect(
        host=u.hostname or "127.0.0.1", port=u.port or 3306, user=unquote(u.username or "root"),
        password=unquote(u.password or ""), database=database or u.path.lstrip("/") or None,
        charset="utf8mb4", autocommit=autocommit, **kwargs,
    )


def _one(con, sql: str, params=()):
    with con.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()


def probe(timeout: int = 3) -> tuple[bool, str]:
    """(True, "MariaDB 10.11.19, innodb_flush_log_at_trx_commit=1, ...") or (False, why)."""
    try:
        import pymysql
    except ImportError as exc:
        return False, f"pymysql is not installed ({exc})"
    try:
        with connect(connect_timeout=timeout) as con:
            version = _one(con, "SELECT VERSION()")[0]
            settings = server_settings(con)
        product = "MariaDB" if "mariadb" in version.lower() else "MySQL"
        return True, f"{product} {version.split('-')[0]}, {settings}, pymysql {pymysql.__version__}"
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return False, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def server_settings(con) -> str:
    """The settings that decide the write figures: redo log flushing and the binary log."""
    flush = _one(con, "SELECT @@innodb_flush_log_at_trx_commit")[0]
    binlog = _one(con, "SELECT @@log_bin")[0]
    return f"innodb_flush_log_at_trx_commit={flush}, log_bin={'ON' if binlog else 'OFF'}"


def create_schema(name: str) -> str:
    """Creates database `name` (utf8mb4) and returns the URL MysqlDb takes for it."""
    with connect() as con, con.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    return url(name)


def drop_schemas(names) -> None:
    names = list(names)
    if not names:
        return
    with connect(connect_timeout=10) as con, con.cursor() as cur:
        for name in names:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def drop_schemas_with_prefix(prefix: str) -> list[str]:
    """Drops every database whose name starts with `prefix` (the parent's safety net after a
    case, e.g. when the child was killed by --timeout before its own cleanup)."""
    with connect(connect_timeout=10) as con, con.cursor() as cur:
        cur.execute("SELECT schema_name FROM information_schema.schemata WHERE LEFT(schema_name, %s) = %s",
                    (len(prefix), prefix))
        names = [r[0] for r in cur.fetchall()]
        for name in names:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    return names
