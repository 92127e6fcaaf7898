"""ClickHouseDb: chunks and embeddings in a ClickHouse table, in this process (chDB) or on a server.

    ClickHouseDb("my_kb", path="./kb.chdb")                 # chDB: ClickHouse in this process
    ClickHouseDb("my_kb", url="http://user:pass@host:8123")  # a server, through clickhouse-connect
    ClickHouseDb("my_kb", client=clickhouse_connect_client)   # share a clickhouse-connect client

The ReplacingMergeTree table (writes are INSERTs, deletes tombstones, reads FINAL), exact
vector search, BM25 in SQL and parameter binding: docs/vector_db/clickhouse.md.
"""

from __future__ import annotations

import json
import re
from typing import Any, Unpack

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db.base import INT64, Chunk, Dialect, Params, SearchHit, StoreOptions, VectorDb
from agentkeep.vector_db.base import check_name, check_one_given, chunk_of, filter_alternatives, hit_of
from agentkeep.vector_db.text import K1, B, KeywordQuery

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,205}$")
_MISSING = re.compile(r"\b(UNKNOWN_TABLE|UNKNOWN_DATABASE)\b")
_DISTANCES = {  # distance -> (SQL function, score of its value d: higher is closer)
    "cosine": ("cosineDistance", "1 - {d}"),
    "l2": ("L2Distance", "1 / (1 + {d})"),
    "inner_product": ("dotProduct", "{d}"),
}
_COLUMNS = "id, content_id, content, metadata, position"
_NAMES = _COLUMNS.split(", ")
_INSERT_COLUMNS = ("id", "content_id", "content", "embedding", "has_embedding", "metadata", "position", "terms")


def _ident(value: Any, what: str) -> str:
    return check_name(value, what, _IDENT, "a plain identifier (a letter or _, then letters, digits, _)")


def params() -> Params:
    """Query parameters: `add(value, type)` gives the `{pN:Type}` placeholder to put in the SQL."""
    return Params("{{{name}:{kind}}}")


def filter_sql(filters: dict[str, Any], params: Params) -> list[str]:
    """A (checked) metadata filter as conditions on the JSON `metadata` column, one per key:
    numbers match by value, booleans only booleans, strings exactly; a key that is missing
    or holds a list, an object or null never matches."""
    out = []
    for key, values in filter_alternatives(filters):
        k = params.add(key, "String")
        either = [_is(k, "Bool", "JSONExtractBool", params.add(int(v), "UInt8")) for v in values if isinstance(v, bool)]
        strings = [v for v in values if isinstance(v, str)]
        if len(strings) == 1:
            either.append(_is(k, "String", "JSONExtractString", params.add(strings[0], "String")))
        elif strings:  # "any of": one set lookup
            either.append(f"(JSONType(metadata, {k}) = 'String'"
                          f" AND has({params.add(strings, 'Array(String)')}, JSONExtractString(metadata, {k})))")
        for v in values:
            if not isinstance(v, (bool, str)):
                either.extend(_number_sql(k, v, params))
        single = len(values) == 1 and isinstance(values[0], (bool, str))  # already one parenthesized condition
        out.append(either[0] if single else "(" + " OR ".join(either) + ")")
    return out


def _is(k: str, json_type: str, extract: str, v: str) -> str:
    return f"(JSONType(metadata, {k}) = '{json_type}' AND {extract}(metadata, {k}) = {v})"


def _number_sql(k: str, value: float, params: Params) -> list[str]:
    """Equal in Python's sense: an int and a float match when the float is exactly that integer."""
    alternatives = []
    as_int = value if isinstance(value, int) else int(value) if value.is_integer() else None
    if as_int is not None and -INT64 <= as_int < INT64:
        alternatives.append(_is(k, "Int64", "JSONExtractInt", params.add(as_int, "Int64")))
    if as_int is not None and INT64 <= as_int < 2 * INT64:
        alternatives.append(_is(k, "UInt64", "JSONExtractUInt", params.add(as_int, "UInt64")))
    if isinstance(value, float) or _exact_double(value):  # a stored double can equal it exactly
        alternatives.append(_is(k, "Double", "JSONExtractFloat", params.add(float(value), "Float64")))
    return alternatives or ["0"]


