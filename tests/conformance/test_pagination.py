"""Keyset pagination for every list method and every documented order.

Each listing is described once (how to make a record with a given sort slot, how to list,
the record key, the sort value per order); the same checks run over all of them:
pages neither skip nor repeat a record while records are inserted between pages, pages
come in order, limits and orders are validated, cursors are opaque and checked, and
with_total counts only the matching records. Offsets give the same pages as the cursor
walk, from the start or from a cursor, with or without filters.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from agentkeep.db import (
    Approval,
    EvalRun,
    InvalidInputError,
    Job,
    KnowledgeContent,
    Run,
    ScheduleRun,
    Session,
    UserMemory,
)

from ._helpers import at, schedule, snapshot, span

OWNER = "pager"


@dataclass
class Listing:
    name: str
    make: Callable[[Any, dict, int, int], str]  # (db, ctx, serial, slot) -> key
    call: Callable[..., Any]  # (db, ctx, **kw) -> Page
    key: Callable[[Any], str]
    sort: dict[str, tuple[Callable[[Any], Any], bool]]  # order -> (sort value, descending)
    setup: Callable[[Any], dict] = lambda db: {}
    noise: Callable[[Any, dict, int], None] | None = None  # a record the call must not return
    takes_order: bool = True
    takes_total: bool = True
    orders: list[str | None] = field(init=False)

    def __post_init__(self) -> None:
        self.orders = list(self.sort) if self.takes_order else [None]


def _sessions() -> Listing:
    def make(db, ctx, n, slot):
        return db.upsert_session(Session(session_id=f"s{n:03d}", user_id=OWNER, created_at=at(slot))).session_id

    return Listing(
        name="sessions",
        make=make,
        call=lambda db, ctx, **kw: db.list_sessions(user_id=OWNER, **kw),
        key=lambda s: s.session_id,
        sort={"updated_desc": (lambda s: s.updated_at, True), "updated_asc": (lambda s: s.updated_at, False),
              "created_desc": (lambda s: s.created_at, True), "created_asc": (lambda s: s.created_at, False)},
        noise=lambda db, ctx, n: db.upsert_session(Session(user_id="other", created_at=at(n))),
    )


def _runs() -> Listing:
    def setup(db):
        db.upsert_session(Session(session_id="runs-main", user_id=OWNER))
        db.upsert_session(Session(session_id="runs-other", user_id=OWNER))
        return {}

    return Listing(
        name="runs",
        setup=setup,
        make=lambda db, ctx, n, slot: db.append_run(Run(session_id="runs-main", content=n)).run_id,
        call=lambda db, ctx, **kw: db.list_runs("runs-main", **kw),
        key=lambda r: r.run_id,
        sort={"seq": (lambda r: r.seq, False)},
        noise=lambda db, ctx, n: db.append_run(Run(session_id="runs-other")),
        takes_order=False,
    )


def _memories() -> Listing:
    return Listing(
        name="memories",
        make=lambda db, ctx, n, slot: db.upsert_memory(UserMemory(memory_id=f"m{n:03d}", user_id=OWNER,
                                                                  memory=f"memory {n}")).memory_id,
        call=lambda db, ctx, **kw: db.list_memories(user_id=OWNER, **kw),
        key=lambda m: m.memory_id,
        sort={"updated_desc": (lambda m: m.updated_at, True), "updated_asc": (lambda m: m.updated_at, False)},
        noise=lambda db, ctx, n: db.upsert_memory(UserMemory(user_id="other", memory="x")),
    )


def _memory_stats() -> Listing:
    return Listing(
        name="memory_stats",
        make=lambda db, ctx, n, slot: db.upsert_memory(UserMemory(user_id=f"user-{slot + 10:04d}-{n:03d}",
                                                                  memory="x")).user_id,
        call=lambda db, ctx, **kw: db.memory_stats(**kw),
        key=lambda s: s.user_id,
        sort={"user_asc": (lambda s: s.user_id, False)},
        takes_order=False,
        takes_total=False,
    )


def _knowledge() -> Listing:
    return Listing(
        name="knowledge",
        make=lambda db, ctx, n, slot: db.upsert_knowledge(KnowledgeContent(id=f"k{n:03d}", user_id=OWNER)).id,
        call=lambda db, ctx, **kw: db.list_knowledge(user_id=OWNER, **kw),
        key=lambda k: k.id,
        sort={"updated_desc": (lambda k: k.updated_at, True), "updated_asc": (lambda k: k.updated_at, False)},
        noise=lambda db, ctx, n: db.upsert_knowledge(KnowledgeContent(user_id="other")),
    )


def _traces() -> Listing:
    def make(db, ctx, n, slot):
        trace_id = f"t{n:03d}"
        db.write_spans([span(trace_id, f"{trace_id}-root", at(slot), 10, attributes={"user.id": OWNER})])
        return trace_id

    return Listing(
        name="traces",
        make=make,
        call=lambda db, ctx, **kw: db.list_traces(user_id=OWNER, **kw),
        key=lambda t: t.trace_id,
        sort={"start_desc": (lambda t: t.start_time, True), "start_asc": (lambda t: t.start_time, False)},
        noise=lambda db, ctx, n: db.write_spans([span(f"noise{n}", f"noise{n}", at(n), 10,
                                                      attributes={"user.id": "other"})]),
    )


def _approvals() -> Listing:
    return Listing(
        name="approvals",
        make=lambda db, ctx, n, slot: db.create_approval(Approval(id=f"a{n:03d}", user_id=OWNER,
                                                                  created_at=at(slot))).id,
        call=lambda db, ctx, **kw: db.list_approvals(user_id=OWNER, **kw),
        key=lambda a: a.id,
        sort={"created_desc": (lambda a: a.created_at, True), "created_asc": (lambda a: a.created_at, False)},
        noise=lambda db, ctx, n: db.create_approval(Approval(user_id="other", created_at=at(n))),
    )


def _schedules() -> Listing:
    return Listing(
        name="schedules",
        make=lambda db, ctx, n, slot: db.upsert_schedule(schedule(id=f"sc{n:03d}", user_id=OWNER,
                                                                  created_at=at(slot), next_run_at=at(slot))).id,
        call=lambda db, ctx, **kw: db.list_schedules(user_id=OWNER, **kw),
        key=lambda s: s.id,
        sort={"created_desc": (lambda s: s.created_at, True), "created_asc": (lambda s: s.created_at, False)},
        noise=lambda db, ctx, n: db.upsert_schedule(schedule(user_id="other", created_at=at(n))),
    )


def _schedule_runs() -> Listing:
    def setup(db):
        return {"main": db.upsert_schedule(schedule(user_id=OWNER)).id,
                "other": db.upsert_schedule(schedule(user_id=OWNER)).id}

    return Listing(
        name="schedule_runs",
        setup=setup,
        make=lambda db, ctx, n, slot: db.record_schedule_run(ScheduleRun(id=f"sr{n:03d}", schedule_id=ctx["main"],
                                                                         started_at=at(slot))).id,
        call=lambda db, ctx, **kw: db.list_schedule_runs(ctx["main"], **kw),
        key=lambda r: r.id,
        sort={"started_desc": (lambda r: r.started_at, True)},
        noise=lambda db, ctx, n: db.record_schedule_run(ScheduleRun(schedule_id=ctx["other"], started_at=at(n))),
        takes_order=False,
    )


def _eval_runs() -> Listing:
    return Listing(
        name="eval_runs",
        make=lambda db, ctx, n, slot: db.save_eval_run(EvalRun(id=f"e{n:03d}", user_id=OWNER, eval_type="accuracy",
                                                               created_at=at(slot))).id,
        call=lambda db, ctx, **kw: db.list_eval_runs(user_id=OWNER, **kw),
        key=lambda e: e.id,
        sort={"created_desc": (lambda e: e.created_at, True), "created_asc": (lambda e: e.created_at, False)},
        noise=lambda db, ctx, n: db.save_eval_run(EvalRun(user_id="other", eval_type="accuracy", created_at=at(n))),
    )


def _jobs() -> Listing:
    return Listing(
        name="jobs",
        make=lambda db, ctx, n, slot: db.enqueue_job(Job(id=f"j{n:03d}", user_id=OWNER, kind="k",
                                                         created_at=at(slot))).id,
        call=lambda db, ctx, **kw: db.list_jobs(user_id=OWNER, **kw),
        key=lambda j: j.id,
        sort={"created_desc": (lambda j: j.created_at, True), "created_asc": (lambda j: j.created_at, False)},
        noise=lambda db, ctx, n: db.enqueue_job(Job(user_id="other", kind="k", created_at=at(n))),
    )


LISTINGS = [_sessions(), _runs(), _memories(), _memory_stats(), _knowledge(), _traces(), _approvals(),
            _schedules(), _schedule_runs(), _eval_runs(), _jobs()]
ORDERED = [(l, o) for l in LISTINGS for o in l.orders]
WITH_ORDER = [l for l in LISTINGS if l.takes_order]


def _kw(order: str | None, **kw: Any) -> dict:
    if order is not None:
        kw["order"] = order
    return kw


def _sort_spec(listing: Listing, order: str | None):
    return listing.sort[order] if order is not None else next(iter(listing.sort.values()))


@pytest.mark.parametrize("listing,order", ORDERED, ids=[f"{l.name}-{o or 'default'}" for l, o in ORDERED])
def test_pages_neither_skip_nor_repeat_while_inserting(db, listing, order):
    ctx = listing.setup(db)
    serial = itertools.count()
    # pairs of records share a sort slot (ties are broken by the key); inserted records
    # land between, around and on top of the originals
    originals = [listing.make(db, ctx, next(serial), (i // 2) * 2) for i in range(9)]
    if listing.noise:
        for n in range(3):
            listing.noise(db, ctx, n)
    inserted: list[str] = []
    # odd slots fall between originals; even ones tie with an original (the key decides)
    insert_slots = itertools.cycle([1, 4, 9, 0, 5, -1, 2, 7, 11, 6])
    seen: list[Any] = []
    cursor = None
    for _ in range(50):
        page = listing.call(db, ctx, **_kw(order, limit=2, cursor=cursor))
        assert len(page.items) <= 2
        assert page.total is None
        seen.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
        if len(inserted) >= 6:  # stop inserting, or an ascending listing never ends
            continue
        for _ in range(2):
            inserted.append(listing.make(db, ctx, next(serial), next(insert_slots)))
    else:
        raise AssertionError("pagination did not terminate")
    keys = [listing.key(x) for x in seen]
    assert len(keys) == len(set(keys)), f"repeated: {[k for k in keys if keys.count(k) > 1]}"
    assert set(originals) <= set(keys), f"skipped: {set(originals) - set(keys)}"
    assert set(keys) <= set(originals) | set(inserted)
    value, descending = _sort_spec(listing, order)
    values = [value(x) for x in seen]
    assert values == sorted(values, reverse=descending)


@pytest.mark.parametrize("listing,order", ORDERED, ids=[f"{l.name}-{o or 'default'}" for l, o in ORDERED])
def test_full_listing_is_sorted_and_complete(db, listing, order):
    ctx = listing.setup(db)
    made = [listing.make(db, ctx, n, (n * 7) % 5) for n in range(6)]
    page = listing.call(db, ctx, **_kw(order, limit=1000))
    assert page.next_cursor is None
    assert sorted(listing.key(x) for x in page.items) == sorted(made)
    value, descending = _sort_spec(listing, order)
    values = [value(x) for x in page.items]
    assert values == sorted(values, reverse=descending)


@pytest.mark.parametrize("listing", LISTINGS, ids=[l.name for l in LISTINGS])
def test_default_limit_is_20(db, listing):
    ctx = listing.setup(db)
    made = [listing.make(db, ctx, n, n) for n in range(21)]
    first = listing.call(db, ctx)
    assert len(first.items) == 20
    assert first.next_cursor is not None
    rest = listing.call(db, ctx, cursor=first.next_cursor)
    assert sorted(listing.key(x) for x in first.items + rest.items) == sorted(made)
    assert listing.call(db, ctx, limit=1000).next_cursor is None


@pytest.mark.parametrize("listing", [l for l in LISTINGS if l.takes_total], ids=lambda l: l.name)
def test_with_total(db, listing):
    ctx = listing.setup(db)
    for n in range(5):
        listing.make(db, ctx, n, n)
    if listing.noise:
        for n in range(2):
            listing.noise(db, ctx, n)
    page = listing.call(db, ctx, limit=2, with_total=True)
    assert page.total == 5 and len(page.items) == 2
    second = listing.call(db, ctx, limit=2, with_total=True, cursor=page.next_cursor)
    assert second.total == 5
    assert listing.call(db, ctx, limit=2).total is None


@pytest.mark.parametrize("bad", [0, -1, 1001, "5", 2.5], ids=repr)
@pytest.mark.parametrize("listing", LISTINGS, ids=[l.name for l in LISTINGS])
def test_bad_limit_is_invalid(db, listing, bad):
    ctx = listing.setup(db)
    listing.make(db, ctx, 0, 0)
    with pytest.raises(InvalidInputError):
        listing.call(db, ctx, limit=bad)


@pytest.mark.parametrize("listing", LISTINGS, ids=[l.name for l in LISTINGS])
def test_limit_bounds_are_accepted(db, listing):
    ctx = listing.setup(db)
    made = [listing.make(db, ctx, n, n) for n in range(3)]
    assert len(listing.call(db, ctx, limit=1).items) == 1
    assert len(listing.call(db, ctx, limit=1000).items) == len(made)


@pytest.mark.parametrize("listing", WITH_ORDER, ids=[l.name for l in WITH_ORDER])
def test_unknown_order_is_invalid(db, listing):
    ctx = listing.setup(db)
    listing.make(db, ctx, 0, 0)
    for bad in ("sideways", "UPDATED_DESC", "updated_desc; DROP TABLE x", "created"):
        if bad in listing.sort:
            continue
        with pytest.raises(InvalidInputError):
            listing.call(db, ctx, order=bad)


def _a_cursor(db, listing, order=None):
    ctx = listing.setup(db)
    for n in range(3):
        listing.make(db, ctx, n, n)
    page = listing.call(db, ctx, **_kw(order, limit=1))
    assert page.next_cursor is not None and isinstance(page.next_cursor, str)
    return ctx, page.next_cursor


@pytest.mark.parametrize("listing", LISTINGS, ids=[l.name for l in LISTINGS])
def test_mangled_cursor_is_invalid(db, listing):
    ctx, cursor = _a_cursor(db, listing)
    for bad in ("not-a-cursor", "%%%%", cursor[::-1], cursor[: len(cursor) // 2], "{}", '{"$gt": ""}'):
        if bad == cursor:
            continue
        with pytest.raises(InvalidInputError):
            listing.call(db, ctx, limit=1, cursor=bad)


MULTI_ORDER = [l for l in LISTINGS if len(l.orders) > 1]


@pytest.mark.parametrize("listing", MULTI_ORDER, ids=[l.name for l in MULTI_ORDER])
def test_cursor_of_another_order_is_invalid(db, listing):
    first, second = listing.orders[0], listing.orders[1]
    ctx, cursor = _a_cursor(db, listing, first)
    with pytest.raises(InvalidInputError):
        listing.call(db, ctx, limit=1, cursor=cursor, order=second)


# -- offsets: page numbers beside cursors ---------------------------------------------------

OFFSET_LISTINGS = [l for l in LISTINGS if l.name != "memory_stats"]  # it pages over users: no offset
OFFSET_ORDERED = [(l, o) for l in OFFSET_LISTINGS for o in l.orders]


def _walk(listing: Listing, db: Any, ctx: dict, order: str | None, **kw: Any) -> list[str]:
    """The keys of every record, following cursors two at a time."""
    keys: list[str] = []
    cursor = None
    for _ in range(100):
        page = listing.call(db, ctx, **_kw(order, limit=2, cursor=cursor, **kw))
        keys += [listing.key(x) for x in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return keys
    raise AssertionError("pagination did not terminate")


def _filled(db: Any, listing: Listing, n: int = 7) -> dict:
    ctx = listing.setup(db)
    for i in range(n):
        listing.make(db, ctx, i, (i // 2) * 2)  # pairs tie on the sort value: the key decides
    if listing.noise:
        for i in range(2):
            listing.noise(db, ctx, i)
    return ctx


@pytest.mark.parametrize("listing,order", OFFSET_ORDERED, ids=[f"{l.name}-{o or 'default'}" for l, o in OFFSET_ORDERED])
def test_offset_pages_are_slices_of_the_cursor_walk(db, listing, order):
    ctx = _filled(db, listing)
    full = _walk(listing, db, ctx, order)
    assert len(full) == 7
    for limit in (1, 3):
        for offset in (0, 1, 2, 4, 6, 7, 9):
            page = listing.call(db, ctx, **_kw(order, limit=limit, offset=offset))
            assert [listing.key(x) for x in page.items] == full[offset : offset + limit], (limit, offset)
            assert (page.next_cursor is not None) == (offset + limit < len(full)), (limit, offset)


@pytest.mark.parametrize("listing", OFFSET_LISTINGS, ids=[l.name for l in OFFSET_LISTINGS])
def test_offset_then_cursors_continue_after_the_page(db, listing):
    ctx = _filled(db, listing)
    full = _walk(listing, db, ctx, None)
    page = listing.call(db, ctx, limit=2, offset=3)
    assert [listing.key(x) for x in page.items] == full[3:5]
    rest: list[str] = []
    cursor = page.next_cursor
    while cursor is not None:
        nxt = listing.call(db, ctx, limit=2, cursor=cursor)
        rest += [listing.key(x) for x in nxt.items]
        cursor = nxt.next_cursor
    assert rest == full[5:]


@pytest.mark.parametrize("listing", OFFSET_LISTINGS, ids=[l.name for l in OFFSET_LISTINGS])
def test_offset_counts_from_the_cursor(db, listing):
    ctx = _filled(db, listing)
    full = _walk(listing, db, ctx, None)
    first = listing.call(db, ctx, limit=2)
    page = listing.call(db, ctx, limit=2, cursor=first.next_cursor, offset=2)
    assert [listing.key(x) for x in page.items] == full[4:6]
    last = listing.call(db, ctx, limit=2, cursor=page.next_cursor, offset=0)
    assert [listing.key(x) for x in last.items] == full[6:]
    past = listing.call(db, ctx, limit=2, cursor=first.next_cursor, offset=5)
    assert past.items == [] and past.next_cursor is None


@pytest.mark.parametrize("listing", [l for l in OFFSET_LISTINGS if l.takes_total], ids=lambda l: l.name)
def test_offset_past_the_end_and_total(db, listing):
    ctx = _filled(db, listing)
    page = listing.call(db, ctx, limit=2, offset=3, with_total=True)
    assert len(page.items) == 2 and page.total == 7
    for offset in (7, 8, 1_000_000):
        empty = listing.call(db, ctx, limit=2, offset=offset, with_total=True)
        assert empty.items == [] and empty.next_cursor is None and empty.total == 7


def test_offset_with_filters(db):
    """Filters a store may answer natively or only after reading (a substring, a topic, a
    time range, a status): the offset counts matching records only."""
    for i in range(9):
        db.upsert_session(Session(session_id=f"f{i}", user_id=OWNER, agent_id="ab"[i % 2],
                                  name=f"{'Alpha' if i % 3 else 'beta'} {i}", created_at=at(i // 2)))
    db.upsert_session(Session(session_id="f-other", user_id="other", agent_id="a", name="alpha"))
    for kw in ({"agent_id": "a"}, {"name_contains": "ALPHA"}, {"agent_id": "b", "name_contains": "alpha"},
               {"updated_after": at(-1), "order": "created_asc"}):
        full = [s.session_id for s in db.list_sessions(user_id=OWNER, limit=1000, **kw).items]
        assert full
        for offset in range(len(full) + 1):
            page = db.list_sessions(user_id=OWNER, limit=2, offset=offset, **kw)
            assert [s.session_id for s in page.items] == full[offset : offset + 2], (kw, offset)
            assert (page.next_cursor is not None) == (offset + 2 < len(full))

    for i in range(8):
        db.upsert_memory(UserMemory(memory_id=f"fm{i}", user_id=OWNER, memory=f"tea {i}" if i % 2 else "coffee",
                                    topics=["drinks", "hot"] if i % 3 else ["drinks"]))
    for kw in ({"topics": ["drinks", "hot"]}, {"search": "TEA"}, {"topics": ["drinks"], "search": "tea"}):
        full = [m.memory_id for m in db.list_memories(user_id=OWNER, limit=1000, **kw).items]
        assert full
        for offset in range(len(full) + 1):
            page = db.list_memories(user_id=OWNER, limit=2, offset=offset, **kw)
            assert [m.memory_id for m in page.items] == full[offset : offset + 2], (kw, offset)

    for i in range(6):
        db.create_approval(Approval(id=f"fa{i}", user_id=OWNER, created_at=at(i)))
    for i in range(0, 6, 2):
        db.resolve_approval(f"fa{i}", status="approved", resolved_by="ops")
    full = [a.id for a in db.list_approvals(user_id=OWNER, status="pending", limit=1000).items]
    assert full == ["fa5", "fa3", "fa1"]
    for offset in range(4):
        page = db.list_approvals(user_id=OWNER, status="pending", limit=1, offset=offset, with_total=True)
        assert [a.id for a in page.items] == full[offset : offset + 1] and page.total == 3


@pytest.mark.parametrize("bad", [-1, True, False, 1_000_001, 2**63, "3", 2.0, None], ids=repr)
@pytest.mark.parametrize("listing", OFFSET_LISTINGS, ids=[l.name for l in OFFSET_LISTINGS])
def test_bad_offset_is_invalid(db, listing, bad):
    ctx = listing.setup(db)
    listing.make(db, ctx, 0, 0)
    before = snapshot(db)
    with pytest.raises(InvalidInputError, match="offset"):
        listing.call(db, ctx, offset=bad)
    assert snapshot(db) == before


def test_offset_does_not_apply_with_last(db):
    db.upsert_session(Session(session_id="lasts", user_id=OWNER))
    for i in range(3):
        db.append_run(Run(session_id="lasts", content=i))
    with pytest.raises(InvalidInputError, match="offset"):
        db.list_runs("lasts", last=2, offset=1)
    assert [r.content for r in db.list_runs("lasts", last=2, offset=0).items] == [1, 2]
