"""The index planner: the narrowest read, then one that yields the order, then the index
listed first; what it answers itself; and (property-based) that walking the plan's runs over
sorted entries finds exactly the rows the query wants, in its order."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from agentkeep.db.planner import Shape, bounds, equalities, key_values, plan
from agentkeep.db.query import HIGH, LOW, Cond, Query, after_filter, matches_all, row_key, sort_key

SESSIONS = [
    ("session_id",),
    ("user_id", "updated_at", "session_id"),
    ("user_id", "created_at", "session_id"),
    ("updated_at", "session_id"),
    ("created_at", "session_id"),
]


def eq(f, v):
    return Cond(f, "eq", v)


def test_the_longest_equality_prefix_that_yields_the_order():
    p = plan(SESSIONS, [eq("user_id", "u")], ("updated_at", "session_id"))
    assert p.index == 1 and p.prefix == ("user_id",) and p.prefixes == [("u",)]
    assert p.ordered and p.order == ("updated_at", "session_id") and p.covered


def test_a_range_on_the_field_after_the_prefix():
    where = [eq("user_id", "u"), Cond("updated_at", "gt", 5), Cond("updated_at", "lte", 9)]
    p = plan(SESSIONS, where, ("updated_at", "session_id"))
    assert p.index == 1 and p.range_field == "updated_at" and p.ranges == tuple(where[1:])
    assert p.ordered and p.covered


def test_a_narrower_read_wins_over_one_that_yields_the_order():
    p = plan(SESSIONS, [Cond("updated_at", "gt", 5)], ("created_at", "session_id"))
    assert p.index == 3 and p.range_field == "updated_at" and not p.ordered
    ordered = plan(SESSIONS, [Cond("updated_at", "gt", 5)], ("created_at", "session_id"), ordered_only=True)
    assert ordered.index == 4 and ordered.ordered and ordered.range_field is None and not ordered.covered


def test_between_equally_narrow_reads_the_ordered_one_then_the_first_listed():
    indexes = [("a", "k"), ("a", "b", "k"), ("a", "c", "k")]
    assert plan(indexes, [eq("a", 1)], ("b", "k")).index == 1
    assert plan(indexes, [eq("a", 1)], ()).index == 0


def test_nothing_that_narrows_or_orders_is_no_plan():
    assert plan(SESSIONS, [Cond("name", "icontains", "x")], ()) is None
    assert plan(SESSIONS, [], ("name", "session_id")) is None
    walk = plan(SESSIONS, [], ("created_at", "session_id"))
    assert walk.index == 4 and walk.ordered and walk.prefix == () and walk.covered


def test_fields_fixed_by_equality_leave_the_order():
    # metrics: key (date, user_id), listed by (date, user_id) for one user
    indexes = [("date", "user_id"), ("user_id", "date")]
    where = [eq("user_id", "u"), Cond("date", "gte", 1)]
    p = plan(indexes, where, ("date", "user_id"))
    assert p.index == 1 and p.prefix == ("user_id",) and p.range_field == "date"
    assert p.ordered and p.order == ("date",) and p.position(("date", "user_id"), (3, "u")) == (3,)


def test_the_prefix_shrinks_to_where_the_order_starts():
    # schedules due: (enabled, next_run_at) read in next_run_at order with enabled bound
    p = plan([("enabled", "next_run_at", "id")], [eq("enabled", True), Cond("next_run_at", "lte", 5)],
             ("next_run_at", "id"))
    assert p.prefix == ("enabled",) and p.ordered and p.covered
    # an `in` on the field the order starts with: in the prefix of the narrowest read, or
    # checked on the rows of a read in order
    where = [eq("a", 1), Cond("b", "in", [1, 2])]
    p = plan([("a", "b", "k")], where, ("b", "k"), max_prefixes=4)
    assert p.prefix == ("a", "b") and not p.ordered and p.covered
    p = plan([("a", "b", "k")], where, ("b", "k"), max_prefixes=4, ordered_only=True)
    assert p.prefix == ("a",) and p.ordered and not p.covered


def test_in_expands_into_prefixes_up_to_the_store_limit():
    where = [Cond("user_id", "in", ["u", None, "u"])]
    p = plan(SESSIONS, where, ("updated_at", "session_id"), max_prefixes=32)
    assert p.prefixes == [("u",), (None,)] and p.ordered and p.covered
    one = plan(SESSIONS, where, ("updated_at", "session_id"))
    assert one.index == 3 and one.prefix == () and not one.covered
    wide = plan([("a", "b", "k")], [Cond("a", "in", [1, 2, 3]), Cond("b", "in", [1, 2, 3])], (), max_prefixes=5)
    assert wide.prefix == ("a",)


def test_a_hashed_partition_needs_every_field_and_one_value_past_it():
    gsis = [Shape(("user_id", "created_at", "id"), partition=1), Shape(("created_at", "id"), partition=0)]
    p = plan(gsis, [Cond("user_id", "in", ["a", "b"])], ("created_at", "id"), max_prefixes=1000)
    assert p.index == 0 and p.prefixes == [("a",), ("b",)] and p.ordered
    assert plan(gsis[:1], [Cond("created_at", "gt", 1)], ()) is None
    p = plan([Shape(("a", "b", "k"), partition=1)], [eq("a", 1), Cond("b", "in", [1, 2])], (), max_prefixes=9)
    assert p.prefix == ("a",)


def test_a_sparse_index_serves_only_reads_of_rows_that_have_the_field():
    indexes = [("id",), Shape(("expires_at", "id"), sparse=True)]
    assert plan(indexes, [Cond("expires_at", "lte", 5)], ("id",)).index == 1
    assert plan(indexes, [], ("expires_at", "id")) is None
    assert plan(indexes, [eq("expires_at", None)], ()) is None
    assert plan(indexes, [eq("expires_at", 3)], ()).index == 1


def test_usable_leaves_fields_to_the_rows_check():
    p = plan(SESSIONS, [eq("user_id", "u")], (), usable=lambda f: f != "user_id")
    assert p is None


def test_what_the_read_answers_itself():
    assert not plan(SESSIONS, [eq("user_id", "u"), eq("user_id", "v")], ()).covered
    assert not plan(SESSIONS, [eq("user_id", "u"), eq("name", "n")], ()).covered
    assert plan(SESSIONS, [eq("user_id", "u"), Cond("user_id", "gte", "t")], ()).covered
    assert not plan(SESSIONS, [eq("user_id", "u"), Cond("user_id", "gt", "v")], ()).covered


def test_helpers():
    where = [Cond("a", "in", []), eq("a", 1), Cond("b", "gt", None), Cond("b", "lt", 3), eq("c", None)]
    assert equalities(where) == {"a": (1,), "c": (None,)}
    assert bounds(where) == {"b": [where[3]]}
    assert key_values(("a",), where) == []
    assert key_values(("k", "d"), [Cond("k", "in", [1, 2, 1]), eq("d", "x")]) == [(1, "x"), (2, "x")]
    assert key_values(("k",), [eq("k", None)]) == []
    assert key_values(("k",), [Cond("k", "gt", 1)]) is None


# -- property: a plan's runs, read over sorted entries, are the query's answer ---------------

FIELDS = ("a", "b", "c")
INDEXES = [("k",), ("a", "k"), ("a", "b", "k"), ("b", "c", "k"), Shape(("c", "k"), sparse=True)]
VALUE = st.sampled_from([None, 0, 1, 2])


def _run(entries: list[tuple], prefix: tuple, plan_, after_pos: tuple | None, desc: bool) -> list[tuple]:
    """The entries of one prefix's run: the range on the next field, the keyset position."""
    def first(bound: tuple) -> int:
        return next((i for i, e in enumerate(entries) if e >= bound), len(entries))

    lo, hi = first(prefix), first(prefix + (HIGH,))
    if plan_.ranges:  # a range holds no None
        lo = first(prefix + (LOW, HIGH))
    for c in plan_.ranges:
        v = sort_key(c.value)
        if c.op == "gte":
            lo = max(lo, first(prefix + (v,)))
        elif c.op == "gt":
            lo = max(lo, first(prefix + (v, HIGH)))
        elif c.op == "lte":
            hi = min(hi, first(prefix + (v, HIGH)))
        else:
            hi = min(hi, first(prefix + (v,)))
    if after_pos is not None:
        if desc:
            hi = min(hi, first(prefix + after_pos))
        else:
            lo = max(lo, first(prefix + after_pos + (HIGH,)))
    return entries[lo:hi]


