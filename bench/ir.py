"""Retrieval quality and speed of every vector store on an IR test collection (BEIR SciFact).

    python -m bench.ir                                   # every store, SciFact's 300 test claims
    python -m bench.ir --stores in_memory,pgvector --chunk-size 500 --json /tmp/ir.json
    python -m bench.ir --data ~/beir/scifact             # a BEIR folder or zip (bench/ir_data.py)
    python -m bench.ir --scale 100000 --stores pgvector,lancedb,chroma,qdrant

The corpus is cut by the project's `FixedSizeChunker` (a chunk's content_id is its document's
id), chunks and queries are embedded with the packaged all-MiniLM-L6-v2 (cached under
~/.cache/agentkeep-bench/, keyed by a hash of the texts), and every store is loaded with the
same chunks and embeddings, built as tests/vector_db/stores.py builds it. References computed in
the same run on the same chunks: `bm25s` (Lucene BM25, English stop words, PyStemmer's English
stemmer), exact cosine (numpy) and their reciprocal-rank fusion (k=60, 50 candidates a side,
as the stores' hybrid search is run here: hybrid_candidates=50).

Figures, per store and search mode: nDCG@10 and recall@10 at the document level (a search asks
for `--limit` chunks; the chunks of a document after its first are dropped), the ratio to the
reference of the mode (keyword / bm25s, hybrid / RRF, vector / exact), ingestion in docs/s and
chunks/s (upserts of precomputed embeddings, `--batch` chunks a call), and search latency
p50/p95 in ms (one query at a time, embedding given). A store that cannot run shows its error.

`--scale N` loads N synthetic chunks instead (sentences sampled from the corpus, random unit
384-d vectors: a latency figure, not a quality one) and reports the load time and the search
p50/p95 of every mode.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from bench import ir_data

MODES = ("vector", "keyword", "hybrid")
ALL_STORES = "in_memory,pgvector,lancedb,qdrant,chroma,milvus,redis,clickhouse,surrealdb"
REFERENCE = {"vector": "exact cosine", "keyword": "bm25s", "hybrid": "RRF"}
CACHE = Path(os.environ.get("AGENTKEEP_BENCH_CACHE", Path.home() / ".cache" / "agentkeep-bench"))
RRF_K, DEPTH, K = 60, 50, 10
DIM = 384


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- chunks and embeddings -------------------------------------------------------------------------

@dataclass
class Chunks:
    ids: list[str]
    docs: list[str]  # the document of each chunk
    texts: list[str]
    positions: list[int]


def chunk_corpus(corpus: dict[str, str], size: int, overlap: int) -> Chunks:
    from agentkeep.knowledge.chunking import FixedSizeChunker
    from agentkeep.knowledge.readers import Section

    chunker = FixedSizeChunker(chunk_size=size, overlap=overlap)
    out = Chunks([], [], [], [])
    for doc_id, text in corpus.items():
        for i, piece in enumerate(chunker.chunk([Section(text)])):
            out.ids.append(f"{doc_id}#{i}")
            out.docs.append(doc_id)
            out.texts.append(piece.text)
            out.positions.append(i)
    return out


def embed_cached(texts: Sequence[str], what: str, batch: int = 256) -> np.ndarray:
    """Unit-length all-MiniLM-L6-v2 embeddings of `texts`, read from the cache when there."""
    from agentkeep.knowledge.embedder import SentenceTransformerEmbedder

    model = SentenceTransformerEmbedder()
    key = hashlib.sha256("\0".join([model.id, *texts]).encode()).hexdigest()[:20]
    path = CACHE / f"{what}-{len(texts)}-{key}.npy"
    if path.exists():
        return np.load(path)
    out, start = [], time.perf_counter()
    for i in range(0, len(texts), batch):
        out.extend(model.embed(list(texts[i:i + batch])))
        done = min(i + batch, len(texts))
        rate = done / (time.perf_counter() - start)
        log(f"  embedding {what}: {done:,}/{len(texts):,} ({rate:.0f}/s)")
    vectors = np.asarray(out, dtype=np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)  # a run stopped halfway leaves no partial cache
    return vectors


# -- metrics ---------------------------------------------------------------------------------------

def doc_ranking(chunk_docs: Sequence[str], k: int = K) -> list[str]:
    """The first `k` distinct documents of a chunk ranking (a doc ranks at its best chunk)."""
    return list(dict.fromkeys(chunk_docs))[:k]


def ndcg(ranking: Sequence[str], relevant: dict[str, int], k: int = K) -> float:
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranking[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall(ranking: Sequence[str], relevant: dict[str, int], k: int = K) -> float:
    wanted = {d for d, r in relevant.items() if r > 0}
    return len(wanted.intersection(ranking[:k])) / len(wanted) if wanted else 0.0


def percentile(values: Sequence[float], p: float) -> float:
    return float(np.percentile(np.asarray(values), p)) if values else float("nan")


def quality(rankings: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean nDCG@10 and recall@10 over the judged queries (a query not run counts 0)."""
    n = len(qrels)
    return {"ndcg@10": sum(ndcg(rankings.get(q, []), rel) for q, rel in qrels.items()) / n,
            "recall@10": sum(recall(rankings.get(q, []), rel) for q, rel in qrels.items()) / n}


