"""A backend's driver that is not installed: which extra installs it, in one table shared by
the db classes and the command line.

    with driver_for("MongoDb", "mongo"):
        import pymongo

raises `MissingDriverError` ("MongoDb needs pymongo (module 'pymongo' is missing): pip
install 'agentkeep[mongo]' ...") instead of a bare ModuleNotFoundError.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

# module (or package) -> the extra that installs it; a backend names its own extra too,
# since a few modules serve several (botocore: dynamodb and s3, pymysql: mysql and singlestore)
EXTRA_OF_MODULE = {
    "aiosqlite": "sqlite",
    "fsspec": "json",
    "filelock": "json",
    "psycopg": "postgres",
    "psycopg_pool": "postgres",
    "psycopg_binary": "postgres",
    "pymysql": "mysql",
    "aiomysql": "mysql",
    "pymongo": "mongo",
    "bson": "mongo",  # pymongo's own; the `bson` package on PyPI is another thing
    "gridfs": "mongo",
    "redis": "redis",
    "boto3": "dynamodb",
    "botocore": "dynamodb",
    "google.cloud.firestore": "firestore",
    "google.cloud.firestore_v1": "firestore",
    "s3fs": "s3",
    "aiobotocore": "s3",
    "gcsfs": "gcs",
    "google.cloud.storage": "gcs",
}
# what each extra installs, as pip spells it
PACKAGES = {
    "sqlite": "aiosqlite",
    "json": "fsspec and filelock",
    "postgres": "psycopg and psycopg-pool",
    "mysql": "PyMySQL and aiomysql",
    "singlestore": "PyMySQL and aiomysql",
    "mongo": "pymongo",
    "redis": "redis",
    "dynamodb": "boto3",
    "firestore": "google-cloud-firestore",
    "s3": "s3fs",
    "gcs": "gcsfs",
}


class MissingDriverError(ModuleNotFoundError):
    """A backend's driver is not installed; the message says which extra installs it."""

    def __init__(self, message: str, *, name: str | None, extra: str) -> None:
        super().__init__(message, name=name)
        self.extra = extra


def install_hint(extra: str) -> str:
    return f"pip install 'agentkeep[{extra}]' (from a clone: pip install -e '.[{extra}]')"


def extra_for(module: str | None) -> str | None:
    """The extra installing `module` (or the package it belongs to), if any."""
    parts = (module or "").split(".")
    for n in range(len(parts), 0, -1):
        extra = EXTRA_OF_MODULE.get(".".join(parts[:n]))
        if extra:
            return extra
    return None


def missing_driver(exc: ModuleNotFoundError, backend: str = "this db", extra: str | None = None) -> ModuleNotFoundError:
    """The error to raise for `exc`: a MissingDriverError naming the extra, or `exc` itself
    when no extra installs the missing module (or it is agentkeep's own). Given `extra`,
    the backend asking wins over what an inner module said (GcsJsonDb over JsonDb)."""
    if (isinstance(exc, MissingDriverError) and extra is None) or (exc.name or "").split(".")[0] == "agentkeep":
        return exc
    extra = extra or extra_for(exc.name)
    if extra is None:
        return exc
    return MissingDriverError(
        f"{backend} needs {PACKAGES[extra]} (module {exc.name!r} is missing): {install_hint(extra)}",
        name=exc.name, extra=extra,
    )


@contextlib.contextmanager
def driver_for(backend: str, extra: str) -> Iterator[None]:
    """Turn a ModuleNotFoundError inside the block into a MissingDriverError for `backend`."""
    try:
        yield
    except ModuleNotFoundError as exc:
        error = missing_driver(exc, backend, extra)
        if error is exc:
            raise
        raise error from exc
