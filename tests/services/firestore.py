"""Firestore: the Node emulator `@firestore-emulator/server` (the official emulator needs
Java 21), installed from npm on first use and started once per test process on 127.0.0.1.
`$AGENTKEEP_FIRESTORE_EMULATOR_HOST` ("host:port") names a running one instead.

Every test gets a fresh project id: the emulator keeps projects apart, and it has no
list_documents() or collections(), so isolation by project is what keeps tests apart."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from tests.services.process import ServerProcess

PACKAGE = "@firestore-emulator/server"
VERSION = "0.3.15"
CACHE = Path(os.environ.get("AGENTKEEP_CACHE_DIR", Path.home() / ".cache" / "agentkeep")) / "firestore-emulator"

# The package's start() binds every interface: bind loopback with the gRPC library the
# package itself depends on, and accept requests up to Firestore's 10 MiB.
START_JS = """\
const { FirestoreServer } = require('@firestore-emulator/server');
const grpc = require(require.resolve('@grpc/grpc-js', { paths: [require.resolve('@firestore-emulator/server')] }));
const s = new FirestoreServer();
s.server.options['grpc.max_receive_message_length'] = 10 * 1024 * 1024;
s.server.bindAsync(`127.0.0.1:${process.argv[2] || 8080}`, grpc.ServerCredentials.createInsecure(), (e) => {
  if (e) { console.error(e); process.exit(1); }
});
"""


def _install() -> Path:
    """The package in the cache directory (npm install once; a file lock keeps xdist
    workers from installing at the same time)."""
    from filelock import FileLock

    CACHE.mkdir(parents=True, exist_ok=True)
    marker = CACHE / f".installed-{VERSION}"
    with FileLock(str(CACHE / ".lock")):
        if not marker.exists():
            npm = shutil.which("npm")
            if npm is None:
                raise RuntimeError("npm is not installed (the Firestore emulator is an npm package)")
            subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error", f"{PACKAGE}@{VERSION}"],
                           cwd=CACHE, check=True, capture_output=True, timeout=600)
            marker.write_text(VERSION)
        script = CACHE / "start.js"
        if not script.exists() or script.read_text() != START_JS:
            script.write_text(START_JS)
    return CACHE


@functools.lru_cache(maxsize=None)
def emulator_host() -> str:
    explicit = os.environ.get("AGENTKEEP_FIRESTORE_EMULATOR_HOST")
    if explicit:
        return explicit
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed (the Firestore emulator runs on Node.js)")
    home = _install()
    server = ServerProcess("firestore", lambda port: [node, "start.js", str(port)], cwd=str(home))
    host = f"127.0.0.1:{server.port}"
    os.environ["AGENTKEEP_FIRESTORE_EMULATOR_HOST"] = host  # this process's children reuse it
    return host


def unavailable() -> str | None:
    try:
        emulator_host()
        return None
    except Exception as exc:  # noqa: BLE001 - reported as the backend's reason
        return f"firestore: the emulator did not start ({exc!r:.300})"


def target() -> str:
    return f"{PACKAGE} {VERSION} (Node emulator) at {emulator_host()}, a project per test"


def new_project() -> str:
    return f"agentkeep-test-{uuid.uuid4().hex[:12]}"


def _cleanup(project: str) -> None:
    """Delete what the test stored (by queries: the emulator cannot list documents)."""
    from agentkeep.db.firestore import FirestoreDb

    db = FirestoreDb(project_id=project, emulator_host=emulator_host())
    try:
        for table in ("runs", *[t for t in db.specs if t != "runs"]):
            db.kernel.delete(table, ())
    finally:
        db.close()


def _firestore(directory: Path):
    from agentkeep.db.firestore import FirestoreDb
    from tests.conformance.backends import Handle

    project = new_project()
    host = emulator_host()
    return Handle(
        db=FirestoreDb(project_id=project, emulator_host=host),
        opener=functools.partial(FirestoreDb, project_id=project, emulator_host=host),
        cleanup=functools.partial(_cleanup, project),
    )


def backends() -> list:
    from tests.conformance.backends import Backend

    return [
        Backend(
            name="firestore",
            target=target,
            build=_firestore,
            requires=("google.cloud.firestore",),
            check=unavailable,
        )
    ]