def latency(seconds: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": percentile(seconds, 50) * 1000, "p95_ms": percentile(seconds, 95) * 1000}


# -- references ------------------------------------------------------------------------------------

def bm25s_reference(texts: Sequence[str], queries: Sequence[str], depth: int = DEPTH):
    """(chunk indexes per query, seconds per query) of bm25s, Lucene variant."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(method="lucene")
    retriever.index(bm25s.tokenize(list(texts), stopwords="en", stemmer=stemmer, show_progress=False),
                    show_progress=False)
    found, seconds = [], []
    for q in queries:
        t = time.perf_counter()
        tokens = bm25s.tokenize([q], stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)
        ids, scores = retriever.retrieve(tokens, k=min(depth, len(texts)), show_progress=False, n_threads=1)
        seconds.append(time.perf_counter() - t)
        found.append([int(i) for i, s in zip(ids[0], scores[0]) if s > 0])  # unmatched chunks are no hits
    return found, seconds


def exact_reference(chunk_vectors: np.ndarray, query_vectors: np.ndarray, depth: int = DEPTH):
    """(chunk indexes per query, seconds per query) of exact cosine (vectors are unit length)."""
    found, seconds = [], []
    for q in query_vectors:
        t = time.perf_counter()
        scores = chunk_vectors @ q
        top = np.argpartition(-scores, depth)[:depth]
        found.append(top[np.argsort(-scores[top], kind="stable")].tolist())
        seconds.append(time.perf_counter() - t)
    return found, seconds


def rrf(lists: Sequence[Sequence[int]], ids: Sequence[str], k: int = RRF_K) -> list[int]:
    """Reciprocal-rank fusion of chunk indexes; equal scores (one list's rank i against the
    other's) are ordered by chunk id, as the stores' `fuse` orders them."""
    scores: dict[int, float] = {}
    for ranking in lists:
        for rank, i in enumerate(ranking, 1):
            scores[i] = scores.get(i, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=lambda i: (-scores[i], ids[i]))


def references(chunks: Chunks, chunk_vectors: np.ndarray, query_ids: list[str], query_texts: list[str],
               query_vectors: np.ndarray, qrels: dict) -> dict[str, dict]:
    keyword, keyword_s = bm25s_reference(chunks.texts, query_texts)
    vector, vector_s = exact_reference(chunk_vectors, query_vectors)
    fused = [rrf((v, kw), chunks.ids)[:DEPTH] for v, kw in zip(vector, keyword)]

    def figures(found: list[list[int]], seconds: Optional[list[float]]) -> dict:
        rankings = {q: doc_ranking([chunks.docs[i] for i in hits]) for q, hits in zip(query_ids, found)}
        return {**quality(rankings, qrels), **(latency(seconds) if seconds else {})}

    return {"vector": figures(vector, vector_s), "keyword": figures(keyword, keyword_s),
            "hybrid": figures(fused, [a + b for a, b in zip(vector_s, keyword_s)])}


# -- stores ----------------------------------------------------------------------------------------

def store_entries() -> dict[str, Any]:
    """The stores as the conformance suite builds them (tests/vector_db/stores.py)."""
    from tests.vector_db.stores import STORES

    return {s.name: s for s in STORES}


@dataclass
class StoreRun:
    name: str
    target: str = ""
    error: str = ""
    ingest: dict[str, float] = field(default_factory=dict)
    modes: dict[str, dict[str, Any]] = field(default_factory=dict)


def _error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:160]


def _chunk_batches(chunks: Chunks, vectors: np.ndarray, batch: int):
    from agentkeep.vector_db import Chunk

    for start in range(0, len(chunks.ids), batch):
        stop = min(start + batch, len(chunks.ids))
        yield [Chunk(id=chunks.ids[i], content=chunks.texts[i], content_id=chunks.docs[i],
                     position=chunks.positions[i], embedding=vectors[i].tolist()) for i in range(start, stop)]


def load_store(store: Any, chunks: Chunks, vectors: np.ndarray, batch: int) -> float:
    """Seconds spent in `upsert` (the chunks are built outside the timed part)."""
    spent = 0.0
    for part in _chunk_batches(chunks, vectors, batch):
        t = time.perf_counter()
        store.upsert(part)
        spent += time.perf_counter() - t
    return spent


def time_searches(store: Any, mode: str, texts: list[str], vectors: list[list[float]], limit: int):
    """(chunk hits per query, seconds per query); one untimed search first warms the store up."""
    def one(i: int):
        if mode == "vector":
            return store.search(embedding=vectors[i], limit=limit, search_type=mode)
        if mode == "keyword":
            return store.search(texts[i], limit=limit, search_type=mode)
        return store.search(texts[i], embedding=vectors[i], limit=limit, search_type=mode)

    one(0)
    hits, seconds = [], []
    for i in range(len(texts)):
        t = time.perf_counter()
        found = one(i)
        seconds.append(time.perf_counter() - t)
        hits.append(found)
    return hits, seconds


def open_store(name: str, entries: dict[str, Any], run: StoreRun):
    """(store, cleanup), created with DIM dimensions, or None with run.error set."""
    entry = entries.get(name)
    if entry is None:
        run.error = f"unknown store (known: {', '.join(entries)})"
        return None
    why = entry.unavailable()
    if why:
        run.error = f"unavailable: {why}"
        return None
    try:
        run.target = entry.target()
    except Exception as exc:  # noqa: BLE001 - only the description failed
        run.target = f"? ({_error(exc)})"
    store, cleanup = entry.build(dimensions=DIM, search_type="hybrid", hybrid_candidates=DEPTH)
    try:
        store.create(DIM)
    except BaseException:
        cleanup()
        raise
    return store, cleanup


def run_store(name: str, entries: dict, chunks: Chunks, chunk_vectors: np.ndarray, query_ids: list[str],
              query_texts: list[str], query_vectors: list[list[float]], qrels: Optional[dict], args) -> StoreRun:
    run = StoreRun(name)
    log(f"{name}: loading {len(chunks.ids):,} chunks")
    try:
        opened = open_store(name, entries, run)
    except Exception as exc:  # noqa: BLE001 - shown in the table, the run goes on
        run.error = _error(exc)
        return run
    if opened is None:
        return run
    store, cleanup = opened
    try:
        spent = load_store(store, chunks, chunk_vectors, args.batch)
        docs = len(set(chunks.docs))
        run.ingest = {"seconds": spent, "docs_per_s": docs / spent, "chunks_per_s": len(chunks.ids) / spent}
        for mode in MODES:
            log(f"{name}: {mode} search, {len(query_texts)} queries")
            try:
                hits, seconds = time_searches(store, mode, query_texts, query_vectors, args.limit)
            except Exception as exc:  # noqa: BLE001 - this mode fails, the others may not
                run.modes[mode] = {"error": _error(exc)}
                continue
            figures = latency(seconds)
            if qrels is not None:
                rankings = {q: doc_ranking([h.content_id for h in found]) for q, found in zip(query_ids, hits)}
                figures.update(quality(rankings, qrels))
            run.modes[mode] = figures
    except Exception as exc:  # noqa: BLE001
        run.error = _error(exc)
    finally:
        try:
            cleanup()
        except Exception as exc:  # noqa: BLE001 - a leftover temp table is not a result
            log(f"{name}: cleanup failed: {_error(exc)}")
    log(f"{name}: {json.dumps(vars(run), default=str)}")  # each store's figures as soon as it is done
    return run


# -- table -----------------------------------------------------------------------------------------

def _f(value: Any, fmt: str) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def print_table(rows: list[list[str]], header: list[str], out=sys.stdout) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    right = {i for i, h in enumerate(header) if h not in ("store", "mode", "note")}

    def fmt(row: list[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    print(fmt(header), file=out)
    print(line, file=out)
    for row in rows:
        print(fmt(row), file=out)


def quality_rows(refs: dict, runs: list[StoreRun]) -> list[list[str]]:
    rows = []
    for mode in MODES:
        r = refs[mode]
        rows.append([REFERENCE[mode], mode, _f(r["ndcg@10"], ".3f"), _f(r["recall@10"], ".3f"), "reference", "", "",
                     _f(r.get("p50_ms"), ".2f"), _f(r.get("p95_ms"), ".2f"), "in this process"])
    for run in runs:
        if run.error and not run.modes:
            rows.append([run.name, "", "", "", "", "", "", "", "", run.error])
            continue
        for i, mode in enumerate(MODES):
            m = run.modes.get(mode, {"error": run.error or "not run"})
            ingest = [_f(run.ingest.get("docs_per_s"), ",.0f"), _f(run.ingest.get("chunks_per_s"), ",.0f")] if i == 0 else ["", ""]
            if "error" in m:
                rows.append([run.name, mode, "", "", "", *ingest, "", "", m["error"]])
                continue
            base = refs[mode]["ndcg@10"]
            ratio = f"{m['ndcg@10'] / base:.3f}x {REFERENCE[mode]}" if base else ""
            note = run.error or (run.target if i == 0 else "")
            rows.append([run.name, mode, _f(m["ndcg@10"], ".3f"), _f(m["recall@10"], ".3f"), ratio, *ingest,
                         _f(m["p50_ms"], ".2f"), _f(m["p95_ms"], ".2f"), note])
    return rows


QUALITY_HEADER = ["store", "mode", "nDCG@10", "R@10", "ratio", "docs/s", "chunks/s", "p50 ms", "p95 ms", "note"]


def scale_rows(runs: list[StoreRun]) -> list[list[str]]:
    rows = []
    for run in runs:
        if run.error and not run.modes:
            rows.append([run.name, "", "", "", "", "", run.error])
            continue
        for i, mode in enumerate(MODES):
            m = run.modes.get(mode, {"error": run.error or "not run"})
            load = [_f(run.ingest.get("seconds"), ".1f"), _f(run.ingest.get("chunks_per_s"), ",.0f")] if i == 0 else ["", ""]
            if "error" in m:
                rows.append([run.name, mode, *load, "", "", m["error"]])
            else:
                rows.append([run.name, mode, *load, _f(m["p50_ms"], ".2f"), _f(m["p95_ms"], ".2f"),
                             run.error or (run.target if i == 0 else "")])
    return rows


SCALE_HEADER = ["store", "mode", "load s", "chunks/s", "p50 ms", "p95 ms", "note"]


# -- the two runs ----------------------------------------------------------------------------------

def scifact_run(args, stores: list[str]) -> dict:
    collection = ir_data.load(args.data)
    overlap = min(args.overlap, args.chunk_size // 2)
    chunks = chunk_corpus(collection.corpus, args.chunk_size, overlap)
    query_ids = list(collection.qrels)
    query_texts = [collection.queries[q] for q in query_ids]
    log(f"{collection.describe()}; {len(chunks.ids):,} chunks (FixedSizeChunker {args.chunk_size}/{overlap})")
    chunk_vectors = embed_cached(chunks.texts, "chunks")
    query_vectors = embed_cached(query_texts, "queries")
    refs = references(chunks, chunk_vectors, query_ids, query_texts, query_vectors, collection.qrels)
    entries = store_entries()
    listed = query_vectors.tolist()
    runs = [run_store(name, entries, chunks, chunk_vectors, query_ids, query_texts, listed, collection.qrels, args)
            for name in stores]
    print(f"{collection.describe()}; {len(chunks.ids):,} chunks (FixedSizeChunker chunk_size={args.chunk_size}, "
          f"overlap={overlap}); all-MiniLM-L6-v2; document-level figures from the top {args.limit} chunks; "
          f"ingest: upserts of {args.batch} chunks with embeddings")
    print_table(quality_rows(refs, runs), QUALITY_HEADER)
    return {"dataset": collection.describe(), "data": args.data, "chunks": len(chunks.ids),
            "chunk_size": args.chunk_size, "overlap": overlap, "limit": args.limit, "batch": args.batch,
            "references": refs, "stores": {r.name: vars(r) for r in runs}}


def sentences(corpus: dict[str, str]) -> list[str]:
    return [s for text in corpus.values() for s in re.split(r"(?<=[.!?])\s+", text) if len(s) > 20]


def synthetic(corpus: dict[str, str], n: int, seed: int = 7) -> tuple[Chunks, np.ndarray]:
    """`n` chunks of 1-4 corpus sentences, three to a document, and random unit vectors."""
    rnd = random.Random(seed)
    pool = sentences(corpus)
    texts = [" ".join(rnd.choices(pool, k=rnd.randint(1, 4))) for _ in range(n)]
    chunks = Chunks([f"s{i}" for i in range(n)], [f"d{i // 3}" for i in range(n)], texts, [i % 3 for i in range(n)])
    vectors = np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return chunks, vectors


def scale_run(args, stores: list[str]) -> dict:
    collection = ir_data.load(args.data)
    chunks, vectors = synthetic(collection.corpus, args.scale)
    query_texts = list(collection.queries.values())[:args.queries]
    query_vectors = np.random.default_rng(11).standard_normal((len(query_texts), DIM), dtype=np.float32)
    query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)
    entries = store_entries()
    runs = [run_store(name, entries, chunks, vectors, [], query_texts, query_vectors.tolist(), None, args)
            for name in stores]
    print(f"{args.scale:,} synthetic chunks (corpus sentences of {collection.name}, random unit {DIM}-d vectors), "
          f"upserts of {args.batch}; {len(query_texts)} queries (claims; random vectors), limit {args.limit}")
    print_table(scale_rows(runs), SCALE_HEADER)
    return {"scale": args.scale, "batch": args.batch, "limit": args.limit, "queries": len(query_texts),
            "stores": {r.name: vars(r) for r in runs}}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.ir", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=ir_data.DEFAULT_PATH,
                    help="the SciFact release zip, or a BEIR folder/zip (default %(default)s)")
    ap.add_argument("--stores", default=ALL_STORES, help="comma-separated (default %(default)s)")
    ap.add_argument("--chunk-size", type=int, default=1000, help="FixedSizeChunker chunk_size (default 1000)")
    ap.add_argument("--overlap", type=int, default=100, help="FixedSizeChunker overlap (at most chunk_size/2)")
    ap.add_argument("--limit", type=int, default=50, help="chunks asked of a search (default 50)")
    ap.add_argument("--batch", type=int, default=None, help="chunks per upsert (default 1000; 5000 with --scale)")
    ap.add_argument("--scale", type=int, default=None, help="N synthetic chunks: load time and latency only")
    ap.add_argument("--queries", type=int, default=300, help="queries timed with --scale (default 300)")
    ap.add_argument("--pg-url", default=None,
                    help="a PostgreSQL with pgvector (default $AGENTKEEP_PGVECTOR_URL, else an embedded one "
                         "started as the tests start it)")
    ap.add_argument("--redis-url", default=None, help="a Redis with search (default: started as the tests do)")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    if args.batch is None:
        args.batch = 5000 if args.scale else 1000
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the packaged model: nothing to download
    if args.pg_url:
        os.environ["AGENTKEEP_PGVECTOR_URL"] = args.pg_url
    if args.redis_url:
        os.environ["AGENTKEEP_REDIS_STACK_URL"] = args.redis_url
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    result = scale_run(args, stores) if args.scale else scifact_run(args, stores)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
        log(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
