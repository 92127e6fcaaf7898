"""Ingestion at scale: throughput for many small files, peak memory for large ones.

    python -m bench.ingest [--files 2000] [--sizes 10,100] [--old-sizes 10,100] [--dims 384] [--pg-url URL] [--minilm]

Throughput: a folder of `--files` small text files (one chunk each) added to an
InMemoryVectorDb (catalog in memory), "batched" (one `add_content(path=folder)` call: the
chunks of many files share each embedder call) and "per content" (one `add_content` call per
file: one embedder call per file, as every addition did before batching), in the same run.
Embedders: `hashing` (HashingEmbedder, no cost per call), `hashing+5ms` (the same with a 5 ms
pause per call, standing in for an embedding service's round trip) and, with `--minilm`, the
packaged all-MiniLM-L6-v2 (agentkeep[local-embeddings]) on its default device.

Peak memory: a child process adds one generated text file of each `--sizes` MB to a PgVector
table (the rows live in the server, so the client's memory is the ingestion's own), with a
cheap deterministic embedder (`--dims` numbers from hashes of the text); the figure is the child's
peak RSS over its RSS just before the call. "new" streams the file; "old" reads, chunks and
embeds it whole before one write (the path of files under `Knowledge.STREAM_BYTES`), run for
the `--old-sizes`. PgVector: `--pg-url`, else $AGENTKEEP_PGVECTOR_URL, else an embedded
PostgreSQL with pgvector (the test suite's starter). Prints a table; no targets.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from agentkeep.knowledge import Embedder, HashingEmbedder, Knowledge
from agentkeep.vector_db.in_memory import InMemoryVectorDb

TOPICS = ["billing", "keys", "quota", "latency", "refunds", "backups", "alerts", "tokens", "regions", "limits"]


class SlowHashingEmbedder(HashingEmbedder):
    """HashingEmbedder plus a fixed pause per call: the round trip of an embedding service."""

    def __init__(self, pause: float) -> None:
        super().__init__(64)
        self.pause = pause

    def embed(self, texts):
        time.sleep(self.pause)
        return super().embed(texts)


class DigestEmbedder(Embedder):
    """`dimensions` numbers from hashes of the text: deterministic and cheap, so a 100 MB file
    is quick, and as long as a real model's vectors (what the old path holds in memory)."""

    def __init__(self, dimensions: int = 384) -> None:
        self._dimensions = dimensions

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def embed(self, texts):
        return [self._vector(t.encode()) for t in texts]

    def _vector(self, data: bytes) -> list[float]:
        numbers: list[float] = []
        for i in range(-(-self._dimensions // 32)):
            digest = hashlib.blake2b(data, digest_size=64, salt=i.to_bytes(16, "big")).digest()
            numbers += [x / 2 ** 16 + 0.01 for x in struct.unpack("32H", digest)]
        return numbers[:self._dimensions]


def write_folder(root: Path, count: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        (root / f"note{i:05}.txt").write_text(
            f"Note {i} on {topic}: the {topic} team answers ticket T-{i:05} within {i % 48 + 1} hours, "
            f"and escalates to the on-call engineer when the {topic} dashboard turns red.")
    return root


def write_text_file(path: Path, megabytes: int) -> Path:
    line = 0
    with open(path, "w") as f:
        while f.tell() < megabytes * 1_000_000:
            block = "".join(f"Line {line + i} tells of {TOPICS[(line + i) % 10]} and subject{(line + i) % 997}, "
                            f"as the log of day {(line + i) // 400} records it.\n" for i in range(1000))
            f.write(block)
            line += 1000
    return path


def throughput(embedder: Embedder, folder: Path, batched: bool) -> tuple[float, float]:
    """(docs/s, chunks/s) adding every file of `folder` to a fresh store."""
    kb = Knowledge(InMemoryVectorDb(), embedder=embedder)
    files = sorted(folder.iterdir())
    start = time.perf_counter()
    if batched:
        rows = kb.add_content(path=folder)
    else:
        rows = [kb.add_content(path=f) for f in files]
    seconds = time.perf_counter() - start
    assert all(r.status == "completed" for r in rows), [r.status_message for r in rows if r.status != "completed"]
    chunks = kb.vector_db.count()
    return len(files) / seconds, chunks / seconds


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(path: str, mode: str, pg_url: str, dimensions: str) -> None:
    """Add one file to a fresh PgVector table; print the peak RSS over the RSS before (MB)."""
    from agentkeep.vector_db.pgvector import PgVector

    store = PgVector(f"bench_ingest_{uuid.uuid4().hex[:10]}", db_url=pg_url, index=None)
    try:
        kb = Knowledge(store, embedder=DigestEmbedder(int(dimensions)))
        if mode == "old":
            kb.STREAM_BYTES = 1 << 62  # read, chunk and embed the file whole
        kb.add_content(text="warm up", name="warm-up")  # connections and imports before measuring
        before = rss_mb()
        start = time.perf_counter()
        row = kb.add_content(path=path)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"status": row.status, "message": row.status_message, "peak": peak - before,
                          "rss": peak, "seconds": seconds, "chunks": store.count(content_id=row.id)}))
    finally:
        store.drop()
        store.close()


