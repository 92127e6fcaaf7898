"""The sync kernel of the server backends (PostgreSQL, MySQL): SQLAlchemy's connection
pool, each connection checked before it is handed out."""

from __future__ import annotations

import abc
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from agentkeep.db.backends.sql._sync.kernel import SqlKernel
from agentkeep.db.backends.sql.base import peer_closed


class PooledKernel(SqlKernel):
    def __init__(self, url: sa.URL, engine: sa.engine.Engine, schema: str | None = None) -> None:
        self.engine = engine
        super().__init__(url, engine.dialect, schema)
        event.listen(engine, "checkout", self._checkout)

    @abc.abstractmethod
    def socket_fileno(self, dbapi_conn: Any) -> int | None:
        """The file descriptor of a driver connection's socket (None: unknown, reconnect)."""

    def _checkout(self, dbapi_conn, _record, _proxy) -> None:
        fileno = self.socket_fileno(dbapi_conn)
        if fileno is None or peer_closed(fileno):
            raise sa.exc.DisconnectionError("the server closed this connection")  # the pool reconnects

    def acquire(self):
        return self.engine.raw_connection()

    def release(self, raw) -> None:
        raw.close()

    def close(self) -> None:
        self.engine.dispose()
