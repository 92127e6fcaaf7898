"""Adding at scale: the chunks of many contents share embedder calls (a batch spans contents, a
content spans batches, a content the embedder refuses fails alone), and a large file is
streamed (the same chunks as read whole, replacing the old ones only once all are in, a
failure halfway leaving the old ones) with memory that does not grow with the file."""

from __future__ import annotations

import hashlib
import struct
import tracemalloc

import pytest

from agentkeep.knowledge import (
    INGEST_KEY,
    Embedder,
    EmbedderError,
    FixedSizeChunker,
    HashingEmbedder,
    Knowledge,
    TextReader,
)


class RecordingEmbedder(HashingEmbedder):
    """A hashing embedder that records the texts of each call; refuses texts holding `poison`
    and, after `fail_after` calls, every call."""

    def __init__(self, batch_size: int = 4, poison: str | None = None, fail_after: int | None = None) -> None:
        super().__init__(64, batch_size=batch_size)
        self.batches: list[list[str]] = []
        self.poison, self.fail_after = poison, fail_after

    def embed(self, texts):
        self.batches.append(list(texts))
        if self.fail_after is not None and len(self.batches) > self.fail_after:
            raise EmbedderError("the service went away")
        if self.poison and any(self.poison in t for t in texts):
            raise EmbedderError("input rejected")
        return super().embed(texts)


def notes(root, count, words=""):
    root.mkdir(exist_ok=True)
    for i in range(count):
        (root / f"note{i:02}.txt").write_text(f"Note {i} says topic{i} matters. {words}")
    return root


def test_one_embedder_call_takes_chunks_of_several_contents(vector_store, contents_db, tmp_path):
    embedder = RecordingEmbedder(batch_size=4)
    kb = Knowledge(vector_store, contents_db=contents_db, embedder=embedder)
    result = kb.add_content(path=notes(tmp_path / "notes", 10))
    assert len(result.added) == 10 and vector_store.count() == 10
    assert [len(b) for b in embedder.batches] == [4, 4, 2]  # not one call per file
    assert embedder.batches[0] == [f"Note {i} says topic{i} matters." for i in range(4)]
    for row in result:  # each chunk got its own content's vector
        [chunk] = vector_store.get([f"{row.id}:0"])
        want = HashingEmbedder(64).embed([chunk.content])[0]
        assert chunk.content_id == row.id and chunk.embedding == pytest.approx(want, abs=1e-6)
    assert kb.search("topic7", search_type="keyword")[0].content_id == result[7].id


