"""Adding contents to a Knowledge: reading, chunking, embedding and writing, for many contents
at once and for contents of any size.

Many contents: the chunks of the contents given to one `add_content` or `add_sources` call
wait in one queue, and the embedder is called with `embedder.batch_size` of them at a time,
drawn from as many contents as it takes to fill a batch. A content is written (its chunks
replace its old ones and its row becomes "completed", together when the store shares the
contents db) as soon as its last chunk is embedded. When a batch fails, each of its contents
is embedded again on its own, so one content the embedder refuses fails alone.

A large file (over `Knowledge.STREAM_BYTES`) is streamed: its fingerprint is taken in a first
pass over the file, then it is read in parts (`Knowledge.PART_BYTES`), chunked as it is decoded and embedded and written
a batch at a time, so memory does not grow with the file (plain text and Markdown cut as the
text comes; other readers get the whole file). Its chunks are written under a new generation
(ids `<content_id>:<generation>:<n>`, the generation in the chunks' `_gen` metadata key) next
to the old ones, and the old generations are deleted once every new chunk is in:
- a search meanwhile sees the old chunks and the new ones written so far; when the store
  shares the contents db (PgVector on that PostgresDb) the whole replace is one transaction
  and a search sees the old chunks until it commits;
- a failure deletes the new generation's chunks and leaves the old ones, as a failed update of
  a small content does; chunks a crash leaves behind are named in the catalog row (the
  `generation` of a "processing" row, the `stale` list of a failed one) and deleted by the
  next successful addition of the content.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from agentkeep.db.models import KnowledgeContent
from agentkeep.knowledge.chunking import Chunker, TextChunk
from agentkeep.knowledge.embedder import EmbedderError
from agentkeep.knowledge.readers import Reader, ReaderError, TextReader, reader_for
from agentkeep.vector_db.base import Chunk

if TYPE_CHECKING:
    from agentkeep.knowledge.knowledge import Knowledge, _Source

INGEST_KEY = "_ingest"  # reserved key of a catalog row's metadata: fingerprint, source, chunk count
OWNER_KEY = "_owner"  # reserved key of a chunk's metadata: its content's user_id, SHARED for none
GEN_KEY = "_gen"  # reserved key of a streamed content's chunks: the generation they belong to
SHARED = ""
_DELETE_BATCH = 1000
_MESSAGE_LIMIT = 2000


def chunk_id(content_id: str, generation: str | None, position: int) -> str:
    return f"{content_id}:{generation}:{position}" if generation else f"{content_id}:{position}"


@dataclass(eq=False)
class _Content:
    """A small content waiting for its chunks' vectors."""

    slot: int  # its place in the call's outcomes
    row: KnowledgeContent  # the "processing" row
    metadata: dict[str, Any]
    ingest: dict[str, Any]
    pieces: list[TextChunk]
    vectors: list[list[float] | None]
    waiting: int  # chunks not embedded yet