def _exact_double(value: int) -> bool:
    try:
        return float(value) == value
    except OverflowError:
        return False


_WHERE = Dialect("id IN {}", "content_id = {}", filter_sql, ("Array(String)", "String"))


# -- connections: the same SQL and parameters, sent in process or to a server ------------------


def _escape(value: str) -> str:
    """ClickHouse's escaped text form of a string (how a server reads a String parameter)."""
    return (value.replace("\\", "\\\\").replace("'", "\\'").replace("`", "\\`").replace("\t", "\\t")
            .replace("\n", "\\n").replace("\r", "\\r"))


def param_text(value: Any, top: bool = True) -> str:
    """A parameter value as the text a server parses for its `{name:Type}` (clickhouse-connect
    does the same for a server; chDB passes the text through as it is)."""
    if isinstance(value, str):
        return _escape(value) if top else "'" + _escape(value) + "'"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(param_text(v, False) for v in value) + "]"
    raise TypeError(f"no ClickHouse parameter text for {type(value).__name__}")


class ChdbConnection:
    """ClickHouse in this process (chDB). chDB serves one data path per process."""

    def __init__(self, path: str | None = None, session: Any = None) -> None:
        self._own = session is None
        if session is None:
            from chdb import session as chdb_session

            session = chdb_session.Session(path)
        self.session = session

    def query(self, sql: str, params: dict[str, Any]) -> list[list[Any]]:
        result = self.session.query(sql, "JSONCompact", params={k: param_text(v) for k, v in params.items()})
        raw = result.bytes()
        return json.loads(raw)["data"] if raw else []

    def command(self, sql: str, params: dict[str, Any], data: str | None = None) -> None:
        if data is not None:
            sql = sql + "\n" + data  # the data of an INSERT ... FORMAT follows the statement
        self.session.query(sql, "TSV", params={k: param_text(v) for k, v in params.items()})

    def describe(self) -> str:
        import chdb

        return f"chDB {chdb.__version__} (ClickHouse {chdb.engine_version})"

    def close(self) -> None:
        if self._own:
            self.session.close()


class ServerConnection:
    """A ClickHouse server through clickhouse-connect, which binds the parameters server-side."""

    def __init__(self, client: Any, own: bool) -> None:
        self.client = client
        self._own = own

    def query(self, sql: str, params: dict[str, Any]) -> list[list[Any]]:
        return [list(r) for r in self.client.query(sql, parameters=params or None).result_rows]

    def command(self, sql: str, params: dict[str, Any], data: str | None = None) -> None:
        self.client.command(sql, parameters=params or None, data=data)

    def describe(self) -> str:
        return f"ClickHouse {self.client.server_version} at {getattr(self.client, 'url', 'a server')}"

    def close(self) -> None:
        if self._own:
            self.client.close()


