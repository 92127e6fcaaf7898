"""Retrieval quality on the labelled set of tests/vector_db/test_ranking.py, with a real model.

    python -m bench.retrieval [--stores in_memory,pgvector]

Recall@1 and recall@5 of vector, keyword and hybrid search for identifier queries ("ERR-4471") and
paraphrase queries ("how frequently should credentials be renewed"), with the local
all-MiniLM-L6-v2 model (agentkeep[local-embeddings]) embedding the corpus and the queries.
The test suite runs the same set with a small concept embedder; this is the figure with a
dense model. With `--distractors` (the default) the corpus also holds near-miss pages:
for every identifier, pages on the same topic whose codes differ by a character or two
("ERR-4417", "ZQ-7713"), which a dense model places as near as the right one. Prints a
table; no targets.
"""

from __future__ import annotations

import argparse
import os
import uuid


# near misses: the same topics as the identifier pages, with codes a character or two away
DISTRACTORS = {
    f"near-{n}": text
    for n, text in enumerate([
        "Error ERR-4417 means the disk quota is almost reached on the volume.",
        "Error ERR-4741 means the disk is read-only on the volume.",
        "Error ERR-4470 means the volume is being resized.",
        "Ticket ZQ-7713: webhook notifications were delayed by network timeouts.",
        "Ticket ZQ-7371: email notifications were paused after a failed deploy.",
        "Ticket QZ-7731: webhooks retried after network errors.",
        "The plan code PLN-88-SILVER includes standard support and audit reports.",
        "The plan code PLN-86-GOLD includes priority support and usage reports.",
        "Build 2024.11.2-rc2 fixed the error when a release uploads small files.",
        "Build 2024.11.3-rc1 added retries when a release uploads large files.",
        "Enable the beta flag ff_new_viewer for your team to try the new viewer.",
        "Enable the beta flag ff_old_editor for your team to keep the old editor.",
        "Status E5030 is returned when the upload is over the file count limit.",
        "Status E3005 is returned when the upload is under the minimum size.",
    ])
}


def _stores(names: list[str]):
    for name in names:
        if name == "in_memory":
            from agentkeep.vector_db.in_memory import InMemoryVectorDb

            yield name, InMemoryVectorDb(search_type="hybrid"), lambda: None
        elif name == "pgvector":
            from agentkeep.vector_db.pgvector import PgVector
            from tests.services.pgvector import server_url

            store = PgVector(f"retrieval_{uuid.uuid4().hex[:8]}", db_url=server_url(), search_type="hybrid")
            yield name, store, store.drop
        else:
            raise SystemExit(f"unknown store {name!r} (in_memory, pgvector)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.retrieval")
    ap.add_argument("--stores", default="in_memory,pgvector")
    ap.add_argument("--no-distractors", action="store_true", help="only the test suite's 30 pages")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from agentkeep.knowledge.embedder import SentenceTransformerEmbedder
    from agentkeep.vector_db import Chunk
    from tests.vector_db.test_ranking import DOCS, IDENTIFIER_QUERIES, PARAPHRASE_QUERIES

    model = SentenceTransformerEmbedder()
    DOCS = dict(DOCS)
    if not args.no_distractors:
        DOCS.update(DISTRACTORS)
    doc_vectors = dict(zip(DOCS, model.embed(list(DOCS.values()))))
    queries = {**IDENTIFIER_QUERIES, **PARAPHRASE_QUERIES}
    query_vectors = dict(zip(queries, model.embed(list(queries))))
    print(f"recall, all-MiniLM-L6-v2, {len(DOCS)} chunks, "
          f"{len(IDENTIFIER_QUERIES)} identifier / {len(PARAPHRASE_QUERIES)} paraphrase queries")
    print(f"{'store':<10} {'search':<8} {'identifiers @1/@5':>18} {'paraphrases @1/@5':>18} {'all @5':>7}")
    for name, store, cleanup in _stores(args.stores.split(",")):
        try:
            store.create(model.dimensions)
            store.upsert([Chunk(id=i, content=t, embedding=doc_vectors[i]) for i, t in DOCS.items()])
            for kind in ("vector", "keyword", "hybrid"):
                cells, found5 = [], 0
                for qs in (IDENTIFIER_QUERIES, PARAPHRASE_QUERIES):
                    ranks = [
                        [h.id for h in store.search(q, embedding=query_vectors[q], limit=5, search_type=kind)]
                        for q in qs
                    ]
                    at1 = sum(r[:1] == [relevant] for r, relevant in zip(ranks, qs.values())) / len(qs)
                    at5 = sum(relevant in r for r, relevant in zip(ranks, qs.values()))
                    found5 += at5
                    cells.append(f"{at1:.2f} / {at5 / len(qs):.2f}")
                print(f"{name:<10} {kind:<8} {cells[0]:>18} {cells[1]:>18} {found5 / len(queries):>7.2f}")
        finally:
            cleanup()
            store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
