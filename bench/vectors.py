"""`python -m bench.vectors`: vector-store and knowledge-ingest benchmarks.

Vector search, per store and dataset: insert rate (batches of 500), post-load index build
time (stores that build after loading), query latency p50/p95 at top-10 and recall@10 of
the store's search against an exact numpy search over the same vectors (the baseline
column), plus a sweep of each store's query-time accuracy settings (PgVector: ef_search).
Knowledge ingest: `Knowledge.add_content(path=folder)` of generated Markdown files into
SqliteDb + PgVector, per embedder, next to the embedder alone on the same chunks.

Measurement only: a slow figure never fails the run (exit status 0 unless misused).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from bench.common import Infeasible, Progress
from bench.report import to_markdown, to_rich

if TYPE_CHECKING:
    import numpy as np  # imported where used: the recall computation works without it

DIM = 384
K = 10
BATCH = 500
WARMUP = 10  # untimed queries before the timed ones (connections, caches)
RECALL_TARGET = 0.95
TIE_EPS = 1e-5  # a hit as close as the k-th exact neighbour (within float32 error) counts as found
perf = time.perf_counter

# -- datasets ---------------------------------------------------------------------------------


@dataclass
class Dataset:
    name: str
    label: str
    data: np.ndarray  # (n, DIM) float32, unit rows
    queries: np.ndarray  # (WARMUP + queries, DIM) float32, unit rows, not in data
    exact: np.ndarray = field(default=None)  # (queries, K) ids of the exact top-K, nearest first
    kth: np.ndarray = field(default=None)  # (queries,) similarity of the exact K-th neighbour

    @property
    def timed_queries(self) -> np.ndarray:
        return self.queries[WARMUP:]


def _unit(x: np.ndarray) -> np.ndarray:
    import numpy as np

    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def uniform(n: int, queries: int, seed: int = 1, dim: int = DIM) -> Dataset:
    """Unit vectors uniform on the sphere: no structure at all, the hardest case for HNSW."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return Dataset("uniform", "uniform random (worst case)",
                   _unit(rng.standard_normal((n, dim), dtype=np.float32)),
                   _unit(rng.standard_normal((WARMUP + queries, dim), dtype=np.float32)))


def clustered(n: int, queries: int, seed: int = 2, dim: int = DIM, clusters: int = 1000) -> Dataset:
    """Points around `clusters` random unit centres, each cluster with its own spread (a noise
    of norm 0.5..0.8, i.e. cosine 0.78..0.89 to the centre), normalised: topics of documents,
    as real text embeddings have them. Queries are new points drawn the same way."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((clusters, dim), dtype=np.float32))
    spread = rng.uniform(0.5, 0.8, clusters).astype(np.float32) / np.sqrt(dim, dtype=np.float32)

    def draw(m: int) -> np.ndarray:
        c = rng.integers(0, clusters, m)
        return _unit(centres[c] + rng.standard_normal((m, dim), dtype=np.float32) * spread[c, None])

    return Dataset("clustered", f"clustered ({clusters:,} clusters, like real embeddings)",
                   draw(n), draw(WARMUP + queries))


DATASETS = {"uniform": uniform, "clustered": clustered}


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k by brute force (rows are unit vectors): (ids nearest first, k-th similarity)."""
    import numpy as np

    ids = np.empty((len(queries), k), dtype=np.int64)
    kth = np.empty(len(queries), dtype=np.float32)
    for start in range(0, len(queries), 64):
        sims = queries[start:start + 64] @ data.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for row, cand in enumerate(part):
            order = cand[np.argsort(-sims[row, cand], kind="stable")]
            ids[start + row] = order
            kth[start + row] = sims[row, order[-1]]
    return ids, kth


def recall_at_k(found: Sequence[Sequence[int]], exact: np.ndarray, *, data: np.ndarray | None = None,
                queries: np.ndarray | None = None, kth: np.ndarray | None = None, k: int = K) -> float:
    """Mean over queries of |found ∩ exact top-k| / k. With data, queries and kth given, a
    found id that is not in the exact list but as close as the exact k-th neighbour (a tie,
    within float32 error) counts too; duplicates and ids past the k-th count once / not at all."""
    total = 0.0
    for q, (got, want) in enumerate(zip(found, exact)):
        want_set = set(int(i) for i in want[:k])
        hits = 0
        seen = set()
        for i in list(got)[:k]:
            i = int(i)
            if i in seen:
                continue
            seen.add(i)
            if i in want_set:
                hits += 1
            elif data is not None and 0 <= i < len(data) and _dot(data[i], queries[q]) >= float(kth[q]) - TIE_EPS:
                hits += 1
        total += min(hits, k) / k
    return total / max(1, len(exact))


