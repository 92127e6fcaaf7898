"""RedisVectorDb: chunks as Redis hashes, searched with RediSearch (Redis Stack, Redis 8).

    RedisVectorDb("my_kb", db_url="redis://127.0.0.1:6379/0", search_type="hybrid")

Layout (P = prefix, N = name):
- `P:vdb:N:<chunk id>` one hash per chunk: `id`, `content`, `content_id`, `metadata` (JSON
  text), `position`, and for the index: `vec` (the embedding as little-endian float32s),
  `terms` (the content's keyword terms, below), `cid` and `meta` (filter tokens, below).
  Under cosine a zero embedding has no direction: it is kept in `embedding`, unindexed.
- the index `P:vdb:N` (FT.CREATE ... ON HASH PREFIX 1 P:vdb:N: STOPWORDS 0): `terms` TEXT
  NOSTEM, `cid` and `meta` TAG, `vec` VECTOR (HNSW or FLAT, FLOAT32, the distance's metric).
- `P:vdb:N` also names a small hash, the store's marker (dimensions, distance, index
  kind): it exists exactly while the store does, and every write checks it atomically.

Keyword search ranks the same terms as every other store: `terms()` of
agentkeep.vector_db.in_memory (lowercased, stopword-free, lightly stemmed) is computed here
and stored space-separated, so RediSearch needs neither its stemmer nor its stopwords
(NOSTEM, STOPWORDS 0, VERBATIM). A query becomes `@terms:(t1 t2 -t3)`: every term must
match, a `-word` must not; ranked by RediSearch's BM25 scorer (BM25STD by default).

Filters are pushed into FT.SEARCH as TAG matches. Each top-level scalar of the metadata is
indexed as one token, a digest of (key, type, canonical value): strings by their text,
booleans as true/false, numbers by their canonical value (an integral number as its
integer digits, so 1 and 1.0 share a token, others as repr). Lists, objects and null get no
token, so they never match. Digests keep user text out of the query language entirely and
sidestep TAG quirks (case folding, trimming, separators). `content_id` is a digest too.

Writes run as Lua scripts: a batch, `replace` (FT.SEARCH for the content's chunks, delete
them, write the new ones) and `delete` with conditions are each atomic. One Redis server
(or a single shard): the scripts touch keys found by a search, which a cluster forbids.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from typing import Any, Iterable, Sequence

from agentkeep.db.errors import InvalidInputError, NotFoundError
from agentkeep.vector_db.base import (
    Chunk,
    SearchHit,
    VectorDb,
    check_candidates,
    check_choice,
    check_chunks,
    check_dimensions,
    check_filters,
    check_id,
    check_ids,
    check_int,
    check_name,
    check_search_type,
    check_weights,
    dimension_mismatch,
    filter_token,
    rrf_top,
)
from agentkeep.vector_db.text import query_terms, terms

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_METRICS = {"cosine": "COSINE", "l2": "L2", "inner_product": "IP"}
INDEXES = ("hnsw", "flat")
SCORERS = ("BM25STD", "BM25")
MAX_DIMENSIONS = 32768
_SPECIAL = re.compile(r"([!-/:-@\[-^`{-~\s])")  # ASCII punctuation and whitespace
_RETURN = (b"id", b"content", b"content_id", b"metadata", b"position")
_MISSING = "AGENTKEEP_MISSING"
_DIMENSIONS = "AGENTKEEP_DIMENSIONS"

# Shared by the scripts: fail unless the store exists with the dimensions the caller checked
# against; delete what a query finds, batch by batch (each DEL leaves the index at once).
_LUA_COMMON = f"""
local function check(marker, dims)
  local stored = redis.call('HGET', marker, 'dimensions')
  if not stored then return redis.error_reply('{_MISSING}') end
  if dims ~= '' and stored ~= dims then return redis.error_reply('{_DIMENSIONS} ' .. stored) end
  return false
