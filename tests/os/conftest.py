"""The server over real HTTP: uvicorn on a free port in a thread, httpx as the client."""

from __future__ import annotations

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import httpx
import pytest
import uvicorn

from agentkeep.models.local import free_port
from tests.agent.conftest import db, make_agent, scripted, store  # noqa: F401 - fixtures shared with the agent tests


class Served:
    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning",
                                                   lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> "Served":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def serve() -> Iterator[Callable[[Any], httpx.Client]]:
    """`serve(app)`: the app on uvicorn, and an httpx client for it."""
    running: list[tuple[Served, httpx.Client]] = []

    def start(app: Any) -> httpx.Client:
        served = Served(app).start()
        client = httpx.Client(base_url=served.url, timeout=30)
        running.append((served, client))
        return client

    yield start
    for served, client in running:
        client.close()
        served.stop()


def finished_job(http: httpx.Client, job_id: str, headers: dict | None = None, seconds: float = 30) -> dict:
    """The job once it has ended (its work's own records may be written a moment before)."""
    deadline = time.monotonic() + seconds
    while (job := http.get(f"/jobs/{job_id}", headers=headers or {}).json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


def wait_until(check: Callable[[], Any], seconds: float = 30, what: str = "") -> Any:
    """`check()`'s first truthy value, asked every 50 ms (the test fails after `seconds`)."""
    deadline = time.monotonic() + seconds
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.05)
    return value


def schedule_runs(on: Any, schedule_id: str) -> list:
    """Every run of a schedule in the db `on`, newest first."""
    out, cursor = [], None
    while True:
        page = on.list_schedule_runs(schedule_id, limit=100, cursor=cursor)
        out += page.items
        if not (cursor := page.next_cursor):
            return out


@pytest.fixture
def replicas() -> Iterator[list]:
    """The `tests.os.replica.Replica`s a test starts (append them): stopped after it."""
    started: list = []
    yield started
    for replica in started:
        replica.stop()


class Handler(BaseHTTPRequestHandler):
    """A small HTTP server's handler (JWKS, pages to fetch): `reply` sends a whole answer."""

    def reply(self, status: int, body: bytes = b"", content_type: str = "text/plain", **headers: str) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": content_type, "Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def http_server(handler: type, host: str = "127.0.0.1") -> Iterator[ThreadingHTTPServer]:
    """`handler` served on `host` (a free port) in a thread."""
    httpd = ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd
    finally:
        httpd.shutdown()


__all__ = ["make_agent"]