def _dot(a, b) -> float:
    if getattr(a, "dtype", None) is not None:
        return float(a @ b)
    return float(sum(float(x) * float(y) for x, y in zip(a, b)))


def prepare(ds: Dataset) -> Dataset:
    ds.exact, ds.kth = exact_top_k(ds.data, ds.timed_queries)
    return ds


# -- stores -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreEntry:
    """One vector store. `build(workdir, name)` -> (a fresh, not yet created store, cleanup);
    `finish(store)` builds a store's index after loading, when it does so (timed apart);
    `index_probe(store)` -> a function giving the seconds the store spent on index work inside
    its writes so far (when it builds or merges an index during inserts);
    `sweep` = (settings, reopen(store, setting) -> a store on the same data with those query
    settings), each setting a dict of constructor keywords."""

    name: str
    module: str  # agentkeep.vector_db.<module>: the entry runs only when it imports
    build: Callable[[str, str], tuple[Any, Callable[[], None]]]
    unavailable: Callable[[], Optional[str]] = lambda: None
    target: Callable[[], str] = lambda: "this process"
    finish: Optional[Callable[[Any], None]] = None
    index_probe: Optional[Callable[[Any], Callable[[], float]]] = None
    index_note: str = "in insert"  # what the index-build row says when there is no figure
    sweep: Optional[tuple[list[dict], Callable[[Any, dict], Any]]] = None
    default: bool = True  # in the default --stores set


def _pg_url() -> str:
    from tests.services.pgvector import server_url  # $AGENTKEEP_PGVECTOR_URL, else an embedded server

    return server_url()


def _pg_unavailable() -> Optional[str]:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        return f"driver not installed ({exc})"
    from tests.services.pgvector import unavailable

    return unavailable()


def _pg_target() -> str:
    from tests.services.pgvector import target

    return target()


def _pgvector(index: Optional[str] = "hnsw"):
    def build(workdir: str, name: str):
        from agentkeep.vector_db.pgvector import PgVector

        store = PgVector(name, db_url=_pg_url(), index=index, pool_size=2)

        def cleanup() -> None:
            try:
                store.drop()
            finally:
                store.close()

        return store, cleanup

    return build


def _pg_reopen(store, setting: dict):
    from agentkeep.vector_db.pgvector import PgVector

    return PgVector(store.table_name, db_url=_pg_url(), dimensions=store.dimensions, pool_size=1, **setting)


def _pg_index_after_load(store) -> None:
    """CREATE INDEX on the loaded table, as PgVector(index="hnsw") would have made it on the
    empty one, with enough maintenance_work_mem for the graph to be built in memory."""
    store.index = "hnsw"
    with store._conn() as conn, conn.transaction():
        conn.execute("SET LOCAL maintenance_work_mem = '1GB'")
        conn.execute(store._vector_index_sql())


def setting_label(setting: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items())


def _lancedb(workdir: str, name: str):
    from agentkeep.vector_db.lancedb import LanceDb

    store = LanceDb(name, uri=workdir)

    def cleanup() -> None:
        try:
            store.drop()
        finally:
            store.close()

    return store, cleanup


def _lancedb_reopen(store, setting: dict):
    from agentkeep.vector_db.lancedb import LanceDb

    return LanceDb(store.table_name, uri=store.uri, **setting)


def _lancedb_target() -> str:
    import lancedb

    return f"LanceDB {lancedb.__version__} embedded, a local directory"


def _write_hook_probe(store) -> Callable[[], Optional[float]]:
    """Times the store's after-write hook (its index build and periodic optimize()), which
    runs inside upsert: a probe of a private method, absent when the store has none."""
    hook = getattr(store, "_after_write", None)
    if hook is None:
        return lambda: None
    spent = [0.0]

    def timed(*args, **kwargs):
        t0 = perf()
        try:
            return hook(*args, **kwargs)
        finally:
            spent[0] += perf() - t0

    store._after_write = timed
    return lambda: spent[0]


def _qdrant(workdir: str, name: str):
    from agentkeep.vector_db.qdrant import QdrantDb

    store = QdrantDb(name, path=workdir)

    def cleanup() -> None:
        try:
            store.drop()
        finally:
            store.close()

    return store, cleanup


def _qdrant_target() -> str:
    import qdrant_client

    version = getattr(qdrant_client, "__version__", None) or importlib.metadata.version("qdrant-client")
    return f"qdrant-client {version} local mode (a folder; exact search in Python, no HNSW: not a Qdrant server)"


def _chroma_client(path: str):
    import chromadb
    from chromadb.config import Settings

    return chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))


