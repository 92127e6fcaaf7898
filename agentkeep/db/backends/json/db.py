"""JsonDb: JSON files through fsspec: a local directory, `memory://name`, or an object store
(`s3://bucket/prefix`, `gs://bucket/prefix`).

Every process keeps each table's queryable (scalar) columns in memory as an indexed RowTable
and catches up with other writers before each operation, so a list call costs the same at any
table size and opens only the records on its page. Per table directory:

- `r/<hh>/<hash>.<version>.json`: a row's JSON columns, written once under a new version and
  then pointed to by the index, so a crash never leaves a torn record.
- Local directories and `memory://`: `index-<gen>.jsonl`, an append-only log of index lines,
  and `CURRENT`, the log's generation. Every write happens under one lock (a lock file locally,
  shared by threads and processes); a torn last line is cut off by the next writer; compaction
  writes a fresh generation and marks the old log as moved so other processes reload.
- Object stores (no append, no cross-process lock): `log/<n>.jsonl`, numbered immutable
  segments, each created only if absent (S3 `If-None-Match: *`, GCS `ifGenerationMatch=0`). A
  writer that finds segment n taken reloads and re-applies its change; a reader probes segment
  n+1. `snap/<n>.jsonl` holds the whole index after segment n. Each write is atomic on its own
  table; there is no lock across processes (see docs/json.md for why).
"""

from __future__ import annotations

from agentkeep.db import options
from agentkeep.db._sync.domain import Db
from agentkeep.db.backends.json.kernel import JsonKernel


class JsonDb(Db):
    """JSON files in a local directory or any fsspec location (`memory://name`,
    `s3://bucket/prefix`, `gs://bucket/prefix`, ...)."""

    def __init__(
        self,
        path: str = "agentkeep_json",
        *,
        storage_options: dict | None = None,
        id: str | None = None,
        table_prefix: str = "",
        **tables: str,
    ) -> None:
        overrides = options.db_arguments(self, id=id, table_prefix=table_prefix, tables=tables)
        kernel = JsonKernel(options.path(path, "path"), options.mapping(storage_options, "storage_options"))
        super().__init__(kernel, id=id, table_prefix=table_prefix, tables=overrides)
