"""ClickHouseDb beyond the conformance suite: the table it makes, exact upserts on
ReplacingMergeTree with FINAL, BM25 equal to the reference store's, parameters that carry
hostile values as data, and the server path (clickhouse-connect) checked without a server:
its statements and clickhouse-connect's own parameter binding run on chDB's engine."""

from __future__ import annotations

import json
import uuid

import pytest

from agentkeep.db.errors import InvalidInputError, NotFoundError
from agentkeep.vector_db import Chunk
from agentkeep.vector_db.in_memory import InMemoryVectorDb
from tests.vector_db.conftest import require
from tests.vector_db.stores import STORES, _local_dir, dropped_after

CH = next(s for s in STORES if s.name == "clickhouse")
HOSTILE = [
    "' OR 1=1 --", "a'b\"c", "back\\slash", "ends with \\", "\\N", "\\'", "tab\there", "new\nline", "cr\rx",
    "{p0:String}", "`x`", "日本 🚀", "\x01\x7f", "%s", "$1$", "') OR ('1'='1", "", "]]", "\\x41",
]


@pytest.fixture
def stores():
    require(CH)
    from agentkeep.vector_db.clickhouse import ClickHouseDb

    with dropped_after(lambda table=None, **options: ClickHouseDb(
            table or f"t_{uuid.uuid4().hex[:12]}", path=_local_dir("chdb"), **options)) as make:
        yield make


def sql(store, statement: str, **params):
    return store._conn.query(statement, params)


def c(id_, content="text", emb=(1.0, 0.0), **kw):
    return Chunk(id=id_, content=content, embedding=list(emb), **kw)


# -- the SQL builder, without an engine -----------------------------------------------------


def test_filters_are_parameters_never_sql_text():
    from agentkeep.vector_db.clickhouse import filter_sql, params

    p = params()
    parts = filter_sql({"team": "' OR 1=1 --", "flag": True, "n": 2, "x": 0.5}, p)
    text = " AND ".join(parts)
    assert "OR 1=1" not in text and "team" not in text and "0.5" not in text
    assert parts[0] == ("(JSONType(metadata, {p0:String}) = 'String'"
                        " AND JSONExtractString(metadata, {p0:String}) = {p1:String})")
    assert parts[1] == ("(JSONType(metadata, {p2:String}) = 'Bool'"
                        " AND JSONExtractBool(metadata, {p2:String}) = {p3:UInt8})")
    assert "'Int64'" in parts[2] and "'Double'" in parts[2] and "'Bool'" not in parts[2]
    assert "'Int64'" not in parts[3] and "'Double'" in parts[3]  # 0.5 equals no integer
    assert p.values == {"p0": "team", "p1": "' OR 1=1 --", "p2": "flag", "p3": 1, "p4": "n", "p5": 2, "p6": 2.0,
                        "p7": "x", "p8": 0.5}


def test_numbers_beyond_a_double_or_int64():
    from agentkeep.vector_db.clickhouse import filter_sql, params

    p = params()
    [exact_int] = filter_sql({"k": 2**62 + 1}, p)  # no double equals it
    assert "'Double'" not in exact_int and p.values["p1"] == 2**62 + 1
    p = params()
    [big] = filter_sql({"k": 2**63 + 2}, p)
    assert "'UInt64'" in big and "'Int64'" not in big
    p = params()
    assert filter_sql({"k": 10**400}, p) == ["(0)"]  # fits nothing JSON can hold here


@pytest.mark.parametrize("value", HOSTILE + [["a'b", "c\\d", "e\tf"], 3, -7, 0.1, 1e16])
def test_parameter_text_means_what_clickhouse_connect_sends(stores, value):
    # chDB takes a parameter's text as it is; a server gets clickhouse-connect's text: the
    # engine reads both back as the value
    pytest.importorskip("clickhouse_connect")
    from clickhouse_connect.driver.binding import format_bind_value

    from agentkeep.vector_db.clickhouse import param_text

    store = stores()
    type_ = {str: "String", list: "Array(String)", int: "Int64", float: "Float64"}[type(value)]
    for text in (param_text(value), format_bind_value(value)):
        raw = store._conn.session.query(f"SELECT {{v:{type_}}}", "JSONCompact", params={"v": text}).bytes()
        assert json.loads(raw)["data"][0][0] == value