def _walk(run: list[tuple], desc: bool) -> list[tuple]:
    return run[::-1] if desc else run


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.fixed_dictionaries({f: VALUE for f in FIELDS}), max_size=12),
    conds=st.lists(
        st.one_of(
            st.builds(Cond, st.sampled_from(FIELDS), st.just("eq"), VALUE),
            st.builds(Cond, st.sampled_from(FIELDS), st.just("in"), st.lists(VALUE, max_size=3)),
            st.builds(Cond, st.sampled_from(FIELDS), st.sampled_from(["lt", "lte", "gt", "gte"]),
                      st.sampled_from([0, 1, 2])),
        ),
        max_size=3,
    ),
    order=st.sampled_from([(), ("k",), ("a", "k"), ("b", "k"), ("c", "k"), ("b", "c", "k")]),
    desc=st.booleans(),
    cut=st.integers(min_value=0, max_value=12),
)
def test_walking_the_plan_answers_the_query(rows, conds, order, desc, cut):
    for i, r in enumerate(rows):
        r["k"] = i
    want = sorted((r for r in rows if matches_all(r, conds)), key=lambda r: row_key(r, order) if order else r["k"],
                  reverse=desc)
    after = tuple(want[cut][f] for f in order) if order and cut < len(want) else None
    if after is not None:
        want = list(after_filter(want, Query("t", order=order, desc=desc, after=after)))
    p = plan(INDEXES, conds, order, max_prefixes=4)
    if p is None:
        return
    shape = INDEXES[p.index]
    shape = shape if isinstance(shape, Shape) else Shape(shape)
    entries = sorted(row_key(r, shape.fields) for r in rows if not (shape.sparse and r[shape.fields[0]] is None))
    pos = tuple(sort_key(v) for v in p.position(order, after)) if p.ordered and after is not None else None
    found = [
        rows[e[-1]] for prefix in p.prefixes
        for e in _walk(_run(entries, tuple(sort_key(v) for v in prefix), p, pos, desc), desc)
    ]
    if p.covered:  # nothing else to check: every row the runs hold is wanted
        assert all(matches_all(r, conds) for r in found)
    found = [r for r in found if matches_all(r, conds)]
    if p.ordered:
        runs = [list(g) for _, g in itertools.groupby(found, key=lambda r: tuple(r[f] for f in p.prefix))]
        merged = sorted(found, key=lambda r: row_key(r, order), reverse=desc)
        assert all(run == sorted(run, key=lambda r: row_key(r, order), reverse=desc) for run in runs)
        assert merged == want
    else:
        found = sorted(found, key=lambda r: row_key(r, order) if order else r["k"], reverse=desc)
        if after is not None:
            found = list(after_filter(found, Query("t", order=order, desc=desc, after=after)))
        assert found == want
