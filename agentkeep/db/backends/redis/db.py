"""RedisDb (and AsyncRedisDb) on redis-py: records as hashes, every spec index as a sorted
set read by lexicographic range, every multi-key write one Lua script.

    RedisDb(db_url="redis://127.0.0.1:6379/0", prefix="agentkeep")

The layout and query planning are in layout.py, the value encoding in codec.py, the
scripts in lua/, the kernel in _async/kernel.py (its sync twin generated).
"""

from __future__ import annotations

from agentkeep.db import options
from agentkeep.db._async.domain import AsyncDb
from agentkeep.db._sync.domain import Db
from agentkeep.db.connection import CONNECT_TIMEOUT_S
from agentkeep.db.drivers import driver_for


class RedisDb(Db):
    """Redis (5+; scripts need Lua): sessions, runs and every other table as hashes with
    sorted-set indexes under one key prefix."""

    def __init__(self, db_url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "agentkeep",
                 id: str | None = None, client_options: dict | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S, **tables: str) -> None:
        overrides = options.db_arguments(self, id=id, table_prefix="", tables=tables)
        with driver_for("RedisDb", "redis"):
            from agentkeep.db.backends.redis._sync.kernel import RedisKernel

        kernel = RedisKernel(db_url, prefix, options.mapping(client_options, "client_options"),
                             options.seconds(connect_timeout))
        super().__init__(kernel, id=id, table_prefix="", tables=overrides)


class AsyncRedisDb(AsyncDb):
    """RedisDb's async twin on redis.asyncio: every method awaitable. Belongs to the event
    loop it is first used on."""

    def __init__(self, db_url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "agentkeep",
                 id: str | None = None, client_options: dict | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S, **tables: str) -> None:
        overrides = options.db_arguments(self, id=id, table_prefix="", tables=tables)
        with driver_for("AsyncRedisDb", "redis"):
            from agentkeep.db.backends.redis._async.kernel import AsyncRedisKernel

        kernel = AsyncRedisKernel(db_url, prefix, options.mapping(client_options, "client_options"),
                                  options.seconds(connect_timeout))
        super().__init__(kernel, id=id, table_prefix="", tables=overrides)
