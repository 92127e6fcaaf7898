"""Every kernel has the methods of the kernel contract (agentkeep/db/kernel.py) with its
exact parameters and defaults, coroutines where the contract's are, and the optional
primitive of each capability it claims."""

from __future__ import annotations

import importlib
import inspect

import pytest

from agentkeep.db.kernel import CAPABILITIES, OPTIONAL, AsyncKernel, Kernel
from tests.conftest import require

SYNC = [
    ("agentkeep.db.backends.in_memory.db", "MemoryKernel"),
    ("agentkeep.db.backends.json.kernel", "JsonKernel"),
    ("agentkeep.db.backends.sql.sqlite", "SqliteKernel"),
    ("agentkeep.db.backends.sql.postgres", "PostgresKernel"),
    ("agentkeep.db.backends.sql.mysql", "MysqlKernel"),
    ("agentkeep.db.backends.sql.singlestore", "SingleStoreKernel"),
    ("agentkeep.db.backends.mongo._sync.kernel", "MongoKernel"),
    ("agentkeep.db.backends.redis._sync.kernel", "RedisKernel"),
    ("agentkeep.db.backends.dynamo.kernel", "DynamoKernel"),
    ("agentkeep.db.backends.firestore.kernel", "FirestoreKernel"),
]
ASYNC = [
    ("agentkeep.db.backends.sql.sqlite", "AsyncSqliteKernel"),
    ("agentkeep.db.backends.sql.postgres", "AsyncPostgresKernel"),
    ("agentkeep.db.backends.sql.mysql", "AsyncMysqlKernel"),
    ("agentkeep.db.backends.sql.singlestore", "AsyncSingleStoreKernel"),
    ("agentkeep.db.backends.mongo._async.kernel", "AsyncMongoKernel"),
    ("agentkeep.db.backends.redis._async.kernel", "AsyncRedisKernel"),
]
CONTEXTS = ("schema_lock", "transaction")  # context managers, whichever way they are made


def _methods(protocol: type) -> dict:
    return {name: fn for name, fn in vars(protocol).items() if inspect.isfunction(fn) and not name.startswith("_")}


def _params(fn) -> list[tuple]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def _check(cls: type, protocol: type, is_async: bool) -> list[str]:
    wrong = []
    for name, want in _methods(protocol).items():
        have = getattr(cls, name, None)
        if have is None:
            wrong.append(f"{cls.__name__}.{name} is missing")
            continue
        if _params(have) != _params(want):
            wrong.append(f"{cls.__name__}.{name}{inspect.signature(have)} is not {name}{inspect.signature(want)}")
        if name not in CONTEXTS and inspect.iscoroutinefunction(have) != inspect.iscoroutinefunction(want):
            wrong.append(f"{cls.__name__}.{name}: {'a' if is_async else 'no'} coroutine expected")
    return wrong


@pytest.mark.parametrize(("module", "name", "is_async"), [(*k, False) for k in SYNC] + [(*k, True) for k in ASYNC],
                         ids=[k[1] for k in SYNC + ASYNC])
def test_every_kernel_keeps_the_contract(module, name, is_async):
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError as exc:  # a driver this environment lacks: skipped, or failed in CI
        require(f"{module}: {exc}")
    assert _check(cls, AsyncKernel if is_async else Kernel, is_async) == []
    claimed = getattr(cls, "capabilities", frozenset())
    assert claimed <= set(CAPABILITIES)
    for capability, (sync_protocol, async_protocol) in OPTIONAL.items():
        if capability in claimed:
            assert _check(cls, async_protocol if is_async else sync_protocol, is_async) == []


def test_a_missing_method_or_a_drifted_signature_is_found():
    class Drifted:
        def group_count(self, table, by, max_field, where, after, limit): ...

    wrong = _check(Drifted, Kernel, False)
    assert "Drifted.setup is missing" in wrong
    assert any(w.startswith("Drifted.group_count(") for w in wrong)