def test_bad_names_and_options_are_refused():
    from agentkeep.vector_db.clickhouse import ClickHouseDb

    for bad in ("t; DROP TABLE x", "1abc", "", "a-b", "`t`"):
        with pytest.raises(InvalidInputError):
            ClickHouseDb(bad, path="unused")
    with pytest.raises(InvalidInputError, match="database"):
        ClickHouseDb("t", path="unused", database="x.y")
    with pytest.raises(InvalidInputError, match="one of"):
        ClickHouseDb("t")
    with pytest.raises(InvalidInputError, match="distance"):
        ClickHouseDb("t", path="unused", distance="hamming")


# -- on chDB ------------------------------------------------------------------------------


def test_create_builds_a_replacing_merge_tree(stores):
    s = stores()
    s.create(3)
    [(engine, sorting, comment)] = sql(s, "SELECT engine_full, sorting_key, comment FROM system.tables"
                                          " WHERE database = 'default' AND name = {t:String}", t=s.table_name)
    assert engine.startswith("ReplacingMergeTree(version, is_deleted)") and sorting == "id"
    assert json.loads(comment) == {"agentkeep_vector_dimensions": 3}
    indexes = dict(sql(s, "SELECT name, type_full FROM system.data_skipping_indices WHERE table = {t:String}",
                       t=s.table_name))
    assert indexes == {"content_id_idx": "bloom_filter", "terms_idx": "bloom_filter(0.01)"}
    with pytest.raises(Exception, match="embedding_dimensions"):  # the CHECK constraint backs check_chunks
        s._conn.command(s.insert_sql(), {}, data='{"id": "x", "embedding": [1, 2], "has_embedding": 1}')


def test_upserts_are_exact_with_final_before_any_merge(stores):
    s = stores()
    s.create(2)
    for n in range(3):  # three INSERTs: three versions of one id on disk
        s.upsert([c("a", f"version {n}", metadata={"n": n})])
    s.delete(ids=["a"])
    s.upsert([c("b")])
    physical = sql(s, f"SELECT count() FROM {s.table}")[0][0]
    assert int(physical) == 5  # 3 versions of a, its tombstone, b
    assert s.count() == 1 and s.get(["a"]) == [] and [x.id for x in s.get(["b"])] == ["b"]
    s.upsert([c("a", "back again")])
    assert s.count() == 2 and [x.content for x in s.get(["a"])] == ["back again"]
    assert s.delete(filters={"n": 2}) == 0  # the deleted version's metadata is gone with it


def test_keyword_scores_equal_the_reference_store(stores):
    s = stores()
    ref = InMemoryVectorDb()
    docs = {"a": "Rotate the API keys every ninety days; keys, keys", "b": "API keys are shown once",
            "c": "disk keys", "d": "nothing here", "e": "rotating rotated api"}
    for store in (s, ref):
        store.create(2)
        store.upsert([c(k, v) for k, v in docs.items()])
    for q in ("keys", "api keys", "rotate", "api -disk", "keys -nothing -rotated"):
        got = [(h.id, round(h.score, 9)) for h in s.search(q, search_type="keyword", limit=10)]
        assert got == [(h.id, round(h.score, 9)) for h in ref.search(q, search_type="keyword", limit=10)]


def test_number_filters_follow_pythons_equality(stores):
    s = stores()
    s.create(2)
    s.upsert([c("big", metadata={"k": 2**62}), c("big1", metadata={"k": 2**62 + 1}), c("huge", metadata={"k": 1e16}),
              c("neg", metadata={"k": -3}), c("u64", metadata={"k": 2**63 + 2}), c("tenth", metadata={"k": 0.1})])

    def ids(value):
        return sorted(h.id for h in s.search(embedding=[1, 0], limit=10, filters={"k": value}))

    assert ids(2**62) == ["big"] and ids(2**62 + 1) == ["big1"] and ids(float(2**62)) == ["big"]
    assert ids(10**16) == ["huge"] and ids(1e16) == ["huge"]
    assert ids(-3.0) == ["neg"] and ids(2**63 + 2) == ["u64"] and ids(0.1) == ["tenth"] and ids(0.3) == []
    # ClickHouse's JSON functions would type an integer beyond 64 bits as a String
    with pytest.raises(InvalidInputError, match="64 bits"):
        s.upsert([c("ok"), c("beyond", metadata={"a": [{"k": 2**64}]})])
    assert s.count() == 6