def _chroma(workdir: str, name: str):
    from agentkeep.vector_db.chroma import ChromaDb

    store = ChromaDb(name, client=_chroma_client(workdir))
    store.bench_path = workdir  # for the sweep, which reopens the folder

    def cleanup() -> None:
        from chromadb.api.client import SharedSystemClient

        try:
            _chroma_client(workdir).delete_collection(name)
        finally:
            SharedSystemClient.clear_system_cache()  # this folder's system, kept alive by chromadb

    return store, cleanup


def _chroma_reopen(store, setting: dict):
    """Chroma keeps ef_search in the collection's configuration, and an index loaded in this
    process keeps the value it was loaded with: change the configuration, drop chromadb's
    cached systems and open the folder again."""
    from chromadb.api.client import SharedSystemClient

    from agentkeep.vector_db.chroma import ChromaDb

    _chroma_client(store.bench_path).get_collection(store.collection, embedding_function=None).modify(
        configuration={"hnsw": setting})
    SharedSystemClient.clear_system_cache()
    return ChromaDb(store.collection, client=_chroma_client(store.bench_path))


def _chroma_target() -> str:
    import chromadb

    return f"chromadb {chromadb.__version__} PersistentClient (embedded, a folder)"


def _in_memory(workdir: str, name: str):
    from agentkeep.vector_db.in_memory import InMemoryVectorDb

    store = InMemoryVectorDb()
    return store, store.drop


STORES: list[StoreEntry] = [
    StoreEntry("pgvector", "pgvector", _pgvector(), _pg_unavailable, _pg_target,
               index_note="in insert (HNSW, row by row)",
               sweep=([{"ef_search": v} for v in (40, 100, 200, 400)], _pg_reopen)),
    StoreEntry("lancedb", "lancedb", _lancedb, target=_lancedb_target, index_probe=_write_hook_probe,
               index_note="IVF_HNSW_SQ built by the write that passes 10,000 rows, optimize() every 100 writes",
               sweep=([{"ef": 100}, {"ef": 300}, {"ef": 600}, {"ef": 300, "nprobes": 50}], _lancedb_reopen)),
    StoreEntry("qdrant", "qdrant", _qdrant, target=_qdrant_target, index_note="none (local mode scans exactly)"),
    StoreEntry("chroma", "chroma", _chroma, target=_chroma_target, index_note="in insert (HNSW)",
               sweep=([{"ef_search": v} for v in (100, 200, 400)], _chroma_reopen)),
    # the same table without an ANN index: every query is an exact scan (a check of the harness)
    StoreEntry("pgvector_exact", "pgvector", _pgvector(None), _pg_unavailable, _pg_target,
               index_note="none (exact scan)", default=False),
    # PgVector's table loaded without the ANN index, which is then built in one go (a bulk-load
    # recipe, compared with the default of growing the index row by row)
    StoreEntry("pgvector_bulk", "pgvector", _pgvector(None), _pg_unavailable, _pg_target, finish=_pg_index_after_load,
               sweep=([{"ef_search": v} for v in (40, 100, 200, 400)], _pg_reopen), default=False),
    # the reference store (exact, pure Python: slow past a few thousand vectors)
    StoreEntry("in_memory", "in_memory", _in_memory, default=False),
]
BY_NAME = {s.name: s for s in STORES}


def importable(entry: StoreEntry) -> Optional[str]:
    """None when the store's module imports, else why not."""
    try:
        importlib.import_module(f"agentkeep.vector_db.{entry.module}")
    except Exception as exc:  # noqa: BLE001 - a missing module or driver just leaves the store out
        return f"agentkeep.vector_db.{entry.module} does not import ({type(exc).__name__}: {exc})"
    return None


# -- measuring one store on one dataset -------------------------------------------------------


def _chunks(ds: Dataset, start: int, stop: int) -> list:
    from agentkeep.vector_db.base import Chunk

    rows = ds.data[start:stop].tolist()
    return [Chunk(id=str(start + j), content=f"chunk {start + j}", content_id=f"doc{(start + j) // 100}",
                  embedding=v, position=(start + j) % 100) for j, v in enumerate(rows)]


def insert(store, ds: Dataset, budget: float) -> dict:
    """Loads every vector in batches of BATCH; only the upsert calls are timed."""
    progress = Progress(f"insert {len(ds.data):,} vectors", len(ds.data), budget)
    spent = 0.0
    for start in range(0, len(ds.data), BATCH):
        batch = _chunks(ds, start, start + BATCH)
        t0 = perf()
        store.upsert(batch)
        spent += perf() - t0
        done = min(len(ds.data), start + BATCH)
        try:
            progress.check(done)
        except Infeasible as exc:
            raise Infeasible(f"{exc} (insert rate {done / spent:,.0f}/s)") from None
    return {"insert_s": spent, "insert_rate": len(ds.data) / spent}