def peak_memory(path: Path, mode: str, pg_url: str, dimensions: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.ingest", "--child", str(path), mode, pg_url, str(dimensions)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def pg_url(given: str | None) -> str:
    if given:
        return given
    from tests.services.pgvector import server_url  # $AGENTKEEP_PGVECTOR_URL, else an embedded server

    return server_url()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="small files in the folder (default 2000)")
    parser.add_argument("--sizes", default="10,100", help="MB of the large text files (default 10,100)")
    parser.add_argument("--old-sizes", default="10,100", help="sizes also added the old way, whole (default 10,100)")
    parser.add_argument("--pg-url", help="a PostgreSQL with pgvector for the memory figures")
    parser.add_argument("--minilm", action="store_true", help="also the packaged all-MiniLM-L6-v2")
    parser.add_argument("--dims", type=int, default=384,
                        help="dimensions of the memory figures' vectors (default 384, all-MiniLM-L6-v2's)")
    parser.add_argument("--skip-throughput", action="store_true", help="only the memory figures")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        folder = write_folder(Path(tmp) / "notes", args.files)
        embedders = [("hashing", lambda: HashingEmbedder(64)), ("hashing+5ms", lambda: SlowHashingEmbedder(0.005))]
        if args.minilm:
            from agentkeep.knowledge import SentenceTransformerEmbedder

            embedders.append(("minilm", SentenceTransformerEmbedder))
        if not args.skip_throughput:
            print(f"Throughput: a folder of {args.files} small text files, one chunk each, InMemoryVectorDb")
            print(f"{'embedder':<14}{'mode':<13}{'docs/s':>10}{'chunks/s':>10}")
        for label, make in [] if args.skip_throughput else embedders:
            embedder = make()
            for batched in (True, False):
                docs, chunks = throughput(embedder, folder, batched)
                print(f"{label:<14}{'batched' if batched else 'per content':<13}{docs:>10.0f}{chunks:>10.0f}",
                      flush=True)

        url = pg_url(args.pg_url)
        old = {int(s) for s in args.old_sizes.split(",") if s}
        print(f"\nPeak memory: one text file into PgVector (index=None), {args.dims}-dimensional vectors, "
              "the client's peak RSS over its RSS before")
        print(f"{'file':>8}  {'path':<14}{'peak MB':>9}{'seconds':>9}{'chunks':>9}")
        for size in (int(s) for s in args.sizes.split(",") if s):
            path = write_text_file(Path(tmp) / f"big{size}.txt", size)
            for mode in (["old"] if size in old else []) + ["new"]:
                got = peak_memory(path, mode, url, args.dims)
                what = "old (whole)" if mode == "old" else "new (stream)"
                if got["status"] != "completed":
                    print(f"{size:>6}MB  {what:<14}failed: {got['message']}")
                    continue
                print(f"{size:>6}MB  {what:<14}{got['peak']:>9.0f}{got['seconds']:>9.1f}{got['chunks']:>9}", flush=True)
            os.remove(path)


if __name__ == "__main__":
    main()
