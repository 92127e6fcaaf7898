"""`connect(url)`: build a db from a URL (the CLI's `--db`)."""

from __future__ import annotations

from typing import Any

from agentkeep.db.errors import InvalidInputError

URL_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, sqlite:///:memory:",
    "json://./dir, json:///absolute/dir, json+memory://name, json+s3://bucket/prefix",
    "memory://  (InMemoryDb)",
)


def connect(url: str, **kwargs: Any):
    """Return the db a URL names. Raises InvalidInputError for an unknown or malformed URL."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidInputError(f"not a db URL: {url!r}; expected one of: {'; '.join(URL_FORMS)}")
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme == "sqlite":
        from agentkeep.db.sqlite import SqliteDb

        return SqliteDb(db_url=url, **kwargs)
    if scheme == "json":
        from agentkeep.db.json import JsonDb

        if not rest:
            raise InvalidInputError(f"{url!r} names no directory")
        return JsonDb(path=rest, **kwargs)
    if scheme.startswith("json+"):
        from agentkeep.db.json import JsonDb

        return JsonDb(path=f"{scheme[5:]}://{rest}", **kwargs)
    if scheme in ("memory", "inmemory"):
        from agentkeep.db.in_memory import InMemoryDb

        return InMemoryDb(**kwargs)
    raise InvalidInputError(f"unknown db URL scheme {scheme!r} in {url!r}; expected one of: {'; '.join(URL_FORMS)}")