def test_hostile_values_are_data(stores):
    s = stores()
    s.create(2)
    s.upsert([c(f"i{n}", "x", metadata={"k": v, v: 1}) for n, v in enumerate(HOSTILE)] + [c("other", "x")])
    for n, v in enumerate(HOSTILE):
        assert [h.id for h in s.search(embedding=[1, 0], limit=50, filters={"k": v})] == [f"i{n}"]
        if v:
            assert s.count(filters={v: 1}) == 1
    assert s.count() == len(HOSTILE) + 1
    assert s.delete(content_id="' OR 1=1 --") == 0 and s.count() == len(HOSTILE) + 1
    assert s.search("' OR 1=1 --", search_type="keyword") == []


def test_a_table_dropped_elsewhere_is_reported(stores):
    s = stores()
    s.create(2)
    s.upsert([c("a")])
    other = stores(s.table_name)
    assert other.count() == 1 and other.dimensions == 2  # the same table, found by name
    other.drop()
    with pytest.raises(NotFoundError, match="create"):
        s.count()
    s.create(2)
    with pytest.raises(InvalidInputError, match="holds 2-dimensional"):
        stores(s.table_name, dimensions=3).create()


# -- the server path (clickhouse-connect), its transport replaced by chDB ----------------------


class ChdbAsServer:
    """What a clickhouse-connect client would send, run on chDB: each statement is bound with
    clickhouse-connect's own `bind_query` (the server-side `param_*` texts) and executed."""

    server_version = "chDB"

    def __init__(self, session) -> None:
        self.session = session
        self.sent: list[tuple[str, dict]] = []

    def _run(self, sql, parameters, data=None):
        from clickhouse_connect.driver.binding import bind_query

        final, bound = bind_query(sql, parameters)
        self.sent.append((final, bound))
        if data is not None:
            final += "\n" + data
        params = {k.removeprefix("param_"): v for k, v in bound.items()}
        raw = self.session.query(final, "JSONCompact", params=params).bytes()
        return json.loads(raw)["data"] if raw else []

    def query(self, sql, parameters=None):
        rows = self._run(sql, parameters)
        return type("QueryResult", (), {"result_rows": [tuple(r) for r in rows]})()

    def command(self, sql, parameters=None, data=None):
        self._run(sql, parameters, data)

    def close(self):
        pass


def test_the_server_path_sends_parameterized_statements_that_run(stores):
    pytest.importorskip("clickhouse_connect")
    from agentkeep.vector_db.clickhouse import ClickHouseDb

    engine = stores()  # a chDB store only to reach the process's chDB session
    server = ChdbAsServer(engine._conn.session)
    s = ClickHouseDb(f"t_{uuid.uuid4().hex[:12]}", client=server, search_type="hybrid")
    try:
        s.create(2)
        s.upsert([c("a", "API keys rotate", (1, 0), metadata={"team": "a'b"}, content_id="c1"),
                  c("b", "disk quota", (0, 1), metadata={"team": "x", "n": 1}, content_id="c1"),
                  Chunk(id="t", content="plain words")])
        assert [x.id for x in s.get(["b", "a"])] == ["b", "a"]
        assert s.count(filters={"team": "a'b"}) == 1 and s.count(filters={"n": 1.0}) == 1
        assert [h.id for h in s.search("keys", embedding=[0, 1], limit=2)] == ["a", "b"]
        assert [h.id for h in s.search(embedding=[0, 1], search_type="vector")] == ["b", "a"]
        assert s.replace("c1", [c("a2", "new")]) == 1 and s.count(content_id="c1") == 1
        assert s.delete(filters={"team": "a'b"}) == 0 and s.delete(ids=["t"]) == 1
        assert s.count() == 1
    finally:
        s.drop()
    statements = [sql_ for sql_, _ in server.sent]
    reads = [x for x in statements if x.startswith(("SELECT", "WITH")) and "system.tables" not in x]
    assert reads and all(" FINAL" in x for x in reads)
    sent_values = json.dumps([bound for _, bound in server.sent])
    assert "a'b" not in " ".join(statements) and "a\\\\'b" in sent_values  # values travel as param_* only
    assert statements[-1] == f"DROP TABLE IF EXISTS `default`.`{s.table_name}` SYNC"
