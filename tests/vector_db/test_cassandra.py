"""CassandraDb without Cassandra: the CQL statements and bound values it builds (schema, SAI
indexes, writes, filters, ANN and keyword queries), the keyword ranking it does itself and the
statistics it keeps for it, score conversion and argument checks. No Cassandra 5 runs here, so none of this is verified against
a live cluster; the tests need neither cassandra-driver nor a network."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections import Counter, namedtuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentkeep.db.errors import InvalidInputError
from agentkeep.vector_db import Chunk
from agentkeep.vector_db.base import check_filters, matches
from agentkeep.vector_db.cassandra import CORPUS, CassandraDb, CassandraStatements, meta_entries
from agentkeep.vector_db.text import analyzer, bm25, idf

T = '"ks"."kb"'
ROW = "id, content_id, content, metadata, position"
# the shape of cassandra-driver's default rows (named tuples)
Row = namedtuple("Row", "id content_id content embedding metadata position meta term_freqs term_count score",
                 defaults=(None,) * 10)
Stat = namedtuple("Stat", "term chunks length")


def st_(distance="cosine") -> CassandraStatements:
    return CassandraStatements("ks", "kb", distance=distance)


def store(**options) -> CassandraDb:
    options.setdefault("keyspace", "ks")
    options.setdefault("contact_points", ["127.0.0.1"])  # never contacted
    options.setdefault("dimensions", 4)
    return CassandraDb("kb", **options)


def bound(statement: tuple[str, tuple]) -> None:
    """One value per bind marker."""
    text, values = statement
    assert text.count("?") == len(values)


# -- schema --------------------------------------------------------------------------------------


def test_table():
    assert st_().create_table(768) == (
        f"CREATE TABLE IF NOT EXISTS {T} (id text PRIMARY KEY, content_id text, content text, "
        "embedding vector<float, 768>, metadata text, position int, meta map<text, text>, "
        "term_freqs map<text, int>, term_count int)"
    )
    with pytest.raises(InvalidInputError, match="dimensions"):
        st_().create_table(0)
    assert st_().drop_table() == f"DROP TABLE IF EXISTS {T}"


def test_statistics_table():
    S = '"ks"."kb__bm25"'
    assert st_().create_stats_table() == (
        f"CREATE TABLE IF NOT EXISTS {S} (term text PRIMARY KEY, chunks counter, length counter)")
    assert st_().drop_stats_table() == f"DROP TABLE IF EXISTS {S}"
    assert st_().update_stats() == f"UPDATE {S} SET chunks = chunks + ?, length = length + ? WHERE term = ?"
    assert st_().select_stats(["disk", "quota"]) == (
        f"SELECT term, chunks, length FROM {S} WHERE term IN ?", (["*", "disk", "quota"],))
    long = CassandraStatements("ks", "k" * 48)
    assert len(long.stats.split(".")[1].strip('"')) <= 48


def test_statistics_deltas():
    assert CassandraStatements.stats_delta([], [({"disk": 2, "quota": 1}, 3), ({"disk": 1}, 1)]) == [
        (2, 4, CORPUS), (2, 0, "disk"), (1, 0, "quota")]
    # a rewrite trades the old row's terms for the new one's; unchanged counts send nothing
    assert CassandraStatements.stats_delta([({"disk": 2, "quota": 1}, 3)], [({"disk": 1, "error": 1}, 2)]) == [
        (0, -1, CORPUS), (1, 0, "error"), (-1, 0, "quota")]
    assert CassandraStatements.stats_delta([({"disk": 1}, 1)], [({"disk": 1}, 1)]) == []
    assert CassandraStatements.stats_delta([(None, None)], []) == [(-1, 0, CORPUS)]


@pytest.mark.parametrize("distance, function", [("cosine", "COSINE"), ("l2", "EUCLIDEAN"),
                                                ("inner_product", "DOT_PRODUCT")])
def test_sai_indexes(distance, function):
    assert st_(distance).create_indexes() == [
        f"CREATE CUSTOM INDEX IF NOT EXISTS \"kb_vec\" ON {T} (embedding) USING 'StorageAttachedIndex'"
        f" WITH OPTIONS = {{'similarity_function': '{function}'}}",
        f"CREATE CUSTOM INDEX IF NOT EXISTS \"kb_cid\" ON {T} (content_id) USING 'StorageAttachedIndex'",
        f"CREATE CUSTOM INDEX IF NOT EXISTS \"kb_meta\" ON {T} (ENTRIES(meta)) USING 'StorageAttachedIndex'",
        f"CREATE CUSTOM INDEX IF NOT EXISTS \"kb_terms\" ON {T} (KEYS(term_freqs)) USING 'StorageAttachedIndex'",
    ]


def test_index_names_stay_short_and_distinct():
    a, b = (CassandraStatements("ks", "t" * 47 + x) for x in "ab")
    assert a.index_name("terms") != b.index_name("terms")
    assert all(len(s.index_name("terms")) <= 48 for s in (a, b))
    assert CassandraStatements("Ks", "MyTable").table == '"Ks"."MyTable"'


def test_schema_lookups():
    assert st_().table_exists() == (
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?", ("ks", "kb"))
    text, values = st_().embedding_type()
    assert values == ("ks", "kb") and "column_name = 'embedding'" in text
    assert CassandraStatements.dimensions_of("vector<float, 4>") == 4
    assert CassandraStatements.dimensions_of("vector<float,1536>") == 1536
    assert CassandraStatements.dimensions_of("text") is None and CassandraStatements.dimensions_of(None) is None


# -- rows ----------------------------------------------------------------------------------------


def test_insert_and_row_values():
    assert st_().insert() == (f"INSERT INTO {T} (id, content_id, content, embedding, metadata, position, meta, "
                              "term_freqs, term_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
    meta = {"team": "sec", "n": 2, "f": 1.0, "ok": False, "tags": ["a"], "o": {"k": 1}, "none": None, "big": 2**70}
    chunk = Chunk(id="c1:0", content="Rotate keys, rotate the API keys", content_id="c1", embedding=[0.5, 0, 0, 1],
                  metadata=meta, position=3)
    assert st_().row(chunk) == (
        "c1:0", "c1", "Rotate keys, rotate the API keys", [0.5, 0, 0, 1], json.dumps(meta, ensure_ascii=False), 3,
        {"team": "s:sec", "n": "n:2", "f": "n:1", "ok": "b:false", "big": "n:1180591620717411303424"},
        {"rotat": 2, "key": 2, "api": 1}, 5,
    )
    assert st_().row(Chunk(id="t", content="the"))[3:] == (None, "{}", 0, {}, {}, 0)
    german = CassandraStatements("ks", "kb", analyzer=analyzer("german"))
    assert german.row(Chunk(id="g", content="die Schlüssel rotieren"))[7] == {"schlussel": 1, "roti": 1}


def test_row_values_serialize_as_the_table_declares_them():
    """The driver's own codecs accept each value for its column's CQL type (no server needed)."""
    cqltypes = pytest.importorskip("cassandra.cqltypes")
    m = "org.apache.cassandra.db.marshal."
    marshal = {"text": m + "UTF8Type", "int": m + "Int32Type", "vector<float, 4>": f"{m}VectorType({m}FloatType, 4)",
               "map<text, text>": f"{m}MapType({m}UTF8Type,{m}UTF8Type)",
               "map<text, int>": f"{m}MapType({m}UTF8Type,{m}Int32Type)"}
    body = st_().create_table(4).split("(", 1)[1].rsplit(")", 1)[0]
    declared = dict(col.strip().replace(" PRIMARY KEY", "").split(" ", 1) for col in re.split(r",\s(?![^<]*>)", body))
    columns = st_().insert().split("(", 1)[1].split(")", 1)[0].split(", ")
    chunk = Chunk(id="a", content="Rotate keys", content_id="c", embedding=[0.5, -1e-7, 3.5, 12345.678],
                  metadata={"team": "sec", "n": 1}, position=7)
    for column, value in zip(columns, st_().row(chunk), strict=True):
        codec = cqltypes.lookup_casstype(marshal[declared[column]])
        back = codec.deserialize(codec.serialize(value, 5), 5)
        assert back == pytest.approx(value, rel=1e-6) if column == "embedding" else back == value


def test_rows_read_back():
    assert st_().select_by_ids(["a", "b"]) == (f"SELECT {ROW}, embedding FROM {T} WHERE id IN ?", (["a", "b"],))
    row = Row(id="a", content_id=None, content="x", embedding=[0.5, 1], metadata='{"big": 4611686018427387904}',
              position=2)
    got = CassandraStatements.chunk(row)
    assert got == Chunk(id="a", content="x", embedding=[0.5, 1.0], metadata={"big": 2**62}, position=2)
    assert type(got.metadata["big"]) is int
    assert CassandraStatements.chunk(Row(id="b", content="y", metadata=None, position=None)).embedding is None


# -- conditions ----------------------------------------------------------------------------------


def test_conditions():
    assert st_().select_ids(None, {}) == (f"SELECT id, term_freqs, term_count FROM {T}", ())
    assert st_().select_ids("c1", {"team": "s", "n": 1.0}) == (
        f"SELECT id, term_freqs, term_count FROM {T} WHERE content_id = ? AND meta[?] = ? AND meta[?] = ?",
        ("c1", "team", "s:s", "n", "n:1"))
    assert st_().count(None, {}) == (f"SELECT COUNT(*) FROM {T}", ())
    assert st_().count("c1", {"k": True}) == (
        f"SELECT COUNT(*) FROM {T} WHERE content_id = ? AND meta[?] = ?", ("c1", "k", "b:true"))
    assert st_().delete_by_ids(["a"]) == (f"DELETE FROM {T} WHERE id IN ?", (["a"],))
    assert st_().select_candidates_by_ids(["a"]) == (
        f"SELECT id, content_id, meta, term_freqs, term_count FROM {T} WHERE id IN ?", (["a"],))
    assert st_().select_terms_by_ids(["a"]) == (f"SELECT id, term_freqs, term_count FROM {T} WHERE id IN ?", (["a"],))


scalars = st.one_of(st.booleans(), st.integers(-3, 3), st.sampled_from([0.0, 1.0, 2.5, 1e16]),
                    st.sampled_from(["", "1", "a", "n:1"]))
values = st.one_of(scalars, st.none(), st.lists(scalars, max_size=2),
                   st.dictionaries(st.just("k"), scalars, max_size=1))
keys = st.sampled_from(["k", "K", "k.k", "$k", "meta"])


any_ofs = st.lists(scalars, min_size=1, max_size=3).map(lambda members: {"$in": members})


@settings(max_examples=300, deadline=None)
@given(meta=st.dictionaries(keys, values, max_size=4),
       filters=st.dictionaries(keys, st.one_of(scalars, any_ofs), max_size=3).map(check_filters),
       content=st.sampled_from([None, "c1", "c2"]), wanted=st.sampled_from([None, "c1"]))
def test_map_entry_filters_match_exactly_as_the_reference_semantics(meta, filters, content, wanted):
    row = Row(id="x", content_id=content, meta=meta_entries(meta))
    # each chunk matches the filter exactly when it matches one of the queries it fans out to
    assert sum(CassandraStatements.row_matches(row, wanted, f) for f in CassandraStatements.fan_out(filters)) == (
        CassandraStatements.row_matches(row, wanted, filters))
    expected = matches(meta, filters) and (wanted is None or content == wanted)
    assert CassandraStatements.row_matches(row, wanted, filters) == expected


HOSTILE = ["' OR 1=1 --", "x'); DROP TABLE kb; --", '"quoted"', "?", "meta['k']", "ü-日本"]


@pytest.mark.parametrize("value", HOSTILE)
def test_values_are_bound_never_spliced(value):
    benign = st_().select_ids("c", {"k": "v"})
    hostile = st_().select_ids(value, {value: value})
    assert hostile[0] == benign[0] and hostile[1] == (value, value, "s:" + value)
    for statement in (st_().count(value, {value: 1}), st_().vector_search([1.0], 5, {value: value}),
                      st_().keyword_candidates(["w", value], 9, {value: True})):
        bound(statement)
        assert value not in statement[0] or value == "?"


# -- search --------------------------------------------------------------------------------------


@pytest.mark.parametrize("distance, function", [("cosine", "similarity_cosine"), ("l2", "similarity_euclidean"),
                                                ("inner_product", "similarity_dot_product")])
def test_vector_search(distance, function):
    statement = st_(distance).vector_search([0.1, 0.2], 5, {"team": "sec"})
    assert statement == (
        f"SELECT {ROW}, {function}(embedding, ?) AS score FROM {T} WHERE meta[?] = ?"
        " ORDER BY embedding ANN OF ? LIMIT ?",
        ([0.1, 0.2], "team", "s:sec", [0.1, 0.2], 5),
    )
    assert st_(distance).vector_search([1.0], 3, {})[0] == (
        f"SELECT {ROW}, {function}(embedding, ?) AS score FROM {T} ORDER BY embedding ANN OF ? LIMIT ?")


def test_keyword_candidates():
    statement = st_().keyword_candidates(["rotat", "key"], 1000, {"team": "sec"})
    assert statement == (
        f"SELECT {ROW}, term_freqs, term_count FROM {T}"
        " WHERE term_freqs CONTAINS KEY ? AND term_freqs CONTAINS KEY ? AND meta[?] = ? LIMIT ?",
        ("rotat", "key", "team", "s:sec", 1000),
    )
    bound(statement)


@pytest.mark.parametrize("distance, raw, expected", [
    ("cosine", 1.0, 1.0), ("cosine", (1 + math.sqrt(0.5)) / 2, math.sqrt(0.5)), ("cosine", 0.5, 0.0),
    ("inner_product", 1.5, 2.0), ("inner_product", 0.75, 0.5), ("inner_product", 0.5, 0.0),
    ("l2", 1 / (1 + 0.5), 1 / (1 + math.sqrt(0.5))), ("l2", 0.5, 0.5), ("l2", 1 / 3, 1 / (1 + math.sqrt(2))),
    ("l2", 1.0, 1.0),
])
def test_vector_scores_mean_what_they_mean_on_every_store(distance, raw, expected):
    # the expected values of the conformance suite's test_distances_and_their_scores
    assert st_(distance).vector_score(raw) == pytest.approx(expected, abs=1e-9)


def test_keyword_statements_find_any_ranked_term_or_every_required_one():
    q = analyzer().query
    any_term = st_().keyword_statements(q("rotating keys -quota"), 500, {"team": "sec"})
    assert any_term == [st_().keyword_candidates(["rotat"], 500, {"team": "sec"}),
                        st_().keyword_candidates(["key"], 500, {"team": "sec"})]  # SAI has no OR
    required = st_().keyword_statements(q('+disk "api keys" rotate'), 500, {})
    assert required == [st_().keyword_candidates(["disk", "api", "key"], 500, {})]


def test_keyword_ranking_is_bm25_by_the_corpus_statistics():
    rows = [
        Row(id="long", content="", term_freqs={"disk": 1, "quota": 1, "x": 8}, term_count=10),
        Row(id="short", content="", term_freqs={"disk": 1, "quota": 1}, term_count=2),
        Row(id="twice", content="", term_freqs={"disk": 2, "quota": 1, "x": 7}, term_count=10),
        Row(id="excluded", content="", term_freqs={"disk": 1, "quota": 1, "error": 1}, term_count=3),
        Row(id="also_short", content="", term_freqs={"disk": 1, "quota": 1}, term_count=2),
        Row(id="rare", content="", term_freqs={"quota": 1}, term_count=2),
    ]
    stats = {CORPUS: (100, 500), "disk": (50, 0), "quota": (5, 0)}
    query = analyzer().query("disk quota -error")
    ranked = st_().rank_keyword(rows + rows[:2], query, stats, 10)  # a row found by two statements counts once
    assert [r.id for r, _ in ranked] == ["also_short", "short", "rare", "twice", "long"]  # ties by id
    idfs = {"disk": idf(100, 50), "quota": idf(100, 5)}
    assert ranked[0][1] == pytest.approx(bm25({"disk": 1, "quota": 1}, 2, 5.0, ["disk", "quota"], idfs))
    assert dict((r.id, v) for r, v in ranked)["rare"] == pytest.approx(bm25({"quota": 1}, 2, 5.0, ["quota"], idfs))
    # the rarer term weighs more: "quota" alone beats "disk" alone in chunks of one length
    solo = [Row(id="d", term_freqs={"disk": 1}, term_count=2), Row(id="q", term_freqs={"quota": 1}, term_count=2)]
    assert [r.id for r, _ in st_().rank_keyword(solo, analyzer().query("disk quota"), stats, 5)] == ["q", "d"]
    assert st_().rank_keyword([], query, stats, 5) == []
    assert st_().rank_keyword(rows[3:4], query, stats, 5) == []
    assert st_().rank_keyword(rows, query, {}, 2)  # no statistics yet: every term weighs alike


def test_phrases_are_checked_on_the_candidates_content():
    rows = [Row(id="in_order", content="rotate the API keys", term_freqs={"rotat": 1, "api": 1, "key": 1},
                term_count=3),
            Row(id="apart", content="keys of the API", term_freqs={"key": 1, "api": 1}, term_count=2)]
    hits = st_().rank_keyword(rows, analyzer().query('"api keys"'), {CORPUS: (2, 5)}, 5)
    assert [r.id for r, _ in hits] == ["in_order"]
    hits = st_().rank_keyword(rows, analyzer().query('api -"api keys"'), {CORPUS: (2, 5)}, 5)
    assert [r.id for r, _ in hits] == ["apart"]


# -- argument checks -----------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    ({"distance": "hamming"}, "distance"),
    ({"keyspace": "my-ks"}, "keyspace"),
    ({"keyspace": "1ks"}, "keyspace"),
    ({"keyspace": 'ks"; DROP'}, "keyspace"),
    ({"dimensions": 0}, "dimensions"),
    ({"dimensions": 8193}, "dimensions"),
    ({"keyword_candidates": 0}, "keyword_candidates"),
    ({"batch_size": 0}, "batch_size"),
    ({"port": 0}, "port"),
    ({"contact_points": None}, "either"),
    ({"session": object()}, "either"),
    ({"contact_points": "127.0.0.1"}, "contact_points"),
    ({"search_type": "semantic"}, "search_type"),
    ({"rrf_k": 1.5}, "rrf_k"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(InvalidInputError, match=message):
        store(**options)


@pytest.mark.parametrize("name", ["", "kb-1", "_kb", "kb.x", 'kb"', "k" * 49, "kb; DROP TABLE x"])
def test_bad_table_names_are_refused(name):
    with pytest.raises(InvalidInputError, match="table_name"):
        CassandraDb(name, keyspace="ks", contact_points=["h"])


@pytest.mark.parametrize("bad, message", [
    (lambda: Chunk(id="a", content="x", embedding=[1, 0, 0]), "dimensions"),
    (lambda: Chunk(id="a", content="x", embedding=[1, 0, 0, -1e39]), "single precision"),
    (lambda: Chunk(id="i" * 1025, content="x"), "chunk id"),
    (lambda: Chunk(id="a", content="x", metadata={"k": float("nan")}), "finite"),
    (lambda: Chunk(id="a", content="x", metadata={"k": "nul \x00"}), "NUL"),
])
def test_bad_chunks_are_refused_before_anything_is_written(bad, message):
    with pytest.raises(InvalidInputError, match=message):
        store().write_plan([Chunk(id="good", content="x"), bad()])


def test_write_plans():
    cql, rows = store().write_plan([Chunk(id="a", content="first"), Chunk(id="a", content="second")], content_id="c1")
    assert cql == st_().insert() and len(rows) == 1 and rows[0][:3] == ("a", "c1", "second")


@pytest.mark.parametrize("kwargs, message", [
    ({"search_type": "vector"}, "embedding"),
    ({"search_type": "keyword", "query": "   "}, "query"),
    ({"search_type": "hybrid", "embedding": [1, 0, 0, 0]}, "query"),
    ({"search_type": "vector", "embedding": [1, 0, 0]}, "dimensions"),
    ({"search_type": "vector", "embedding": []}, "empty"),
    ({"search_type": "vector", "embedding": [1, 0, 0, 0], "limit": True}, "limit"),
    ({"search_type": "keyword", "query": "x", "filters": {"": 1}}, "filter"),
    ({"search_type": "keyword", "query": "x", "filters": {"k": b"x"}}, "filter"),
])
def test_search_arguments_are_checked_before_any_request(kwargs, message):
    kwargs = dict(kwargs)
    query = kwargs.pop("query", None)
    with pytest.raises(InvalidInputError, match=message):
        store().search_plan(query, **kwargs)


def test_search_plans():
    s = store(search_type="hybrid", hybrid_candidates=30, keyword_candidates=500)
    plan = s.search_plan("disk -quota", embedding=[1, 0, 0, 0], limit=5, filters={"team": "ops"})
    assert (plan["kind"], plan["limit"], plan["n"]) == ("hybrid", 5, 30)
    assert plan["vector"] == [st_().vector_search([1.0, 0.0, 0.0, 0.0], 30, {"team": "ops"})]
    assert plan["keyword"] == [st_().keyword_candidates(["disk"], 500, {"team": "ops"})]
    assert (plan["query"].ranked, plan["query"].must_not) == (("disk",), ("quota",))
    assert s.search_plan("the -disk", embedding=[1, 0, 0, 0])["keyword"] is None


# -- "any of": SAI has no OR, so one query per combination of members ---------------------------


def test_an_any_of_filter_fans_out_to_one_query_per_member():
    s = store(search_type="hybrid", hybrid_candidates=30, keyword_candidates=500)
    scope = {"owner": {"$in": ["", "alice"]}, "team": "ops"}
    plan = s.search_plan("disk", embedding=[1, 0, 0, 0], limit=5, filters=scope)
    each = [{"owner": "", "team": "ops"}, {"owner": "alice", "team": "ops"}]
    assert plan["vector"] == [st_().vector_search([1.0, 0.0, 0.0, 0.0], 30, f) for f in each]
    assert plan["keyword"] == [st_().keyword_candidates(["disk"], 500, f) for f in each]
    two_keys = CassandraStatements.fan_out(check_filters({"a": {"$in": [1, 2]}, "b": {"$in": ["x", "y", "z"]}}))
    assert len(two_keys) == 6 and {"a": 2, "b": "y"} in two_keys
    with pytest.raises(InvalidInputError, match="at most 100 combinations, this filter makes 110"):
        s.search_plan(embedding=[1, 0, 0, 0], search_type="vector",
                      filters={"a": {"$in": list(range(11))}, "b": {"$in": list(range(10))}})


class FakeSession:
    """Answers the store's statements from rows held here, by the owner value each binds."""

    def __init__(self, rows):
        self.rows, self.sent = rows, []

    def execute(self, statement):
        cql, values = statement
        if "term, chunks, length" in cql:
            return FakeResult([Stat(CORPUS, len(self.rows), sum(r.term_count for r in self.rows))] + [
                Stat(t, sum(t in r.term_freqs for r in self.rows), 0) for t in values[0][1:]])
        self.sent.append(statement)
        owners = [v for v in values if isinstance(v, str) and v.startswith("s:")]
        found = [r for r in self.rows if not owners or (r.meta or {}).get("owner") in owners]
        if cql.startswith("SELECT COUNT(*)"):
            return FakeResult([(len(found),)])
        if "ANN OF" in cql:
            found = sorted(found, key=lambda r: -r.score)[:values[-1]]
        return FakeResult(found)


