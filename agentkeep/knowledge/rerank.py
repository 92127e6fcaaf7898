"""Reranking: a second, slower look at the best hits of a search.

    knowledge = Knowledge(vector_db=..., reranker=CrossEncoderReranker())
    knowledge = Knowledge(vector_db=..., reranker=lambda query, hits: my_scores(query, hits))

`Knowledge.search(..., limit=k)` asks the store for `rerank_candidates` hits (at least k),
has the reranker score each (query, chunk) pair, and returns the k best by that score (the
hit's `score` becomes the reranker's). A reranker is an object with `score(query, texts)` or
a callable `(query, hits) -> scores`, one number per hit, higher is better.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db import SearchHit

DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L6-v2"


@runtime_checkable
class Reranker(Protocol):
    def score(self, query: str, texts: Sequence[str]) -> Sequence[float]: ...


class CrossEncoderReranker:
    """A sentence-transformers cross-encoder (agentkeep[local-embeddings]): it reads the query
    and each chunk together, which ranks better than comparing two embeddings and costs one
    model pass per hit. `model` is a Hugging Face name (downloaded once into its cache) or a
    local directory; `batch_size` pairs go through the model at a time."""

    def __init__(self, model: str = DEFAULT_CROSS_ENCODER, *, batch_size: int = 32, device: str | None = None,
                 max_length: int = 512) -> None:
        self.model_name, self.batch_size, self.device, self.max_length = model, batch_size, device, max_length
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            try:
                from sentence_transformers import CrossEncoder
            except ImportError:
                raise ImportError("CrossEncoderReranker needs sentence-transformers: "
                                  "pip install 'agentkeep[local-embeddings]'") from None
            self._model = CrossEncoder(self.model_name, device=self.device, max_length=self.max_length, num_labels=1)
        return self._model

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        scores = self._load().predict([(query, t) for t in texts], batch_size=self.batch_size,
                                      show_progress_bar=False)
        return [float(s) for s in scores]


RerankerLike = Reranker | Callable[[str, list[SearchHit]], Sequence[float]]


def check_reranker(reranker: Any) -> RerankerLike | None:
    if reranker is not None and not isinstance(reranker, Reranker) and not callable(reranker):
        raise InvalidInputError("reranker must have score(query, texts) or be a callable (query, hits) -> scores")
    return reranker


def rerank(reranker: RerankerLike, query: str, hits: list[SearchHit], limit: int) -> list[SearchHit]:
    """The `limit` best hits by the reranker's scores (ties keep the search's order)."""
    if not hits:
        return []
    scores = (reranker.score(query, [h.content for h in hits]) if isinstance(reranker, Reranker)
              else reranker(query, hits))
    scores = list(scores)
    if len(scores) != len(hits):
        raise InvalidInputError(f"the reranker gave {len(scores)} scores for {len(hits)} hits")
    order = sorted(range(len(hits)), key=lambda i: -float(scores[i]))
    return [hits[i].model_copy(update={"score": float(scores[i])}) for i in order[:limit]]