def query(store, ds: Dataset) -> dict:
    """p50/p95 ms of top-K vector searches and recall@K against the exact answer."""
    import numpy as np

    for q in ds.queries[:WARMUP]:
        store.search(embedding=q.tolist(), limit=K, search_type="vector")
    times, found = [], []
    for q in ds.timed_queries:
        emb = q.tolist()
        t0 = perf()
        hits = store.search(embedding=emb, limit=K, search_type="vector")
        times.append(perf() - t0)
        found.append([int(h.id) for h in hits])
    ms = np.array(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "recall": recall_at_k(found, ds.exact, data=ds.data, queries=ds.timed_queries, kth=ds.kth)}


def exact_baseline(ds: Dataset) -> dict:
    """The same top-K queries answered by a numpy scan of the float32 matrix in this process."""
    import numpy as np

    times = []
    for q in ds.timed_queries:
        t0 = perf()
        sims = ds.data @ q
        part = np.argpartition(-sims, K - 1)[:K]
        part[np.argsort(-sims[part])]
        times.append(perf() - t0)
    ms = np.array(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "recall": 1.0}


def run_store(entry: StoreEntry, ds: Dataset, workdir: str, budget: float, log=print) -> dict:
    """Everything measured for one store on one dataset; an error or an infeasible load is
    recorded in the result (with the figures measured before it), never raised."""
    res: dict = {"metrics": {}, "sweep": {}, "error": None, "infeasible": None}
    name = f"bench_{entry.name}_{ds.name}_{uuid.uuid4().hex[:8]}"
    where = os.path.join(workdir, name)
    os.makedirs(where, exist_ok=True)
    cleanup = None
    try:
        store, cleanup = entry.build(where, name)
        store.create(len(ds.data[0]))
        index_work = entry.index_probe(store) if entry.index_probe else None
        try:
            res["metrics"].update(insert(store, ds, budget))
        finally:
            spent = index_work() if index_work is not None else None
            if spent is not None:
                res["metrics"]["index_in_insert_s"] = spent
        log(f"  {entry.name:15} {ds.name:10} insert {res['metrics']['insert_rate']:,.0f}/s")
        if entry.finish is not None:
            t0 = perf()
            entry.finish(store)
            res["metrics"]["index_s"] = perf() - t0
        res["metrics"].update(query(store, ds))
        m = res["metrics"]
        log(f"  {entry.name:15} {ds.name:10} p50 {m['p50_ms']:.2f} ms, p95 {m['p95_ms']:.2f} ms, "
            f"recall@{K} {m['recall']:.3f}")
        if entry.sweep:
            settings, reopen = entry.sweep
            for setting in settings:
                label = setting_label(setting)
                other = reopen(store, setting)
                try:
                    res["sweep"][label] = query(other, ds)
                finally:
                    if other is not store and hasattr(other, "close"):
                        other.close()
                s = res["sweep"][label]
                log(f"  {entry.name:15} {ds.name:10} {label}: p50 {s['p50_ms']:.2f} ms, recall@{K} {s['recall']:.3f}")
    except Infeasible as exc:
        res["infeasible"] = str(exc)
        log(f"  {entry.name:15} {ds.name:10} INFEASIBLE {exc}")
    except Exception:  # noqa: BLE001 - reported in the table, the run goes on
        res["error"] = traceback.format_exc()
        log(f"  {entry.name:15} {ds.name:10} ERROR {res['error'].strip().splitlines()[-1]}")
    finally:
        if cleanup is not None:
            try:
                cleanup()
            except Exception as exc:  # noqa: BLE001
                log(f"  {entry.name}: cleanup failed: {type(exc).__name__}: {exc}")
        shutil.rmtree(where, ignore_errors=True)
    return res


def smallest_reaching(entry: StoreEntry, res: dict, target: float = RECALL_TARGET):
    """(setting label, its figures) of the first swept setting whose recall reaches target, else None."""
    if not entry.sweep:
        return None
    for setting in entry.sweep[0]:
        s = res.get("sweep", {}).get(setting_label(setting))
        if s and s["recall"] >= target:
            return setting_label(setting), s
    return None


# -- knowledge ingest -------------------------------------------------------------------------

_WORDS = (
    "agent memory session store vector index query search result answer question context tool call "
    "user team policy retention backup restore key rotate secret token model prompt response stream "
    "latency throughput cache replica shard primary failover schema migration table column row "
    "document chunk embedding score filter metadata content source file folder page section heading "
    "paragraph summary report metric trace span error retry timeout budget limit quota billing invoice "
    "customer account support ticket escalation owner review approval schedule job queue worker "
    "deploy release version config setting default option feature flag rollout region cluster node "
    "disk memory network request client server endpoint service gateway proxy auth login password "
    "the a of to and in for on with by from as is are was be can will should must may not each every "
    "new old first last next other same more most less small large fast slow safe simple"
).split()


