"""moto_server (DynamoDB and S3 over HTTP, as boto3 and s3fs talk to AWS), started once per
test process. `$AGENTKEEP_MOTO_URL` names a running one instead; a server started here is
published there, so this process's children use it too."""

from __future__ import annotations

import functools
import os
import shutil
import sys

from tests.services.process import ServerProcess

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


def _ready(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1):
            return True
    except OSError:
        return False


@functools.lru_cache(maxsize=None)
def endpoint_url() -> str:
    explicit = os.environ.get("AGENTKEEP_MOTO_URL")
    if explicit:
        return explicit
    exe = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
    server = ServerProcess("moto", lambda port: [exe, "-H", "127.0.0.1", "-p", str(port)], ready=_ready)
    url = f"http://127.0.0.1:{server.port}"
    os.environ["AGENTKEEP_MOTO_URL"] = url  # child processes (cross-process tests, bench cases) reuse it
    return url


def unavailable() -> str | None:
    """None when moto_server runs (starting it if needed), else why not."""
    try:
        import moto  # noqa: F401 - the server comes with the package
    except ImportError as exc:
        return f"moto is not installed ({exc})"
    try:
        endpoint_url()
        return None
    except Exception as exc:  # noqa: BLE001 - reported as the backend's reason
        return f"moto_server did not start ({exc!r:.300})"


def target() -> str:
    import moto

    return f"moto_server {moto.__version__} (emulator) at {endpoint_url()}"
