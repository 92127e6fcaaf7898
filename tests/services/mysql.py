"""Find the MySQL / MariaDB server the tests use, and give each test a database of its own.

`server_url()` answers with `$AGENTKEEP_MYSQL_URL`; else with a private MariaDB (or MySQL)
that the test process starts from the installed server binary, its data on tmpfs and its
redo log flushed about once a second instead of at every commit: a commit there takes
0.06 ms against 3.3 ms on the stock server, a CREATE TABLE 0.2 ms against 25 ms, and the
suite commits hundreds of thousands of times. Nothing the tests check depends on the flush:
a commit is still atomic and visible at once. Without a server binary (or with
`AGENTKEEP_MYSQL_PRIVATE=0`) the local server on 3306 is used. No embedded MariaDB installs
from PyPI, so when neither is there, `reachable()` says why and the tests skip (or fail,
with AGENTKEEP_REQUIRE_ALL=1).

`new_database()` creates a fresh `utf8mb4` database on that server, so that runs never see
each other's data, and returns its URL with a function that drops it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

from tests.services.process import free_port

DEFAULT_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
_private: "PrivateServer | None | bool" = None  # False: could not start one, use DEFAULT_URL


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
    global _private
    explicit = os.environ.get("AGENTKEEP_MYSQL_URL")
    if explicit:
        return explicit
    if _private is None:
        _private = False
        if os.environ.get("AGENTKEEP_MYSQL_PRIVATE") != "0" and PrivateServer.binary() is not None:
            server = PrivateServer()
            try:
                server.start()
            except (OSError, subprocess.SubprocessError, TimeoutError):
                server.stop()  # the stock server on 3306 serves instead
            else:
                atexit.register(server.stop)
                _private = server
    return _private.url if _private else DEFAULT_URL


class PrivateServer:
    """A MariaDB or MySQL server of this test process, on a free port, its data on tmpfs."""

    def __init__(self) -> None:
        parent = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.dir = Path(tempfile.mkdtemp(prefix="agentkeep-mariadb-", dir=parent))
        self.port = free_port()
        self.url = f"mysql+pymysql://root@127.0.0.1:{self.port}/test"
        self.process: subprocess.Popen | None = None
        self.log = None

    @staticmethod
    def binary() -> str | None:
        for name in ("mariadbd", "mysqld"):
            path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
            if path is not None and shutil.which("mariadb-install-db"):
                return path
        return None

    def start(self) -> None:
        data = self.dir / "data"
        # a server started as root runs as the `mysql` user, which must own its files
        user = ["--user=mysql"] if os.geteuid() == 0 else []
        if user:
            shutil.chown(self.dir, "mysql")
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", *user,
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)
        self.log = open(self.dir / "server.log", "wb")  # noqa: SIM115 - open while the server runs
        self.process = subprocess.Popen(
            [self.binary(), "--no-defaults", f"--datadir={data}", *user, f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.dir / 'sock'}", f"--pid-file={self.dir / 'pid'}",
             "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0", "--skip-log-bin",
             "--max-connections=1000", "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci"],
            stdout=subprocess.DEVNULL, stderr=self.log,
        )
        deadline = time.monotonic() + 60
        while reachable(self.url.rsplit("/", 1)[0] + "/") is not None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError(f"the private MariaDB did not start: {(self.dir / 'server.log').read_text()[-500:]}")
            time.sleep(0.1)
        with connect(self.url.rsplit("/", 1)[0] + "/") as con:
            con.cursor().execute("CREATE DATABASE IF NOT EXISTS test CHARACTER SET utf8mb4")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


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
    where = "a private server on tmpfs" if _private and url == _private.url else f"{args['host']}:{args['port']}"
    return f"{product} {version.split('-')[0]} at {where}, a database per test"
