"""Knowledge: a catalog of contents (rows in a db) plus their chunks and embeddings in a
vector store.

    knowledge = Knowledge(vector_db=PgVector("my_kb", db_url=URL, search_type="hybrid"),
                          contents_db=db, embedder=OpenAIEmbedder())
    knowledge.add_content(path="docs/", metadata={"team": "support"})
    hits = knowledge.search("how do I rotate keys?", limit=5, filters={"team": "support"})

Adding a content: its catalog row is written with status "processing"; the content is
read, chunked, embedded and its chunks replace the content's previous chunks in one store
call; the row then becomes "completed" (in the same transaction as the chunks when the
store lives in the contents db: PgVector on that PostgresDb), or "failed" with the error
in `status_message`. The chunks of the contents of one call are embedded together, in
batches of the embedder's `batch_size`; a file over `STREAM_BYTES` is streamed with bounded
memory, its chunks written in batches (`agentkeep.knowledge.ingest` says how it replaces
the old ones).
A fingerprint of the bytes and of the settings that shape the chunks (reader, chunker,
embedder, metadata) is kept in the row, so adding unchanged content again does no work
(as long as the store still holds its chunks) and changed content replaces its old chunks.
Errors that would fail every content alike (no API key for the embedder, a store that
cannot be created or holds vectors of another length) raise before anything is written.

Each chunk carries its content's owner in its metadata under the reserved key `_owner` (the
row's `user_id`, "" for a shared content), so `search(..., user_id=u)` asks the store for
the chunks of shared contents and of u's own only (`{"_owner": {"$in": ["", u]}}`, applied
inside the store's queries, so ranking and `limit` are as without it).
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from agentkeep.db.errors import InvalidInputError, NotFoundError
from agentkeep.db.models import KnowledgeContent
from agentkeep.db.validate import check_id, check_opt_id
from agentkeep.knowledge.chunking import Chunker, FixedSizeChunker, MarkdownChunker
from agentkeep.knowledge.embedder import Embedder
from agentkeep.knowledge.fetch import fetch
from agentkeep.knowledge.ingest import GEN_KEY, INGEST_KEY, OWNER_KEY, SHARED, Ingest, chunk_id
from agentkeep.knowledge.readers import READERS, Reader, reader_for
from agentkeep.knowledge.rerank import check_reranker, rerank
from agentkeep.vector_db.base import ANY_OF, SearchHit, VectorDb, check_int

MAX_URL_BYTES = 64 * 1024 * 1024


class AddResult(list):
    """The catalog rows one call added, updated or found unchanged, in order: a list of
    KnowledgeContent, with the outcome of each sorted into `added` (new or changed, now
    completed), `unchanged` (skipped: same fingerprint, chunks in the store) and `failed`
    (each row's `status_message` says why)."""

    def __init__(self) -> None:
        super().__init__()
        self.added: list[KnowledgeContent] = []
        self.unchanged: list[KnowledgeContent] = []
        self.failed: list[KnowledgeContent] = []

    def record(self, row: KnowledgeContent, unchanged: bool) -> None:
        self.append(row)
        (self.failed if row.status == "failed" else self.unchanged if unchanged else self.added).append(row)

    def summary(self) -> str:
        """One line of counts ("3 added, 0 unchanged, 2 failed"), then "  <name>: <reason>" per
        failure."""
        head = f"{len(self.added)} added, {len(self.unchanged)} unchanged, {len(self.failed)} failed"
        return "\n".join([head + (":" if self.failed else "")]
                         + [f"  {r.name}: {r.status_message}" for r in self.failed])


@dataclass
class _Source:
    kind: str  # "text" | "file" | "url"
    identity: str  # what makes two additions "the same content"
    name: str
    load: Callable[[], tuple[bytes, str | None]]  # -> (bytes, content type)
    file_name: str | None = None  # whose extension picks the reader
    size: int | None = None  # a file's size
    parts: Callable[[int], Iterator[bytes]] | None = None  # a file's bytes, parts of at most the size given


class Knowledge:
    """Contents in `contents_db` (any agentkeep db; an InMemoryDb when omitted), chunks in
    `vector_db`, vectors from `embedder` (OpenAIEmbedder() when omitted). `name` is written
    to each catalog row's `linked_to`, so several knowledge bases can share one db."""

    STREAM_BYTES = 1 << 20  # a larger file is streamed: read, chunked, embedded and written in parts
    PART_BYTES = 1 << 20  # how much of a streamed file is read at a time
    WRITE_BATCH = 1000  # how many chunks of a streamed file one store call writes

    def __init__(
        self,
        vector_db: VectorDb,
        *,
        contents_db: Any = None,
        embedder: Embedder | None = None,
        chunker: Chunker | None = None,
        readers: Sequence[Reader] | None = None,
        name: str | None = None,
        reranker: Any = None,
        rerank_candidates: int = 20,
    ) -> None:
        if not isinstance(vector_db, VectorDb):
            raise InvalidInputError(f"vector_db must be a VectorDb, got {type(vector_db).__name__}")
        if contents_db is None:
            from agentkeep.db.in_memory import InMemoryDb

            contents_db = InMemoryDb()
        if embedder is None:
            from agentkeep.knowledge.embedder import OpenAIEmbedder

            embedder = OpenAIEmbedder()
        self.vector_db = vector_db
        self.contents_db = contents_db
        self.embedder = embedder
        self.chunker = chunker
        self.readers = tuple(readers) if readers else READERS
        self.name = name
        # a second look at the best hits (agentkeep.knowledge.rerank): a Reranker or a callable
        self.reranker = check_reranker(reranker)
        self.rerank_candidates = check_int(rerank_candidates, "rerank_candidates", 1, 1000)
        self._store_ready = False

    # -- adding ----------------------------------------------------------------------------

    def add_content(
        self,
        *,
        text: str | None = None,
        path: str | os.PathLike | None = None,
        url: str | None = None,
        name: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        content_id: str | None = None,
        user_id: str | None = None,
        reader: Reader | None = None,
        chunker: Chunker | None = None,
        recursive: bool = True,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        progress: bool = False,
        force: bool = False,
    ) -> KnowledgeContent | AddResult:
        """Add raw `text`, a file or folder at `path`, or a `url`. Returns the catalog row
        (status "completed" or "failed", the error in `status_message`), or for a folder an
        AddResult: one row per file, with `.added`, `.unchanged` and `.failed`.

        A folder takes the files whose extension a reader knows (or that match `include`
        globs, relative to the folder), minus `exclude` globs and hidden files; `progress`
        shows a progress bar. `content_id` defaults to a stable id of the source (file
        path, URL, or `name` for text, else the text itself) so adding it again updates it.
        Unchanged content is skipped unless `force` is set.
        """
        ingest = Ingest(self)
        with _finishing(ingest):
            folder = self._add_into(ingest, text=text, path=path, url=url, name=name, description=description,
                                    metadata=metadata, content_id=content_id, user_id=user_id, reader=reader,
                                    chunker=chunker, recursive=recursive, include=include, exclude=exclude,
                                    progress=progress, force=force)
        result = _result(ingest.finish())
        return result if folder else result[0]

    def add_sources(self, sources: Sequence[str | os.PathLike], **options: Any) -> AddResult:
        """Add files, folders and http(s) URLs, with the options of `add_content` (but
        `content_id`); returns one AddResult for them all. Every source is checked first:
        a missing path or a bad URL raises InvalidInputError and writes nothing."""
        if isinstance(sources, (str, os.PathLike)):
            raise InvalidInputError("sources must be a list of paths and URLs")
        if "content_id" in options:
            raise InvalidInputError("content_id= names one content; add_content takes it")
        kinds = []
        for source in sources:
            if isinstance(source, str) and source.startswith(("http://", "https://")):
                _url_source(source, None)  # checks the URL
                kinds.append("url")
            elif isinstance(source, (str, os.PathLike)) and os.path.exists(source):
                kinds.append("path")
            else:
                raise InvalidInputError(f"no such file or folder: {str(source)!r}")
        ingest = Ingest(self)
        with _finishing(ingest):
            for source, kind in zip(sources, kinds):
                self._add_into(ingest, **{kind: source}, **options)
        return _result(ingest.finish())

    def _add_into(self, ingest: Ingest, *, text=None, path=None, url=None, name=None, description=None,
                  metadata=None, content_id=None, user_id=None, reader=None, chunker=None, recursive=True,
                  include=None, exclude=None, progress=False, force=False) -> bool:
        """add_content's work, its contents given to `ingest`; True when `path` is a folder."""
        given = [x for x in (text, path, url) if x is not None]
        if len(given) != 1:
            raise InvalidInputError("add_content needs exactly one of text=, path= or url=")
        metadata = _check_metadata(metadata)
        check_opt_id(user_id, "user_id")
        if path is not None:
            p = Path(path)
            if p.is_dir():
                if content_id is not None:
                    raise InvalidInputError("content_id= names one content; a folder holds many")
                files = self._folder_files(p, recursive, include, exclude)
                self._prepare()
                self._add_many(ingest, files, p, name, description, metadata, user_id, reader, chunker,
                               progress, force)
                return True
            if not p.is_file():
                raise InvalidInputError(f"no such file or folder: {str(path)!r}")
            source = _file_source(p, name)
        elif url is not None:
            source = _url_source(url, name)
        else:
            if not isinstance(text, str):
                raise InvalidInputError(f"text must be a string, got {type(text).__name__}")
            source = _text_source(text, name)
        self._prepare()
        ingest.add(source, description, metadata, content_id, user_id, reader, chunker, force)
        return False

    def _folder_files(self, root: Path, recursive: bool, include, exclude) -> list[Path]:
        candidates = root.rglob("*") if recursive else root.iterdir()
        files = []
        for f in candidates:
            rel = f.relative_to(root)
            if not f.is_file() or any(part.startswith(".") for part in rel.parts):
                continue
            rel_s = rel.as_posix()
            if include is not None:
                if not any(fnmatch.fnmatch(rel_s, g) for g in include):
                    continue
            elif reader_for(f.name, readers=self.readers) is None:
                continue
            if exclude is not None and any(fnmatch.fnmatch(rel_s, g) for g in exclude):
                continue
            files.append(f)
        return sorted(files)

    def _add_many(self, ingest, files, root, name, description, metadata, user_id, reader, chunker, progress, force):
        sources = [_file_source(f, f"{name or root.name}/{f.relative_to(root).as_posix()}") for f in files]
        if progress and sources:
            from rich.progress import track

            sources = track(sources, description=f"Adding {len(files)} files", total=len(files))
        for source in sources:
            ingest.add(source, description, metadata, None, user_id, reader, chunker, force)

    def _prepare(self) -> None:
        """Fail before any row is written when every content would fail alike: an embedder
        that cannot work (no API key), a store that cannot be created or that holds vectors
        of another length than the embedder's."""
        self.embedder.check_ready()
        self._ensure_store()

    def _ensure_store(self) -> None:
        if not self._store_ready:
            self.vector_db.create(self.embedder.dimensions)
            self._store_ready = True

    def _holds_chunks(self, row: KnowledgeContent) -> bool:
        """Whether the store holds as many chunks of the row's content as the row says it
        has (a new or emptied store, or another table under the same catalog, does not),
        each marked with the row's owner; chunks written before chunks carried their owner
        are marked here, without embedding anything again."""
        expected = (row.metadata.get(INGEST_KEY) or {}).get("chunks")
        if self.vector_db.count(content_id=row.id, filters={OWNER_KEY: _owner(row.user_id)}) == expected:
            return True
        return self.vector_db.count(content_id=row.id) == expected and self._mark(row) is not None

    def _mark(self, row: KnowledgeContent) -> int | None:
        """Rewrite the row's chunks that lack its owner with it (their embeddings as stored);
        how many, or None when the store does not hold every chunk of the row."""
        info = row.metadata.get(INGEST_KEY) or {}
        expected, generation = info.get("chunks") or 0, info.get("generation")
        owner = _owner(row.user_id)
        chunks = self.vector_db.get([chunk_id(row.id, generation, i) for i in range(expected)])
        if len(chunks) != expected or any(c.content_id != row.id for c in chunks):
            return None
        stale = [c.model_copy(update={"metadata": {**c.metadata, OWNER_KEY: owner}})
                 for c in chunks if c.metadata.get(OWNER_KEY) != owner]
        if stale:
            self.vector_db.upsert(stale)
        return len(stale)

    def mark_owners(self) -> int:
        """Mark the chunks of this knowledge base's completed contents with their owner where
        they lack it (chunks written before chunks carried it, which a search with `user_id`
        does not find): each is read back from the store and written with the owner, no
        source read and nothing embedded. Returns how many chunks were rewritten. A content
        whose chunks the store does not all hold is left to `add_content`, which re-adds it."""
        self._ensure_store()
        marked, cursor = 0, None
        while True:
            page = self.list_contents(status="completed", limit=100, cursor=cursor)
            for row in page.items:
                expected = (row.metadata.get(INGEST_KEY) or {}).get("chunks")
                owned = self.vector_db.count(content_id=row.id, filters={OWNER_KEY: _owner(row.user_id)})
                if expected and owned != expected:
                    marked += self._mark(row) or 0
            cursor = page.next_cursor
            if not cursor or not page.items:
                return marked

    def _content_id(self, source: _Source, user_id: str | None) -> str:
        key = "\x00".join((source.kind, source.identity, user_id or "", self.name or ""))
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    # -- reading and removing --------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        limit: int = 5,
        filters: dict[str, Any] | None = None,
        search_type: str | None = None,
        user_id: str | None = None,
    ) -> list[SearchHit]:
        """The chunks that best answer `query` (see VectorDb.search for the search types and
        filters). With `user_id`, only chunks of shared contents and of that user's own; the
        scope is part of the store's queries, so `limit` hits come back when that many match.
        Hits leave out the reserved `_owner` metadata key. With a reranker, the store's best
        `rerank_candidates` hits (at least `limit`) are reranked and the best `limit` kept."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("query must be a non-empty string")
        filters = _scoped(filters, user_id)
        kind = search_type or self.vector_db.search_type
        self._ensure_store()
        embedding = self.embedder.embed_query(query) if kind in ("vector", "hybrid") else None
        wanted = limit if self.reranker is None or not isinstance(limit, int) else max(limit, self.rerank_candidates)
        hits = self.vector_db.search(query, embedding=embedding, limit=wanted, filters=filters,
                                     search_type=search_type)
        if self.reranker is not None:
            hits = rerank(self.reranker, query, hits, limit)
        return [_without_owner(h) for h in hits]

    def get_content(self, content_id: str, *, user_id: str | None = None) -> KnowledgeContent | None:
        return self.contents_db.get_knowledge(content_id, user_id=user_id)

    def list_contents(self, **kwargs: Any):
        """`contents_db.list_knowledge(...)`, limited to this knowledge base's rows."""
        kwargs.setdefault("linked_to", self.name)
        return self.contents_db.list_knowledge(**kwargs)

    def delete_content(self, content_id: str, *, user_id: str | None = None) -> bool:
        """Delete a content's chunks and its catalog row. With `user_id`, only that user's
        own contents can be deleted (shared ones are left alone)."""
        row = self.contents_db.get_knowledge(content_id, user_id=user_id)
        if row is None or (user_id is not None and row.user_id != user_id):
            return False
        with self.vector_db.joined_transaction(self.contents_db):
            try:
                self.vector_db.delete(content_id=content_id)
            except NotFoundError:
                pass  # the store was never created: no chunks to delete
            return self.contents_db.delete_knowledge(content_id, user_id=user_id)

    # -- awaitable twins (the sync calls in a worker thread) --------------------------------

    async def aadd_content(self, **kwargs: Any):
        return await asyncio.to_thread(lambda: self.add_content(**kwargs))

    async def aadd_sources(self, sources: Sequence[str | os.PathLike], **kwargs: Any) -> AddResult:
        return await asyncio.to_thread(lambda: self.add_sources(sources, **kwargs))

    async def asearch(self, query: str, **kwargs: Any) -> list[SearchHit]:
        return await asyncio.to_thread(lambda: self.search(query, **kwargs))

    async def amark_owners(self) -> int:
        return await asyncio.to_thread(self.mark_owners)

    async def adelete_content(self, content_id: str, *, user_id: str | None = None) -> bool:
        return await asyncio.to_thread(lambda: self.delete_content(content_id, user_id=user_id))


    @staticmethod
    def _default_chunker(reader: Reader) -> Chunker:
        return MarkdownChunker() if reader.kind in ("markdown", "html") else FixedSizeChunker()


