"""GcsJsonDb: JsonDb on a Google Cloud Storage bucket through gcsfs; several processes may
write at once (generation-conditional writes, see docs/json.md)."""

from __future__ import annotations

from typing import Any

from agentkeep.db import options
from agentkeep.db.drivers import driver_for
from agentkeep.db.errors import InvalidInputError

with driver_for("GcsJsonDb", "gcs"):
    from agentkeep.db.backends.json.db import JsonDb


class GcsJsonDb(JsonDb):
    """JSON files under `gs://<bucket_name>/<prefix>`; several processes may share it.

    `credentials`: anything gcsfs takes as `token`: a google.auth credentials object, a
    service-account file's path or its parsed JSON, "anon" (None: the environment's default
    credentials). With `STORAGE_EMULATOR_HOST` set (e.g. fake-gcs-server) and no credentials,
    none are sent.
    """

    def __init__(
        self,
        bucket_name: str,
        prefix: str = "agentkeep/",
        project: str | None = None,
        credentials: Any = None,
        *,
        id: str | None = None,
        table_prefix: str = "",
        **tables: str,
    ) -> None:
        if not isinstance(bucket_name, str) or not bucket_name or "/" in bucket_name:
            raise InvalidInputError(f"bucket_name must be a bucket's name, got {bucket_name!r}")
        if not isinstance(prefix, str):
            raise InvalidInputError(f"prefix must be a string, got {type(prefix).__name__}")
        storage: dict[str, Any] = {}
        if options.text(project, "project", optional=True) is not None:
            storage["project"] = project
        if credentials is not None:
            storage["token"] = credentials
        folder = prefix.strip("/")
        path = f"gs://{bucket_name}/{folder}" if folder else f"gs://{bucket_name}"
        with driver_for("GcsJsonDb", "gcs"):
            super().__init__(path, storage_options=storage, id=id, table_prefix=table_prefix, **tables)
