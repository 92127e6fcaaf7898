"""`agentkeep local-model` serves the offline model until stopped."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys

import httpx
import pytest

from tests.conftest import require

pytestmark = pytest.mark.server


def test_local_model_serves_until_stopped():
    require(None if importlib.util.find_spec("llama_cpp") else "local model: llama-cpp-python is not installed")
    proc = subprocess.Popen([sys.executable, "-m", "agentkeep", "local-model"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("model SmolLM2-135M-Instruct.Q4_1 at http://127.0.0.1:")
        base_url = line.split(" at ")[1].split()[0]
        models = httpx.get(f"{base_url}/models", timeout=10).json()
        assert models["data"][0]["id"] == "SmolLM2-135M-Instruct.Q4_1"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base_url}/models", timeout=2)