class _finishing:
    """On an error that ends a call early, the contents already queued are still written."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def __enter__(self) -> Ingest:
        return self.ingest

    def __exit__(self, kind, exc, tb) -> None:
        if exc is not None:
            self.ingest.finish()


def _result(outcomes) -> AddResult:
    result = AddResult()
    for row, unchanged in outcomes:
        result.record(row, unchanged)
    return result


def _check_metadata(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInputError(f"metadata must be a dict, got {type(metadata).__name__}")
    for key in (INGEST_KEY, OWNER_KEY, GEN_KEY):
        if key in metadata:
            raise InvalidInputError(f"metadata key {key!r} is reserved")
    return dict(metadata)


def _owner(user_id: str | None) -> str:
    return SHARED if user_id is None else user_id


def _scoped(filters: Any, user_id: Any) -> Any:
    """`filters` AND "the chunk is shared or `user_id`'s own"; as given without a user_id."""
    if user_id is None:
        return filters
    check_id(user_id, "user_id")
    if filters is not None and not isinstance(filters, dict):
        raise InvalidInputError(f"filters must be a dict of metadata key -> value, got {type(filters).__name__}")
    if OWNER_KEY in (filters or {}):
        raise InvalidInputError(f"filter key {OWNER_KEY!r} is set by user_id=; leave it out of filters")
    return {**(filters or {}), OWNER_KEY: {ANY_OF: [SHARED, user_id]}}


def _without_owner(hit: SearchHit) -> SearchHit:
    """The hit without the reserved chunk metadata keys (owner, generation)."""
    if OWNER_KEY not in hit.metadata and GEN_KEY not in hit.metadata:
        return hit
    kept = {k: v for k, v in hit.metadata.items() if k not in (OWNER_KEY, GEN_KEY)}
    return hit.model_copy(update={"metadata": kept})


def _text_source(text: str, name: str | None) -> _Source:
    data = text.encode()
    identity = name if name is not None else hashlib.sha256(data).hexdigest()
    label = name if name is not None else (text.strip().splitlines() or ["text"])[0][:80]
    return _Source("text", identity, label, lambda: (data, "text/plain"), name)


def _file_source(path: Path, name: str | None) -> _Source:
    return _Source("file", os.path.realpath(path), name or path.name, lambda: (path.read_bytes(), None), path.name,
                   size=path.stat().st_size, parts=lambda size: _file_parts(path, size))


def _file_parts(path: Path, size: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while part := f.read(size):
            yield part


def _url_source(url: str, name: str | None) -> _Source:
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise InvalidInputError(f"url must be an http:// or https:// URL, got {url!r}")
    path_name = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]

    def load() -> tuple[bytes, str | None]:
        body, content_type, _ = fetch(url, max_bytes=MAX_URL_BYTES, allowed=None, timeout=60)
        return body, content_type

    return _Source("url", url, name or url, load, path_name or None)