class FakeResult(list):
    def one(self):
        return self[0]


def test_fanned_out_queries_are_merged_as_one_query_would_answer():
    def row(id_, owner, score, words=("disk",)):
        return Row(id=id_, content_id="c", content=" ".join(words), metadata="{}", position=0,
                   meta={"owner": "s:" + owner}, term_freqs=dict(Counter(words)), term_count=len(words),
                   score=(1 + score) / 2)

    rows = [row("b1", "bob", 0.99), row("b2", "bob", 0.98), row("s1", "", 0.5), row("s2", "", 0.2),
            row("a1", "alice", 0.9), row("a2", "alice", 0.1), row("a3", "alice", 0.05, ("disk",) * 3)]
    s = store(search_type="vector")
    fake = FakeSession(rows)
    counted = []
    s._known, s._execute = True, fake.execute  # no cluster: the statements are answered here
    s._execute_many = lambda cql, values: counted.append((cql, values))
    scope = {"owner": {"$in": ["", "alice"]}}
    hits = s.search(embedding=[1, 0, 0, 0], limit=3, filters=scope)
    assert [h.id for h in hits] == ["a1", "s1", "s2"] and len(fake.sent) == 2
    assert [h.score for h in hits] == pytest.approx([0.9, 0.5, 0.2])
    assert [h.id for h in s.search("disk", search_type="keyword", limit=1, filters=scope)] == ["a3"]
    assert s.count(filters=scope) == 5 and s.count(filters={"owner": "bob"}) == 2
    fake.sent.clear()
    assert s.delete(filters={"owner": {"$in": ["bob", "carol"]}}) == 2
    assert [v[-1] for _, v in fake.sent[:2]] == ["s:bob", "s:carol"]  # one select per member, then deletes
    assert counted == [(st_().update_stats(), [(-2, -2, CORPUS), (-2, 0, "disk")])]  # the statistics follow


