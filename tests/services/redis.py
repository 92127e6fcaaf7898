"""Conformance backends of this family, and the server they run against (started here).

`server_url()` answers with `$AGENTKEEP_REDIS_URL`, else the local server on 6379 when it
answers, else a `redis-server` (Debian's package) started once for this test process on a
free port, keeping nothing on disk, and stopped when the process exits. Every test gets a
key prefix of its own and a cleanup deleting that prefix's keys.
"""

from __future__ import annotations

import functools
import os
import shutil
import uuid
from pathlib import Path
from typing import Optional

DEFAULT_URL = "redis://127.0.0.1:6379/0"
_started = None


def reachable(url: str) -> Optional[str]:
    """None when a server answers at `url`, else why not."""
    try:
        import redis
    except ImportError as exc:
        return f"redis is not installed ({exc})"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        try:
            client.ping()
        finally:
            client.close()
        return None
    except redis.RedisError as exc:
        return str(exc).strip()[:160] or type(exc).__name__


def _answers(port: int) -> bool:
    return reachable(f"redis://127.0.0.1:{port}/0") is None


@functools.lru_cache(maxsize=None)
def server_url() -> str:
    global _started
    explicit = os.environ.get("AGENTKEEP_REDIS_URL")
    if explicit:
        return explicit
    if reachable(DEFAULT_URL) is None:
        return DEFAULT_URL
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("no Redis on 127.0.0.1:6379 and no redis-server binary (apt-get install redis-server)")
    from tests.services.process import ServerProcess

    _started = ServerProcess(
        "redis",
        lambda port: [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        ready=_answers,
    )
    url = f"redis://127.0.0.1:{_started.port}/0"
    os.environ["AGENTKEEP_REDIS_URL"] = url  # this process's children reuse it
    return url


def check() -> Optional[str]:
    try:
        url = server_url()
    except Exception as exc:  # no server and none could be started: say why
        return f"redis: {exc}"
    reason = reachable(url)
    return f"redis: server at {url} is not reachable ({reason})" if reason else None


def target() -> str:
    import redis

    url = server_url()
    client = redis.Redis.from_url(url)
    try:
        version = client.info("server")["redis_version"]
    finally:
        client.close()
    where = url.split("@")[-1].split("://", 1)[-1]
    return f"Redis {version} at {where}, a key prefix per test"


def drop_prefix(url: str, prefix: str) -> None:
    """Delete every key under `prefix` (a prefix the tests generated: safe as a pattern)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        batch = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


def new_prefix() -> str:
    return f"akt{uuid.uuid4().hex[:16]}"


def _sync(directory: Path):
    from agentkeep.db.redis import RedisDb
    from tests.conformance.backends import Handle

    url, prefix = server_url(), new_prefix()
    return Handle(
        db=RedisDb(db_url=url, prefix=prefix),
        opener=functools.partial(RedisDb, db_url=url, prefix=prefix),
        cleanup=functools.partial(drop_prefix, url, prefix),
    )


def _async(directory: Path):
    from agentkeep.db.redis import AsyncRedisDb, RedisDb
    from tests.conformance.backends import Handle, SyncAdapter

    url, prefix = server_url(), new_prefix()
    return Handle(
        db=SyncAdapter(lambda: AsyncRedisDb(db_url=url, prefix=prefix)),
        opener=functools.partial(RedisDb, db_url=url, prefix=prefix),  # children share the data
        cleanup=functools.partial(drop_prefix, url, prefix),
    )


def backends() -> list:
    from tests.conformance.backends import Backend

    return [
        Backend(name="redis", target=target, build=_sync, requires=("redis",), check=check),
        Backend(name="redis_async", target=target, build=_async, requires=("redis",), check=check),
    ]
