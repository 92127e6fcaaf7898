"""Conformance backends of the MongoDB family, and the server they run against.

No real `mongod` installs here, so the suite runs against nx-27017 (PyPI, MIT): a MongoDB
wire-protocol server on SQLite, which the real pymongo (MongoClient and AsyncMongoClient)
talks to over TCP. It is started once per test process on a free port, keeping each
database in memory; `$AGENTKEEP_MONGO_URL` names a running server (a real MongoDB, say)
instead. Every test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Optional

from tests.services.process import ServerProcess

EMULATOR = "nx-27017"


def _server_argv(port: int, directory: str) -> list[str]:
    beside = os.path.join(os.path.dirname(sys.executable), EMULATOR)  # this interpreter's own
    exe = beside if os.path.exists(beside) else shutil.which(EMULATOR) or EMULATOR
    return [exe, "--data-dir", "memory", "--host", "127.0.0.1", "-p", str(port),
            "--pid-file", os.path.join(directory, "nx.pid"), "--log-file", os.path.join(directory, "nx.log")]


@functools.lru_cache(maxsize=None)
def server_url() -> str:
    explicit = os.environ.get("AGENTKEEP_MONGO_URL")
    if explicit:
        return explicit
    import atexit
    import tempfile

    directory = tempfile.mkdtemp(prefix="agentkeep-nx27017-")
    atexit.register(shutil.rmtree, directory, True)  # runs after the server's own stop (LIFO)
    server = ServerProcess("nx-27017", lambda port: _server_argv(port, directory))
    url = f"mongodb://127.0.0.1:{server.port}"
    # this process's children (cross-process tests, bench cases) reuse the emulator
    os.environ.update(AGENTKEEP_MONGO_URL=url, AGENTKEEP_MONGO_EMULATOR=EMULATOR)
    return url


def _client(url: str):
    from pymongo import MongoClient

    return MongoClient(url, serverSelectionTimeoutMS=5000)


def reachable() -> Optional[str]:
    """None when a server answers, starting the emulator if needed; else why not."""
    try:
        url = server_url()
    except Exception as exc:  # noqa: BLE001 - reported as the backend's reason
        return f"mongo: {EMULATOR} did not start ({exc!r:.300})"
    try:
        with _client(url) as client:
            client.admin.command("ping")
        return None
    except Exception as exc:  # noqa: BLE001
        return f"mongo: server at {url} is not reachable ({exc!r:.200})"


def emulated() -> bool:
    """True when the tests run on the emulator started here (or by a parent process)."""
    return not os.environ.get("AGENTKEEP_MONGO_URL") or os.environ.get("AGENTKEEP_MONGO_EMULATOR") == EMULATOR


def target() -> str:
    url = server_url()
    if emulated():
        from importlib.metadata import version

        return (f"{EMULATOR} {version(EMULATOR)} (MongoDB wire-protocol emulator on SQLite) at {url}, "
                "a database per test")
    with _client(url) as client:
        return f"MongoDB {client.server_info().get('version', '?')} at {url.rsplit('@', 1)[-1]}, a database per test"


def new_database() -> tuple[str, Any]:
    """A fresh database name and a cleanup that drops it."""
    name = f"t_{uuid.uuid4().hex[:16]}"

    def drop() -> None:
        with _client(server_url()) as client:
            client.drop_database(name)

    return name, drop


def _mongo(directory: Path):
    from agentkeep.db.mongo import MongoDb
    from tests.conformance.backends import Handle

    name, drop = new_database()
    opener = functools.partial(MongoDb, db_url=server_url(), db_name=name)
    return Handle(db=opener(), opener=opener, cleanup=drop)


def _mongo_async(directory: Path):
    from agentkeep.db.mongo import AsyncMongoDb, MongoDb
    from tests.conformance.backends import Handle, SyncAdapter

    name, drop = new_database()
    return Handle(
        db=SyncAdapter(lambda: AsyncMongoDb(db_url=server_url(), db_name=name)),
        opener=functools.partial(MongoDb, db_url=server_url(), db_name=name),
        cleanup=drop,
    )


def backends() -> list:
    from tests.conformance.backends import Backend

    return [
        Backend(name="mongo", target=target, build=_mongo, requires=("pymongo",), check=reachable),
        Backend(name="mongo_async", target=target, build=_mongo_async, requires=("pymongo",), check=reachable),
    ]