class ClickHouseDb(VectorDb):
    """A ClickHouse table. Give `path` (chDB in this process), `url` or `client` (a server)."""

    DISTANCES = _DISTANCES
    ENGINE = "ClickHouse"
    GET_BATCH = 500  # ids per get() query: on a server they travel in the request URI
    # its JSON functions type a larger integer as a String, which a string filter could match
    INTEGERS = (-INT64, 2 * INT64 - 1, "ClickHouse reads JSON integers of 64 bits")
    UNREACHABLE = ("clickhouse_connect.driver.exceptions.OperationalError",)

    def __init__(self, table_name: str, *, path: str | None = None, url: str | None = None, client: Any = None,
                 session: Any = None, database: str = "default", **options: Unpack[StoreOptions]) -> None:
        self.table_name = _ident(table_name, "table_name")
        self.database = _ident(database, "database")
        super().__init__(**options)
        self.label = f"ClickHouse table {self.name}"
        check_one_given((path, url, client, session),
                        "give one of path= (chDB), session= (a chDB session), url= or client= (a server)")
        if path is not None or session is not None:
            self._conn: Any = ChdbConnection(path, session)
        elif url is not None:
            import clickhouse_connect

            self._conn = ServerConnection(clickhouse_connect.get_client(dsn=url), own=True)
        else:
            self._conn = ServerConnection(client, own=False)

    @property
    def table(self) -> str:
        return f"`{self.database}`.`{self.table_name}`"

    def describe(self) -> str:
        return f"ClickHouseDb {self.name} ({self.distance}) on {self._conn.describe()}"

    def _location(self) -> str:
        return getattr(getattr(self._conn, "client", None), "url", None) or "the server"

    def close(self) -> None:
        self._conn.close()

    @property
    def name(self) -> str:
        return f"{self.database}.{self.table_name}"

    def _store_gone(self, exc: Exception) -> bool:
        return bool(_MISSING.search(str(exc)))

    def _stored_dimensions(self) -> int | None:
        p = params()
        rows = self._conn.query(
            f"SELECT comment FROM system.tables WHERE database = {p.add(self.database, 'String')}"
            f" AND name = {p.add(self.table_name, 'String')}", p.values)
        if not rows:
            return None
        try:
            return int(json.loads(rows[0][0])["agentkeep_vector_dimensions"])
        except (ValueError, KeyError, TypeError):
            raise InvalidInputError(f"ClickHouse table {self.name} was not made by ClickHouseDb") from None

    def create_sql(self, dims: int) -> list[str]:
        """The statements `create()` runs for a new table."""
        comment = json.dumps({"agentkeep_vector_dimensions": dims})
        return [
            f"CREATE DATABASE IF NOT EXISTS `{self.database}`",
            (f"CREATE TABLE IF NOT EXISTS {self.table} ("
            " id String, content_id String, content String, embedding Array(Float32), has_embedding UInt8,"
            " metadata String, position UInt32, terms Array(String),"
            " version DateTime64(9) DEFAULT now64(9), is_deleted UInt8 DEFAULT 0,"
            " INDEX content_id_idx content_id TYPE bloom_filter GRANULARITY 1,"
            " INDEX terms_idx terms TYPE bloom_filter(0.01) GRANULARITY 1,"
            f" CONSTRAINT embedding_dimensions CHECK length(embedding) = {dims})"
            " ENGINE = ReplacingMergeTree(version, is_deleted) ORDER BY id"
            f" COMMENT '{comment}'"),
        ]

    def _create_store(self, dimensions: int) -> None:
        for sql in self.create_sql(dimensions):  # IF NOT EXISTS: another process may win
            self._conn.command(sql, {})

    def _drop_store(self) -> None:
        self._conn.command(f"DROP TABLE IF EXISTS {self.table} SYNC", {})

    def _rows(self, chunks: list[Chunk]) -> str:
        """The chunks as JSONEachRow data for `INSERT ... FORMAT JSONEachRow`."""
        zero = [0.0] * self.dimensions
        return "\n".join(json.dumps({
            "id": c.id, "content_id": c.content_id or "", "content": c.content,
            "embedding": c.embedding if c.embedding is not None else zero,
            "has_embedding": int(c.embedding is not None), "metadata": json.dumps(c.metadata, ensure_ascii=False),
            "position": c.position, "terms": self.analyzer.terms(c.content),
        }, ensure_ascii=False) for c in chunks)

    def insert_sql(self) -> str:
        return f"INSERT INTO {self.table} ({', '.join(_INSERT_COLUMNS)}) FORMAT JSONEachRow"

    def tombstone_sql(self, where: str) -> str:
        """Newer versions, marked deleted, of the live rows matching `where`."""
        return (f"INSERT INTO {self.table} (id, content_id, content, embedding, has_embedding, metadata, position,"
                f" terms, version, is_deleted) SELECT id, '', '', arrayWithConstant({self.dimensions}, toFloat32(0)),"
                f" 0, '{{}}', 0, [], now64(9), 1 FROM {self.table} FINAL WHERE {where}")

    def _write(self, chunks: list[Chunk], content_id: str | None) -> None:
        """`replace`: the new chunks, then tombstones for the content's others (not atomic)."""
        if chunks:
            self._conn.command(self.insert_sql(), {}, self._rows(chunks))
        if content_id is not None:
            p = params()
            keep = p.add([c.id for c in chunks], "Array(String)")
            where = f"content_id = {p.add(content_id, 'String')} AND id NOT IN {keep}"
            self._conn.command(self.tombstone_sql(where), p.values)

    def _delete(self, ids, content_id, filters) -> int:
        p = params()
        where = " AND ".join(_WHERE.where(p, ids, content_id, filters)) or "1"
        n = self._count_where(where, p)
        if n:
            self._conn.command(self.tombstone_sql(where), p.values)
        return n

    def _get(self, ids: list[str]) -> list[Chunk]:
        p = params()
        rows = self._conn.query(f"SELECT {_COLUMNS}, has_embedding, embedding FROM {self.table} FINAL"
                                f" WHERE id IN {p.add(ids, 'Array(String)')}", p.values)
        return [chunk_of(dict(zip(_NAMES, r)), [float(x) for x in r[6]] if int(r[5]) else None) for r in rows]

    def _count_where(self, where: str, p: Params) -> int:
        return int(self._conn.query(f"SELECT count() FROM {self.table} FINAL WHERE {where}", p.values)[0][0])

    def _count(self, content_id, filters) -> int:
        p = params()
        return self._count_where(" AND ".join(_WHERE.where(p, None, content_id, filters)) or "1", p)

    def vector_sql(self, embedding: list[float], n: int, filters: dict) -> tuple[str, Params]:
        fn, score = _DISTANCES[self.distance]
        p = params()
        where = " AND ".join(["has_embedding = 1"] + filter_sql(filters, p))
        d = f"{fn}(embedding, {p.add(embedding, 'Array(Float32)')})"
        sql = (f"SELECT {_COLUMNS}, toFloat64({score.format(d=d)}) AS score FROM {self.table} FINAL"
               f" WHERE {where} ORDER BY score DESC, id LIMIT {p.add(n, 'UInt32')}")
        return sql, p

    def keyword_sql(self, query: KeywordQuery, n: int, filters: dict) -> tuple[str, Params]:
        """BM25 as in_memory computes it (Lucene's idf; document count, average length and each
        term's document frequency over the whole table) for the rows holding any ranked term,
        narrowed by the query's marks: `hasAll` of the required terms, no excluded one, each
        phrase a run of the terms (`hasSubstr`). The statistics read the terms' array sizes and
        the terms of the rows that hold a query term (the bloom filter skips the other granules);
        nothing is tokenized at query time."""
        p = params()
        want = p.add(list(query.ranked), "Array(String)")
        where = [f"hasAll(terms, {p.add(list(query.must), 'Array(String)')})" if query.must
                 else f"hasAny(terms, {want})"]
        if query.must_not:
            where.append(f"NOT hasAny(terms, {p.add(list(query.must_not), 'Array(String)')})")
        where += [f"hasSubstr(terms, {p.add(list(ph), 'Array(String)')})" for ph in query.phrases]
        where += [f"NOT hasSubstr(terms, {p.add(list(ph), 'Array(String)')})" for ph in query.excluded_phrases]
        where.extend(filter_sql(filters, p))
        norm = f"{K1!r} * ({1 - B!r} + {B!r} * length(terms) / stats.2)"
        idf = "log(1 + (stats.1 - df[i] + 0.5) / (df[i] + 0.5))"
        sql = (
            f"WITH (SELECT tuple(count(), avg(length(terms))) FROM {self.table} FINAL) AS stats,"
            f" (SELECT sumForEach(arrayMap(w -> toUInt64(has(terms, w)), {want}))"
            f" FROM {self.table} FINAL WHERE hasAny(terms, {want})) AS df"
            f" SELECT {_COLUMNS}, arraySum(arrayMap((w, i) -> assumeNotNull("  # a scalar subquery's type is Nullable
            f"{idf} * countEqual(terms, w) * {K1 + 1!r} / (countEqual(terms, w) + {norm})),"
            f" {want}, arrayEnumerate({want}))) AS score"
            f" FROM {self.table} FINAL WHERE {' AND '.join(where)} ORDER BY score DESC, id LIMIT {p.add(n, 'UInt32')}"
        )
        return sql, p

    def _hits(self, sql: str, p: Params) -> list[SearchHit]:
        return [hit_of(dict(zip(_NAMES, r)), float(r[5])) for r in self._conn.query(sql, p.values)]

    def _vector_search(self, embedding: list[float], n: int, filters: dict) -> list[SearchHit]:
        return self._hits(*self.vector_sql(embedding, n, filters))

    def _keyword_search(self, query: KeywordQuery, n: int, filters: dict) -> list[SearchHit]:
        return self._hits(*self.keyword_sql(query, n, filters))
