"""RedisVectorDb: chunks as Redis hashes, searched with RediSearch (Redis Stack, Redis 8).

    RedisVectorDb("my_kb", db_url="redis://127.0.0.1:6379/0", search_type="hybrid")

Keys, the marker hash every write script checks, filters as TAG digests, and what is atomic
(one Redis server or shard): docs/vector_db/redis.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from typing import Any, Unpack

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db.base import Chunk, SearchHit, StoreOptions, VectorDb, check_choice, check_int, check_name
from agentkeep.vector_db.base import batches, chunk_of, dimension_mismatch, distance_score, filter_token, hit_of
from agentkeep.vector_db.base import filter_alternatives
from agentkeep.vector_db.text import KeywordQuery

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
    # a tag list is a union: `@meta:{a | b}` is "any of" (the digests need no escaping)
    parts += [f"@meta:{{{' | '.join(meta_token(k, v) for v in values)}}}" for k, values in filter_alternatives(filters)]
    return " ".join(parts)


def keyword_clause(query: KeywordQuery) -> str:
    """`@terms:(...)` for a parsed (non-empty) query: the should terms a union `(a|b)`, required
    then only optional (`~`, they still add to the score); each must term and phrase
    intersected; `-term` and `-"a phrase"` left out. Phrase words are scored once, in their phrase."""
    in_phrases = {t for p in query.phrases for t in p}
    parts = [escape(t) for t in query.must if t not in in_phrases]
    parts += [_phrase(p) for p in query.phrases]
    if query.should:
        union = "(" + " | ".join(escape(t) for t in query.should) + ")"
        parts.append("~" + union if parts else union)
    parts += ["-" + escape(t) for t in query.must_not] + ["-" + _phrase(p) for p in query.excluded_phrases]
    return "@terms:(" + " ".join(parts) + ")"


def _phrase(words: tuple[str, ...]) -> str:
    return '"' + " ".join(escape(t) for t in words) + '"'


def _text(fields: dict[bytes, Any]) -> dict[str, Any]:
    """A hash's fields by name, its text fields decoded (metadata stays JSON bytes)."""
    return {k.decode(): v.decode() if k in (b"id", b"content", b"content_id") and v is not None else v
            for k, v in fields.items()}


def _no_index(exc: Exception) -> bool:
    text = str(exc).lower()
    return "no such index" in text or "unknown index name" in text


