"""Conformance backends of this family, and the server they run against (started here).

DynamoDB runs against moto's server (the moto package of tests/services/moto.py), started
once per test process on a free port, single-threaded: moto_server serves requests on
parallel threads without a lock around its DynamoDB backend, so a conditional write's check
and write can interleave with another request's, and a cancelled TransactWriteItems restores
a snapshot of whole tables, undoing what other requests wrote meanwhile. Serving one request
at a time gives each request the atomicity DynamoDB gives it. `$AGENTKEEP_DYNAMODB_URL`
names a running endpoint instead (DynamoDB Local, or moto started the same way).

Each test gets its own table prefix, and its cleanup deletes exactly the tables with that
prefix (never moto's global reset)."""

from __future__ import annotations

import functools
import os
import sys
import uuid
from pathlib import Path

from tests.services import moto

_SERVE = (
    "import sys\n"
    "from werkzeug.serving import run_simple\n"
    "from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app\n"
    "run_simple('127.0.0.1', int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False)\n"
)


@functools.lru_cache(maxsize=None)
def endpoint_url() -> str:
    explicit = os.environ.get("AGENTKEEP_DYNAMODB_URL")
    if explicit:
        return explicit
    from tests.services.process import ServerProcess

    server = ServerProcess("moto-dynamodb", lambda port: [sys.executable, "-c", _SERVE, str(port)],
                           ready=moto._ready)
    url = f"http://127.0.0.1:{server.port}"
    # this process's children reuse it; AGENTKEEP_DYNAMODB_EMULATOR says it is the emulator
    os.environ.update(AGENTKEEP_DYNAMODB_URL=url, AGENTKEEP_DYNAMODB_EMULATOR="moto")
    return url


def unavailable() -> str | None:
    """None when the server runs (starting it if needed), else why not."""
    if not os.environ.get("AGENTKEEP_DYNAMODB_URL") or os.environ.get("AGENTKEEP_DYNAMODB_EMULATOR"):
        try:
            import moto.moto_server.werkzeug_app  # noqa: F401 - the server comes with the package
        except ImportError as exc:
            return f"moto's server is not installed ({exc})"
    try:
        endpoint_url()
        return None
    except Exception as exc:  # noqa: BLE001 - reported as the backend's reason
        return f"moto's DynamoDB server did not start ({exc!r:.300})"


def target() -> str:
    if os.environ.get("AGENTKEEP_DYNAMODB_URL") and not os.environ.get("AGENTKEEP_DYNAMODB_EMULATOR"):
        return f"DynamoDB endpoint at {endpoint_url()}"
    import moto as moto_package

    return f"moto {moto_package.__version__} server (emulator, one request at a time) at {endpoint_url()}"


def client():
    import boto3

    return boto3.session.Session().client("dynamodb", endpoint_url=endpoint_url(), region_name=moto.REGION,
                                          **moto.CREDENTIALS)


def open_db(table_prefix: str, **kwargs):
    """A DynamoDb on the test server."""
    return _open_at(endpoint_url(), table_prefix, **kwargs)


def delete_tables(prefix: str) -> None:
    """Delete every table whose name starts with `prefix`."""
    c = client()
    try:
        names: list[str] = []
        for page in c.get_paginator("list_tables").paginate():
            names += [n for n in page["TableNames"] if n.startswith(prefix)]
        for name in names:
            try:
                c.delete_table(TableName=name)
            except c.exceptions.ResourceNotFoundException:
                pass
    finally:
        c.close()


def new_prefix() -> str:
    return f"ak{uuid.uuid4().hex[:12]}"


def _build(directory: Path):
    from tests.conformance.backends import Handle

    prefix = new_prefix()
    endpoint = endpoint_url()
    opener = functools.partial(_open_at, endpoint, prefix)
    return Handle(db=opener(), opener=opener, cleanup=functools.partial(delete_tables, prefix + "_"))


def _open_at(endpoint: str, prefix: str, **kwargs):
    # module level, so functools.partial of it pickles: spawned child processes open the
    # server the parent started, by its URL
    from agentkeep.db.dynamo import DynamoDb

    return DynamoDb(endpoint_url=endpoint, region_name=moto.REGION, table_prefix=prefix, **moto.CREDENTIALS, **kwargs)


def backends() -> list:
    from tests.conformance.backends import Backend

    return [Backend(name="dynamodb", target=target, build=_build, requires=("boto3",), check=unavailable)]
