"""CassandraDb without Cassandra: the CQL statements and bound values it builds (schema, SAI
indexes, writes, filters, ANN and keyword queries), the keyword ranking it does itself, score
conversion and argument checks. No Cassandra 5 runs here, so none of this is verified against
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
from agentkeep.vector_db.cassandra import CassandraDb, CassandraStatements, meta_entries

T = '"ks"."kb"'
ROW = "id, content_id, content, metadata, position"
# the shape of cassandra-driver's default rows (named tuples)
Row = namedtuple("Row", "id content_id content embedding metadata position meta term_freqs term_count score",
                 defaults=(None,) * 10)


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
    assert CassandraStatements.row(chunk) == (
        "c1:0", "c1", "Rotate keys, rotate the API keys", [0.5, 0, 0, 1], json.dumps(meta, ensure_ascii=False), 3,
        {"team": "s:sec", "n": "n:2", "f": "n:1", "ok": "b:false", "big": "n:1180591620717411303424"},
        {"rotat": 2, "key": 2, "api": 1}, 5,
    )
    assert CassandraStatements.row(Chunk(id="t", content="the"))[3:] == (None, "{}", 0, {}, {}, 0)


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
    for column, value in zip(columns, CassandraStatements.row(chunk), strict=True):
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
    assert st_().select_ids(None, {}) == (f"SELECT id FROM {T}", ())
    assert st_().select_ids("c1", {"team": "s", "n": 1.0}) == (
        f"SELECT id FROM {T} WHERE content_id = ? AND meta[?] = ? AND meta[?] = ?", ("c1", "team", "s:s", "n", "n:1"))
    assert st_().count(None, {}) == (f"SELECT COUNT(*) FROM {T}", ())
    assert st_().count("c1", {"k": True}) == (
        f"SELECT COUNT(*) FROM {T} WHERE content_id = ? AND meta[?] = ?", ("c1", "k", "b:true"))
    assert st_().delete_by_ids(["a"]) == (f"DELETE FROM {T} WHERE id IN ?", (["a"],))
    assert st_().select_candidates_by_ids(["a"]) == (f"SELECT id, content_id, meta FROM {T} WHERE id IN ?", (["a"],))


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


def test_keyword_ranking():
    rows = [
        Row(id="long", term_freqs={"disk": 1, "quota": 1, "x": 8}, term_count=10),
        Row(id="short", term_freqs={"disk": 1, "quota": 1}, term_count=2),
        Row(id="twice", term_freqs={"disk": 2, "quota": 1, "x": 7}, term_count=10),
        Row(id="excluded", term_freqs={"disk": 1, "quota": 1, "error": 1}, term_count=3),
        Row(id="also_short", term_freqs={"disk": 1, "quota": 1}, term_count=2),
    ]
    ranked = CassandraStatements.rank_keyword(rows, ["disk", "quota"], ["error"], 10)
    assert [r.id for r, _ in ranked] == ["also_short", "short", "twice", "long"]  # ties by id
    assert all(s > 0 for _, s in ranked) and ranked[0][1] == ranked[1][1] > ranked[2][1] > ranked[3][1]
    assert [r.id for r, _ in CassandraStatements.rank_keyword(rows, ["disk"], [], 2)] == ["also_short", "short"]
    assert CassandraStatements.rank_keyword([], ["disk"], [], 5) == []
    assert CassandraStatements.rank_keyword(rows[3:4], ["disk"], ["error"], 5) == []


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
    assert (plan["wanted"], plan["unwanted"]) == (["disk"], ["quota"])
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
    s._known, s._execute = True, fake.execute  # no cluster: the statements are answered here
    scope = {"owner": {"$in": ["", "alice"]}}
    hits = s.search(embedding=[1, 0, 0, 0], limit=3, filters=scope)
    assert [h.id for h in hits] == ["a1", "s1", "s2"] and len(fake.sent) == 2
    assert [h.score for h in hits] == pytest.approx([0.9, 0.5, 0.2])
    assert [h.id for h in s.search("disk", search_type="keyword", limit=1, filters=scope)] == ["a3"]
    assert s.count(filters=scope) == 5 and s.count(filters={"owner": "bob"}) == 2
    fake.sent.clear()
    assert s.delete(filters={"owner": {"$in": ["bob", "carol"]}}) == 2
    assert [v[-1] for _, v in fake.sent[:2]] == ["s:bob", "s:carol"]  # one select per member, then deletes


def test_importing_and_planning_needs_no_driver():
    code = ("import sys\nfrom agentkeep.vector_db.cassandra import CassandraDb\n"
            "s = CassandraDb('kb', keyspace='ks', contact_points=['h'], dimensions=2)\n"
            "s.search_plan('x', embedding=[1, 0], search_type='hybrid')\n"
            "assert 'cassandra' not in sys.modules, 'cassandra-driver imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
