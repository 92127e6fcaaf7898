"""JsonDb on object stores (S3 on moto_server, GCS on fake-gcs-server), what the conformance
suite does not see: the object layout; that every index segment is written with a real
precondition (seen on the wire and enforced by the emulator); that a lost race is retried,
never overwritten; compare-and-set across processes and handles; snapshots and the removal
of old segments; hostile ids; and how many requests each call costs.

Every test gets a bucket of its own. Requests are observed through a small HTTP proxy in
front of the emulator, so the counts are what a client really sends."""

from __future__ import annotations

import functools
import http.client
import multiprocessing
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from agentkeep.db import ConflictError, InvalidInputError, Run, Session, UserMemory
from agentkeep.db.gcs_json import GcsJsonDb
from agentkeep.db.json import JsonDb
from tests.services import moto
from tests.services import object_storage as services
from tests.processes import run_together

STORES = ["s3", "gcs"]
# every object a db writes: index segments, snapshots, record versions (sha1 of the key)
LAYOUT = re.compile(r"^[a-z_]+/(log/\d{12}\.jsonl|snap/\d{12}\.jsonl|r/[0-9a-f]{2}/[0-9a-f]{40}\.[0-9a-f]{16}\.json)$")


class Proxy:
    """An HTTP reverse proxy in front of the emulator that records every request it forwards:
    (method, path with query, headers, response status, first 4 KB of the body)."""

    def __init__(self, target: str) -> None:
        upstream = urlsplit(target)
        self.requests: list[tuple[str, str, dict, int, bytes]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                proxy.requests.append((self.command, self.path, dict(self.headers), resp.status, (body or b"")[:4096]))
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "keep-alive"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, call) -> tuple[int, object]:
        self.requests.clear()
        result = call()
        return len(self.requests), result

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _check(store: str) -> None:
    reason = services.s3_check() if store == "s3" else services.gcs_check()
    if reason:
        if os.environ.get("AGENTKEEP_REQUIRE_ALL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


class Store:
    """A fresh bucket on one emulator, and handles on it (optionally through a proxy)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bucket, self._drop = services.new_s3_bucket() if name == "s3" else services.new_gcs_bucket()
        self.path = f"{'s3' if name == 's3' else 'gs'}://{self.bucket}/keep"
        self.proxy: Proxy | None = None
        self.handles: list = []

    def options(self, via_proxy: bool) -> dict:
        if self.name == "s3":
            options = services.s3_options()
            if via_proxy:
                options["client_kwargs"] = dict(options["client_kwargs"], endpoint_url=self.proxy.url)
            return options
        options = {"project": services.GCS_PROJECT}
        if via_proxy:
            options["endpoint_url"] = self.proxy.url
        return options

    def open(self, via_proxy: bool = False) -> JsonDb:
        if via_proxy and self.proxy is None:
            self.proxy = Proxy(moto.endpoint_url() if self.name == "s3" else services.gcs_endpoint())
        db = JsonDb(path=self.path, storage_options=self.options(via_proxy))
        self.handles.append(db)
        return db

    def opener(self):
        return functools.partial(JsonDb, path=self.path, storage_options=self.options(False))

    def keys(self) -> list[str]:
        """Every object name under the db's prefix, relative to it."""
        fs = self.open().kernel.fs
        fs.invalidate_cache()
        prefix = f"{self.bucket}/keep/"
        return sorted(p[len(prefix):] for p in fs.find(prefix.rstrip("/")))

    def close(self) -> None:
        for db in self.handles:
            db.close()
        if self.proxy is not None:
            self.proxy.close()
        self._drop()


@pytest.fixture(params=STORES)
def store(request):
    _check(request.param)
    s = Store(request.param)
    yield s
    s.close()


def _segment_puts(store: Store, requests: list) -> list:
    """The requests that wrote an index segment."""
    if store.name == "s3":
        return [r for r in requests if r[0] == "PUT" and "/log/" in r[1]]
    # a gcsfs upload names its object in the JSON part of the multipart body
    return [r for r in requests if r[0] == "POST" and re.search(rb'"name": ?"[^"]*/log/\d{12}\.jsonl"', r[4])]


# -- layout ---------------------------------------------------------------------------------


def test_layout_is_segments_snapshots_and_record_versions(store):
    db = store.open()
    assert {"multi_process", "persistent"} <= db.capabilities
    s = db.upsert_session(Session(session_id="s/1*", user_id="alice", state={"k": "v"}))
    db.append_run(Run(session_id=s.session_id, content="hello"))
    db.upsert_session(Session(session_id="s/1*", user_id="alice", state={"k": "w"}))
    keys = store.keys()
    assert keys and all(LAYOUT.match(k) for k in keys), [k for k in keys if not LAYOUT.match(k)]
    assert not [k for k in keys if "index-" in k or k.endswith("CURRENT")], "no append-only log on object stores"
    # the session's replaced record version is gone: one record file per live session
    assert len([k for k in keys if k.startswith("sessions/r/")]) == 1
    assert [k for k in keys if k.startswith("sessions/log/")] == [f"sessions/log/{n:012d}.jsonl" for n in (1, 2, 3)]


def test_hostile_ids_stay_distinct_and_never_reach_object_names(store):
    db = store.open()
    ids = ["abc", "ABC", "abc ", "a/b", "../x", "*", "$where", "a.b", "x:y", "ünï ✓", "z" * 255, "[0-9]?"]
    for i, sid in enumerate(ids):
        db.upsert_session(Session(session_id=sid, user_id="u", name=str(i)))
    other = store.open()
    for i, sid in enumerate(ids):
        assert other.get_session(sid).name == str(i)
    listed = {s.session_id for s in other.list_sessions(limit=100).items}
    assert listed == set(ids)
    assert all(LAYOUT.match(k) for k in store.keys())


def test_gcs_json_db_arguments():
    with pytest.raises(InvalidInputError):
        GcsJsonDb(bucket_name="")
    with pytest.raises(InvalidInputError):
        GcsJsonDb(bucket_name="a/b")


def test_gcs_json_db_under_a_prefix():
    _check("gcs")
    s = Store("gcs")
    try:
        db = GcsJsonDb(bucket_name=s.bucket, prefix="/team/agents/", project=services.GCS_PROJECT)
        s.handles.append(db)
        db.upsert_session(Session(session_id="x", user_id="u"))
        fs = db.kernel.fs
        fs.invalidate_cache()
        assert any(p.startswith(f"{s.bucket}/team/agents/sessions/log/") for p in fs.find(s.bucket))
        assert db.kernel.path == f"gs://{s.bucket}/team/agents"
    finally:
        s.close()


# -- preconditions ------------------------------------------------------------------------


def test_every_segment_put_carries_the_precondition(store):
    db = store.open(via_proxy=True)
    db.upsert_session(Session(session_id="s", user_id="u"))
    db.append_run(Run(session_id="s"))
    requests = list(store.proxy.requests)
    segments = _segment_puts(store, requests)
    assert len(segments) >= 3
    if store.name == "s3":
        assert all(r[2].get("If-None-Match") == "*" for r in segments)
        records = [r for r in requests if r[0] == "PUT" and "/r/" in r[1]]
        assert records and not any("If-None-Match" in r[2] or "If-Match" in r[2] for r in records)
    else:
        assert all("ifGenerationMatch=0" in r[1] for r in segments)
        records = [r for r in requests if r[0] == "POST" and b"/r/" in r[4]]
        assert records and not any("ifGenerationMatch" in r[1] for r in records)


def test_what_counts_as_a_lost_race():
    """s3fs and gcsfs raise FileExistsError for a refused create; S3 may also answer 409
    ConditionalRequestConflict (s3fs wraps it in a plain OSError with the boto error as cause)."""
    from botocore.exceptions import ClientError

    from agentkeep.db.json import _lost_race

    def wrapped(code: str) -> OSError:
        exc = OSError(5, code)
        exc.__cause__ = ClientError({"Error": {"Code": code, "Message": code}}, "PutObject")
        return exc

    assert _lost_race(FileExistsError("taken"))
    assert _lost_race(wrapped("ConditionalRequestConflict"))
    assert _lost_race(wrapped("PreconditionFailed"))
    assert not _lost_race(wrapped("AccessDenied"))
    assert not _lost_race(OSError(5, "connection reset"))


def test_the_emulator_refuses_to_replace_a_segment(store):
    """Create-if-absent is enforced by the store itself: a second put of an existing segment
    fails and leaves the first writer's bytes."""
    db = store.open()
    db.upsert_session(Session(session_id="s", user_id="u"))
    kernel = db.kernel
    st = kernel.tables["sessions"]
    path = kernel._segment(st, 1)
    before = kernel.fs.cat_file(path)
    with pytest.raises(FileExistsError):
        kernel.fs.pipe_file(path, b'{"k":["s"],"del":1}\n', mode="create")
    assert kernel.fs.cat_file(path) == before


def test_two_handles_racing_for_one_segment(store):
    """Both handles plan their write on the same view; the second to publish finds the
    segment taken (412 on the wire), reloads, and lands in the next one. Both writes stay."""
    a, b = store.open(via_proxy=True), store.open()
    a.create_tables()
    b.create_tables()
    assert a.list_sessions().items == [] and b.list_sessions().items == []
    write_files = a.kernel._write_files
    fired = []

    def race(files):  # b publishes while a is between planning and publishing
        if not fired:
            fired.append(True)
            b.upsert_session(Session(session_id="from-b", user_id="u"))
        write_files(files)

    a.kernel._write_files = race
    store.proxy.requests.clear()
    a.upsert_session(Session(session_id="from-a", user_id="u"))
    refused = [r for r in _segment_puts(store, store.proxy.requests) if r[3] == 412]
    assert len(refused) == 1
    for db in (a, b, store.open()):
        assert {s.session_id for s in db.list_sessions().items} == {"from-a", "from-b"}
    st = a.kernel.tables["sessions"]
    assert st.pos == 2


@pytest.mark.parametrize("cached", [True, False])
def test_an_update_planned_on_a_replaced_record_is_planned_again(store, cached):
    """a loads its view, then b replaces the session (removing the record version a's view
    names) before a plans a JSON change. With a's copy of that version cached, a's segment
    loses the race; without it, the version is found gone. Either way a reloads and applies
    its change on top of b's row instead of writing over it."""
    a, b = store.open(), store.open()
    a.upsert_session(Session(session_id="s", user_id="u", name="first", state={"n": 1}))
    assert b.get_session("s").name == "first"
    sync = a.kernel._sync
    fired = []

    def race(st):
        sync(st)
        if st.spec.name == "sessions" and not fired:
            fired.append(True)
            b.upsert_session(Session(session_id="s", user_id="u", name="by b", state={"n": 2}))
            if not cached:
                a.kernel._cache.items.clear()

    a.kernel._sync = race
    got = a.kernel.update("sessions", ("s",), set={"metadata": {"by": "a"}}, incr={"revision": 1},
                          returning=("revision",))
    a.kernel._sync = sync
    assert fired and got == {"revision": 3}
    for db in (a, b, store.open()):
        s = db.get_session("s")
        assert (s.name, s.state, s.metadata, s.revision) == ("by b", {"n": 2}, {"by": "a"}, 3)


def test_expected_revision_race_between_two_handles(store):
    """Separate handles (separate caches) both at revision 1: one write wins, the other is a
    ConflictError, and the winner's write is what is stored."""
    a, b = store.open(), store.open()
    a.upsert_session(Session(session_id="s", user_id="u", name="v1"))
    assert b.get_session("s").revision == 1
    update = a.kernel.update
    fired = []

    def race(*args, **kwargs):  # b writes revision 2 after a checked revision 1
        if not fired:
            fired.append(True)
            b.upsert_session(Session(session_id="s", user_id="u", name="by b"), expected_revision=1)
        return update(*args, **kwargs)

    a.kernel.update = race
    with pytest.raises(ConflictError):
        a.upsert_session(Session(session_id="s", user_id="u", name="by a"), expected_revision=1)
    for db in (a, b, store.open()):
        got = db.get_session("s")
        assert (got.name, got.revision) == ("by b", 2)


def _cas_writer(opener, out, barrier) -> None:
    name = f"p{os.getpid()}"
    db = opener()
    try:
        barrier.wait(timeout=120)
        try:
            db.upsert_session(Session(session_id="s", user_id="u", name=name), expected_revision=1)
            out.put(("won", name))
        except ConflictError:
            out.put(("conflict", name))
    finally:
        db.close()


def test_expected_revision_race_between_processes(store):
    db = store.open()
    db.upsert_session(Session(session_id="s", user_id="u", name="v1"))
    out = multiprocessing.get_context("spawn").Queue()
    n = 4
    run_together(_cas_writer, (store.opener(), out), n)
    results = [out.get(timeout=60) for _ in range(n)]
    assert sorted(r[0] for r in results) == ["conflict"] * (n - 1) + ["won"]
    winner = next(name for outcome, name in results if outcome == "won")
    got = store.open().get_session("s")
    assert (got.name, got.revision) == (winner, 2)


# -- snapshots and removal ----------------------------------------------------------------


def test_snapshots_and_the_removal_of_old_segments(store):
    """A snapshot after every 4th segment; once a snapshot is older than the retention time
    (here 1 s, by the store's own clock), the segments up to it and older snapshots go. The
    pauses make the store's timestamps (whole seconds on S3) differ."""
    db = store.open()
    db.create_tables()
    db.kernel.snapshot_every = 4
    db.kernel.retention = 1.0

    def write(ids, text="v"):
        for i in ids:
            db.upsert_memory(UserMemory(memory_id=f"m{i}", user_id="u", memory=f"{text}{i}"))

    def names(folder):
        return [int(k.rsplit("/", 1)[1].split(".")[0]) for k in store.keys() if k.startswith(f"memories/{folder}/")]

    write(range(4))
    assert names("snap") == [4] and names("log") == [1, 2, 3, 4]
    time.sleep(2.2)
    write(range(4, 8))
    assert names("snap") == [4, 8] and names("log") == [5, 6, 7, 8]  # snapshot 4 aged: 1..4 went
    time.sleep(2.2)
    write(range(8, 11))
    write([0], "again")  # segment 12, replacing m0
    assert names("snap") == [8, 12] and names("log") == [9, 10, 11, 12]
    fresh = store.open()  # starts from snapshot 12
    got = {m.memory_id: m.memory for m in fresh.list_memories(limit=100).items}
    assert got == {**{f"m{i}": f"v{i}" for i in range(11)}, "m0": "again0"}
    assert fresh.kernel.tables["memories"].pos == 12


def test_a_long_idle_handle_reloads_from_the_newest_snapshot(store):
    a = store.open()
    b = store.open(via_proxy=True)
    a.upsert_memory(UserMemory(memory_id="m", user_id="u", memory="x"))
    assert [m.memory_id for m in b.list_memories().items] == ["m"]
    st = b.kernel.tables["memories"]
    st.synced_at -= b.kernel.retention  # as if idle for a whole retention time
    a.upsert_memory(UserMemory(memory_id="n", user_id="u", memory="y"))
    store.proxy.requests.clear()
    assert {m.memory_id for m in b.list_memories().items} == {"m", "n"}
    listings = [r for r in store.proxy.requests if "list-type=" in r[1] or (r[0] == "GET" and "/o?" in r[1])]
    assert listings, "the idle handle listed the snapshots again"


def test_a_segment_retried_by_the_client_counts_as_ours(store):
    """A put whose response was lost and that the client retries finds its own segment: the
    writer's id in the segment tells it the write happened (no ConflictError, no duplicate)."""
    db = store.open()
    db.create_tables()
    pipe_file = db.kernel.fs.pipe_file

    def twice(path, data, **kwargs):
        pipe_file(path, data, **kwargs)
        if kwargs.get("mode") == "create":
            pipe_file(path, data, **kwargs)  # the retry: raises FileExistsError

    db.kernel.fs.pipe_file = twice
    try:
        db.upsert_session(Session(session_id="s", user_id="u"))
        run = db.append_run(Run(run_id="r", session_id="s"))
    finally:
        db.kernel.fs.pipe_file = pipe_file
    assert run.seq == 1
    other = store.open()
    assert [r.run_id for r in other.list_runs("s").items] == ["r"]
    assert other.get_session("s").revision == 1


# -- request counts ---------------------------------------------------------------------------


def test_request_counts(store, capsys):
    """Requests per call once a handle is warm; nothing changed elsewhere unless said."""
    writer = store.open()
    writer.upsert_session(Session(session_id="s", user_id="u", state={"a": 1}))
    for _ in range(3):
        writer.append_run(Run(session_id="s", content="x"))
    db = store.open(via_proxy=True)
    for warm in (lambda: db.get_session("s", runs=-1), db.list_sessions, lambda: db.list_runs("s")):
        warm()  # load the index and cache the records
    proxy = store.proxy
    counts = {
        "get_session": proxy.count(lambda: db.get_session("s"))[0],
        "get_session(runs=-1)": proxy.count(lambda: db.get_session("s", runs=-1))[0],
        "list_sessions": proxy.count(lambda: db.list_sessions())[0],
        "list_sessions(with_total)": proxy.count(lambda: db.list_sessions(with_total=True))[0],
        "list_runs": proxy.count(lambda: db.list_runs("s"))[0],
        "append_run": proxy.count(lambda: db.append_run(Run(session_id="s", content="y")))[0],
        "upsert_session (new)": proxy.count(lambda: db.upsert_session(Session(user_id="u")))[0],
    }
    writer.append_run(Run(session_id="s", content="z"))
    counts["list_runs after 1 foreign append"] = proxy.count(lambda: db.list_runs("s"))[0]
    with capsys.disabled():
        print(f"\n{store.name} requests per call: {counts}")
    assert counts["get_session"] == 1  # the probe for a next segment; the record is cached
    assert counts["list_sessions"] == 1
    assert counts["list_runs"] == 1
    assert counts["get_session(runs=-1)"] == 2  # one probe per table
    assert counts["list_sessions(with_total)"] == 2  # the page and the count each probe
    # probe + segment (sessions), probe + record + segment (runs), then the session checked
    # again (a delete by another process meanwhile takes the run back)
    assert counts["append_run"] == 6
    assert counts["upsert_session (new)"] == 3  # probe, record, segment
    assert counts["list_runs after 1 foreign append"] == 3  # the new segment, a probe, its record