class TableModel:
    """The store's statements over rows and counters held here: enough to follow the keyword
    statistics through writes, rewrites and deletes."""

    def __init__(self):
        self.rows, self.stats = {}, {}

    def execute(self, statement):
        cql, values = statement
        if cql.startswith("SELECT id, term_freqs, term_count") and "WHERE id IN" in cql:
            return [self.rows[i] for i in values[0] if i in self.rows]
        if cql.startswith("SELECT id, content_id, meta, term_freqs"):
            return [self.rows[i] for i in values[0] if i in self.rows]
        if cql.startswith("SELECT id, term_freqs, term_count") and "content_id = ?" in cql:
            return [r for r in self.rows.values() if r.content_id == values[0]]
        if cql.startswith("DELETE"):
            for i in values[0]:
                self.rows.pop(i, None)
            return []
        raise AssertionError(cql)

    def execute_many(self, cql, values):
        for v in values:
            if cql.startswith("INSERT"):
                self.rows[v[0]] = Row(id=v[0], content_id=v[1], content=v[2], meta=v[6], term_freqs=v[7],
                                      term_count=v[8])
            else:
                chunks, length, term = v
                old = self.stats.get(term, (0, 0))
                self.stats[term] = (old[0] + chunks, old[1] + length)

    def fresh_stats(self):
        delta = CassandraStatements.stats_delta([], [(r.term_freqs, r.term_count) for r in self.rows.values()])
        return {term: (chunks, length) for chunks, length, term in delta}


