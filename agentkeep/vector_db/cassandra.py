"""CassandraDb: chunks in an Apache Cassandra 5 table with vector search on SAI indexes.

    CassandraDb("my_kb", keyspace="agentkeep", contact_points=["10.0.0.1"], search_type="hybrid")
    CassandraDb("my_kb", keyspace="agentkeep", session=session)   # share a cassandra-driver Session

Schema, CQL, the keyword ranking done here (Cassandra has none: SAI finds the chunks holding a
term, BM25 over the corpus statistics kept in a counter table ranks them) and scores:
docs/vector_db/cassandra.md. `CassandraStatements` builds every statement (pure).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Unpack

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db.base import Chunk, Dialect, Params, SearchHit, StoreOptions, VectorDb, batches, check_choice
from agentkeep.vector_db.base import check_dimensions, check_int, check_name, check_one_given, chunk_of, hit_of
from agentkeep.vector_db.base import expand_filters, filter_alternatives, l2_score, ranked, sql_where, tagged_value
from agentkeep.vector_db.text import Analyzer, KeywordQuery, bm25, idf
from agentkeep.vector_db.text import analyzer as analyzer_of

SIMILARITY = {  # distance -> (SAI similarity_function, CQL function)
    "cosine": ("COSINE", "similarity_cosine"),
    "l2": ("EUCLIDEAN", "similarity_euclidean"),
    "inner_product": ("DOT_PRODUCT", "similarity_dot_product"),
}
MAX_DIMENSIONS = 8192
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
_VECTOR_TYPE = re.compile(r"^vector<float,\s*(\d+)>$")
_ROW = "id, content_id, content, metadata, position"
MAX_FAN_OUT = 100  # queries one filter with "$in" may become (see `CassandraStatements.fan_out`)
CORPUS = "*"  # the statistics row of the whole table: never a term (terms are letters and digits)


def _name(value: Any, what: str) -> str:
    return check_name(value, what, _NAME, "a Cassandra name (a letter, then letters, digits or _; 1..48)")


def meta_entries(metadata: dict[str, Any]) -> dict[str, str]:
    """The `meta` map of a chunk: its top-level scalar values, type-tagged."""
    return {k: tagged_value(v) for k, v in metadata.items() if isinstance(v, (str, bool, int, float))}


_WHERE = Dialect("id IN {}", "content_id = {}", lambda filters, p: [
    f"meta[{p.add(k)}] = {p.add(tagged_value(v))}" for k, v in filters.items()])


class CassandraStatements:
    """CQL text and bound values for every operation. Pure: no driver, no I/O."""

    def __init__(self, keyspace: str, table: str, *, distance: str = "cosine", analyzer: Analyzer | None = None) -> None:
        self.analyzer = analyzer or analyzer_of("english")  # the terms stored and searched
        self.keyspace = _name(keyspace, "keyspace")
        self.table_name = _name(table, "table_name")
        self.distance = check_choice(distance, "distance", SIMILARITY)
        self.table = f'"{self.keyspace}"."{self.table_name}"'
        # index names are per keyspace: keep them short and tied to this table
        base = self.table_name if len(self.table_name) <= 40 else (
            self.table_name[:33] + "_" + hashlib.sha1(self.table_name.encode()).hexdigest()[:6])
        self._index_base = base
        self.stats = f'"{self.keyspace}"."{base}__bm25"'  # the keyword statistics: chunks and terms per term

    def create_table(self, dimensions: int) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            "id text PRIMARY KEY, content_id text, content text, "
            f"embedding vector<float, {check_dimensions(dimensions, MAX_DIMENSIONS)}>, metadata text, position int, "
            "meta map<text, text>, term_freqs map<text, int>, term_count int)"
        )

    def index_name(self, suffix: str) -> str:
        return f"{self._index_base}_{suffix}"

    def create_indexes(self) -> list[str]:
        def sai(suffix: str, target: str, options: str = "") -> str:
            return (f'CREATE CUSTOM INDEX IF NOT EXISTS "{self.index_name(suffix)}" ON {self.table} ({target}) '
                    f"USING 'StorageAttachedIndex'{options}")

        return [
            sai("vec", "embedding", f" WITH OPTIONS = {{'similarity_function': '{SIMILARITY[self.distance][0]}'}}"),
            sai("cid", "content_id"),
            sai("meta", "ENTRIES(meta)"),
            sai("terms", "KEYS(term_freqs)"),
        ]

    def drop_table(self) -> str:
        return f"DROP TABLE IF EXISTS {self.table}"

    def create_stats_table(self) -> str:
        """Per term, the chunks holding it; in the CORPUS row, the chunks and their terms."""
        return f"CREATE TABLE IF NOT EXISTS {self.stats} (term text PRIMARY KEY, chunks counter, length counter)"

    def drop_stats_table(self) -> str:
        return f"DROP TABLE IF EXISTS {self.stats}"

    def truncate_stats(self) -> str:
        return f"TRUNCATE {self.stats}"

    def update_stats(self) -> str:
        """Bound with (chunks, length, term) deltas."""
        return f"UPDATE {self.stats} SET chunks = chunks + ?, length = length + ? WHERE term = ?"

    def select_stats(self, terms: Sequence[str]) -> tuple[str, tuple]:
        return f"SELECT term, chunks, length FROM {self.stats} WHERE term IN ?", ([CORPUS, *terms],)

    def select_terms_by_ids(self, ids: list[str]) -> tuple[str, tuple]:
        """What the statistics of the rows a write replaces need."""
        return f"SELECT id, term_freqs, term_count FROM {self.table} WHERE id IN ?", (ids,)

    def select_all_terms(self) -> str:
        return f"SELECT term_freqs, term_count FROM {self.table}"

    @staticmethod
    def stats_delta(removed: Iterable[tuple[Mapping[str, int] | None, int | None]],
                    added: Iterable[tuple[Mapping[str, int] | None, int | None]]) -> list[tuple[int, int, str]]:
        """The `update_stats` values that take rows' (term_freqs, term_count) out of the
        statistics and put others in; terms whose counts do not change are left alone."""
        delta: dict[str, list[int]] = {}
        for sign, rows in ((-1, removed), (1, added)):
            for freqs, length in rows:
                corpus = delta.setdefault(CORPUS, [0, 0])
                corpus[0] += sign
                corpus[1] += sign * (length or 0)
                for term in freqs or {}:
                    delta.setdefault(term, [0, 0])[0] += sign
        return [(chunks, length, term) for term, (chunks, length) in sorted(delta.items()) if chunks or length]

    def table_exists(self) -> tuple[str, tuple]:
        return ("SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?",
                (self.keyspace, self.table_name))

    def embedding_type(self) -> tuple[str, tuple]:
        return ("SELECT type FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?"
                " AND column_name = 'embedding'"), (self.keyspace, self.table_name)

    @staticmethod
    def dimensions_of(cql_type: str | None) -> int | None:
        match = _VECTOR_TYPE.match((cql_type or "").strip())
        return int(match.group(1)) if match else None

    def insert(self) -> str:
        return (f"INSERT INTO {self.table} (id, content_id, content, embedding, metadata, position, meta, "
                "term_freqs, term_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")

    def row(self, chunk: Chunk) -> tuple:
        words = self.analyzer.terms(chunk.content)
        return (chunk.id, chunk.content_id, chunk.content, chunk.embedding,
                json.dumps(chunk.metadata, ensure_ascii=False, allow_nan=False), chunk.position,
                meta_entries(chunk.metadata), dict(Counter(words)), len(words))

    def select_by_ids(self, ids: list[str]) -> tuple[str, tuple]:
        return f"SELECT {_ROW}, embedding FROM {self.table} WHERE id IN ?", (ids,)

    @staticmethod
    def chunk(row: Any) -> Chunk:
        return chunk_of(row._asdict(), None if row.embedding is None else [float(x) for x in row.embedding])

    @staticmethod
    def where(content_id: str | None, filters: dict[str, Any]) -> tuple[list[str], list[Any]]:
        params = Params("?")
        return _WHERE.where(params, None, content_id, filters), list(params.values.values())

    def select_ids(self, content_id: str | None, filters: dict[str, Any]) -> tuple[str, tuple]:
        """The rows a delete or replace removes, with what their statistics need."""
        parts, values = self.where(content_id, filters)
        return f"SELECT id, term_freqs, term_count FROM {self.table}" + sql_where(parts), tuple(values)

    def select_candidates_by_ids(self, ids: list[str]) -> tuple[str, tuple]:
        """`delete(ids=..., ...)`: the rows asked for, with what their conditions and statistics need."""
        return f"SELECT id, content_id, meta, term_freqs, term_count FROM {self.table} WHERE id IN ?", (ids,)

    @staticmethod
    def row_matches(row: Any, content_id: str | None, filters: dict[str, Any]) -> bool:
        meta = row.meta or {}
        return ((content_id is None or row.content_id == content_id)
                and all(meta.get(k) in {tagged_value(v) for v in vs} for k, vs in filter_alternatives(filters)))

    @staticmethod
    def fan_out(filters: dict[str, Any]) -> list[dict[str, Any]]:
        """The equality filters a (checked) filter is queried as: SAI has no OR and applies IN
        only after the index (an ANN search would come back short), so an "any of" runs one
        query per combination of members; a chunk matches at most one of them."""
        out = expand_filters(filters)
        if len(out) > MAX_FAN_OUT:
            raise InvalidInputError(
                f'Cassandra runs a filter with "$in" as one query per combination of members: at most '
                f"{MAX_FAN_OUT} combinations, this filter makes {len(out)}")
        return out

    def delete_by_ids(self, ids: list[str]) -> tuple[str, tuple]:
        return f"DELETE FROM {self.table} WHERE id IN ?", (ids,)

    def count(self, content_id: str | None, filters: dict[str, Any]) -> tuple[str, tuple]:
        parts, values = self.where(content_id, filters)
        return f"SELECT COUNT(*) FROM {self.table}" + sql_where(parts), tuple(values)

    def vector_search(self, embedding: list[float], limit: int, filters: dict[str, Any]) -> tuple[str, tuple]:
        parts, values = self.where(None, filters)
        fn = SIMILARITY[self.distance][1]
        q = list(embedding)
        return (f"SELECT {_ROW}, {fn}(embedding, ?) AS score FROM {self.table}" + sql_where(parts)
                + " ORDER BY embedding ANN OF ? LIMIT ?", (q, *values, q, limit))

    def keyword_candidates(self, wanted: list[str], limit: int, filters: dict[str, Any]) -> tuple[str, tuple]:
        parts, values = self.where(None, filters)
        conditions = ["term_freqs CONTAINS KEY ?"] * len(wanted) + parts
        return (f"SELECT {_ROW}, term_freqs, term_count FROM {self.table}" + sql_where(conditions) + " LIMIT ?",
                (*wanted, *values, limit))

    def vector_score(self, raw: float) -> float:
        """Undo Cassandra's normalisation: (1 + s) / 2 for cosine and dot product,
        1 / (1 + d²) for euclidean (scored 1 / (1 + d) on every store)."""
        raw = float(raw)
        if self.distance == "l2":
            return l2_score(1.0 / raw - 1.0) if raw > 0 else 0.0
        return 2.0 * raw - 1.0

    def keyword_statements(self, query: KeywordQuery, cap: int, filters: dict[str, Any]) -> list[tuple[str, tuple]]:
        """The candidates of a keyword query: the chunks holding every `must` term, or (with none)
        one statement per ranked term, each at most `cap` rows (SAI has no OR)."""
        if query.must:
            return [self.keyword_candidates(list(query.must), cap, filters)]
        return [self.keyword_candidates([t], cap, filters) for t in query.should]

    def rank_keyword(self, rows: Iterable[Any], query: KeywordQuery, stats: Mapping[str, tuple[int, int]],
                     limit: int) -> list[tuple[Any, float]]:
        """BM25 of the candidates that match the query (exclusions, phrases), by the corpus
        statistics `stats` (term -> (chunks, length); CORPUS: the table's)."""
        total, length = stats.get(CORPUS, (0, 0))
        total = max(total, 1)
        avg = max(length, 0) / total or 1.0
        idfs = {t: idf(total, min(max(stats.get(t, (0, 0))[0], 1), total)) for t in query.ranked}
        unique = {r.id: r for r in rows}.values()  # a chunk holding two terms comes from both statements
        scored = []
        for r in unique:
            freqs = r.term_freqs or {}
            words = self.analyzer.terms(r.content or "") if query.positional else ()
            if query.matches(words, freqs):
                scored.append((r, bm25(freqs, r.term_count or 0, avg, query.ranked, idfs)))
        return sorted(scored, key=lambda item: (-item[1], item[0].id))[:limit]


class CassandraDb(VectorDb):
    """A Cassandra 5 table. Give `session` (a connected cassandra-driver Session) or
    `contact_points` (and `port`, `cluster_options`) for a cluster of its own."""

    MAX_DIMENSIONS = MAX_DIMENSIONS
    ENGINE = "Cassandra"
    UNREACHABLE = ("cassandra.cluster.NoHostAvailable",)

    def __init__(self, table_name: str, *, keyspace: str, session: Any = None,
                 contact_points: Sequence[str] | None = None, port: int = 9042,
                 cluster_options: dict[str, Any] | None = None, keyword_candidates: int = 1000, batch_size: int = 50,
                 **options: Unpack[StoreOptions]) -> None:
        self.statements = CassandraStatements(keyspace, table_name, distance=options.get("distance", "cosine"))
        self.keyspace, self.table_name = keyspace, table_name
        super().__init__(**options)
        self.statements.analyzer = self.analyzer
        self.label = f"vector table {keyspace}.{table_name}"
        self.keyword_candidates = check_int(keyword_candidates, "keyword_candidates", 1, 100_000)
        self.batch_size = check_int(batch_size, "batch_size", 1, 65_535)
        check_one_given((session, contact_points), "give either session= or contact_points=")
        if contact_points is not None and (isinstance(contact_points, str)
                                           or not all(isinstance(p, str) for p in contact_points)):
            raise InvalidInputError("contact_points must be a list of host names or addresses")
        self._contact_points = None if contact_points is None else list(contact_points)
        self._address = ", ".join(self._contact_points or ["the session's cluster"])
        self._port = check_int(port, "port", 1, 65_535)
        self._cluster_options = dict(cluster_options or {})
        self._session = session
        self._cluster = None
        self._prepared: dict[str, Any] = {}

    @property
    def session(self):
        if self._session is None:
            from cassandra.cluster import Cluster

            self._cluster = Cluster(self._contact_points, port=self._port, **self._cluster_options)
            self._session = self._cluster.connect()
        return self._session

    def _store_gone(self, exc: Exception) -> bool:
        from agentkeep.db.connection import raised_as

        text = str(exc).lower()
        if raised_as(exc, "cassandra.InvalidRequest") and ("unconfigured table" in text or "does not exist" in text):
            self._prepared = {}
            return True
        return False

    def _prepare(self, cql: str):
        if cql not in self._prepared:
            self._prepared[cql] = self.session.prepare(cql)
        return self._prepared[cql]

    def _execute(self, statement: tuple[str, tuple]):
        cql, values = statement
        return self.session.execute(self._prepare(cql), values)

    def describe(self) -> str:
        row = self.session.execute("SELECT release_version FROM system.local").one()
        return f"CassandraDb {self.keyspace}.{self.table_name} on Cassandra {row.release_version if row else '?'}"

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = self._session = None
        self._prepared = {}
        self._known = False

    def _stored_dimensions(self) -> int | None:
        row = self.session.execute(*self.statements.embedding_type()).one()
        return None if row is None else self.statements.dimensions_of(row.type)

    def _exists(self) -> bool:
        return self.session.execute(*self.statements.table_exists()).one() is not None

    def _create_store(self, dimensions: int) -> None:
        from cassandra import InvalidRequest

        try:
            self.session.execute(self.statements.create_table(dimensions))
        except InvalidRequest as exc:
            if "keyspace" in str(exc).lower():
                raise InvalidInputError(f"keyspace {self.keyspace} does not exist: create it (with the replication "
                                        f"you want) first ({exc})") from None
            raise

    def _complete_store(self) -> None:
        for cql in (*self.statements.create_indexes(), self.statements.create_stats_table()):
            self.session.execute(cql)

    def _drop_store(self) -> None:
        self.session.execute(self.statements.drop_table())
        self.session.execute(self.statements.drop_stats_table())
        self._prepared = {}

    def _execute_many(self, cql: str, rows: list[tuple]) -> None:
        from cassandra.concurrent import execute_concurrent_with_args

        if rows:
            execute_concurrent_with_args(self.session, self._prepare(cql), rows, concurrency=16)

    def _count_terms(self, removed: Iterable[tuple], added: Iterable[tuple]) -> None:
        """Take rows' (term_freqs, term_count) out of the keyword statistics and put others in."""
        self._execute_many(self.statements.update_stats(), self.statements.stats_delta(removed, added))

    def _stored_terms(self, ids: list[str]) -> list[tuple]:
        """(term_freqs, term_count) of the stored rows among these ids."""
        return [(r.term_freqs, r.term_count) for part in batches(ids, 100)
                for r in self._execute(self.statements.select_terms_by_ids(list(part)))]

    def rebuild_statistics(self) -> None:
        """Recount the keyword statistics from every row: for a table written before they were
        kept, or whose counts drifted (concurrent writes of one chunk). Reads the whole table;
        run it with no writes under way."""
        with self._translated():
            self._ready()
            self.session.execute(self.statements.create_stats_table())
            self.session.execute(self.statements.truncate_stats())
            rows = self.session.execute(self.statements.select_all_terms())
            self._count_terms([], ((r.term_freqs, r.term_count) for r in rows))

    def write_plan(self, chunks: Iterable[Chunk], content_id: str | None = None) -> tuple[str, list[tuple]]:
        """The INSERT and the rows `upsert` (or `replace(content_id, ...)`) writes, checked as
        they would be; runs nothing."""
        return self.statements.insert(), [self.statements.row(c) for c in self._checked(chunks, content_id)]

    def _write(self, chunks: list[Chunk], content_id: str | None) -> None:
        """An upsert writes concurrently; `replace` deletes the content's other chunks and
        inserts the new ones in LOGGED batches of `batch_size`. Then the keyword statistics
        trade the rows replaced for the rows written."""
        rows = [self.statements.row(c) for c in chunks]
        replaced = self._stored_terms([r[0] for r in rows])
        if content_id is None:
            self._execute_many(self.statements.insert(), rows)
        else:
            keep = {r[0] for r in rows}
            old = [r for r in self._execute(self.statements.select_ids(content_id, {})) if r.id not in keep]
            self._replace(old, rows)
            replaced += [(r.term_freqs, r.term_count) for r in old]
        self._count_terms(replaced, [(r[7], r[8]) for r in rows])

    def _replace(self, old: list[Any], rows: list[tuple]) -> None:
        from cassandra.query import BatchStatement, BatchType

        insert = self._prepare(self.statements.insert())
        delete = self._prepare(self.statements.delete_by_ids([])[0])
        work = [(delete, ([r.id],)) for r in old] + [(insert, r) for r in rows]
        for part in batches(work, self.batch_size):
            batch = BatchStatement(batch_type=BatchType.LOGGED)
            for statement, values in part:
                batch.add(statement, values)
            self.session.execute(batch)

    def _delete(self, ids, content_id, filters) -> int:
        if ids is not None:  # bounded by the ids asked for: check the other conditions here
            rows = self._execute(self.statements.select_candidates_by_ids(ids))
            doomed = [r for r in rows if self.statements.row_matches(r, content_id, filters)]
        else:
            doomed = [r for f in self.statements.fan_out(filters)
                      for r in self._execute(self.statements.select_ids(content_id, f))]
        for part in batches([r.id for r in doomed], 100):
            self._execute(self.statements.delete_by_ids(list(part)))
        self._count_terms([(r.term_freqs, r.term_count) for r in doomed], [])
        return len(doomed)

    def _get(self, ids: list[str]) -> list[Chunk]:
        return [self.statements.chunk(r) for r in self._execute(self.statements.select_by_ids(ids))]

    def _count(self, content_id, filters) -> int:
        return sum(int(self._execute(self.statements.count(content_id, f)).one()[0])
                   for f in self.statements.fan_out(filters))

    def search_plan(self, query=None, *, embedding=None, limit=5, filters=None, search_type=None) -> dict[str, Any]:
        """The statements `search` runs, a list per candidate list (one statement, or one per
        combination of a filter's "$in" members; the keyword list is None when nothing can
        match), with the parsed keyword query the ranking uses; runs nothing."""
        plan = self._plan(query, embedding, limit, filters, search_type, self._vector_statements,
                          self._keyword_statements)
        if "keyword" in plan:
            plan["query"] = self.analyzer.query(query)
        return plan

    def _vector_statements(self, embedding: list[float], n: int, filters: dict) -> list[tuple[str, tuple]]:
        return [self.statements.vector_search(embedding, n, f) for f in self.statements.fan_out(filters)]

    def _keyword_statements(self, query: KeywordQuery, n: int, filters: dict) -> list[tuple[str, tuple]] | None:
        if not query:
            return None
        cap = max(n, self.keyword_candidates)
        return [s for f in self.statements.fan_out(filters) for s in self.statements.keyword_statements(query, cap, f)]

    def _vector_search(self, embedding: list[float], n: int, filters: dict) -> list[SearchHit]:
        """The best `n` of each query's best `n`: the queries' matches are disjoint."""
        hits = [hit_of(r._asdict(), self.statements.vector_score(r.score))
                for statement in self._vector_statements(embedding, n, filters) for r in self._execute(statement)]
        return ranked(hits)[:n]

    def _keyword_search(self, query: KeywordQuery, n: int, filters: dict) -> list[SearchHit]:
        stats = {r.term: (r.chunks or 0, r.length or 0)
                 for r in self._execute(self.statements.select_stats(query.ranked))}
        rows = [r for statement in self._keyword_statements(query, n, filters) for r in self._execute(statement)]
        return [hit_of(r._asdict(), s) for r, s in self.statements.rank_keyword(rows, query, stats, n)]