class Ingest:
    """One call's additions: `add` each source, then `finish()` for (row, unchanged) per source,
    in order."""

    def __init__(self, kb: Knowledge) -> None:
        self.kb = kb
        self.db = kb.contents_db
        self.size = kb.embedder.batch_size
        self.queue: deque[tuple[_Content, int]] = deque()  # chunks waiting for a batch
        self.waiting: dict[str, _Content] = {}
        self.outcomes: list[tuple[KnowledgeContent, bool] | None] = []

    def finish(self) -> list[tuple[KnowledgeContent, bool]]:
        self.flush()
        return [o for o in self.outcomes if o is not None]

    def flush(self) -> None:
        while self.queue:
            self._embed_next()

    # -- one source --------------------------------------------------------------------------

    def add(self, source: _Source, description, metadata: dict[str, Any], content_id: str | None,
            user_id: str | None, reader: Reader | None, chunker: Chunker | None, force: bool) -> None:
        kb, db = self.kb, self.db
        slot = len(self.outcomes)
        self.outcomes.append(None)
        cid = content_id if content_id is not None else kb._content_id(source, user_id)
        if cid in self.waiting:  # the same content again: after its first addition is written
            self.flush()
        existing = db.get_knowledge(cid)
        base = KnowledgeContent(
            id=cid, name=source.name, description=description, metadata=dict(metadata), linked_to=kb.name,
            user_id=user_id, status="processing", created_at=existing.created_at if existing else None,
        )
        streamed = source.parts is not None and source.size is not None and source.size > kb.STREAM_BYTES
        try:
            data, content_type = (None, None) if streamed else source.load()
        except Exception as exc:
            self.outcomes[slot] = self._failed(base, exc), False
            return
        reader = reader or reader_for(source.file_name, content_type, kb.readers) or TextReader()
        chunker = chunker or kb.chunker or kb._default_chunker(reader)
        settings = json.dumps([reader.id, chunker.id, kb.embedder.id, metadata], sort_keys=True, default=str).encode()
        try:
            digest = _fingerprint(source.parts(kb.PART_BYTES) if streamed else [data], settings)
        except Exception as exc:
            self.outcomes[slot] = self._failed(base, exc), False
            return
        if (not force and existing is not None and existing.status == "completed" and existing.user_id == user_id
                and (existing.metadata.get(INGEST_KEY) or {}).get("hash") == digest and kb._holds_chunks(existing)):
            self.outcomes[slot] = existing, True  # unchanged: nothing to do
            return
        stale = _stale(existing)
        ingest: dict[str, Any] = {"hash": digest, "source": source.kind}
        size = source.size if streamed else len(data)
        if streamed:
            self.flush()  # the queued contents first: a streamed content is written on its own
            generation = uuid.uuid4().hex[:12]
            # the new generation is named before its first chunk is written: a crash leaves it findable
            row = self._processing(base, reader, size, metadata, {**ingest, "generation": generation, "stale": stale})
            self.outcomes[slot] = self._stream(row, source, reader, chunker, settings, metadata, ingest, generation,
                                               stale), False
            return
        row = self._processing(base, reader, size, metadata, {**ingest, "stale": stale} if stale else ingest)
        try:
            pieces = chunker.chunk(reader.read(data, name=source.file_name or source.name))
        except Exception as exc:
            self.outcomes[slot] = self._failed(row, exc), False
            return
        content = _Content(slot, row, metadata, ingest, pieces, [None] * len(pieces), len(pieces))
        if not pieces:
            self._write(content)
            return
        self.waiting[cid] = content
        self.queue.extend((content, i) for i in range(len(pieces)))
        while len(self.queue) >= self.size:
            self._embed_next()

    def _processing(self, base: KnowledgeContent, reader: Reader, size: int, metadata: dict[str, Any],
                    ingest: dict[str, Any]) -> KnowledgeContent:
        return self.db.upsert_knowledge(base.model_copy(update={
            "type": reader.kind, "size": size, "metadata": {**metadata, INGEST_KEY: ingest},
        }))

    def _failed(self, row: KnowledgeContent, exc: BaseException, ingest: dict[str, Any] | None = None):
        update: dict[str, Any] = {"status": "failed", "status_message": _message(exc)}
        if ingest is not None:
            update["metadata"] = {**row.metadata, INGEST_KEY: ingest}
        return self.db.upsert_knowledge(row.model_copy(update=update))

    # -- small contents: batched across contents ---------------------------------------------

    def _embed_next(self) -> None:
        batch = [self.queue.popleft() for _ in range(min(self.size, len(self.queue)))]
        try:
            vectors = self._embed([c.pieces[i].text for c, i in batch])
        except Exception as exc:
            contents = list(dict.fromkeys(c for c, _ in batch))
            if len(contents) == 1:
                self._fail(contents[0], exc)
                return
            for content in contents:  # each content on its own, so that only the culprit fails
                mine = [(c, i) for c, i in batch if c is content]
                try:
                    self._take(mine, self._embed([content.pieces[i].text for _, i in mine]))
                except Exception as exc:
                    self._fail(content, exc)
            return
        self._take(batch, vectors)

    def _embed(self, texts: list[str]) -> list[list[float]]:
        vectors = self.kb.embedder.embed(texts)
        if len(vectors) != len(texts):
            raise EmbedderError(f"the embedder returned {len(vectors)} vectors for {len(texts)} chunks")
        return vectors

    def _take(self, batch: list[tuple[_Content, int]], vectors: list[list[float]]) -> None:
        for (content, i), vector in zip(batch, vectors):
            content.vectors[i] = vector
            content.waiting -= 1
        for content in dict.fromkeys(c for c, _ in batch):
            if content.waiting == 0:
                del self.waiting[content.row.id]
                self._write(content)

    def _fail(self, content: _Content, exc: BaseException) -> None:
        self.waiting.pop(content.row.id, None)
        self.queue = deque(item for item in self.queue if item[0] is not content)
        self.outcomes[content.slot] = self._failed(content.row, exc), False

    def _write(self, content: _Content) -> None:
        """The content's chunks replace its old ones (every generation) in one store call, and
        its row becomes "completed": in one transaction when the store shares the contents db."""
        row, metadata = content.row, content.metadata
        cid, owner = row.id, _owner(row.user_id)
        chunks = [
            Chunk(id=chunk_id(cid, None, i), content_id=cid, content=p.text, embedding=v,
                  metadata={**p.metadata, **metadata, OWNER_KEY: owner}, position=i)
            for i, (p, v) in enumerate(zip(content.pieces, content.vectors))
        ]
        done = {**metadata, INGEST_KEY: {**content.ingest, "chunks": len(chunks)}}
        try:
            with self.kb.vector_db.joined_transaction(self.db):
                self.kb.vector_db.replace(cid, chunks)
                completed = self.db.upsert_knowledge(
                    row.model_copy(update={"status": "completed", "status_message": None, "metadata": done}))
        except Exception as exc:
            self.outcomes[content.slot] = self._failed(row, exc), False
            return
        self.outcomes[content.slot] = completed, False

    # -- a large file: streamed ----------------------------------------------------------------

    def _stream(self, row: KnowledgeContent, source: _Source, reader: Reader, chunker: Chunker, settings: bytes,
                metadata: dict[str, Any], ingest: dict[str, Any], generation: str,
                stale: list[str]) -> KnowledgeContent:
        """Write the content's chunks under `generation`, a batch at a time, then delete the
        `stale` generations and mark the row completed (see the module docstring)."""
        store, cid = self.kb.vector_db, row.id
        digest = hashlib.sha256()

        def parts() -> Iterator[bytes]:
            for part in source.parts(self.kb.PART_BYTES):
                digest.update(part)
                yield part

        try:
            with store.joined_transaction(self.db):
                sections = reader.stream(parts(), name=source.file_name or source.name)
                count = self._write_batches(row, chunker.stream(sections), metadata, generation)
                digest.update(settings)
                if digest.hexdigest() != ingest["hash"]:
                    raise ReaderError(f"{source.name} changed while it was read; add it again")
                self._drop_stale(cid, stale, count)
                done = {**metadata, INGEST_KEY: {**ingest, "chunks": count, "generation": generation}}
                return self.db.upsert_knowledge(
                    row.model_copy(update={"status": "completed", "status_message": None, "metadata": done}))
        except Exception as exc:
            left = stale + [generation]
            try:  # the new generation's chunks go; the old ones stay, as for a failed update
                store.delete(content_id=cid, filters={GEN_KEY: generation})
                left = stale
            except Exception:
                pass  # named in the failed row: the next addition deletes them
            return self._failed(row, exc, {**ingest, "stale": left})

    def _write_batches(self, row: KnowledgeContent, pieces: Iterable[TextChunk], metadata: dict[str, Any],
                       generation: str) -> int:
        """Embed the pieces a batch at a time and write them `Knowledge.WRITE_BATCH` at a time
        (fewer, larger store calls); returns how many were written."""
        owner, count, batch, chunks = _owner(row.user_id), 0, [], []
        for piece in itertools.chain(pieces, [None]):
            if piece is not None:
                batch.append(piece)
            if batch and (len(batch) == self.size or piece is None):
                vectors = self._embed([p.text for p in batch])
                chunks += [
                    Chunk(id=chunk_id(row.id, generation, count + i), content_id=row.id, content=p.text, embedding=v,
                          metadata={**p.metadata, **metadata, OWNER_KEY: owner, GEN_KEY: generation},
                          position=count + i)
                    for i, (p, v) in enumerate(zip(batch, vectors))
                ]
                count += len(batch)
                batch = []
            if chunks and (len(chunks) >= self.kb.WRITE_BATCH or piece is None):
                self.kb.vector_db.upsert(chunks)
                chunks = []
        return count

    def _drop_stale(self, cid: str, stale: list[str], count: int) -> None:
        """Delete the content's chunks of earlier generations: the streamed ones by their
        `_gen` key, those written in one call ("") by id (`<content_id>:0` up)."""
        store = self.kb.vector_db
        for generation in stale:
            if generation:
                store.delete(content_id=cid, filters={GEN_KEY: generation})
        if "" in stale:
            left = store.count(content_id=cid) - count  # at most that many, numbered from 0
            for start in range(0, max(left, 0), _DELETE_BATCH):
                store.delete(ids=[chunk_id(cid, None, i) for i in range(start, min(start + _DELETE_BATCH, left))])


def _fingerprint(parts: Iterable[bytes], settings: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    digest.update(settings)
    return digest.hexdigest()


def _stale(existing: KnowledgeContent | None) -> list[str]:
    """The generations of the content's chunks that may be in the store: the one its row
    names ("" for chunks written in one call) and those a failed streamed addition left."""
    if existing is None:
        return []
    info = existing.metadata.get(INGEST_KEY) or {}
    return sorted({*(info.get("stale") or []), info.get("generation") or ""})


def _owner(user_id: str | None) -> str:
    return SHARED if user_id is None else user_id


def _message(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."
