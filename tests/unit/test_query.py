"""Each kernel's query planner against the plain definition of a query: filter every row,
sort, cut at the keyset position, skip the offset and cut at the limit. Hypothesis draws
the rows and queries."""

import datetime as dt
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentkeep.db.in_memory import MemoryKernel
from agentkeep.db.json import JsonKernel
from agentkeep.db.query import Cond, Query, after_filter, matches_all, row_key
from agentkeep.db.sqlite import SqliteKernel
from agentkeep.db.tables import build_specs

import sqlalchemy as sa

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
USERS = ["u1", "u2", None]
TOPICS = ["a", "b", "c"]

rows_st = st.lists(
    st.fixed_dictionaries({
        "user_id": st.sampled_from(USERS),
        "minute": st.integers(0, 5),  # few distinct times: plenty of ties
        "topics": st.lists(st.sampled_from(TOPICS), unique=True, max_size=3),
        "memory": st.sampled_from(["Tea", "coffee", "TEA time", "water"]),
    }),
    max_size=30,
)
query_st = st.fixed_dictionaries({
    "user": st.sampled_from(USERS + ["any"]),
    "topics": st.lists(st.sampled_from(TOPICS), unique=True, max_size=2),
    "search": st.sampled_from([None, "tea", "TIME"]),
    "after_minute": st.sampled_from([None, 2]),
    "desc": st.booleans(),
    "limit": st.integers(1, 7),
    "page_from": st.integers(0, 10),
    "offset": st.sampled_from([0, 0, 1, 3, 8]),
})


def memory_rows(raw):
    return [
        {"memory_id": f"m{i:03d}", "user_id": r["user_id"], "memory": r["memory"], "topics": r["topics"],
         "input": None, "feedback": None, "agent_id": None, "team_id": None,
         "created_at": T0, "updated_at": T0 + dt.timedelta(minutes=r["minute"]), "expires_at": None}
        for i, r in enumerate(raw)
    ]


def build_query(q, rows):
    where = []
    if q["user"] != "any":
        where.append(Cond("user_id", "eq", q["user"]))
    if q["topics"]:
        where.append(Cond("topics", "contains_all", q["topics"]))
    if q["search"]:
        where.append(Cond("memory", "icontains", q["search"]))
    if q["after_minute"] is not None:
        where.append(Cond("updated_at", "gt", T0 + dt.timedelta(minutes=q["after_minute"])))
    order = ("updated_at", "memory_id")
    expected = sorted((r for r in rows if matches_all(r, where)), key=lambda r: row_key(r, order), reverse=q["desc"])
    after = None
    if expected and q["page_from"] < len(expected):
        pivot = expected[q["page_from"]]
        after = (pivot["updated_at"], pivot["memory_id"])
    query = Query("memories", tuple(where), order, q["desc"], q["limit"], after, offset=q["offset"])
    return query, list(after_filter(expected, query))[q["offset"] : q["offset"] + q["limit"]]


def kernels(tmp_path):
    specs = build_specs()
    mem = MemoryKernel()
    mem.setup(specs)
    lite = SqliteKernel(sa.make_url(f"sqlite:///{tmp_path}/q.db"), "normal")
    lite.setup(specs)
    for step in lite.plan_schema():
        lite.apply_step(step)
    js = JsonKernel(f"memory://query-{uuid.uuid4().hex}", None)
    js.setup(specs)
    return mem, lite, js


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=rows_st, queries=st.lists(query_st, min_size=1, max_size=4))
def test_find_matches_the_plain_definition(tmp_path, raw, queries):
    rows = memory_rows(raw)
    for kernel in kernels(tmp_path):
        kernel.delete("memories", ())
        kernel.put_many("memories", rows, True)
        for q in queries:
            query, expected = build_query(q, rows)
            got = kernel.find(query)
            assert [r["memory_id"] for r in got] == [r["memory_id"] for r in expected], (type(kernel).__name__, q)
            assert kernel.count("memories", query.where) == sum(matches_all(r, query.where) for r in rows)
        kernel.close()