def markdown_folder(path: str, files: int = 1000, seed: int = 3) -> int:
    """Writes `files` Markdown files of about 1-3 KB (a title, 2-4 sections of 1-3 paragraphs)
    into `path`; returns the bytes written."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = np.array(_WORDS)
    total = 0
    os.makedirs(path, exist_ok=True)

    def sentence() -> str:
        s = " ".join(words[rng.integers(0, len(words), rng.integers(6, 16))])
        return s[0].upper() + s[1:] + "."

    for i in range(files):
        goal = int(rng.integers(1000, 3000))
        parts = [f"# {' '.join(words[rng.integers(0, len(words), 4)]).title()} {i}", ""]
        size = len(parts[0])
        sections = int(rng.integers(2, 5))
        for s in range(sections):
            parts += [f"## {' '.join(words[rng.integers(0, len(words), 3)]).capitalize()}", ""]
            for _ in range(int(rng.integers(1, 4))):
                if size > goal * (s + 1) / sections:
                    break
                para = " ".join(sentence() for _ in range(int(rng.integers(3, 7))))
                parts += [para, ""]
                size += len(para)
        text = "\n".join(parts)
        with open(os.path.join(path, f"doc_{i:04d}.md"), "w") as f:
            f.write(text)
        total += len(text.encode())
    return total


def _embedder(kind: str):
    from agentkeep.knowledge.embedder import HashingEmbedder, SentenceTransformerEmbedder

    return HashingEmbedder(DIM) if kind == "hashing" else SentenceTransformerEmbedder()


EMBEDDERS = {"hashing": "HashingEmbedder(384)", "minilm": "SentenceTransformerEmbedder() (all-MiniLM-L6-v2, CPU)"}


def run_ingest(kind: str, folder: str, workdir: str, log=print) -> dict:
    """add_content(path=folder) into Knowledge(SqliteDb, PgVector, embedder), then the same
    embedder alone on the same chunks (one embed call per file, as add_content does)."""
    from agentkeep.db.sqlite import SqliteDb
    from agentkeep.knowledge import INGEST_KEY, Knowledge, MarkdownChunker, MarkdownReader
    from agentkeep.vector_db.pgvector import PgVector

    res: dict = {"metrics": {}, "error": None, "infeasible": None, "notes": []}
    where = tempfile.mkdtemp(prefix=f"ingest-{kind}-", dir=workdir)
    store = contents = None
    try:
        embedder = _embedder(kind)
        t0 = perf()
        dims = embedder.dimensions  # loads a model now, not inside the timed part
        embedder.embed(["warm-up: the first call initialises the runtime"])
        res["metrics"]["load_s"] = perf() - t0
        store = PgVector(f"bench_ingest_{kind}_{uuid.uuid4().hex[:8]}", db_url=_pg_url(), pool_size=2)
        contents = SqliteDb(db_file=os.path.join(where, "contents.db"))
        knowledge = Knowledge(vector_db=store, contents_db=contents, embedder=embedder, name="bench")
        t0 = perf()
        rows = knowledge.add_content(path=folder)
        spent = perf() - t0
        failed = [r for r in rows if r.status != "completed"]
        chunks = sum((r.metadata.get(INGEST_KEY) or {}).get("chunks", 0) for r in rows)
        res["metrics"].update(files=len(rows), chunks=chunks, ingest_s=spent, files_rate=len(rows) / spent,
                              chunks_rate=chunks / spent, failed=len(failed), stored=store.count())
        if failed:
            res["notes"].append(f"{len(failed)} files failed, e.g. {failed[0].status_message}")
        if res["metrics"]["stored"] != chunks:
            res["notes"].append(f"the store holds {res['metrics']['stored']:,} chunks, the catalog says {chunks:,}")
        log(f"  ingest {kind:8} {len(rows):,} files, {chunks:,} chunks in {spent:.1f} s "
            f"({len(rows) / spent:,.1f} files/s, {chunks / spent:,.0f} chunks/s, {dims}-d)")
        reader, chunker = MarkdownReader(), MarkdownChunker()
        per_file = []
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), "rb") as f:
                per_file.append([p.text for p in chunker.chunk(reader.read(f.read(), name=name))])
        t0 = perf()
        for texts in per_file:
            embedder.embed(texts)
        alone = perf() - t0
        n = sum(len(t) for t in per_file)
        res["metrics"].update(embed_s=alone, embed_rate=n / alone, embed_files_rate=len(per_file) / alone,
                              embed_share=alone / spent)
        log(f"  embed  {kind:8} alone: {n:,} chunks in {alone:.1f} s ({n / alone:,.0f} chunks/s)")
    except Exception:  # noqa: BLE001
        res["error"] = traceback.format_exc()
        log(f"  ingest {kind:8} ERROR {res['error'].strip().splitlines()[-1]}")
    finally:
        if contents is not None:
            contents.close()
        if store is not None:
            try:
                store.drop()
            finally:
                store.close()
        shutil.rmtree(where, ignore_errors=True)
    return res


# -- the table --------------------------------------------------------------------------------


class Notes:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def mark(self, kind: str, text: str) -> str:
        marker = f"{'E' if kind == 'error' else 'I'}{len(self.items) + 1}"
        self.items.append((marker, text))
        return marker


def _ms(v: float) -> str:
    return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms" if v < 100 else f"{v:,.0f} ms"


def _rate(v: float) -> str:
    return f"{v:,.0f}/s" if v >= 100 else f"{v:,.1f}/s"


def _problem(res: dict, notes: Notes) -> str:
    if res.get("error"):
        return f"error [{notes.mark('error', res['error'].strip().splitlines()[-1])}]"
    return f"infeasible [{notes.mark('infeasible', res['infeasible'])}]"


def _index_cell(e: StoreEntry, res: dict) -> str:
    m = res["metrics"]
    if "index_s" in m:
        return f"{m['index_s']:.1f} s after load"
    if "index_in_insert_s" in m:
        return f"{m['index_in_insert_s']:.1f} s of the insert time ({e.index_note})"
    return e.index_note if m and e.finish is None else "—"


def search_table(entries: list[StoreEntry], datasets: list[Dataset], results: dict, baselines: dict,
                 n: int, queries: int, notes: Notes):
    """-> (header, body): a row per figure, a column per store, the exact numpy baseline last."""
    header = ["Dataset", "Metric", "Target", *[e.name for e in entries], "exact (numpy)"]
    body = []
    for ds in datasets:
        first = True

        def row(label: str, target: str, cell: Callable[[StoreEntry, dict], str], base: str = "") -> None:
            nonlocal first
            cells = [f"{ds.label}, {n:,} x {DIM}-d" if first else "", label, target]
            first = False
            for e in entries:
                res = results.get((e.name, ds.name))
                if res is None:
                    cells.append("not run")
                    continue
                text = cell(e, res)
                if text == "—" and (res.get("error") or res.get("infeasible")):
                    text = _problem(res, notes)
                cells.append(text)
            cells.append(base)
            body.append(cells)

        def metric(key: str, fmt: Callable[[float], str], check=None):
            def cell(e: StoreEntry, res: dict) -> str:
                v = res["metrics"].get(key)
                if v is None:
                    return "—"
                ok = check(v) if check else None
                return fmt(v) + ("" if ok is None else " ✓" if ok else " ✗")
            return cell

        base = baselines.get(ds.name) or {}
        row(f"insert, chunks/s (batches of {BATCH})", "≥ 1,000/s", metric("insert_rate", _rate, lambda v: v >= 1000))
        row("index build, s", "", _index_cell)
        row(f"query top-{K}, p50 ({queries} queries), default settings", "< 10 ms",
            metric("p50_ms", _ms, lambda v: v < 10), _ms(base["p50_ms"]) if base else "")
        row(f"query top-{K}, p95", "", metric("p95_ms", _ms), _ms(base["p95_ms"]) if base else "")
        row(f"recall@{K} vs exact, default settings", f"≥ {RECALL_TARGET}",
            metric("recall", lambda v: f"{v:.3f}", lambda v: v >= RECALL_TARGET), "1.000" if base else "")
        knobs = [(e, setting_label(v)) for e in entries if e.sweep for v in e.sweep[0]]
        for e, label in knobs:

            def swept(other: StoreEntry, res: dict, e=e, label=label) -> str:
                if other is not e:
                    return ""
                s = res.get("sweep", {}).get(label)
                if not s:
                    return "—"
                mark = " ✓" if s["recall"] >= RECALL_TARGET else " ✗"
                return f"{s['recall']:.3f}{mark}, p50 {_ms(s['p50_ms'])}, p95 {_ms(s['p95_ms'])}"

            row(f"{e.name} {label}: recall@{K}, p50, p95", f"recall ≥ {RECALL_TARGET}", swept)
    return header, body


def ingest_table(kinds: list[str], results: dict, files: int, size_kb: float, notes: Notes):
    header = ["Embedder", "Metric", "Knowledge.add_content (SqliteDb + PgVector)", "embedder alone (same chunks)"]
    body = []
    for kind in kinds:
        res = results.get(kind) or {}
        m = res.get("metrics", {})
        problem = _problem(res, notes) if res.get("error") or res.get("infeasible") else "—"

        def v(key, fmt):
            return fmt(m[key]) if key in m else problem

        label = EMBEDDERS[kind]
        body.append([label, f"files/s ({files:,} Markdown files, {size_kb:,.0f} KB)", v("files_rate", _rate),
                     v("embed_files_rate", _rate)])
        body.append(["", "chunks/s", v("chunks_rate", _rate), v("embed_rate", _rate)])
        body.append(["", "chunks, total s", (f"{m['chunks']:,} in {m['ingest_s']:.1f} s" if "chunks" in m else problem),
                     (f"{m['embed_s']:.1f} s ({m['embed_share']:.0%} of add_content)" if "embed_s" in m else "")])
        body.append(["", "model load + first call (untimed above), s", v("load_s", lambda x: f"{x:.1f} s"), ""])
    return header, body


# -- the command ------------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m bench.vectors", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="vectors per dataset (default 100,000)")
    ap.add_argument("--queries", type=int, default=200, help="timed queries per measurement (default 200)")
    ap.add_argument("--stores", default="", help="comma-separated, from: " + ",".join(BY_NAME)
                    + " (default: every default store whose module imports)")
    ap.add_argument("--datasets", default="uniform,clustered", help="comma-separated: uniform,clustered")
    ap.add_argument("--only", default="search,ingest", help="comma-separated: search (vector stores), "
                    "ingest (Knowledge.add_content)")
    ap.add_argument("--files", type=int, default=1000, help="Markdown files for the ingest benchmark (default 1,000)")
    ap.add_argument("--embedders", default="hashing,minilm", help="comma-separated: hashing,minilm")
    ap.add_argument("--ef-search", default="", help="the PgVector ef_search values to sweep (default 40,100,200,400)")
    ap.add_argument("--budget", type=float, default=1200.0,
                    help="seconds an insert loop may take before it is reported infeasible (default 1200)")
    ap.add_argument("--markdown", metavar="FILE", help="also write the tables as markdown")
    ap.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    ap.add_argument("--workdir", default=None, help="where the temporary files go (default: a new dir in $TMPDIR)")
    args = ap.parse_args(argv)
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    args.stores = split(args.stores)
    bad = [s for s in args.stores if s not in BY_NAME]
    if bad:
        ap.error(f"unknown store(s) {bad}; choose from {list(BY_NAME)}")
    args.datasets = split(args.datasets)
    if [d for d in args.datasets if d not in DATASETS]:
        ap.error(f"--datasets: choose from {list(DATASETS)}")
    args.only = split(args.only)
    if [o for o in args.only if o not in ("search", "ingest")]:
        ap.error("--only: choose from search,ingest")
    args.embedders = split(args.embedders)
    if [e for e in args.embedders if e not in EMBEDDERS]:
        ap.error(f"--embedders: choose from {list(EMBEDDERS)}")
    args.ef_search = [int(x) for x in split(args.ef_search)]
    if args.n < K or args.queries < 1:
        ap.error(f"--n must be at least {K} and --queries at least 1")
    return args


def main(argv=None) -> int:
    from rich.console import Console

    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = Console()
    if not out.is_terminal:
        out = Console(width=220)
    err = Console(stderr=True)

    def log(text: str) -> None:
        err.print(text, highlight=False, markup=False, soft_wrap=True)

    workdir = args.workdir or tempfile.mkdtemp(prefix="agentkeep-bench-vectors-")
    os.makedirs(workdir, exist_ok=True)
    load_start = os.getloadavg()
    t_start = perf()
    notes = Notes()
    global_notes: list[str] = []
    entries: list[StoreEntry] = []
    wanted = (args.stores or [s.name for s in STORES if s.default]) if "search" in args.only else []
    needs_pg = "ingest" in args.only
    for name in wanted:
        entry = BY_NAME[name]
        why = importable(entry) or entry.unavailable()
        if why:
            msg = f"{name}: SKIPPED, {why}"
            log(msg)
            global_notes.append(msg)
            continue
        if args.ef_search and entry.sweep and entry.module == "pgvector":
            settings = [{"ef_search": v} for v in args.ef_search]
            entry = StoreEntry(**{**entry.__dict__, "sweep": (settings, entry.sweep[1])})
        entries.append(entry)
        global_notes.append(f"{name} ran against {entry.target()}")
    if needs_pg and not any(e.module == "pgvector" for e in entries):
        why = _pg_unavailable()
        if why:
            log(f"ingest: SKIPPED, PgVector is not available ({why})")
            global_notes.append(f"ingest: SKIPPED, PgVector is not available ({why})")
            args.only.remove("ingest")
        else:
            global_notes.append(f"ingest ran against {_pg_target()}")
    log(f"agentkeep vector bench: N={args.n:,}, {args.queries} queries, stores {[e.name for e in entries]}, "
        f"workdir {workdir}")

    search_results: dict = {}
    baselines: dict = {}
    datasets: list[Dataset] = []
    ingest_results: dict = {}
    files_kb = 0.0
    try:
        if "search" in args.only and entries:
            for dname in args.datasets:
                t0 = perf()
                ds = prepare(DATASETS[dname](args.n, args.queries))
                datasets.append(ds)
                baselines[dname] = exact_baseline(ds)
                log(f"dataset {ds.label}: {args.n:,} x {DIM}, exact answers in {perf() - t0:.1f} s; numpy scan "
                    f"p50 {baselines[dname]['p50_ms']:.2f} ms")
                for entry in entries:  # one store at a time
                    search_results[(entry.name, dname)] = run_store(entry, ds, workdir, args.budget, log)
                ds.data = None  # free the matrix before the next dataset
        if "ingest" in args.only and args.embedders:
            folder = os.path.join(workdir, "markdown")
            files_kb = markdown_folder(folder, args.files) / 1024
            for kind in args.embedders:
                ingest_results[kind] = run_ingest(kind, folder, workdir, log)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    wall = perf() - t_start

    load_end = os.getloadavg()
    numpy_version = importlib.metadata.version("numpy")
    env = (f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}, Python {platform.python_version()}, numpy "
           f"{numpy_version}, {os.cpu_count()} CPUs, {platform.machine()}, total {wall:.0f} s, load average "
           f"{load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} at start / {load_end[0]:.2f} "
           f"{load_end[1]:.2f} {load_end[2]:.2f} at end (other processes skew timings)")
    tables = []
    if datasets:
        header, body = search_table(entries, datasets, search_results, baselines, args.n, args.queries, notes)
        tables.append(("Vector search", header, body))
        for entry in entries:
            if not entry.sweep:
                continue
            for ds in datasets:
                res = search_results.get((entry.name, ds.name)) or {}
                hit = smallest_reaching(entry, res)
                if res.get("sweep"):
                    global_notes.append(
                        f"{entry.name}, {ds.name}: " + (
                            f"{hit[0]} is the first setting tried that reaches recall@{K} ≥ {RECALL_TARGET} "
                            f"({hit[1]['recall']:.3f}, p50 {_ms(hit[1]['p50_ms'])})" if hit else
                            f"no setting tried ({'; '.join(map(setting_label, entry.sweep[0]))}) reaches "
                            f"recall@{K} ≥ {RECALL_TARGET}"))
    if ingest_results:
        header, body = ingest_table(args.embedders, ingest_results, args.files, files_kb, notes)
        tables.append(("Knowledge ingest", header, body))
        for kind, res in ingest_results.items():
            global_notes += [f"ingest {kind}: {n}" for n in res.get("notes", [])]
    legend = (f"Baseline: exact (numpy) = brute-force cosine top-{K} over the same float32 vectors in this process "
              f"(also the ground truth of recall@{K}); embedder alone = the embedder on the same chunks, one call "
              "per file. ✓/✗: against the target (informational only).")
    note_lines = [f"[{m}] {t}" for m, t in notes.items] + global_notes
    for title, header, body in tables:
        out.print(to_rich(header, body, title))
    out.print(f"[dim]{env}[/dim]", highlight=False)
    out.print(f"[dim]{legend}[/dim]", highlight=False)
    for line in note_lines:
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    if args.markdown:
        md = ["# agentkeep vector benchmarks", "", env, ""]
        for title, header, body in tables:
            md += [f"## {title}", "", to_markdown(header, body), ""]
        md += [legend, "", "## Notes", ""] + [f"- {line}" for line in note_lines]
        errors = [(f"{k[0]} / {k[1]}", r["error"]) for k, r in search_results.items() if r.get("error")]
        errors += [(f"ingest / {k}", r["error"]) for k, r in ingest_results.items() if r.get("error")]
        if errors:
            md += ["", "## Errors", ""]
            for what, tb in errors:
                md += [f"### {what}", "", "```", "\n".join(tb.strip().splitlines()[-30:]), "```", ""]
        with open(args.markdown, "w") as f:
            f.write("\n".join(md) + "\n")
        log(f"markdown written to {args.markdown}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "n": args.n, "queries": args.queries, "baselines": baselines,
                       "search": {f"{k[0]}/{k[1]}": v for k, v in search_results.items()},
                       "ingest": ingest_results}, f, indent=2, default=str)
        log(f"json written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
