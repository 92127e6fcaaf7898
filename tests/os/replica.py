"""An AgentOS replica in a process of its own, for tests that kill one mid-run:

    python -m tests.os.replica DB_URL MODEL_BASE_URL PORT [JOB_CONCURRENCY]

Short run and job leases and a fast sweep, so a dead replica's runs are failed, and its jobs
taken over, within seconds; the scheduler polls every half second. `Replica` starts one and
waits for its /health."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 4.0


def db_url(store: Any) -> str:
    """The URL a replica connects with to a test's db (`store`: a pooled store handle)."""
    if store.url is not None:
        return store.url
    keywords = store.opener.keywords  # PostgresDb(db_url=..., db_schema=...)
    return f"{keywords['db_url']}?db_schema={keywords['db_schema']}"


class Replica:
    def __init__(self, url: str, model_url: str, job_concurrency: int = 2) -> None:
        from agentkeep.models.local import free_port

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="replica-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.os.replica", url, model_url, str(self.port), str(job_concurrency)],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the replica did not start: {self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def main() -> None:
    import uvicorn

    from agentkeep.agent import Agent
    from agentkeep.db import connect
    from agentkeep.models import OpenAIChat
    from agentkeep.os import AgentOS

    db_url, model_url, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    concurrency = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    db = connect(db_url)
    agent = Agent(OpenAIChat("scripted", base_url=model_url), name="analyst", db=db, run_lease_seconds=LEASE_SECONDS)
    app = AgentOS(agents=[agent], db=db, sweep_seconds=0.5, job_lease_seconds=LEASE_SECONDS,
                  job_concurrency=concurrency, schedule_poll_seconds=0.5).get_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
