"""`make_store(**options)`: a fresh store of the test's kind (pytest id = store name),
dropped afterwards. AGENTKEEP_REQUIRE_ALL=1 turns "store unavailable" skips into failures."""

from __future__ import annotations

import pytest

from tests.conftest import PROP_STORE, PROP_STORE_TARGET
from tests.conftest import require as require_available
from tests.vector_db.stores import STORES, Store

_targets: dict[str, str] = {}  # store name -> what it runs against, once per process


def require(store: Store) -> None:
    require_available(store.unavailable())


@pytest.fixture(params=STORES, ids=[s.name for s in STORES])
def store_kind(request: pytest.FixtureRequest) -> Store:
    kind: Store = request.param
    request.node.user_properties.append((PROP_STORE, kind.name))  # counted in the run's summary
    require(kind)
    if kind.name not in _targets:
        _targets[kind.name] = kind.target()
    request.node.user_properties.append((PROP_STORE_TARGET, _targets[kind.name]))
    return kind


@pytest.fixture
def make_store(store_kind: Store):
    cleanups = []

    def make(**options):
        store, cleanup = store_kind.build(**options)
        cleanups.append(cleanup)
        return store

    yield make
    for cleanup in reversed(cleanups):
        cleanup()


@pytest.fixture
def store(make_store):
    return make_store()