def test_statistics_follow_updates_and_deletes():
    s, table = store(), TableModel()
    s._known, s._execute, s._execute_many = True, table.execute, table.execute_many
    s.upsert([Chunk(id="a", content="disk quota"), Chunk(id="b", content="disk disk error"),
              Chunk(id="c", content="resize the volume")])
    s.upsert([Chunk(id="a", content="quota alerts")])  # a rewrite
    s._replace = lambda old, rows: (table.execute(st_().delete_by_ids([r.id for r in old])),
                                    table.execute_many(st_().insert(), rows))
    s.replace("doc", [Chunk(id="d", content="disk quota again")])
    s.replace("doc", [Chunk(id="e", content="volume")])  # d goes
    s.delete(ids=["b"])
    assert set(table.rows) == {"a", "c", "e"}
    live = {t: v for t, v in table.stats.items() if v != (0, 0)}
    assert live == table.fresh_stats() == {CORPUS: (3, 5), "quota": (1, 0), "alert": (1, 0), "resiz": (1, 0),
                                           "volum": (2, 0)}


def test_importing_and_planning_needs_no_driver():
    code = ("import sys\nfrom agentkeep.vector_db.cassandra import CassandraDb\n"
            "s = CassandraDb('kb', keyspace='ks', contact_points=['h'], dimensions=2)\n"
            "s.search_plan('x', embedding=[1, 0], search_type='hybrid')\n"
            "assert 'cassandra' not in sys.modules, 'cassandra-driver imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
