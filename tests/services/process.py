"""Servers and emulators the test suite starts itself: one per test process (each xdist
worker has its own), on 127.0.0.1 and a free port, stopped when the process exits."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Callable, Sequence


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class ServerProcess:
    """`argv(port)` started in the background; `ready()` is polled until it answers True.

    The server's output goes to a log file whose tail is shown when it fails to start.
    """

    def __init__(self, name: str, argv: Callable[[int], Sequence[str]], *, port: int | None = None,
                 ready: Callable[[int], bool] = port_open, env: dict | None = None, cwd: str | None = None,
                 timeout: float = 60.0) -> None:
        self.name = name
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix=f"agentkeep-{name}-")
        self.log = os.path.join(self.dir, "server.log")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                list(argv(self.port)), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while not ready(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.tail()
                self.stop()
                raise RuntimeError(f"{name} did not start on port {self.port}:\n{log}")
            time.sleep(0.05)

    def tail(self, n: int = 20) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