def test_a_list_of_sources_shares_batches_and_a_content_spans_batches(vector_store, contents_db, tmp_path):
    embedder = RecordingEmbedder(batch_size=8)
    kb = Knowledge(vector_store, contents_db=contents_db, embedder=embedder, chunker=FixedSizeChunker(60, 0))
    long = tmp_path / "long.txt"
    long.write_text(" ".join(f"Sentence {i} of the long file." for i in range(40)))
    files = [notes(tmp_path / "a", 3), long, notes(tmp_path / "b", 3)]
    result = kb.add_sources(files)
    assert len(result.added) == 7
    chunks = sum(r.metadata[INGEST_KEY]["chunks"] for r in result)
    assert sum(map(len, embedder.batches)) == chunks and len(embedder.batches) == -(-chunks // 8)
    row = result[3]
    assert row.name == "long.txt" and vector_store.count(content_id=row.id) == row.metadata[INGEST_KEY]["chunks"] > 8
    stored = vector_store.get([f"{row.id}:{i}" for i in range(row.metadata[INGEST_KEY]["chunks"])])
    assert [c.position for c in stored] == list(range(len(stored)))
    for chunk, vector in zip(stored, HashingEmbedder(64).embed([c.content for c in stored])):
        assert chunk.embedding == pytest.approx(vector, abs=1e-6)


def test_a_content_the_embedder_refuses_fails_alone(vector_store, contents_db, tmp_path):
    root = notes(tmp_path / "notes", 6)
    (root / "note03.txt").write_text("POISON in this one")
    kb = Knowledge(vector_store, contents_db=contents_db, embedder=RecordingEmbedder(batch_size=4, poison="POISON"))
    result = kb.add_content(path=root)
    assert [r.name for r in result.failed] == ["notes/note03.txt"] and len(result.added) == 5
    assert result.failed[0].status_message == "EmbedderError: input rejected"
    assert vector_store.count() == 5 and vector_store.count(content_id=result.failed[0].id) == 0


def big_text(lines):
    return "".join(f"Line {i} tells of subject{i % 97} and of nothing else at all.\n" for i in range(lines))


@pytest.fixture
def streaming_kb(vector_store, contents_db):
    kb = Knowledge(vector_store, contents_db=contents_db, embedder=RecordingEmbedder(batch_size=16),
                   chunker=FixedSizeChunker(300, 30))
    kb.STREAM_BYTES = 4096  # files over 4 kB are streamed
    kb.WRITE_BATCH = 16  # and written a batch at a time
    return kb


def contents(store, row):
    info = row.metadata[INGEST_KEY]
    gen = info.get("generation")
    ids = [f"{row.id}:{gen}:{i}" if gen else f"{row.id}:{i}" for i in range(info["chunks"])]
    return [c.content for c in store.get(ids)]


def test_a_streamed_file_gives_the_chunks_it_gives_read_whole(streaming_kb, vector_store, tmp_path):
    path = tmp_path / "big.txt"
    path.write_text(big_text(600))  # ~40 kB
    row = streaming_kb.add_content(path=path)
    assert row.status == "completed" and row.size == path.stat().st_size and row.metadata[INGEST_KEY]["generation"]
    streamed = contents(vector_store, row)
    whole = FixedSizeChunker(300, 30).chunk(TextReader().read(path.read_bytes()))
    assert streamed == [c.text for c in whole]
    assert vector_store.count(content_id=row.id) == len(streamed) > 16
    hit = streaming_kb.search("subject42", search_type="keyword", user_id="someone")[0]
    assert hit.content_id == row.id and hit.metadata == {}  # the reserved keys stay inside

    calls = len(streaming_kb.embedder.batches)
    assert streaming_kb.add_content(path=path).updated_at == row.updated_at  # unchanged: no work
    assert len(streaming_kb.embedder.batches) == calls


def test_a_streamed_file_replaces_the_old_chunks_of_either_kind(streaming_kb, vector_store, tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("A small first version about apples.")
    small = streaming_kb.add_content(path=path)
    assert vector_store.count(content_id=small.id) == 1
    path.write_text(big_text(300))
    big = streaming_kb.add_content(path=path)  # written in one call before, streamed now
    assert big.id == small.id and vector_store.count(content_id=big.id) == big.metadata[INGEST_KEY]["chunks"]
    assert streaming_kb.search("apples", search_type="keyword") == []
    path.write_text(big_text(200).replace("subject", "topic"))
    bigger = streaming_kb.add_content(path=path)  # streamed over streamed
    assert vector_store.count(content_id=big.id) == bigger.metadata[INGEST_KEY]["chunks"]
    assert streaming_kb.search("subject1", search_type="keyword") == []
    path.write_text("Small again, about pears.")
    again = streaming_kb.add_content(path=path)  # one call over streamed
    assert vector_store.count(content_id=big.id) == 1 and again.metadata[INGEST_KEY] == {
        "hash": again.metadata[INGEST_KEY]["hash"], "source": "file", "chunks": 1}


def test_a_streamed_file_that_fails_halfway_leaves_the_old_chunks(streaming_kb, vector_store, tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text(big_text(300))
    first = streaming_kb.add_content(path=path)
    before = contents(vector_store, first)
    path.write_text(big_text(400).replace("subject", "topic"))
    embedder = streaming_kb.embedder
    embedder.fail_after = len(embedder.batches) + 3  # three batches written, then the service fails
    counts = []
    upsert = vector_store.upsert
    vector_store.upsert = lambda chunks: counts.append(upsert(chunks))  # counts what the batches wrote
    failed = streaming_kb.add_content(path=path)
    vector_store.upsert = upsert
    assert counts == [16, 16, 16]
    assert failed.status == "failed" and failed.status_message == "EmbedderError: the service went away"
    assert vector_store.count(content_id=first.id) == len(before)  # the new generation went away
    assert contents(vector_store, first) == before
    assert streaming_kb.search("topic5", search_type="keyword") == []
    assert failed.metadata[INGEST_KEY]["stale"] == [first.metadata[INGEST_KEY]["generation"]]

    embedder.fail_after = None  # and the next addition replaces the old chunks
    done = streaming_kb.add_content(path=path)
    assert done.status == "completed" and vector_store.count(content_id=done.id) == done.metadata[INGEST_KEY]["chunks"]
    assert streaming_kb.search("subject5", search_type="keyword") == []


class CheapEmbedder(Embedder):
    """16 numbers from a hash of the text: deterministic and cheap, for large files."""

    batch_size = 32

    @property
    def dimensions(self) -> int:
        return 16

    def embed(self, texts):
        return [[x / 2 ** 32 + 0.01 for x in struct.unpack("16I", hashlib.blake2b(t.encode(), digest_size=64).digest())]
                for t in texts]


def traced_peak(kb, path) -> int:
    tracemalloc.start()
    try:
        row = kb.add_content(path=path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert row.status == "completed", row.status_message
    return peak


@pytest.mark.server
def test_memory_does_not_grow_with_the_file(contents_db, tmp_path):
    from tests.vector_db.conftest import require
    from tests.vector_db.stores import STORES

    pgvector = next(s for s in STORES if s.name == "pgvector")
    require(pgvector)
    store, cleanup = pgvector.build(index=None)  # the rows live in the server: the client's memory is the ingestion's
    try:
        kb = Knowledge(store, contents_db=contents_db, embedder=CheapEmbedder(), chunker=FixedSizeChunker(4000, 0))
        kb.STREAM_BYTES = kb.PART_BYTES = 32 * 1024  # streamed, read 32 kB at a time
        kb.WRITE_BATCH = 32  # (the memory held is about this many chunks: less than the small file's)
        sizes = {}
        for name, blocks in (("small.txt", 1), ("large.txt", 8)):  # ~0.3 MB and ~2.3 MB
            path = tmp_path / name
            with open(path, "w") as f:
                for _ in range(blocks):
                    f.write(big_text(5000))
            sizes[name] = (path.stat().st_size, traced_peak(kb, path))
        (small_size, small_peak), (large_size, large_peak) = sizes["small.txt"], sizes["large.txt"]
        assert large_size >= 7 * small_size
        assert large_peak < 1.5 * small_peak, sizes  # 8x the file, not 8x the memory
    finally:
        cleanup()
