"""The server over real HTTP: uvicorn on a free port in a thread, httpx as the client."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

import httpx
import pytest
import uvicorn

from agentkeep.models.local import free_port
from tests.agent.conftest import db, make_agent, scripted, store  # noqa: F401 - fixtures shared with the agent tests


class Served:
    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
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


__all__ = ["make_agent"]
