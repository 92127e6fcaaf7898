"""Shared fixtures: the `db` fixture runs every test once per backend.

- `db`: an isolated db of one backend (pytest id = backend name): a new db object over a
  store no other test uses at the same time, emptied after the test before it (see
  `pooled_store`), closed afterwards.
- Tests that need a server or an emulator are marked `server`: `-m "not server"` is the
  quick run.
- `db_url` / `db_opener`: how a child process opens the same db (None when it cannot).
- `make_db`: build further fresh dbs of the same backend (the test closes them).
- AGENTKEEP_REQUIRE_ALL=1 turns "backend unavailable" skips into failures.
- At the end of the run, one line per backend: what it ran against and its counts.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable, Iterator

import pytest

from tests.conformance.backends import BACKENDS, BY_NAME, Backend, Handle
from tests.vector_db.stores import Store

REQUIRE_ALL = os.environ.get("AGENTKEEP_REQUIRE_ALL") == "1"
# Every PostgreSQL connection of the suite (libpq reads PGOPTIONS) commits without waiting
# for the WAL flush: 0.06 ms a commit instead of 2.7 ms here. Nothing the tests check
# depends on it: a commit is still atomic and visible at once, and a server stopped
# cleanly (the restart test) flushes first; only an OS crash could lose the last commits.
os.environ.setdefault("PGOPTIONS", "-c synchronous_commit=off")
_PROP_BACKEND = "agentkeep_backend"
_PROP_TARGET = "agentkeep_target"
# set by tests/vector_db/conftest.py; carried in reports, so xdist workers' runs are counted too
PROP_STORE = "agentkeep_store"
PROP_STORE_TARGET = "agentkeep_store_target"


def require(reason: str | None) -> None:
    """Skip (or, with AGENTKEEP_REQUIRE_ALL=1, fail) for `reason`; nothing when it is None."""
    if reason is None:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (AGENTKEEP_REQUIRE_ALL=1: what is unavailable fails)", pytrace=False)
    pytest.skip(reason)


def require_backend(backend: Backend) -> None:
    """Skip (or, with AGENTKEEP_REQUIRE_ALL=1, fail) when the backend is unavailable."""
    require(backend.unavailable())


def _close(handle: Handle) -> None:
    try:
        handle.db.close()
    finally:
        if handle.cleanup is not None:
            handle.cleanup()


@pytest.fixture(params=BACKENDS, ids=[b.name for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    b: Backend = request.param
    require_backend(b)
    return b


# Stores a test has finished with, emptied and ready for the next test of this process:
# building a store costs its tables and indexes (0.4 s on PostgreSQL, 1 s on DynamoDB on
# moto or on a stock MariaDB, per test), emptying one a few deletes. Each test still gets a new db
# object; a test marked `fresh_store` gets a store without tables.
_idle: dict[str, list[Handle]] = {}


@contextlib.contextmanager
def pooled_store(backend: Backend, tmp_path_factory: pytest.TempPathFactory, fresh: bool = False) -> Iterator[Handle]:
    """A store of `backend` with a new db object: an emptied one of this process unless
    `fresh`, or a new one; emptied and kept for the next test afterwards, where it can be."""
    idle = _idle.get(backend.name)
    if idle and not fresh:
        handle = idle.pop()
        handle.db = handle.reopen()
    else:
        handle = backend.build(tmp_path_factory.mktemp(f"db-{backend.name}"))
    try:
        yield handle
    finally:
        if backend.reuse and handle.reusable:
            _give_back(backend, handle)
        else:
            _close(handle)


def _give_back(backend: Backend, handle: Handle) -> None:
    """Empty the store through the test's db (or a new one, when the test closed its own)
    and keep it for the next test; a store that cannot be emptied is removed. Spans an
    agent of the test still holds are written first, so none lands in the next test's store."""
    if "agentkeep.agent.tracing" in sys.modules:
        sys.modules["agentkeep.agent.tracing"].flush()
    for attempt in range(2):
        try:
            if attempt:
                handle.db = handle.reopen()
            handle.wipe()
            handle.db.close()
            _idle.setdefault(backend.name, []).append(handle)
            return
        except Exception:  # noqa: BLE001 - closed by the test, or broken: try a new object, then drop it
            with contextlib.suppress(Exception):
                handle.db.close()
    if handle.cleanup is not None:
        handle.cleanup()


@pytest.fixture(scope="session", autouse=True)
def _remove_idle_stores() -> Iterator[None]:
    yield
    for handles in _idle.values():
        for handle in handles:
            if handle.cleanup is not None:
                with contextlib.suppress(Exception):
                    handle.cleanup()
    _idle.clear()


@pytest.fixture
def db_handle(
    backend: Backend, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Handle]:
    with pooled_store(backend, tmp_path_factory, fresh=request.node.get_closest_marker("fresh_store") is not None) as h:
        yield h


@pytest.fixture
def db(db_handle: Handle) -> Any:
    return db_handle.db


@pytest.fixture
def db_url(db_handle: Handle) -> str | None:
    """A URL that `agentkeep.db.connect` opens to the same db, or None."""
    return db_handle.url


@pytest.fixture
def db_opener(db_handle: Handle) -> Callable[[], Any] | None:
    """A picklable zero-argument callable opening the same db in another process, or None."""
    return db_handle.opener