class RedisVectorDb(VectorDb):
    """A RediSearch index over hashes under one key prefix (Redis Stack 7.2+, or Redis 8)."""

    DISTANCES = _METRICS
    MAX_DIMENSIONS = MAX_DIMENSIONS
    ENGINE = "Redis"
    UNREACHABLE = ("redis.exceptions.ConnectionError", "redis.exceptions.TimeoutError")

    def __init__(self, name: str, db_url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "agentkeep",
                 index: str = "hnsw", hnsw_m: int = 16, hnsw_ef_construction: int = 200, ef_runtime: int = 40,
                 scorer: str = "BM25STD", timeout_ms: int | None = None, client_options: dict | None = None,
                 **options: Unpack[StoreOptions]) -> None:
        from agentkeep.db.redis import check_prefix, parse_url

        check_name(name, "name", _NAME, "1..128 letters, digits, '_', '-' or '.'")
        check_prefix(prefix)
        self.name = name
        self.prefix = prefix
        super().__init__(**options)
        self.index = check_choice(index, "index", INDEXES)
        self.scorer = check_choice(scorer, "scorer", SCORERS)
        self.hnsw_m = check_int(hnsw_m, "hnsw_m", 1, 512)
        self.hnsw_ef_construction = check_int(hnsw_ef_construction, "hnsw_ef_construction", 1, 4096)
        self.ef_runtime = check_int(ef_runtime, "ef_runtime", 1, 10_000)
        self.timeout_ms = None if timeout_ms is None else check_int(timeout_ms, "timeout_ms", 1, 3_600_000)
        self.url, self.location = parse_url(db_url)
        self._address = self.location
        self.index_name = f"{prefix}:vdb:{name}"
        self.label = f"vector store {self.index_name}"
        self._marker = self.index_name.encode()
        self._key_prefix = f"{self.index_name}:".encode()
        self._stored_index: str | None = None  # the existing index's kind, once read

        import redis

        # the replies are parsed here as RESP2 arrays of bytes (vectors are binary)
        options = {**(client_options or {}), "protocol": 2, "decode_responses": False}
        self._client = redis.Redis.from_url(db_url, **options)
        self._owns_client = True
        self._write_script = self._client.register_script(_WRITE)
        self._delete_script = self._client.register_script(_DELETE)

    def _key(self, chunk_id: str) -> bytes:
        return self._key_prefix + _utf8(chunk_id, "chunk id")

    def _call(self, fn, *args, **kwargs):
        """Run a client call; a missing index or store becomes NotFoundError."""
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.ResponseError as exc:
            text = str(exc)
            if _MISSING in text or _no_index(exc):
                raise self._gone() from None
            if _DIMENSIONS in text:
                self._known = False
                stored = text.split(_DIMENSIONS, 1)[1].strip()
                raise dimension_mismatch(self.label, stored, self.dimensions) from None
            raise

    def _stored_dimensions(self) -> int | None:
        """From the store's marker: its dimensions; its distance must be this one's."""
        dims, distance, index = self._client.hmget(self._marker, ["dimensions", "distance", "index"])
        if dims is None:
            return None
        if distance.decode() != self.distance:  # the index's metric decides what a score means
            raise InvalidInputError(
                f"{self.label} was created for distance {distance.decode()!r}, not {self.distance!r}")
        self._stored_index = index.decode()
        return int(dims)

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

    def _create_store(self, dimensions: int) -> None:
        """FT.CREATE (unless another process made the index first), then the marker, from the
        index as it is."""
        import redis

        try:
            self._client.execute_command(*self._create_args(dimensions))
        except redis.ResponseError as exc:
            if "already exists" not in str(exc).lower():
                raise
        dims, distance, index = self._index_info()
        self._client.hset(self._marker, mapping={"dimensions": dims, "distance": distance, "index": index})

    def _exists(self) -> bool:
        return bool(self._client.exists(self._marker))

    def _drop_store(self) -> None:
        import redis

        self._client.delete(self._marker)  # from here on every write fails
        try:
            self._client.execute_command("FT.DROPINDEX", self.index_name, "DD")
        except redis.ResponseError as exc:
            if not _no_index(exc):
                raise

    def _fields(self, c: Chunk) -> list[Any]:
        where = f"chunk {c.id!r}"
        fields: list[Any] = [b"id", _utf8(c.id, "chunk id"), b"content", _utf8(c.content, f"{where} content"),
                             b"position", c.position]
        words = " ".join(self.analyzer.terms(c.content))
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

    def _write(self, chunks: list[Chunk], content_id: str | None) -> None:
        """One script: with `content_id` (replace), the content's chunks go first."""
        keys = [self._marker]
        args: list[Any] = [self.dimensions, self.index_name, "" if content_id is None else condition(content_id, {})]
        for c in chunks:
            fields = self._fields(c)
            keys.append(self._key(c.id))
            args += [len(fields) // 2, *fields]
        self._call(self._write_script, keys=keys, args=args)

    def _delete(self, ids, content_id, filters) -> int:
        where = condition(content_id, filters)
        if ids is not None and where and len(ids) > 1000:
            return sum(self._delete(part, content_id, filters) for part in batches(ids, 1000))
        keys = [self._marker] + [self._key(i) for i in ids or ()]
        return int(self._call(self._delete_script, keys=keys, args=[self.index_name, where]))

    def _get(self, ids: list[str]) -> list[Chunk]:
        keys = [self._key(i) for i in ids]
        pipe = self._client.pipeline(transaction=True)
        pipe.exists(self._marker)
        for key in keys:
            pipe.hmget(key, [b"id", b"content", b"content_id", b"metadata", b"position", b"vec", b"embedding"])
        found, *rows = pipe.execute()
        if not found:
            raise self._gone()
        blobs = [row[5] if row[5] is not None else row[6] for row in rows]
        vectors = [None if b is None else list(struct.unpack(f"<{len(b) // 4}f", b)) for b in blobs]
        return [chunk_of(_text(dict(zip(_RETURN, row))), v) for row, v in zip(rows, vectors) if row[0] is not None]

    def _search_tail(self, n: int) -> list[Any]:
        tail: list[Any] = ["LIMIT", 0, n, "DIALECT", 2]
        if self.timeout_ms is not None:
            tail += ["TIMEOUT", self.timeout_ms]
        return tail

    def _count(self, content_id, filters) -> int:
        where = condition(content_id, filters) or "*"
        reply = self._call(self._client.execute_command, "FT.SEARCH", self.index_name, where, "NOCONTENT",
                           *self._search_tail(0))
        return int(reply[0])

    def search_args(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> list[list[Any]]:
        """The FT.SEARCH commands `search` sends (one, or two for hybrid), for inspection."""
        self._ready()
        kind, query, embedding, limit, filters = self._search_args(query, embedding, limit, filters, search_type)
        return list(self._commands(kind, query, embedding, self._candidate_count(kind, limit), filters).values())

    def _vector_command(self, embedding: list[float], n: int, filters: dict) -> list[Any]:
        ef = f" EF_RUNTIME {max(self.ef_runtime, n)}" if self._stored_index == "hnsw" else ""
        where = condition(None, filters)
        knn = f"({where})" if where else "*"
        return ["FT.SEARCH", self.index_name, f"{knn}=>[KNN {n} @vec $vector{ef} AS __dist]",
                "PARAMS", 2, "vector", struct.pack(f"<{len(embedding)}f", *embedding),
                "SORTBY", "__dist", "RETURN", len(_RETURN) + 1, *_RETURN, "__dist", *self._search_tail(n)]

    def _keyword_command(self, query: KeywordQuery, n: int, filters: dict) -> list[Any] | None:
        if not query:  # only stop words, or only exclusions: nothing can match
            return None
        where = " ".join(filter(None, (keyword_clause(query), condition(None, filters))))
        return ["FT.SEARCH", self.index_name, where, "VERBATIM", "WITHSCORES", "SCORER", self.scorer,
                "RETURN", len(_RETURN), *_RETURN, *self._search_tail(n)]

    def _score(self, dist: float) -> float:
        if math.isnan(dist):  # a zero query vector under cosine: no direction, no similarity
            return 0.0
        return distance_score(self.distance, dist)  # L2 is squared; cosine 1 - cos; IP 1 - dot

    @staticmethod
    def _hits(reply: list[Any], score) -> list[SearchHit]:
        """FT.SEARCH's reply as hits; `score(distance)`, or None for WITHSCORES's score."""
        step = 3 if score is None else 2
        fields = [(reply[i + 1], dict(zip(reply[i + step - 1][::2], reply[i + step - 1][1::2])))
                  for i in range(1, len(reply), step)]
        return [hit_of(_text(f), float(raw) if score is None else score(float(f[b"__dist"]))) for raw, f in fields]

    def _commands(self, kind, query, embedding, n, filters) -> dict[str, list[Any]]:
        commands = {"vector": self._vector_command(embedding, n, filters) if kind != "keyword" else None,
                    "keyword": None if kind == "vector" else
                    self._keyword_command(self.analyzer.query(query), n, filters)}
        return {name: command for name, command in commands.items() if command is not None}

    def _candidates(self, kind, query, embedding, n, filters):
        """The commands `kind` needs, in one pipeline."""
        commands = self._commands(kind, query, embedding, n, filters)
        pipe = self._client.pipeline(transaction=False)
        for command in commands.values():
            pipe.execute_command(*command)
        replies = dict(zip(commands, self._call(pipe.execute) if commands else []))
        return (self._hits(replies["vector"], self._score) if "vector" in replies else [],
                self._hits(replies["keyword"], None) if "keyword" in replies else [])
