"""The keyword analyzer and query syntax, and BM25 as the reference library computes it."""

from __future__ import annotations

import pytest

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db import Chunk
from agentkeep.vector_db.in_memory import InMemoryVectorDb
from agentkeep.vector_db.text import Analyzer, analyzer, split_query

CORPUS = [
    "Rotating API keys every 90 days keeps leaked credentials short-lived.",
    "The API gateway rejects requests whose keys were revoked.",
    "Disk quota exceeded: error ERR-4471 is raised when the volume is full.",
    "Resize the disk volume from the console, then restart the database.",
    "Invoices are emailed on the first day of each month.",
    "Backups of the database run nightly; restoring a backup takes minutes.",
    "Keys, keys and more keys: the key ring of the office.",
    "Latency of the database grows when the disk is full.",
]
QUERIES = ["how often should I rotate my API keys?", "disk full", "database backup restore", "office keys",
           "error when the volume is full", "monthly invoices by email"]


def test_terms_are_stemmed_lowercased_and_stopword_free():
    a = analyzer("english")
    assert a.terms("Rotating the API Keys, rotated keys!") == ["rotat", "api", "key", "rotat", "key"]
    assert a.terms("ERR-4471 a b") == ["err", "4471"]  # one-letter words are not terms
    assert analyzer("german").terms("Die Häuser") == [analyzer("german").terms("Haus")[0]]


def test_an_unknown_language_is_refused():
    with pytest.raises(InvalidInputError, match="no stemmer for language 'klingon'"):
        Analyzer("klingon")


def test_query_syntax():
    words = split_query('rotate +keys -legacy "api gateway" -"old ring"')
    assert words.should == ("rotate",) and words.must == ("keys",) and words.must_not == ("legacy",)
    assert words.phrases == ("api gateway",) and words.excluded_phrases == ("old ring",)
    q = analyzer().query('rotate +keys -legacy "api gateway" -"old ring"')
    assert q.must == ("key", "api", "gateway") and q.should == ("rotat",) and q.must_not == ("legaci",)
    assert q.phrases == (("api", "gateway"),) and q.excluded_phrases == (("old", "ring"),)
    assert q.ranked == ("key", "api", "gateway", "rotat")
    assert not analyzer().query("the of and") and not analyzer().query("-keys")
    assert analyzer().query('"keys"').must == ("key",)  # a phrase of one word is that word, required


def test_in_memory_bm25_is_the_reference_library():
    """Same tokens, same idf (Lucene's) and length normalization as bm25s: the same ranking,
    and scores that differ by BM25's constant factor (k1 + 1), which Lucene leaves out."""
    bm25s = pytest.importorskip("bm25s")
    import Stemmer

    retriever = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    stemmer = Stemmer.Stemmer("english")
    retriever.index(bm25s.tokenize(CORPUS, stopwords="en", stemmer=stemmer, show_progress=False),
                    show_progress=False)
    store = InMemoryVectorDb(dimensions=2)
    store.create()
    store.upsert([Chunk(id=str(i), content=text) for i, text in enumerate(CORPUS)])
    for query in QUERIES:
        tokens = bm25s.tokenize([query], stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)[0]
        scores = retriever.get_scores(tokens)
        expected = sorted(((str(i), s * 2.2) for i, s in enumerate(scores) if s > 0), key=lambda x: (-x[1], x[0]))
        hits = store.search(query, search_type="keyword", limit=len(CORPUS))
        assert [h.id for h in hits] == [i for i, _ in expected], query
        assert [h.score for h in hits] == pytest.approx([s for _, s in expected], rel=1e-5), query