@pytest.fixture
def make_db(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Handle]]:
    """Build more fresh dbs of the test's backend. The test closes each db it builds;
    leftovers (e.g. fsspec memory files) are cleaned up afterwards."""
    handles: list[Handle] = []

    def make() -> Handle:
        handle = backend.build(tmp_path_factory.mktemp(f"extra-{backend.name}"))
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        if handle.cleanup is not None:
            handle.cleanup()


# -- per-backend summary ---------------------------------------------------------------


# What needs a server or an emulator, besides a server backend or store as a parameter and
# tests marked `server` one by one: these stores, fixtures and whole modules.
_SERVER_STORES = {"pgvector", "redis"}
_SERVER_FIXTURES = {"postgres_url", "mysql_url", "pg_url", "emulated"}
_SERVER_MODULES = {
    f"tests/backends/test_{name}.py" for name in ("dynamodb", "firestore", "mongo", "mysql", "object_storage",
                                                    "postgres", "redis")
} | {"tests/vector_db/test_pgvector.py", "tests/vector_db/test_redis_vector.py"}


def _needs_server(item: pytest.Item, params: dict) -> bool:
    return (
        any(isinstance(p, Backend) and p.server for p in params.values())
        or any(isinstance(p, Store) and p.name in _SERVER_STORES for p in params.values())
        or not _SERVER_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))
        or item.nodeid.split("::", 1)[0] in _SERVER_MODULES
    )


def backends_in_run(config: pytest.Config) -> list[Backend]:
    """The backends a test that goes over all of them should use: in a run that leaves out
    the `server` tests (`-m "not server"`), only those that run in the test process."""
    from _pytest.mark.expression import Expression

    expr = config.getoption("markexpr")
    if expr and not Expression.compile(expr).evaluate(lambda name, **_: name == "server"):
        return [b for b in BACKENDS if not b.server]
    return BACKENDS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Count each test under its backend, and mark `server` every test that needs a server
    or an emulator: `-m "not server"` is the contributors' quick run (README)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        b = params.get("backend")
        if isinstance(b, Backend):
            item.user_properties.append((_PROP_BACKEND, b.name))
        if _needs_server(item, params):
            item.add_marker(pytest.mark.server)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report = outcome.get_result()
    props = dict(item.user_properties)
    name = props.get(_PROP_BACKEND)
    if name and report.when == "setup" and report.passed:
        report.user_properties.append((_PROP_TARGET, _target(name)))


_targets: dict[str, str] = {}


def _target(name: str) -> str:
    if name not in _targets:
        try:
            _targets[name] = BY_NAME[name].target()
        except Exception as exc:  # noqa: BLE001 - only for the summary line
            _targets[name] = f"unknown ({exc.__class__.__name__})"
    return _targets[name]


_outcomes: dict[str, tuple[str, str]] = {}  # nodeid -> (backend, outcome)
_seen_targets: dict[str, str] = {}
_store_outcomes: dict[str, tuple[str, str]] = {}  # nodeid -> (vector store, outcome)
_store_targets: dict[str, str] = {}


def _record(report: pytest.TestReport, outcomes: dict, targets: dict, name_prop: str, target_prop: str) -> None:
    props = dict(report.user_properties)
    name = props.get(name_prop)
    if not name:
        return
    if target_prop in props:
        targets[name] = props[target_prop]
    if outcomes.get(report.nodeid, (name, ""))[1] == "failed":
        return
    if report.failed:
        outcome = "failed"
    elif report.skipped:
        outcome = "skipped"
    elif report.when == "call":
        outcome = "passed"
    else:
        return
    outcomes[report.nodeid] = (name, outcome)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _record(report, _outcomes, _seen_targets, _PROP_BACKEND, _PROP_TARGET)
    _record(report, _store_outcomes, _store_targets, PROP_STORE, PROP_STORE_TARGET)


def _counts(outcomes: dict, names: list[str]) -> dict[str, dict[str, int]]:
    counts = {n: {"passed": 0, "failed": 0, "skipped": 0} for n in names}
    for name, outcome in outcomes.values():
        counts.setdefault(name, {"passed": 0, "failed": 0, "skipped": 0})[outcome] += 1
    return counts


def _write_summary(reporter: Any, title: str, counts: dict, target_of: Callable[[str], str]) -> None:
    reporter.section(title)
    for name, c in counts.items():
        if any(c.values()):
            reporter.write_line(
                f"{name:<14} {target_of(name):<40} passed={c['passed']} failed={c['failed']} skipped={c['skipped']}"
            )


def _backend_target(name: str) -> str:
    target = _seen_targets.get(name)
    if target is None:
        reason = BY_NAME[name].unavailable() if name in BY_NAME else None
        target = f"unavailable ({reason})" if reason else _target(name)
    return target


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _store_outcomes:
        _write_summary(terminalreporter, "agentkeep vector stores", _counts(_store_outcomes, []),
                       lambda name: _store_targets.get(name, "unavailable"))
    if _outcomes:
        _write_summary(terminalreporter, "agentkeep backends", _counts(_outcomes, [b.name for b in BACKENDS]),
                       _backend_target)
