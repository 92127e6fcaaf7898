"""FirestoreDb on google-cloud-firestore (sync client).

    FirestoreDb(project_id="my-project", database="(default)", collection_prefix="agentkeep")

Layout (docs/firestore.md has the details and the reasons):
- one collection per table, `<prefix>_<table>`, one document per record; the document id
  is the record key, escaped so that any agentkeep id is a valid, distinct Firestore id;
- runs live in their session's subcollection, `<prefix>_sessions/{session}/runs/{run}`, so
  a session's runs are a native range on `seq`; a slim index document per run in
  `<prefix>_runs/{run}` (written in the same commit) finds a run by its id alone and serves
  the queries that cross sessions;
- indexed columns are native fields (timestamps, strings, numbers, arrays); JSON and long
  text columns travel together as one JSON string, inline up to ~900 KB and otherwise split
  across `_parts` documents, so a record up to agentkeep's 4 MiB limit fits Firestore's
  1 MiB document limit;
- every write replaces the document's version token `_t`; a write that depends on what it
  read first creates the marker document `{doc}/_v/{token it read}` in the same commit,
  so of two writers that read the same version exactly one commits (compare-and-set that
  holds on the service and on the emulator, whose transactions do not isolate).
"""

from __future__ import annotations

import json
from typing import Any

from agentkeep.db import options
from agentkeep.db._sync.domain import Db
from agentkeep.db.backends.firestore.kernel import FirestoreKernel
from agentkeep.db.backends.firestore.layout import _table_prefix, default_index_config
from agentkeep.db.connection import CONNECT_TIMEOUT_S


class FirestoreDb(Db):
    """Google Cloud Firestore (native mode), through google-cloud-firestore's sync client.

    `emulator_host` ("127.0.0.1:8080") talks to an emulator; it defaults to
    $FIRESTORE_EMULATOR_HOST. Pass `client` to use a client you configured yourself."""

    def __init__(
        self,
        project_id: str | None = None,
        *,
        database: str = "(default)",
        collection_prefix: str = "agentkeep",
        client: Any = None,
        emulator_host: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        id: str | None = None,
        **tables: str,
    ) -> None:
        prefix = _table_prefix(options.text(collection_prefix, "collection_prefix", empty=True))
        overrides = options.db_arguments(self, id=id, table_prefix=prefix, tables=tables)
        kernel = FirestoreKernel(
            options.text(project_id, "project_id", optional=True), options.text(database, "database"),
            collection_prefix, client, options.text(emulator_host, "emulator_host", optional=True),
            options.seconds(connect_timeout),
        )
        super().__init__(kernel, id=id, table_prefix=prefix, tables=overrides)


def main(argv: list[str]) -> None:
    """`python -m agentkeep.db.firestore [prefix] > firestore.indexes.json`"""
    print(json.dumps(default_index_config(*argv[1:2]), indent=2))


if __name__ == "__main__":
    import sys

    main(sys.argv)