end
local function remove(index, query, inkeys)
  local removed = 0
  while true do
    local args = {{'FT.SEARCH', index, query, 'NOCONTENT', 'VERBATIM', 'DIALECT', '2', 'LIMIT', '0', '1000'}}
    if #inkeys > 0 then
      table.insert(args, 'INKEYS'); table.insert(args, tostring(#inkeys))
      for _, k in ipairs(inkeys) do table.insert(args, k) end
    end
    local found = redis.call(unpack(args))
    if #found <= 1 then break end
    local n = 0
    for i = 2, #found do n = n + redis.call('DEL', found[i]) end
    removed = removed + n
    if n == 0 then break end
  end
  return removed
end
"""
# KEYS[1] marker, KEYS[2..] chunk keys; ARGV: dims, index, removal query ('' = none), then per
# chunk: field count, field, value, ...
_WRITE = _LUA_COMMON + """
local err = check(KEYS[1], ARGV[1]); if err then return err end
local removed = 0
if ARGV[3] ~= '' then removed = remove(ARGV[2], ARGV[3], {}) end
local a = 4
for k = 2, #KEYS do
  local n = tonumber(ARGV[a])
  redis.call('DEL', KEYS[k])
  redis.call('HSET', KEYS[k], unpack(ARGV, a + 1, a + 2 * n))
  a = a + 1 + 2 * n
end
return removed
"""
# KEYS[1] marker, KEYS[2..] chunk keys (ids=...); ARGV: index, query ('' = delete the keys)
_DELETE = _LUA_COMMON + """
local err = check(KEYS[1], ''); if err then return err end
local keys = {}
for k = 2, #KEYS do keys[#keys + 1] = KEYS[k] end
if ARGV[2] == '' then
  if #keys == 0 then return 0 end
  return redis.call('DEL', unpack(keys))
end
return remove(ARGV[1], ARGV[2], keys)
"""


def escape(text: str) -> str:
    """`text` as one literal term or tag of RediSearch's query language."""
    return _SPECIAL.sub(r"\\\1", text)


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"{what} is not valid Unicode (lone surrogate)") from None


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def meta_token(key: str, value: Any) -> str | None:
    """The tag a chunk carries for `key` = `value`; None for a value no filter matches."""
    typed = filter_token(value)
    return None if typed is None else _digest(f"{key}\x00{typed}")


def content_token(content_id: str) -> str:
    return _digest(f"\x00content_id\x00{content_id}")


def condition(content_id: str | None, filters: dict[str, Any]) -> str:
    """The FT.SEARCH clause for a content id and a (checked) metadata filter; "" for none."""
    parts = [] if content_id is None else [f"@cid:{{{content_token(content_id)}}}"]
    parts += [f"@meta:{{{meta_token(k, v)}}}" for k, v in filters.items()]
    return " ".join(parts)


def keyword_clause(query: str) -> str | None:
    """`@terms:(...)` for a query: every term required, `-word` excluded (as InMemoryVectorDb
    reads it); None when no term is left (only stopwords, say)."""
    wanted, unwanted = query_terms(query)
    if not wanted:
        return None
    parts = [escape(t) for t in wanted] + ["-" + escape(t) for t in unwanted]
    return "@terms:(" + " ".join(parts) + ")"


def _no_index(exc: Exception) -> bool:
    text = str(exc).lower()
    return "no such index" in text or "unknown index name" in text


class RedisVectorDb(VectorDb):
    """A RediSearch index over hashes under one key prefix (Redis Stack 7.2+, or Redis 8)."""

    def __init__(
        self,
        name: str,
        db_url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "agentkeep",
        dimensions: int | None = None,
        search_type: str = "vector",
        distance: str = "cosine",
        index: str = "hnsw",
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 200,
        ef_runtime: int = 40,
        scorer: str = "BM25STD",
        vector_weight: float = 1.0,
        keyword_weight: float = 1.0,
        rrf_k: int = 60,
        hybrid_candidates: int = 40,
        timeout_ms: int | None = None,
        client_options: dict | None = None,
    ) -> None:
        from agentkeep.db.redis import check_prefix, parse_url

        check_name(name, "name", _NAME, "1..128 letters, digits, '_', '-' or '.'")
        check_prefix(prefix)
        self.name = name
        self.prefix = prefix
        self.search_type = check_search_type(search_type)
        check_choice(distance, "distance", _METRICS)
        if index not in INDEXES:
            raise InvalidInputError(f"index must be 'hnsw' or 'flat'; got {index!r}")
        check_choice(scorer, "scorer", SCORERS)
        self.distance = distance
        self.index = index
        self.scorer = scorer
        self.hnsw_m = check_int(hnsw_m, "hnsw_m", 1, 512)
        self.hnsw_ef_construction = check_int(hnsw_ef_construction, "hnsw_ef_construction", 1, 4096)
        self.ef_runtime = check_int(ef_runtime, "ef_runtime", 1, 10_000)
        self.timeout_ms = None if timeout_ms is None else check_int(timeout_ms, "timeout_ms", 1, 3_600_000)
        self.vector_weight, self.keyword_weight, self.rrf_k = check_weights(vector_weight, keyword_weight, rrf_k)
        self.hybrid_candidates = check_candidates(hybrid_candidates)
        self.dimensions = None if dimensions is None else self._check_dimensions(dimensions)
        self.url, self.location = parse_url(db_url)
        self.index_name = f"{prefix}:vdb:{name}"
        self._marker = self.index_name.encode()
        self._key_prefix = f"{self.index_name}:".encode()
        self._stored_index: str | None = None  # the existing index's kind, once read

        import redis

        # the replies are parsed here as RESP2 arrays of bytes (vectors are binary)
        options = {**(client_options or {}), "protocol": 2, "decode_responses": False}
        self._client = redis.Redis.from_url(db_url, **options)
        self._write = self._client.register_script(_WRITE)
        self._delete = self._client.register_script(_DELETE)

    # -- plumbing ---------------------------------------------------------------------------

    @staticmethod
    def _check_dimensions(dimensions: Any) -> int:
        return check_dimensions(dimensions, MAX_DIMENSIONS)

    def _key(self, chunk_id: str) -> bytes:
        return self._key_prefix + _utf8(chunk_id, "chunk id")

    def _missing(self) -> str:
        return f"vector store {self.index_name} does not exist: call create() first"

    def _call(self, fn, *args, **kwargs):
        """Run a client call; a missing index or store becomes NotFoundError."""
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.ResponseError as exc:
            text = str(exc)
            if _MISSING in text or _no_index(exc):
                raise NotFoundError(self._missing()) from None
            if _DIMENSIONS in text:
                self._stored_index = None
                stored = text.split(_DIMENSIONS, 1)[1].strip()
                raise dimension_mismatch(f"vector store {self.index_name}", stored, self.dimensions) from None
            raise

    def _ready(self) -> None:
        """Learn the store's dimensions, distance and index kind once (NotFoundError: no store)."""
        if self._stored_index is not None:
            return
        dims, distance, index = self._client.hmget(self._marker, ["dimensions", "distance", "index"])
        if dims is None:
            raise NotFoundError(self._missing())
        self._agree(int(dims), distance.decode())
        self._stored_index = index.decode()

    def _agree(self, dims: int, distance: str) -> None:
        self._check_distance(distance)
        if self.dimensions is not None and self.dimensions != dims:
            raise dimension_mismatch(f"vector store {self.index_name}", dims, self.dimensions)
        self.dimensions = dims

    def _check_distance(self, distance: str) -> None:
        if distance != self.distance:  # the index's metric decides what a score means
            raise InvalidInputError(
                f"vector store {self.index_name} was created for distance {distance!r}, not {self.distance!r}"
            )

    def _index_info(self) -> tuple[int, str, str] | None:
        """(dimensions, distance, index kind) of the existing index, or None."""
        import redis

        try:
            info = self._client.execute_command("FT.INFO", self.index_name)
        except redis.ResponseError as exc:
            if _no_index(exc):
                return None
            raise
        fields = dict(zip(info[::2], info[1::2]))
        for attribute in fields.get(b"attributes", []):
            pairs = {attribute[i]: attribute[i + 1] for i in range(0, len(attribute) - 1, 2)}
            if pairs.get(b"identifier") == b"vec":
                metric = pairs[b"distance_metric"].decode().upper()
                distance = next(d for d, m in _METRICS.items() if m == metric)
                return int(pairs[b"dim"]), distance, pairs[b"algorithm"].decode().lower()
        raise InvalidInputError(f"index {self.index_name} exists but is not an agentkeep vector store")

    def describe(self) -> str:
        server = self._client.info("server").get("redis_version", "?")
        search = next((m for m in self._client.module_list() if m.get(b"name") in (b"search", b"ft")), None)
        if search is None:
            return f"RedisVectorDb {self.index_name} on Redis {server} at {self.location} (no search module)"
        v = int(search.get(b"ver", 0))
        return (f"RedisVectorDb {self.index_name} on Redis {server}, RediSearch "
                f"{v // 10000}.{v // 100 % 100}.{v % 100} at {self.location}")

    def close(self) -> None:
        self._client.close()

    # -- lifecycle --------------------------------------------------------------------------

    def _create_args(self, dims: int) -> list[Any]:
        if self.index == "hnsw":
            vector = ["HNSW", 10, "TYPE", "FLOAT32", "DIM", dims, "DISTANCE_METRIC", _METRICS[self.distance],
                      "M", self.hnsw_m, "EF_CONSTRUCTION", self.hnsw_ef_construction]
        else:
            vector = ["FLAT", 6, "TYPE", "FLOAT32", "DIM", dims, "DISTANCE_METRIC", _METRICS[self.distance]]
        return [
            "FT.CREATE", self.index_name, "ON", "HASH", "PREFIX", 1, self._key_prefix, "STOPWORDS", 0,
            "SCHEMA", "terms", "TEXT", "NOSTEM", "cid", "TAG", "SEPARATOR", ",", "meta", "TAG", "SEPARATOR", ",",
            "vec", "VECTOR", *vector,
        ]

    def create(self, dimensions: int | None = None) -> None:
        import redis

        if dimensions is not None:
            self._check_dimensions(dimensions)
        wanted = dimensions or self.dimensions
        info = self._index_info()
        if info is None:
            if wanted is None:
                raise InvalidInputError("create() needs dimensions= (or RedisVectorDb(dimensions=...)) the first time")
            try:
                self._client.execute_command(*self._create_args(wanted))
            except redis.ResponseError as exc:
                if "already exists" not in str(exc).lower():  # another process created it meanwhile
                    raise
            info = self._index_info()
        dims, distance, index = info
        if wanted is not None and wanted != dims:
            raise dimension_mismatch(f"vector store {self.index_name}", dims, wanted)
        self._check_distance(distance)
        self.dimensions = dims  # the store as it now is decides (after a drop it may differ)
        self._client.hset(self._marker, mapping={"dimensions": dims, "distance": distance, "index": index})
        self._stored_index = index

    def exists(self) -> bool:
        return bool(self._client.exists(self._marker))

    def drop(self) -> None:
        import redis

        self._client.delete(self._marker)  # from here on every write fails
        try:
            self._client.execute_command("FT.DROPINDEX", self.index_name, "DD")
        except redis.ResponseError as exc:
            if not _no_index(exc):
                raise
        self._stored_index = None

    # -- writes -----------------------------------------------------------------------------

    def _fields(self, c: Chunk) -> list[Any]:
        where = f"chunk {c.id!r}"
        fields: list[Any] = [b"id", _utf8(c.id, "chunk id"), b"content", _utf8(c.content, f"{where} content"),
                             b"position", c.position]
        words = " ".join(terms(c.content))
        if words:
            fields += [b"terms", words.encode()]
        if c.content_id is not None:
            fields += [b"content_id", _utf8(c.content_id, "content_id"), b"cid", content_token(c.content_id)]
        # ASCII JSON: lone surrogates in metadata travel as escapes, and come back as they went
        fields += [b"metadata", json.dumps(c.metadata, separators=(",", ":")).encode()]
        tokens = [t for t in (meta_token(k, v) for k, v in c.metadata.items()) if t is not None]
        if tokens:
            fields += [b"meta", ",".join(tokens)]
        if c.embedding is not None:
            blob = struct.pack(f"<{len(c.embedding)}f", *c.embedding)
            # cosine has no direction for a zero vector (RediSearch would rank it first, at NaN):
            # keep it for get(), out of the index
            indexed = self.distance != "cosine" or any(struct.unpack(f"<{len(c.embedding)}f", blob))
            fields += [b"vec" if indexed else b"embedding", blob]
        return fields

    def _run_write(self, chunks: list[Chunk], removal: str) -> None:
        keys = [self._marker]
        args: list[Any] = [self.dimensions, self.index_name, removal]
        for c in chunks:
            fields = self._fields(c)
            keys.append(self._key(c.id))
            args += [len(fields) // 2, *fields]
        self._call(self._write, keys=keys, args=args)

    def upsert(self, chunks: Iterable[Chunk]) -> int:
        self._ready()
        checked = check_chunks(chunks, self.dimensions)
        if checked:
            self._run_write(checked, "")
        return len(checked)

    def replace(self, content_id: str, chunks: Iterable[Chunk]) -> int:
        check_id(content_id, "content_id")
        self._ready()
        checked = [c.model_copy(update={"content_id": content_id}) for c in check_chunks(chunks, self.dimensions)]
        self._run_write(checked, condition(content_id, {}))
        return len(checked)

    def delete(self, *, ids=None, content_id=None, filters=None) -> int:
        ids, content_id, filters = self._delete_args(ids, content_id, filters)
        where = condition(content_id, filters)
        keys = [self._marker] + [self._key(i) for i in ids or ()]
        if ids == []:
            keys = keys[:1]  # no chunk can match; still report a missing store
            where = ""
        elif ids is not None and where and len(ids) > 1000:
            return sum(self.delete(ids=ids[i:i + 1000], content_id=content_id, filters=filters)
                       for i in range(0, len(ids), 1000))
        return int(self._call(self._delete, keys=keys, args=[self.index_name, where]))

    # -- reads ------------------------------------------------------------------------------

    def get(self, ids: Sequence[str]) -> list[Chunk]:
        ids = check_ids(ids)
        keys = [self._key(i) for i in ids]
        pipe = self._client.pipeline(transaction=True)
        pipe.exists(self._marker)
        for key in keys:
            pipe.hmget(key, [b"id", b"content", b"content_id", b"metadata", b"position", b"vec", b"embedding"])
        found, *rows = pipe.execute()
        if not found:
            raise NotFoundError(self._missing())
        out = []
        for row in rows:
            if row[0] is None:
                continue
            vec = row[5] if row[5] is not None else row[6]
            out.append(Chunk(
                id=row[0].decode(), content=row[1].decode(), content_id=None if row[2] is None else row[2].decode(),
                metadata=json.loads(row[3]), position=int(row[4]),
                embedding=None if vec is None else list(struct.unpack(f"<{len(vec) // 4}f", vec)),
            ))
        return out

    def _search_tail(self, n: int) -> list[Any]:
        tail: list[Any] = ["LIMIT", 0, n, "DIALECT", 2]
        if self.timeout_ms is not None:
            tail += ["TIMEOUT", self.timeout_ms]
        return tail

    def count(self, *, content_id=None, filters=None) -> int:
        if content_id is not None:
            check_id(content_id, "content_id")
        where = condition(content_id, check_filters(filters)) or "*"
        reply = self._call(self._client.execute_command, "FT.SEARCH", self.index_name, where, "NOCONTENT",
                           *self._search_tail(0))
        return int(reply[0])

    def search_args(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> list[list[Any]]:
        """The FT.SEARCH commands `search` sends (one, or two for hybrid), for inspection."""
        self._ready()
        kind, query, embedding, limit, filters = self._search_args(query, embedding, limit, filters, search_type)
        n = limit if kind != "hybrid" else max(limit, self.hybrid_candidates)
        return [c for c in (self._vector_command(embedding, n, filters) if kind != "keyword" else None,
                            self._keyword_command(query, n, filters) if kind != "vector" else None) if c]

    def _vector_command(self, embedding: list[float], n: int, filters: dict) -> list[Any]:
        ef = f" EF_RUNTIME {max(self.ef_runtime, n)}" if self._stored_index == "hnsw" else ""
        where = condition(None, filters)
        knn = f"({where})" if where else "*"
        return ["FT.SEARCH", self.index_name, f"{knn}=>[KNN {n} @vec $vector{ef} AS __dist]",
                "PARAMS", 2, "vector", struct.pack(f"<{len(embedding)}f", *embedding),
                "SORTBY", "__dist", "RETURN", len(_RETURN) + 1, *_RETURN, "__dist", *self._search_tail(n)]

    def _keyword_command(self, query: str, n: int, filters: dict) -> list[Any] | None:
        clause = keyword_clause(query)
        if clause is None:
            return None
        where = " ".join(filter(None, (clause, condition(None, filters))))
        return ["FT.SEARCH", self.index_name, where, "VERBATIM", "WITHSCORES", "SCORER", self.scorer,
                "RETURN", len(_RETURN), *_RETURN, *self._search_tail(n)]

    def _score(self, dist: float) -> float:
        if math.isnan(dist):  # a zero query vector under cosine: no direction, no similarity
            return 0.0
        if self.distance == "cosine":
            return 1.0 - dist
        if self.distance == "inner_product":
            return 1.0 - dist  # RediSearch's IP distance is 1 - dot
        return 1.0 / (1.0 + max(dist, 0.0) ** 0.5)  # L2 reports the squared distance

    @staticmethod
    def _hits(reply: list[Any], scored: bool) -> list[tuple[Chunk, float]]:
        """FT.SEARCH's reply as (chunk, raw score) in the reply's order."""
        out = []
        step = 3 if scored else 2
        for i in range(1, len(reply), step):
            raw = reply[i + step - 1]
            f = dict(zip(raw[::2], raw[1::2]))
            cid = f.get(b"content_id")
            chunk = Chunk(id=f[b"id"].decode(), content=f[b"content"].decode(),
                          content_id=None if cid is None else cid.decode(), metadata=json.loads(f[b"metadata"]),
                          position=int(f[b"position"]))
            out.append((chunk, float(reply[i + 1] if scored else f[b"__dist"])))
        return out

    def search(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> list[SearchHit]:
        self._ready()
        kind, query, embedding, limit, filters = self._search_args(query, embedding, limit, filters, search_type)
        n = limit if kind != "hybrid" else max(limit, self.hybrid_candidates)
        pipe = self._client.pipeline(transaction=False)
        vector_command = self._vector_command(embedding, n, filters) if kind != "keyword" else None
        keyword_command = self._keyword_command(query, n, filters) if kind != "vector" else None
        for command in (vector_command, keyword_command):
            if command is not None:
                pipe.execute_command(*command)
        replies = self._call(pipe.execute) if len(pipe) else []
        vector: list[tuple[Chunk, float]] = []
        keyword: list[tuple[Chunk, float]] = []
        if vector_command is not None:
            vector = [(c, self._score(d)) for c, d in self._hits(replies.pop(0), scored=False)]
            vector.sort(key=lambda item: (-item[1], item[0].id))
        if keyword_command is not None:
            keyword = self._hits(replies.pop(0), scored=True)
            keyword.sort(key=lambda item: (-item[1], item[0].id))
        if kind == "vector":
            ranked = vector[:limit]
        elif kind == "keyword":
            ranked = keyword[:limit]
        else:
            ranked = rrf_top([c for c, _ in vector], [c for c, _ in keyword], limit, key=lambda c: c.id,
                             vector_weight=self.vector_weight, keyword_weight=self.keyword_weight, k=self.rrf_k)
        return [SearchHit(**c.model_dump(exclude={"embedding"}), score=s) for c, s in ranked]
