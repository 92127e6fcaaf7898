"""Find the MySQL / MariaDB server the tests use, and give each test a database of its own.

`server_url()` answers with `$AGENTKEEP_MYSQL_URL`, else the local server on 3306. No
embedded MariaDB installs from PyPI, so when no server answers there is nothing to start:
`reachable()` says why, and the tests skip (or fail, with AGENTKEEP_REQUIRE_ALL=1).

`new_database()` creates a fresh `utf8mb4` database on that server, so that runs never see
each other's data, and returns its URL with a function that drops it.
"""

from __future__ import annotations

import os
import uuid
from typing import Callable
from urllib.parse import unquote, urlsplit

DEFAULT_URL = "mysql+pymysql://root@127.0.0.1:3306/test"


def connect_args(url: str) -> dict:
    """pymysql.connect() keyword arguments for a `mysql+pymysql://user:pass@host:port/db` URL."""
    u = urlsplit(url)
    return dict(
        host=u.hostname or "127.0.0.1", port=u.port or 3306, user=unquote(u.username or "root"),
        password=unquote(u.password or ""), database=u.path.lstrip("/") or None, charset="utf8mb4",
    )


def connect(url: str, **kwargs):
    import pymysql

    return pymysql.connect(**{**connect_args(url), "autocommit": True, **kwargs})


def reachable(url: str) -> str | None:
    """None when a server answers at `url`, else why not."""
    try:
        import pymysql
    except ImportError as exc:
        return f"pymysql is not installed ({exc})"
    try:
        connect(url, connect_timeout=3).close()
        return None
    except pymysql.Error as exc:
        return str(exc).strip()[:160]


def server_url() -> str:
    return os.environ.get("AGENTKEEP_MYSQL_URL") or DEFAULT_URL


def with_database(url: str, name: str) -> str:
    """`url` naming database `name` instead (any query string is kept)."""
    u = urlsplit(url)
    return u._replace(path=f"/{name}").geturl()


def new_database(prefix: str = "t", url: str | None = None) -> tuple[str, Callable[[], None]]:
    """A fresh database `<prefix>_<12 hex>` on the server: (its URL, a function dropping it)."""
    base = url or server_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with connect(base) as con:
        con.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")

    def drop() -> None:
        with connect(base) as con:
            con.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")

    return with_database(base, name), drop


def server_description(url: str | None = None) -> str:
    """E.g. "MariaDB 10.11.19 at 127.0.0.1:3306, a database per test"."""
    url = url or server_url()
    with connect(url) as con:
        cur = con.cursor()
        cur.execute("SELECT VERSION()")
        version = cur.fetchone()[0]
    product = "MariaDB" if "mariadb" in version.lower() else "MySQL"
    args = connect_args(url)
    return f"{product} {version.split('-')[0]} at {args['host']}:{args['port']}, a database per test"
